"""How a call is read and whether it is logged: RULES.md §1–2, as pure functions.

No I/O here: every function takes the call (and plain values from the
settings) and returns a value, so each rule is proven by a table-driven test
that cites its id.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers

from aircall_sync.aircall.insights import Insights
from aircall_sync.aircall.models import Call, User


class Kind(StrEnum):
    """R-CALL-2: exactly one kind per call (the names are part of the CLI contract)."""

    OUTBOUND_ANSWERED = "outbound_answered"
    OUTBOUND_UNANSWERED = "outbound_unanswered"
    INBOUND_ANSWERED = "inbound_answered"
    MISSED = "missed"
    VOICEMAIL = "voicemail"


class Flow(StrEnum):
    """R-FLOW-1: what a target does with a call of a given kind."""

    COMPLETED = "completed"
    OPEN = "open"
    SKIP = "skip"


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


# ---------------------------------------------------------------- R-CALL-1..3


def is_answered(call: Call) -> bool:
    """R-CALL-1."""
    return call.answered_at is not None


def is_inbound(call: Call) -> bool:
    # Only two directions exist in the public API (aircall-api.md §7); anything
    # that is not "outbound" is read as inbound so an odd value cannot drop a call.
    return call.direction != "outbound"


def has_voicemail(call: Call) -> bool:
    return bool(call.voicemail or call.voicemail_short_url or (call.asset and "voicemail" in call.asset))


def call_kind(call: Call) -> Kind:
    """R-CALL-2."""
    if not is_inbound(call):
        return Kind.OUTBOUND_ANSWERED if is_answered(call) else Kind.OUTBOUND_UNANSWERED
    if is_answered(call):
        return Kind.INBOUND_ANSWERED
    return Kind.VOICEMAIL if has_voicemail(call) else Kind.MISSED


def is_conference(call: Call) -> bool:
    """R-CALL-3: more than two parties."""
    return len(call.participants) > 2


# ---------------------------------------------------------------- R-CALL-4


@dataclass(frozen=True, slots=True)
class ExternalNumber:
    e164: str
    #: ``False`` for a number that parses and is possible but not valid: still
    #: looked up and logged, but an "invalid number" for R-SFV-4.
    valid: bool
    #: English country name (R-SF-FIELDS ``country``); empty when invalid.
    country: str
    international: str


def external_number(call: Call) -> ExternalNumber | None:
    """R-CALL-4: the customer's number in E.164, or ``None`` when there is none."""
    raw = (call.raw_digits or "").strip()
    if not raw or raw.lower() == "anonymous":
        return None
    if raw.startswith("+"):
        # An international number ignores the default region: the same caller on lines of
        # different countries is then parsed once, not once per line.
        return _external(raw, None)
    region = (call.number.country if call.number and call.number.country else None) or None
    return _external(raw, region.upper() if region else None)


# Parsing and validating a number is the costliest step per call (NANP validity walks
# many regions), and a company's callers repeat: remember the answers. Bounded so that
# memory stays flat however many distinct callers a backfill meets (a frequent caller
# stays in; 8,192 answers are about 4 MB).
@functools.lru_cache(maxsize=8192)
def _external(raw: str, region: str | None) -> ExternalNumber | None:
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    valid = phonenumbers.is_valid_number(parsed)
    return ExternalNumber(
        e164=phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164),
        valid=valid,
        country=country_name(parsed) if valid else "",
        international=phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL),
    )


def country_name(parsed: phonenumbers.PhoneNumber) -> str:
    """The English country name of a number, exactly as ``geocoder.country_name_for_number(n, "en")``.

    Importing ``phonenumbers.geocoder`` loads every geocoding prefix of every
    language (~95 MB here) for one small table of country names; that table is
    read on its own instead. The choice of region mirrors the geocoder's own
    code (a number that could belong to several regions gets no name); a test
    checks both agree. Should the table move, the geocoder itself is used.
    """
    codes = phonenumbers.region_codes_for_country_code(parsed.country_code)
    if len(codes) == 1:
        region = codes[0]
    else:
        valid = [code for code in codes if phonenumbers.is_valid_number_for_region(parsed, code)]
        if len(valid) != 1:
            return ""
        region = valid[0]
    table = _locale_names()
    if table is None:
        from phonenumbers import geocoder

        return geocoder.country_name_for_number(parsed, "en")
    names = table.get(region) or {}
    name = names.get("en", "")
    if name.startswith("*"):  # "*xx": the name is held under language xx
        name = names.get(name[1:], "")
    return name


@functools.cache
def _locale_names() -> dict | None:
    import importlib.util
    from pathlib import Path

    path = Path(phonenumbers.__file__).with_name("geodata") / "locale.py"
    try:
        # Loaded as a module of its own: Python uses the installed bytecode (compiling
        # the 600 KB source would itself cost ~75 MB), and the heavy geodata package
        # (its __init__) is not imported; the module's relative import only needs
        # phonenumbers.util.
        spec = importlib.util.spec_from_file_location("phonenumbers.geodata.locale", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.LOCALE_DATA
    except Exception:  # noqa: BLE001 - any surprise: fall back to the geocoder
        return None


def aircall_number_e164(call: Call) -> str | None:
    """The Aircall line in E.164 (``+`` included), from ``e164_digits`` or ``digits``."""
    if call.number is None:
        return None
    return _line_e164(call.number.e164_digits, call.number.digits, (call.number.country or "").upper() or None)


@functools.lru_cache(maxsize=4096)
def _line_e164(e164_digits: str | None, digits: str | None, region: str | None) -> str | None:
    for candidate in (e164_digits, digits):
        if not candidate:
            continue
        try:
            parsed = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return None


# ---------------------------------------------------------------- R-CALL-5..9


def settled(call: Call, now: datetime, lag: timedelta) -> tuple[bool, str | None]:
    """R-CALL-5: finished (``done`` with ``ended_at``) and ended at least ``lag`` ago."""
    if call.status != "done" or call.ended_at is None:
        return False, f"not finished yet (status {call.status or 'unknown'})"
    if call.ended_at > now - lag:
        return False, f"ended less than {_human(lag)} ago (Aircall may still rewrite it)"
    return True, None


def talk_seconds(call: Call) -> int:
    """R-CALL-6: ``ended_at − answered_at`` when answered, else 0."""
    if call.answered_at is None or call.ended_at is None:
        return 0
    return max(0, int((call.ended_at - call.answered_at).total_seconds()))


def wait_seconds(call: Call) -> int:
    """R-CALL-6: how long an inbound caller waited; 0 for outbound calls."""
    if not is_inbound(call):
        return 0
    until = call.answered_at if call.answered_at is not None else call.ended_at
    if until is None:
        return 0
    return max(0, int((until - call.started_at).total_seconds()))


def answered_by(call: Call) -> User | None:
    """R-CALL-9: the transfer target when transferred to a user, else ``user``; none if unanswered."""
    if not is_answered(call):
        return None
    return call.transferred_to or call.user


@dataclass(frozen=True, slots=True)
class Media:
    kind: str  # "voicemail" | "recording"
    link: str


def media_link(call: Call, link: str = "asset") -> Media | None:
    """R-CALL-8: the link written to a CRM, never the 1-hour direct mp3 URL.

    ``link="asset"`` prefers the permanent asset page, ``"short_url"`` the 3-hour
    short URL; each falls back to the other rather than to nothing.
    """
    if call_kind(call) is Kind.VOICEMAIL:
        kind, short = "voicemail", call.voicemail_short_url
    elif call.recording or call.recording_short_url or call.asset:
        kind, short = "recording", call.recording_short_url
    else:
        return None
    order = (short, call.asset) if link == "short_url" else (call.asset, short)
    chosen = next((u for u in order if u), None)
    return Media(kind, chosen) if chosen else None


# ---------------------------------------------------------------- R-FLOW-1..2


def flow_for(kind: Kind, call_flow: Mapping[str, str]) -> Flow:
    """R-FLOW-1: the configured flow for this kind (defaults live in settings)."""
    return Flow(call_flow[kind.value])


def zone_for(call: Call, default: ZoneInfo) -> ZoneInfo:
    """The Aircall number's time zone, or ``default`` when it is missing or unknown."""
    return number_zone(call.number, default)


def number_zone(number, default: ZoneInfo) -> ZoneInfo:
    """An Aircall number's ``time_zone``, or ``default`` when it is missing or unknown."""
    name = number.time_zone if number else None
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return default


def outside_business_hours(
    call: Call, days: Collection[str], start: time, end: time, default_zone: ZoneInfo
) -> str | None:
    """R-FLOW-2: why the call is outside business hours, or ``None`` when inside."""
    if call.missed_call_reason == "out_of_opening_hours":
        return "outside business hours (Aircall: out_of_opening_hours)"
    return outside_hours(call.started_at, zone_for(call, default_zone), days, start, end)


def outside_hours(moment: datetime, zone: ZoneInfo, days: Collection[str], start: time, end: time) -> str | None:
    """Why ``moment``, read in ``zone``, is outside ``[sync.business_hours]``, or ``None`` when inside.

    Shared by calls (R-FLOW-2) and messages (R-MSG-3).
    """
    local = moment.astimezone(zone)
    day = WEEKDAYS[local.weekday()]
    if day not in days or not (start <= local.time().replace(tzinfo=None) < end):
        return f"outside business hours ({day} {local:%H:%M} {zone.key})"
    return None


@dataclass(frozen=True, slots=True)
class Decision:
    flow: Flow
    reason: str | None = None  # set for skips

    @property
    def skipped(self) -> bool:
        return self.flow is Flow.SKIP


def decide(
    call: Call,
    call_flow: Mapping[str, str],
    *,
    log_calls: str,
    days: Collection[str],
    start: time,
    end: time,
    default_zone: ZoneInfo,
    needs_external_number: bool = False,
) -> Decision:
    """R-FLOW-1, R-FLOW-2 (and R-FRONT-1's "no number" skip) for one target."""
    flow = flow_for(call_kind(call), call_flow)
    if flow is Flow.SKIP:
        return Decision(Flow.SKIP, "call flow")
    if log_calls == "business_hours":
        reason = outside_business_hours(call, days, start, end, default_zone)
        if reason:
            return Decision(Flow.SKIP, reason)
    if needs_external_number and external_number(call) is None:
        return Decision(Flow.SKIP, "no external number")
    return Decision(flow)


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# ---------------------------------------------------------------- all of it, per target


@dataclass(frozen=True, slots=True)
class Assessment:
    """Everything §1–2 say about one call, for each enabled target."""

    call: Call
    kind: Kind
    conference: bool
    external: ExternalNumber | None
    talk_seconds: int
    wait_seconds: int
    settled: bool
    unsettled_reason: str | None
    decisions: dict[str, Decision]
    #: The call's AI insights known when it is planned (RULES §8); ``None`` while AI is off or not looked up.
    insights: Insights | None = None

    #: Not a message (``message_rules.MessageAssessment`` is): targets plan both kinds side by side.
    message = None

    @property
    def key(self) -> int:
        """The item's key in the state store and in every plan: the call id (R-CALL-7)."""
        return self.call.id

    @property
    def message_id(self) -> str | None:
        return None


def assess(call: Call, settings, now: datetime, *, lag: timedelta | None = None) -> Assessment:
    """Apply RULES §1–2 with the user's settings (a ``settings.Settings``).

    ``lag`` replaces ``sync.lag`` (R-CALL-5): live mode logs a call as soon as a
    webhook shows it finished (DESIGN §10), with no lag.
    """
    sync = settings.sync
    hours = sync.business_hours
    is_settled, why = settled(call, now, sync.lag if lag is None else lag)
    decisions = {}
    for target, call_flow in settings.derived(_flow_tables):
        decisions[target] = decide(
            call,
            call_flow,
            log_calls=sync.log_calls,
            days=hours.days,
            start=hours.start,
            end=hours.end,
            default_zone=sync.tzinfo,
            needs_external_number=target == "front",
        )
    return Assessment(
        call=call,
        kind=call_kind(call),
        conference=is_conference(call),
        external=external_number(call),
        talk_seconds=talk_seconds(call),
        wait_seconds=wait_seconds(call),
        settled=is_settled,
        unsettled_reason=why,
        decisions=decisions,
    )



def _flow_tables(settings) -> tuple[tuple[str, dict[str, str]], ...]:
    """Each enabled target with its kind → flow table (built once per settings object, not per call)."""
    return tuple(
        (target, {kind.value: getattr(settings, target).call_flow.for_kind(kind.value) for kind in Kind})
        for target in settings.enabled_targets()
    )
