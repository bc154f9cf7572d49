"""Settings: read, check and type ``settings.toml`` (DESIGN §4).

The file is the only place where a user tells the tool what to do, so this
module is strict and talkative:

* every key is typed into frozen dataclasses (the rest of the program never sees
  raw TOML);
* ``${NAME}`` in any string is read from the environment, so secrets stay out of
  the file;
* unknown keys are errors, with a suggestion when a known key is close;
* every problem is collected and reported at once (``SettingsError``), each as
  ``<toml.path>: <what is wrong>``, so one ``aircall-sync check`` lists them all;
* secret values are wrapped in ``Secret`` and never appear in a message.

Public API: ``load_settings``, ``parse_settings``, ``default_settings_text``,
``write_example``, ``default_config_path``, the dataclasses below and ``Secret``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import importlib.resources
import json
import os
import re
import string
import tempfile
import tomllib
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aircall_sync.errors import SettingsError, UsageError

_T = TypeVar("_T")

__all__ = [
    "AI_FIELD_KEYS",
    "AiSettings",
    "AircallSettings",
    "ContactsSettings",
    "BusinessHours",
    "CALL_KINDS",
    "CONFIG_ENV_VAR",
    "CallFlow",
    "DEFAULT_CONFIG_NAME",
    "FRONT_QUALIFICATIONS",
    "FrontSettings",
    "FrontSubjects",
    "LOCALES",
    "FrontMessages",
    "MESSAGE_SUBJECT_KEYS",
    "MESSAGE_SUBJECT_PLACEHOLDERS",
    "MESSAGE_SUBJECT_TEMPLATES",
    "MediaSettings",
    "MessageSubjects",
    "SUBJECT_KEYS",
    "SUBJECT_PLACEHOLDERS",
    "SUBJECT_TEMPLATES",
    "SalesforceMatching",
    "SalesforceMessages",
    "SalesforceSettings",
    "Secret",
    "Settings",
    "SettingsFileExistsError",
    "SyncSettings",
    "TaskFields",
    "TaskSettings",
    "TaskSubjects",
    "VoiceFields",
    "VoiceSettings",
    "AUTH_MODES",
    "DAYS",
    "FLOW_DECISIONS",
    "TARGETS",
    "default_config_path",
    "default_settings_text",
    "load_settings",
    "parse_settings",
    "toml_fields",
    "toml_key_paths",
    "write_example",
]

DEFAULT_CONFIG_NAME = "settings.toml"
CONFIG_ENV_VAR = "AIRCALL_SYNC_CONFIG"
EXAMPLE_RESOURCE = "settings.example.toml"

# RULES R-CALL-2, in the order the rules and the example file list them.
CALL_KINDS: tuple[str, ...] = (
    "outbound_answered",
    "outbound_unanswered",
    "inbound_answered",
    "missed",
    "voicemail",
)
FLOW_DECISIONS = ("completed", "open", "skip")
# R-SF-SUBJ: the five kinds plus the two conference variants.
SUBJECT_KEYS: tuple[str, ...] = (*CALL_KINDS, "outbound_conference", "inbound_conference")
SUBJECT_PLACEHOLDERS: tuple[str, ...] = ("record_name", "number_name", "user_name", "direction")
LOCALES = ("en", "fr", "de", "es")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
TARGETS = ("salesforce", "front")
#: R-AI-4: the keys of [salesforce.voice.fields] and [salesforce.task.fields] that hold AI insights, in the
#: order of RULES §8 (each is ``ai_`` + an insight kind).
AI_FIELD_KEYS: tuple[str, ...] = ("ai_summary", "ai_topics", "ai_sentiment", "ai_action_items", "ai_transcription")
AUTH_MODES = ("token", "jwt", "client_credentials", "password")

# R-SF-SUBJ. English is the rule's text; fr/de/es follow the wording of Aircall's
# own help centre in those languages (seeds 001/003) where it has one.
SUBJECT_TEMPLATES: dict[str, dict[str, str]] = {
    "en": {
        "outbound_answered": "Outbound answered call to {record_name} with {number_name}",
        "outbound_unanswered": "Outbound unanswered call to {record_name} with {number_name}",
        "inbound_answered": "Inbound call from {record_name} on {number_name}",
        "missed": "Missed call from {record_name} on {number_name}",
        "voicemail": "Voicemail from {record_name} on {number_name}",
        "outbound_conference": "Outbound conference call to {record_name} with {number_name}",
        "inbound_conference": "Inbound call from {record_name} on {number_name}",
    },
    "fr": {
        "outbound_answered": "Appel sortant avec réponse vers {record_name} depuis {number_name}",
        "outbound_unanswered": "Appel sortant sans réponse vers {record_name} depuis {number_name}",
        "inbound_answered": "Appel entrant de {record_name} sur {number_name}",
        "missed": "Appel manqué de {record_name} sur {number_name}",
        "voicemail": "Message vocal de {record_name} sur {number_name}",
        "outbound_conference": "Conférence sortante avec {record_name} depuis {number_name}",
        "inbound_conference": "Appel entrant de {record_name} sur {number_name}",
    },
    "de": {
        "outbound_answered": "Ausgehender beantworteter Anruf an {record_name} mit {number_name}",
        "outbound_unanswered": "Ausgehender unbeantworteter Anruf an {record_name} mit {number_name}",
        "inbound_answered": "Eingehender Anruf von {record_name} auf {number_name}",
        "missed": "Entgangener Anruf von {record_name} auf {number_name}",
        "voicemail": "Voicemail von {record_name} auf {number_name}",
        "outbound_conference": "Ausgehender Konferenzanruf an {record_name} mit {number_name}",
        "inbound_conference": "Eingehender Anruf von {record_name} auf {number_name}",
    },
    "es": {
        "outbound_answered": "Llamada saliente contestada a {record_name} desde {number_name}",
        "outbound_unanswered": "Llamada saliente no contestada a {record_name} desde {number_name}",
        "inbound_answered": "Llamada entrante de {record_name} en {number_name}",
        "missed": "Llamada perdida de {record_name} en {number_name}",
        "voicemail": "Mensaje de voz de {record_name} en {number_name}",
        "outbound_conference": "Llamada de conferencia saliente a {record_name} desde {number_name}",
        "inbound_conference": "Llamada entrante de {record_name} en {number_name}",
    },
}

# R-MSG-4: message Task subjects, per direction. {channel} is "SMS", or "WhatsApp" for a WhatsApp
# message; when {user_name} is empty, the word before it and the placeholder are left out
# ("SMS sent via …", not "SMS sent from  via …").
MESSAGE_SUBJECT_KEYS: tuple[str, ...] = ("outbound", "inbound")
MESSAGE_SUBJECT_PLACEHOLDERS: tuple[str, ...] = ("record_name", "number_name", "user_name", "channel",
                                                 "direction")
MESSAGE_SUBJECT_TEMPLATES: dict[str, dict[str, str]] = {
    "en": {
        "outbound": "{channel} sent from {user_name} via {number_name} to {record_name}",
        "inbound": "{channel} received from {record_name} to {number_name}",
    },
    "fr": {
        "outbound": "{channel} envoyé par {user_name} via {number_name} à {record_name}",
        "inbound": "{channel} reçu de {record_name} sur {number_name}",
    },
    "de": {
        "outbound": "{channel} gesendet von {user_name} über {number_name} an {record_name}",
        "inbound": "{channel} empfangen von {record_name} auf {number_name}",
    },
    "es": {
        "outbound": "{channel} enviado por {user_name} desde {number_name} a {record_name}",
        "inbound": "{channel} recibido de {record_name} en {number_name}",
    },
}

# R-FRONT-3 qualifications. The voicemail one is the whole subject, so Front
# rules can route on it (the French help centre names « Message vocal »).
FRONT_QUALIFICATIONS: dict[str, dict[str, str]] = {
    "en": {
        "outbound_answered": "Outbound call",
        "outbound_unanswered": "Outbound unanswered call",
        "inbound_answered": "Inbound call",
        "missed": "Missed call",
        "voicemail": "Voicemail",
    },
    "fr": {
        "outbound_answered": "Appel sortant",
        "outbound_unanswered": "Appel sortant sans réponse",
        "inbound_answered": "Appel entrant",
        "missed": "Appel manqué",
        "voicemail": "Message vocal",
    },
    "de": {
        "outbound_answered": "Ausgehender Anruf",
        "outbound_unanswered": "Ausgehender unbeantworteter Anruf",
        "inbound_answered": "Eingehender Anruf",
        "missed": "Verpasster Anruf",
        "voicemail": "Voicemail",
    },
    "es": {
        "outbound_answered": "Llamada saliente",
        "outbound_unanswered": "Llamada saliente no contestada",
        "inbound_answered": "Llamada entrante",
        "missed": "Llamada perdida",
        "voicemail": "Mensaje de voz",
    },
}

_MASK = "********"


class Secret:
    """A credential. Printing, logging or formatting it shows ``********``.

    DESIGN §3: secrets never appear in output, logs, reports or tracebacks, and a
    frozen dataclass's ``repr`` (shown in tracebacks with locals) goes through
    ``__repr__`` here. Only ``reveal()`` gives the value, so every place that
    sends it somewhere is easy to find.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str = "") -> None:
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return f"Secret('{_MASK}')"

    def __str__(self) -> str:
        return _MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Secret is immutable")

    def __copy__(self) -> Secret:
        return self  # immutable; also keeps dataclasses.asdict() and deepcopy working

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    def __reduce__(self) -> Any:
        # Pickling would write the value in clear to wherever the pickle goes.
        raise TypeError("a Secret cannot be pickled")


class SettingsFileExistsError(UsageError, FileExistsError):
    """``init`` would overwrite an existing file (exit 2 through ``UsageError``)."""


# --- field metadata --------------------------------------------------------------
#
# The dataclasses are the schema: a field is a TOML key unless marked derived,
# and a field marked as a section is a sub-table. Unknown-key detection, the
# example-coverage test and the parser all read this, so a key added to a
# dataclass is accepted, parsed and required in the example file at once.

_Parser = Callable[["_Context", str, Any], Any]


def _key(default: Any, parse: _Parser, *, secret: bool = False, shown: bool = True) -> Any:
    # shown=False keeps a key out of the dataclass's repr: the AI field names (RULES §8) are left out
    # of what fingerprints hash, so that adding them changed no call's fingerprint while AI is off.
    return field(default=default, metadata={"parse": parse, "secret": secret}, repr=shown)


def _section(cls: type) -> Any:
    return field(default_factory=cls, metadata={"section": cls})


def _derived(default: Any) -> Any:
    return field(default=default, metadata={"toml": False})


def _enabled_fields(section: Any, ai: bool = False) -> dict[str, str]:
    """A ``fields`` section's key → API name for the fields not turned off.

    The ``ai_*`` keys (RULES R-AI-4) only with ``ai`` (``aircall.ai.enabled``).
    Read for every call, so computed once: sections are frozen.
    """
    enabled = _memo(section, _enabled_with_ai if ai else _enabled_of)
    return dict(enabled)  # a copy: the caller may change it


def _enabled_with_ai(section: Any) -> dict[str, str]:
    return {f.name: getattr(section, f.name) for f in toml_fields(type(section)) if getattr(section, f.name)}


def _enabled_of(section: Any) -> dict[str, str]:
    return {k: v for k, v in _enabled_with_ai(section).items() if k not in AI_FIELD_KEYS}


def _memo(frozen: Any, build: Callable[[Any], _T]) -> _T:
    """``build(frozen)``, computed once per object of a frozen settings dataclass.

    What is read off a frozen object alone never changes. The cache is not a
    field: equality, hashing and ``repr`` ignore it.
    """
    cache = frozen.__dict__.get("_memo")
    if cache is None:
        cache = {}
        object.__setattr__(frozen, "_memo", cache)
    try:
        return cache[build]
    except KeyError:
        value = cache[build] = build(frozen)
        return value


def toml_fields(cls: type) -> list[dataclasses.Field[Any]]:
    """The fields of a settings dataclass that are keys (or sub-tables) in TOML."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("toml", True)]


def toml_key_paths(cls: type | None = None, prefix: str = "") -> list[str]:
    """Every TOML key path the loader accepts, e.g. ``sync.business_hours.days``.

    Sub-tables are listed too (``sync.business_hours``), before their keys.
    """
    cls = Settings if cls is None else cls
    paths: list[str] = []
    for f in toml_fields(cls):
        path = f"{prefix}.{f.name}" if prefix else f.name
        paths.append(path)
        if "section" in f.metadata:
            paths.extend(toml_key_paths(f.metadata["section"], path))
    return paths


# --- value parsers ------------------------------------------------------------------

_INVALID = object()  # a value that produced a problem; the default stands in for it
_UNSET = object()  # a lenient ${NAME} whose variable is missing: as if the key were absent
_UNSET_TABLE = object()  # a sub-table absent from the file: all its defaults apply


def _show(value: Any) -> str:
    """A value as TOML would spell it, for ``got …`` in messages (never a secret)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 80 else text[:76] + '…"'
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            return "an array of tables"
        text = "[" + ", ".join(_show(v) for v in value) + "]"
        return text if len(text) <= 80 else text[:77] + "…]"
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    return f"a {type(value).__name__}"


def _kind_of(value: Any) -> str:
    """The type of a value, for messages about secrets (which must not echo it)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__}"


def _text(*, required: bool = False, max_len: int | None = None) -> _Parser:
    def parse(ctx: _Context, path: str, value: Any) -> Any:
        if not isinstance(value, str):
            return ctx.expected(path, "a string", value)
        if required and not value.strip():
            return ctx.expected(path, "a non-empty string", value)
        if max_len is not None and len(value) > max_len:
            return ctx.expected(path, f"at most {max_len} characters", value)
        return value

    return parse


def _secret(ctx: _Context, path: str, value: Any) -> Any:
    if not isinstance(value, str):
        ctx.bad.add(path)
        ctx.problem(path, f"expected a string, got {_kind_of(value)}")
        return _INVALID
    return Secret(value)


def _enum(*choices: str) -> _Parser:
    what = "one of " + ", ".join(choices)

    def parse(ctx: _Context, path: str, value: Any) -> Any:
        if isinstance(value, str) and value in choices:
            return value
        return ctx.expected(path, what, value)

    return parse


def _bool(ctx: _Context, path: str, value: Any) -> Any:
    if isinstance(value, bool):
        return value
    return ctx.expected(path, "true or false", value)


def _int(minimum: int, maximum: int | None = None) -> _Parser:
    if maximum is not None:
        what = f"an integer from {minimum} to {maximum}"
    elif minimum == 1:
        what = "a positive integer"
    else:
        what = f"an integer of at least {minimum}"

    def parse(ctx: _Context, path: str, value: Any) -> Any:
        # bool is an int in Python; `batch_size = true` is a mistake, not 1.
        if isinstance(value, int) and not isinstance(value, bool):
            if value >= minimum and (maximum is None or value <= maximum):
                return value
        return ctx.expected(path, what, value)

    return parse


_DURATION_RE = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def _duration(ctx: _Context, path: str, value: Any) -> Any:
    what = 'a duration like "90s", "30m", "24h", "2d" or "1h30m"'
    if isinstance(value, str):
        match = _DURATION_RE.fullmatch(value.strip())
        if match and any(match.groups()):
            days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
            try:
                return dt.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
            except OverflowError:
                return ctx.expected(path, "a duration of less than a million days", value)
    return ctx.expected(path, what, value)


def _url(ctx: _Context, path: str, value: Any) -> Any:
    what = 'an http:// or https:// URL such as "https://example.com"'
    if not isinstance(value, str):
        return ctx.expected(path, what, value)
    if value == "":
        return ""  # "not set"; whether it is needed is decided by the section
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return ctx.expected(path, what, value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        return ctx.expected(path, what, value)
    # Clients join paths onto it; a trailing slash would double them.
    return value.rstrip("/")


_API_VERSION_RE = re.compile(r"[1-9][0-9]*\.0")


def _api_version(ctx: _Context, path: str, value: Any) -> Any:
    if isinstance(value, str) and _API_VERSION_RE.fullmatch(value):
        return value
    return ctx.expected(path, 'a Salesforce API version like "63.0"', value)


_API_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def _api_name(*, required: bool) -> _Parser:
    what = 'a Salesforce API name like "aircall__Example__c"'
    if not required:
        what += ' or "" to leave the field out'

    def parse(ctx: _Context, path: str, value: Any) -> Any:
        if isinstance(value, str) and (
            _API_NAME_RE.fullmatch(value) or (value == "" and not required)
        ):
            return value
        return ctx.expected(path, what, value)

    return parse


_SF_ID_RE = re.compile(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?")


def _sf_id(label: str, prefix: str | None) -> _Parser:
    what = f"a Salesforce {label} id (15 or 18 characters"
    what += f", starting with {prefix})" if prefix else ")"
    what += ' or ""'

    def parse(ctx: _Context, path: str, value: Any) -> Any:
        if isinstance(value, str):
            if value == "":
                return value
            if _SF_ID_RE.fullmatch(value) and (prefix is None or value.startswith(prefix)):
                return value
        return ctx.expected(path, what, value)

    return parse


def _username(ctx: _Context, path: str, value: Any) -> Any:
    if isinstance(value, str) and (value == "" or "@" in value):
        return value
    return ctx.expected(path, 'a Salesforce username (it has the form of an e-mail address)', value)


def _path(ctx: _Context, path: str, value: Any) -> Any:
    """A file path; relative ones are relative to the settings file's directory."""
    if not isinstance(value, str):
        return ctx.expected(path, "a file path", value)
    if value == "":
        return None
    if "\0" in value:
        return ctx.expected(path, "a file path", value)
    result = Path(value).expanduser()
    # A cron job runs in another directory than the one `init` was run in;
    # anchoring to the settings file keeps state and keys where the user put them.
    if not result.is_absolute() and ctx.base_dir is not None:
        result = ctx.base_dir / result
    return result


def _state_path(ctx: _Context, path: str, value: Any) -> Any:
    result = _path(ctx, path, value)
    if result is None:
        return ctx.expected(path, "a file path", value)
    return result


_HHMM_RE = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


def _hhmm(ctx: _Context, path: str, value: Any) -> Any:
    # A bare TOML local time (start = 09:00:00) is accepted as well as a string.
    if isinstance(value, dt.time) and value.tzinfo is None:
        return value
    if isinstance(value, str):
        match = _HHMM_RE.fullmatch(value)
        if match:
            return dt.time(int(match.group(1)), int(match.group(2)))
    return ctx.expected(path, 'a time "HH:MM" (24-hour clock)', value)


def _days(ctx: _Context, path: str, value: Any) -> Any:
    what = "a list of days among " + ", ".join(DAYS)
    if not isinstance(value, list):
        return ctx.expected(path, what, value)
    ok = True
    seen: list[str] = []
    for i, day in enumerate(value):
        if not isinstance(day, str) or day not in DAYS:
            ctx.expected(f"{path}[{i}]", "one of " + ", ".join(DAYS), day)
            ok = False
        elif day in seen:
            ctx.problem(f"{path}[{i}]", f"{_show(day)} is listed twice")
            ok = False
        else:
            seen.append(day)
    if ok and not seen:
        return ctx.expected(path, "at least one day", value)
    return tuple(seen) if ok else _INVALID


def _timezone(ctx: _Context, path: str, value: Any) -> Any:
    if not isinstance(value, str):
        return ctx.expected(path, 'an IANA time zone name like "Europe/Paris"', value)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # Directories ("Europe"), absolute paths and empty strings land here too.
        ctx.bad.add(path)
        ctx.problem(
            path, f'unknown time zone {_show(value)} (expected an IANA name like "Europe/Paris")'
        )
        return _INVALID
    return value


def _template(placeholders: Iterable[str]) -> _Parser:
    allowed = tuple(placeholders)
    listing = ", ".join("{" + p + "}" for p in allowed)

    def parse(ctx: _Context, path: str, value: Any) -> Any:
        if not isinstance(value, str) or not value.strip():
            return ctx.expected(path, "a non-empty string", value)
        try:
            pieces = list(string.Formatter().parse(value))
        except ValueError as exc:
            ctx.bad.add(path)
            ctx.problem(path, f"invalid template ({exc}); write {{{{ and }}}} for literal braces")
            return _INVALID
        for _, name, spec, conversion in pieces:
            if name is None:
                continue
            # Only bare names: "{record_name.__class__}" or "{0}" must not reach str.format.
            if name not in allowed or spec or conversion:
                shown = name + ("!" + conversion if conversion else "") + (":" + spec if spec else "")
                shown = "{" + shown + "}"
                ctx.bad.add(path)
                ctx.problem(path, f"unknown placeholder {shown}; available: {listing}")
                return _INVALID
        return value

    return parse


# --- the settings dataclasses -------------------------------------------------------


@dataclass(frozen=True)
class AiSettings:
    """``[aircall.ai]``: Aircall AI insights (RULES §8, R-AI-1..4)."""

    enabled: bool = _key(False, _bool)
    #: R-AI-1: backfill/sync ask for the insights of answered calls with at least this much talk.
    min_talk_seconds: int = _key(30, _int(0, 86_400))
    #: R-AI-1: a 404 is final once the call ended longer ago than this (AI data comes after the call).
    settle: dt.timedelta = _key(dt.timedelta(hours=2), _duration)


@dataclass(frozen=True)
class ContactsSettings:
    """``[aircall.contacts]``: matched Salesforce records saved as Aircall contacts (RULES §9, R-CONTACT-1..4)."""

    #: R-CONTACT-1: after a call or message is logged against an existing Salesforce record, save it in Aircall.
    save_matched: bool = _key(False, _bool)
    #: R-CONTACT-1: records this tool created for an unknown number (R-SF-MATCH-4) are saved too.
    save_created: bool = _key(False, _bool)


@dataclass(frozen=True)
class AircallSettings:
    """``[aircall]``: the source of the calls."""

    api_id: str = _key("", _text())
    api_token: Secret = _key(Secret(""), _secret, secret=True)
    base_url: str = _key("https://api.aircall.io/v1", _url)
    requests_per_minute: int = _key(60, _int(1))
    ai: AiSettings = _section(AiSettings)
    contacts: ContactsSettings = _section(ContactsSettings)


@dataclass(frozen=True)
class BusinessHours:
    """``[sync.business_hours]``: opening days and hours (R-FLOW-2)."""

    days: tuple[str, ...] = _key(("mon", "tue", "wed", "thu", "fri"), _days)
    start: dt.time = _key(dt.time(9, 0), _hhmm)
    end: dt.time = _key(dt.time(18, 0), _hhmm)

    @property
    def weekdays(self) -> frozenset[int]:
        """Open days as ``datetime.weekday()`` numbers (Monday = 0)."""
        return frozenset(DAYS.index(d) for d in self.days)

    def includes(self, local: dt.datetime) -> bool:
        """Whether a wall-clock time falls in business hours (``end`` excluded)."""
        return local.weekday() in self.weekdays and self.start <= local.time() < self.end


@dataclass(frozen=True)
class SyncSettings:
    """``[sync]``: what a run reads and where it keeps its state."""

    timezone: str = _key("UTC", _timezone)
    lag: dt.timedelta = _key(dt.timedelta(minutes=30), _duration)
    revisit: dt.timedelta = _key(dt.timedelta(hours=24), _duration)
    state_path: Path = _key(Path("aircall-sync.sqlite3"), _state_path)
    log_calls: str = _key("always", _enum("always", "business_hours"))
    log_messages: str = _key("always", _enum("always", "business_hours"))
    business_hours: BusinessHours = _section(BusinessHours)
    # The ZoneInfo of `timezone`, so callers never build (or mistype) it again.
    tzinfo: ZoneInfo = _derived(ZoneInfo("UTC"))


@dataclass(frozen=True)
class CallFlow:
    """``[salesforce.call_flow]`` / ``[front.call_flow]``: per call kind (R-FLOW-1)."""

    outbound_answered: str = _key("completed", _enum(*FLOW_DECISIONS))
    outbound_unanswered: str = _key("completed", _enum(*FLOW_DECISIONS))
    inbound_answered: str = _key("completed", _enum(*FLOW_DECISIONS))
    missed: str = _key("open", _enum(*FLOW_DECISIONS))
    voicemail: str = _key("open", _enum(*FLOW_DECISIONS))

    def for_kind(self, kind: str) -> str:
        """``completed`` | ``open`` | ``skip`` for a call kind of R-CALL-2."""
        if kind not in CALL_KINDS:
            raise ValueError(f"unknown call kind {kind!r}; expected one of {', '.join(CALL_KINDS)}")
        return getattr(self, kind)


@dataclass(frozen=True)
class SalesforceMatching:
    """``[salesforce.matching]``: R-SF-MATCH-4/6 and R-SF-OWNER."""

    unknown_number: str = _key("lead", _enum("lead", "contact", "account", "nothing"))
    link_to: str = _key("none", _enum("none", "case", "opportunity"))
    create_case: bool = _key(False, _bool)
    fallback_owner_id: str = _key("", _sf_id("User", "005"))
    new_lead_company: str = _key("Unknown company", _text(required=True, max_len=255))
    reassign_integration_owned: bool = _key(True, _bool)


_SF_TEMPLATE = _template(SUBJECT_PLACEHOLDERS)
_EN_SUBJECTS = SUBJECT_TEMPLATES["en"]


@dataclass(frozen=True)
class TaskSubjects:
    """``[salesforce.task.subjects]``: Task Subject templates (R-SF-SUBJ).

    Parsed values are complete: a key the file leaves out holds the template of
    ``salesforce.task.subject_locale``.
    """

    outbound_answered: str = _key(_EN_SUBJECTS["outbound_answered"], _SF_TEMPLATE)
    outbound_unanswered: str = _key(_EN_SUBJECTS["outbound_unanswered"], _SF_TEMPLATE)
    inbound_answered: str = _key(_EN_SUBJECTS["inbound_answered"], _SF_TEMPLATE)
    missed: str = _key(_EN_SUBJECTS["missed"], _SF_TEMPLATE)
    voicemail: str = _key(_EN_SUBJECTS["voicemail"], _SF_TEMPLATE)
    outbound_conference: str = _key(_EN_SUBJECTS["outbound_conference"], _SF_TEMPLATE)
    inbound_conference: str = _key(_EN_SUBJECTS["inbound_conference"], _SF_TEMPLATE)

    def template(self, kind: str, conference: bool = False) -> str:
        """The template for a call kind; a conference (R-CALL-3) changes only answered calls'."""
        if kind not in CALL_KINDS:
            raise ValueError(f"unknown call kind {kind!r}; expected one of {', '.join(CALL_KINDS)}")
        if conference and kind == "outbound_answered":
            return self.outbound_conference
        if conference and kind == "inbound_answered":
            return self.inbound_conference
        return getattr(self, kind)


@dataclass(frozen=True)
class TaskFields:
    """``[salesforce.task.fields]``: custom Task field API names (R-SF-FIELDS); "" = off."""

    waiting_time: str = _key("aircall__Waiting_Time__c", _api_name(required=False))
    answered_by: str = _key("aircall__Answered_by__c", _api_name(required=False))
    phone_number: str = _key("aircall__Phone_number__c", _api_name(required=False))
    country: str = _key("aircall__Country__c", _api_name(required=False))
    call_recording: str = _key("aircall__Call_Recording__c", _api_name(required=False))
    transferred_to: str = _key("aircall__Transferred_to__c", _api_name(required=False))
    timezone: str = _key("aircall__Timezone__c", _api_name(required=False))
    hour_of_day: str = _key("aircall__Hour_of_the_day__c", _api_name(required=False))
    connection_status: str = _key("aircall__Connection_status__c", _api_name(required=False))
    has_connected: str = _key("aircall__Has_connected__c", _api_name(required=False))
    # R-AI-4: optional Task fields for the AI insights (default empty: the Description's part only).
    ai_summary: str = _key("", _api_name(required=False), shown=False)
    ai_topics: str = _key("", _api_name(required=False), shown=False)
    ai_sentiment: str = _key("", _api_name(required=False), shown=False)
    ai_action_items: str = _key("", _api_name(required=False), shown=False)
    ai_transcription: str = _key("", _api_name(required=False), shown=False)

    def enabled(self, ai: bool = False) -> dict[str, str]:
        """Setting key → API name, for the fields that are not turned off; the ``ai_*`` ones only with
        ``ai`` (``aircall.ai.enabled``)."""
        return _enabled_fields(self, ai)


@dataclass(frozen=True)
class TaskSettings:
    """``[salesforce.task]``: the Task written in mode ``task`` (R-SF-TASK-*)."""

    status_completed: str = _key("Completed", _text(required=True, max_len=255))
    status_open: str = _key("In Progress", _text(required=True, max_len=255))
    subject_locale: str = _key("en", _enum(*LOCALES))
    record_type_id: str = _key("", _sf_id("RecordType", "012"))
    subjects: TaskSubjects = _section(TaskSubjects)
    fields: TaskFields = _section(TaskFields)

    def status_for(self, decision: str) -> str:
        """Task Status for a call-flow decision ``completed`` or ``open`` (R-SF-TASK-3)."""
        if decision == "completed":
            return self.status_completed
        if decision == "open":
            return self.status_open
        raise ValueError(f"no Task status for call-flow decision {decision!r}")


_MSG_TEMPLATE = _template(MESSAGE_SUBJECT_PLACEHOLDERS)
_EN_MESSAGE_SUBJECTS = MESSAGE_SUBJECT_TEMPLATES["en"]
_MESSAGE_LOG = _enum("all", "inbound", "outbound", "none")


@dataclass(frozen=True)
class MessageSubjects:
    """``[salesforce.messages.subjects]``: message Task Subject templates (R-MSG-4).

    A key the file leaves out holds the template of ``salesforce.task.subject_locale``.
    """

    outbound: str = _key(_EN_MESSAGE_SUBJECTS["outbound"], _MSG_TEMPLATE)
    inbound: str = _key(_EN_MESSAGE_SUBJECTS["inbound"], _MSG_TEMPLATE)

    def template(self, direction: str) -> str:
        return self.outbound if direction == "outbound" else self.inbound


@dataclass(frozen=True)
class SalesforceMessages:
    """``[salesforce.messages]``: SMS/MMS/WhatsApp messages as Tasks (RULES §7)."""

    log: str = _key("all", _MESSAGE_LOG)
    task_type: str = _key("", _text(max_len=255))
    subjects: MessageSubjects = _section(MessageSubjects)


@dataclass(frozen=True)
class FrontMessages:
    """``[front.messages]``: messages imported into the contact's conversation (R-MSG-5)."""

    log: str = _key("all", _MESSAGE_LOG)


@dataclass(frozen=True)
class MediaSettings:
    """``[salesforce.recording]`` / ``[salesforce.voicemail]``: media links (R-CALL-8)."""

    store: bool = _key(True, _bool)
    where: str = _key("field", _enum("field", "description", "both"))
    link: str = _key("asset", _enum("asset", "short_url"))


@dataclass(frozen=True)
class VoiceFields:
    """``[salesforce.voice.fields]``: Aircall Voice record field API names (R-SFV-3)."""

    # The reconciliation key cannot be turned off: without it a re-run duplicates.
    call_id: str = _key("aircall__Call_Id__c", _api_name(required=True))
    call_type: str = _key("aircall__Call_Type__c", _api_name(required=False))
    detailed_type: str = _key("aircall__Detailed_Type__c", _api_name(required=False))
    started_at: str = _key("aircall__Started_At__c", _api_name(required=False))
    answered_at: str = _key("aircall__Answered_At__c", _api_name(required=False))
    ended_at: str = _key("aircall__Ended_At__c", _api_name(required=False))
    duration: str = _key("aircall__Duration__c", _api_name(required=False))
    aircall_number: str = _key("aircall__Aircall_Number__c", _api_name(required=False))
    contact: str = _key("aircall__Contact__c", _api_name(required=False))
    lead: str = _key("aircall__Lead__c", _api_name(required=False))
    account: str = _key("aircall__Account__c", _api_name(required=False))
    media_link: str = _key("aircall__Recording__c", _api_name(required=False))
    tags: str = _key("aircall__Tags__c", _api_name(required=False))
    comments: str = _key("aircall__Comments__c", _api_name(required=False))
    assigned_to: str = _key("aircall__Assigned_To__c", _api_name(required=False))
    answered_by: str = _key("aircall__Answered_By__c", _api_name(required=False))
    # R-AI-4: the AI insights (our names, not confirmed against Aircall's package; written only when
    # aircall.ai.enabled).
    ai_summary: str = _key("aircall__AI_Summary__c", _api_name(required=False), shown=False)
    ai_topics: str = _key("aircall__AI_Topics__c", _api_name(required=False), shown=False)
    ai_sentiment: str = _key("aircall__AI_Sentiment__c", _api_name(required=False), shown=False)
    ai_action_items: str = _key("aircall__AI_Action_Items__c", _api_name(required=False), shown=False)
    ai_transcription: str = _key("aircall__AI_Transcription__c", _api_name(required=False), shown=False)

    def enabled(self, ai: bool = False) -> dict[str, str]:
        """Setting key → API name, for the fields that are not turned off; the ``ai_*`` ones only with
        ``ai`` (``aircall.ai.enabled``)."""
        return _enabled_fields(self, ai)


@dataclass(frozen=True)
class VoiceSettings:
    """``[salesforce.voice]``: Service Cloud Voice mode (R-SFV-*)."""

    call_center_id: str = _key("", _sf_id("CallCenter", None))
    aircall_voice_object: str = _key("aircall__Aircall_Voice__c", _api_name(required=True))
    voice_call_link_field: str = _key("aircall__Aircall_Voice__c", _api_name(required=True))
    fields: VoiceFields = _section(VoiceFields)


# Which credential keys each auth mode reads (requirement 6). Keys outside the
# set are ignored by that mode, so a ${NAME} in them may be unset.
_AUTH_REQUIRED: dict[str, tuple[str, ...]] = {
    "token": ("access_token",),
    "jwt": ("username", "consumer_key", "private_key_file"),
    "client_credentials": ("consumer_key", "consumer_secret"),
    "password": ("username", "password"),
}
_AUTH_OPTIONAL: dict[str, tuple[str, ...]] = {
    "token": (),
    "jwt": (),
    "client_credentials": (),
    "password": ("security_token", "consumer_key", "consumer_secret"),
}
_CREDENTIAL_KEYS = (
    "access_token",
    "username",
    "consumer_key",
    "private_key_file",
    "consumer_secret",
    "password",
    "security_token",
)


@dataclass(frozen=True)
class SalesforceSettings:
    """``[salesforce]``: the Salesforce target."""

    enabled: bool = _key(False, _bool)
    mode: str = _key("task", _enum("task", "voice"))
    instance_url: str = _key("", _url)
    api_version: str = _key("63.0", _api_version)
    auth: str = _key("token", _enum(*AUTH_MODES))
    access_token: Secret = _key(Secret(""), _secret, secret=True)
    username: str = _key("", _username)
    consumer_key: str = _key("", _text())
    private_key_file: Path | None = _key(None, _path)
    consumer_secret: Secret = _key(Secret(""), _secret, secret=True)
    password: Secret = _key(Secret(""), _secret, secret=True)
    security_token: Secret = _key(Secret(""), _secret, secret=True)
    batch_size: int = _key(200, _int(1, 200))
    bulk_threshold: int = _key(2000, _int(1))
    ca_bundle: Path | None = _key(None, _path)
    call_flow: CallFlow = _section(CallFlow)
    matching: SalesforceMatching = _section(SalesforceMatching)
    task: TaskSettings = _section(TaskSettings)
    recording: MediaSettings = _section(MediaSettings)
    voicemail: MediaSettings = _section(MediaSettings)
    voice: VoiceSettings = _section(VoiceSettings)
    messages: SalesforceMessages = _section(SalesforceMessages)

    @property
    def api_version_number(self) -> float:
        return float(self.api_version)


_FRONT_QUALIFICATION = _text(required=True, max_len=255)
_EN_QUALIFICATIONS = FRONT_QUALIFICATIONS["en"]


@dataclass(frozen=True)
class FrontSubjects:
    """``[front.subjects]``: the qualification of each call kind (R-FRONT-3).

    Parsed values are complete: a key the file leaves out holds the
    qualification of ``front.subject_locale``.
    """

    outbound_answered: str = _key(_EN_QUALIFICATIONS["outbound_answered"], _FRONT_QUALIFICATION)
    outbound_unanswered: str = _key(_EN_QUALIFICATIONS["outbound_unanswered"], _FRONT_QUALIFICATION)
    inbound_answered: str = _key(_EN_QUALIFICATIONS["inbound_answered"], _FRONT_QUALIFICATION)
    missed: str = _key(_EN_QUALIFICATIONS["missed"], _FRONT_QUALIFICATION)
    voicemail: str = _key(_EN_QUALIFICATIONS["voicemail"], _FRONT_QUALIFICATION)

    def qualification(self, kind: str) -> str:
        if kind not in CALL_KINDS:
            raise ValueError(f"unknown call kind {kind!r}; expected one of {', '.join(CALL_KINDS)}")
        return getattr(self, kind)

    def subject(self, kind: str, number_name: str) -> str:
        """``{qualification} - {number_name}``; a voicemail's is the qualification alone."""
        qualification = self.qualification(kind)
        return qualification if kind == "voicemail" else f"{qualification} - {number_name}"


@dataclass(frozen=True)
class FrontSettings:
    """``[front]``: the Front target."""

    enabled: bool = _key(False, _bool)
    api_token: Secret = _key(Secret(""), _secret, secret=True)
    base_url: str = _key("https://api2.frontapp.com", _url)
    inbox: str = _key("Aircall Phone", _text(required=True))
    requests_per_minute: int = _key(50, _int(1))
    activities: str = _key("separate", _enum("separate", "combined"))
    subject_locale: str = _key("en", _enum(*LOCALES))
    call_flow: CallFlow = _section(CallFlow)
    subjects: FrontSubjects = _section(FrontSubjects)
    messages: FrontMessages = _section(FrontMessages)


def _port(ctx: _Context, path: str, value: Any) -> Any:
    return _int(1, 65535)(ctx, path, value)


def _url_path(ctx: _Context, path: str, value: Any) -> Any:
    if isinstance(value, str) and value.startswith("/") and " " not in value and "?" not in value and "#" not in value:
        return value.rstrip("/") or "/"
    return ctx.expected(path, 'a URL path starting with "/", such as "/aircall/webhook"', value)


@dataclass(frozen=True)
class LiveSettings:
    """``[live]``: ``serve``, the webhook receiver of live mode (DESIGN §10)."""

    host: str = _key("127.0.0.1", _text(required=True))
    port: int = _key(8080, _port)
    path: str = _key("/aircall/webhook", _url_path)
    webhook_token: Secret = _key(Secret(""), _secret, secret=True)
    public_url: str = _key("", _url)
    tls_cert_file: Path | None = _key(None, _path)
    tls_key_file: Path | None = _key(None, _path)
    reconcile_every: dt.timedelta = _key(dt.timedelta(minutes=30), _duration)
    reconcile_window: dt.timedelta = _key(dt.timedelta(hours=2), _duration)
    batch_window: dt.timedelta = _key(dt.timedelta(seconds=1), _duration)
    keep_events: dt.timedelta = _key(dt.timedelta(days=30), _duration)
    max_body_bytes: int = _key(1_048_576, _int(1024, 64 * 1_048_576))


@dataclass(frozen=True)
class Settings:
    """The whole settings file, checked and typed."""

    aircall: AircallSettings = _section(AircallSettings)
    sync: SyncSettings = _section(SyncSettings)
    salesforce: SalesforceSettings = _section(SalesforceSettings)
    front: FrontSettings = _section(FrontSettings)
    live: LiveSettings = _section(LiveSettings)
    # Where the settings were read from (None for parse_settings without a file).
    path: Path | None = _derived(None)

    def enabled_targets(self) -> list[str]:
        """The enabled targets, as a subset of ``["salesforce", "front"]`` in that order."""
        return [t for t in TARGETS if getattr(self, t).enabled]

    def derived(self, build: Callable[[Settings], _T]) -> _T:
        """``build(self)``, computed once for this object.

        Code that runs once per call (fingerprints, flow tables) asks here
        instead of rebuilding it 100,000 times.
        """
        return _memo(self, build)

    def call_flow(self, target: str) -> CallFlow:
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
        return getattr(self, target).call_flow

    def decision(self, target: str, kind: str) -> str:
        """``completed`` | ``open`` | ``skip`` for a call kind in a target (R-FLOW-1)."""
        return self.call_flow(target).for_kind(kind)


# --- the parser ---------------------------------------------------------------------

_ENV_RE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{")


class _Context:
    """Collects problems while the settings are read."""

    def __init__(self, environ: Mapping[str, str], base_dir: Path | None) -> None:
        self.environ = environ
        self.base_dir = base_dir
        self.problems: list[str] = []
        self.bad: set[str] = set()  # paths already reported: no follow-up "is required"
        self.env_names: dict[str, list[str]] = {}  # path → variables its value used

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def expected(self, path: str, what: str, value: Any) -> Any:
        self.bad.add(path)
        self.problem(path, f"expected {what}, got {_show(value)}")
        return _INVALID

    def expand(self, path: str, value: Any, strict: bool) -> Any:
        """Replace ``${NAME}`` in strings (also inside arrays); ``$${`` is a literal ``${``."""
        if isinstance(value, list):
            items = [self.expand(f"{path}[{i}]", v, strict) for i, v in enumerate(value)]
            if any(v is _INVALID for v in items):
                return _INVALID
            if any(v is _UNSET for v in items):
                return _UNSET
            return items
        if not isinstance(value, str) or "${" not in value:
            return value
        missing: list[str] = []
        malformed = False
        used: list[str] = []

        def replace(match: re.Match[str]) -> str:
            nonlocal malformed
            token = match.group(0)
            if token == "$${":
                return "${"
            name = match.group(1)
            if name is None:
                malformed = True
                return token
            used.append(name)
            if name not in self.environ:
                missing.append(name)
                return ""
            return self.environ[name]

        result = _ENV_RE.sub(replace, value)
        if malformed:
            # The value itself is not shown: it may be a secret.
            self.bad.add(path)
            self.problem(
                path, 'malformed environment reference: write ${NAME} (or $${ for a literal "${")'
            )
            return _INVALID
        if missing:
            if not strict:
                return _UNSET
            self.bad.add(path)
            for name in dict.fromkeys(missing):
                self.problem(path, f"environment variable {name} is not set")
            return _INVALID
        self.env_names[path] = used
        return result

    def unknown_keys(self, table: Mapping[str, Any], path: str, cls: type) -> None:
        known = [f.name for f in toml_fields(cls)]
        for key in table:
            if key in known:
                continue
            where = f"{path}.{key}" if path else str(key)
            hint = ""
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            if close:
                hint = f' (did you mean "{close[0]}"?)'
            else:
                # A key put in the wrong table is a common slip: name the right one.
                elsewhere = [p for p in _ALL_KEY_PATHS if p.rsplit(".", 1)[-1] == key]
                if elsewhere:
                    hint = " (did you mean " + " or ".join(f'"{p}"' for p in elsewhere[:3]) + "?)"
            self.problem(where, "unknown key" + hint)

    def required(self, settings: Any, path: str, key: str, when: str = "") -> None:
        where = f"{path}.{key}"
        if where in self.bad or getattr(settings, key):
            return
        suffix = f" when {when}" if when else ""
        names = self.env_names.get(where)
        if names:
            suffix += f" (environment variable {', '.join(names)} is empty)"
        self.problem(where, f"is required{suffix}")


_ALL_KEY_PATHS: list[str] = []  # filled once the dataclasses exist (below)


def _read_section(
    ctx: _Context,
    cls: type,
    raw: Any,
    path: str,
    *,
    lenient: Callable[[str], bool] = lambda key: False,
    overrides: Mapping[str, Callable[[_Context, Any, str, bool], Any]] | None = None,
    all_lenient: bool = False,
    defaults: Mapping[str, Any] | None = None,
) -> Any:
    """Build one settings dataclass from its TOML table, recording every problem.

    ``lenient(key)`` says whether an unset ``${NAME}`` in that key is harmless (a
    disabled target, a credential the chosen auth mode does not read): the key
    then keeps its default. ``overrides`` builds sub-tables that need more than
    the generic treatment; ``defaults`` replaces the dataclass defaults.
    """
    values: dict[str, Any] = dict(defaults or {})
    if raw is _UNSET_TABLE:
        raw = {}
    if not isinstance(raw, dict):
        ctx.expected(path, "a table", raw)
        return cls(**values)
    ctx.unknown_keys(raw, path, cls)
    for f in toml_fields(cls):
        key_path = f"{path}.{f.name}" if path else f.name
        if "section" in f.metadata:
            sub_raw = raw.get(f.name, _UNSET_TABLE)
            if overrides and f.name in overrides:
                values[f.name] = overrides[f.name](ctx, sub_raw, key_path, all_lenient)
            else:
                values[f.name] = _read_section(
                    ctx, f.metadata["section"], sub_raw, key_path, all_lenient=all_lenient
                )
            continue
        if f.name not in raw:
            continue
        value = ctx.expand(key_path, raw[f.name], strict=not (all_lenient or lenient(f.name)))
        if value is _INVALID or value is _UNSET:
            continue
        parsed = f.metadata["parse"](ctx, key_path, value)
        if parsed is not _INVALID:
            values[f.name] = parsed
    return cls(**values)


def _peek(ctx: _Context, raw: Any, key: str, choices: Iterable[Any], default: Any) -> Any:
    """A key's value before the section is read, to decide how to read the rest.

    Problems with the value are reported by the normal read, not here.
    """
    if not isinstance(raw, dict) or key not in raw:
        return default
    value = raw[key]
    if isinstance(value, str) and "${" in value:
        probe = _Context(ctx.environ, ctx.base_dir)
        value = probe.expand(key, value, strict=True)
    known = any(value is c or (type(value) is type(c) and value == c) for c in choices)
    return value if known else default


def _read_subjects(cls: type, table: dict[str, dict[str, str]], locale_of: Callable[[], str]) -> Any:
    """Sub-table reader whose absent keys default to the chosen locale's text."""

    def read(ctx: _Context, raw: Any, path: str, all_lenient: bool) -> Any:
        # Keys the file sets win; the others come from the locale (read first).
        return _read_section(ctx, cls, raw, path, all_lenient=all_lenient,
                             defaults=table[locale_of()])

    return read


def _read_aircall(ctx: _Context, raw: Any) -> AircallSettings:
    settings = _read_section(ctx, AircallSettings, raw, "aircall")
    if isinstance(raw, dict) or raw is _UNSET_TABLE:
        ctx.required(settings, "aircall", "api_id")
        ctx.required(settings, "aircall", "api_token")
    settle = settings.ai.settle
    if "aircall.ai.settle" not in ctx.bad and settle > dt.timedelta(days=30):
        ctx.problem("aircall.ai.settle", f"expected a duration of at most \"30d\" (Aircall produces its AI data "
                                         f"minutes after a call), got {_span(settle)}")
    contacts = settings.contacts
    if contacts.save_created and not contacts.save_matched and "aircall.contacts.save_created" not in ctx.bad:
        ctx.problem("aircall.contacts.save_created", "true has no effect while aircall.contacts.save_matched is "
                                                     "false: set save_matched = true too, or save_created = false")
    return settings


def _read_sync(ctx: _Context, raw: Any) -> SyncSettings:
    settings = _read_section(ctx, SyncSettings, raw, "sync")
    hours = settings.business_hours
    if (
        "sync.business_hours.start" not in ctx.bad
        and "sync.business_hours.end" not in ctx.bad
        and hours.start >= hours.end
    ):
        ctx.problem(
            "sync.business_hours",
            f"start ({hours.start:%H:%M}) must be earlier than end ({hours.end:%H:%M})",
        )
    return dataclasses.replace(settings, tzinfo=ZoneInfo(settings.timezone))


def _read_salesforce(ctx: _Context, raw: Any) -> SalesforceSettings:
    enabled = _peek(ctx, raw, "enabled", (True,), False) is True
    auth = _peek(ctx, raw, "auth", AUTH_MODES, "token")
    used = set(_AUTH_REQUIRED[auth])
    optional = set(_AUTH_OPTIONAL[auth])

    def lenient(key: str) -> bool:
        # An unset variable in a credential this auth mode does not read, or in
        # one it reads only if present, must not block the run.
        return key in _CREDENTIAL_KEYS and (key not in used or key in optional)

    # The subjects' defaults depend on salesforce.task.subject_locale, known
    # only once the [salesforce.task] table is in hand.
    locale = {"task": "en"}
    task_reader = _read_subjects(TaskSubjects, SUBJECT_TEMPLATES, lambda: locale["task"])

    def read_task(ctx: _Context, sub_raw: Any, path: str, all_lenient: bool) -> TaskSettings:
        locale["task"] = _peek(ctx, sub_raw, "subject_locale", LOCALES, "en")
        return _read_section(
            ctx, TaskSettings, sub_raw, path, all_lenient=all_lenient,
            overrides={"subjects": task_reader},
        )

    message_subjects = _read_subjects(MessageSubjects, MESSAGE_SUBJECT_TEMPLATES, lambda: locale["task"])

    def read_messages(ctx: _Context, sub_raw: Any, path: str, all_lenient: bool) -> SalesforceMessages:
        # Read after [salesforce.task] (field order), so its subject_locale is known.
        return _read_section(ctx, SalesforceMessages, sub_raw, path, all_lenient=all_lenient,
                             overrides={"subjects": message_subjects})

    settings = _read_section(
        ctx, SalesforceSettings, raw, "salesforce",
        lenient=lenient, all_lenient=not enabled, overrides={"task": read_task, "messages": read_messages},
    )
    if settings.matching.create_case and settings.matching.link_to != "case" and (
        "salesforce.matching.link_to" not in ctx.bad
    ):
        ctx.expected(
            "salesforce.matching.create_case",
            'false unless salesforce.matching.link_to = "case"',
            True,
        )
    if not enabled:
        return settings

    ctx.required(settings, "salesforce", "instance_url", "salesforce.enabled = true")
    if "salesforce.auth" in ctx.bad:
        # Which credentials are needed is unknown; guessing would add noise.
        return settings
    when = f'salesforce.auth = "{auth}"'
    for key in _AUTH_REQUIRED[auth]:
        ctx.required(settings, "salesforce", key, when)
    if auth == "password" and "salesforce.consumer_key" not in ctx.bad and (
        "salesforce.consumer_secret" not in ctx.bad
    ):
        # The OAuth password flow needs both; the SOAP login needs neither.
        if settings.consumer_key and not settings.consumer_secret:
            ctx.required(settings, "salesforce", "consumer_secret", "salesforce.consumer_key is set")
        elif settings.consumer_secret and not settings.consumer_key:
            ctx.required(settings, "salesforce", "consumer_key", "salesforce.consumer_secret is set")
    key_file = settings.private_key_file
    if auth == "jwt" and key_file is not None and not _is_file(key_file):
        ctx.problem("salesforce.private_key_file", f"file not found: {key_file}")
    if settings.ca_bundle is not None and not _exists(settings.ca_bundle):
        ctx.problem("salesforce.ca_bundle", f"file not found: {settings.ca_bundle}")
    if settings.mode == "voice":
        ctx.required(settings.voice, "salesforce.voice", "call_center_id", 'salesforce.mode = "voice"')
        if "salesforce.api_version" not in ctx.bad and settings.api_version_number < 63.0:
            # The why and the fix in one line: "expected 63.0 or later" alone left users guessing why,
            # and whether the line is needed at all (the default is 63.0).
            ctx.bad.add("salesforce.api_version")
            ctx.problem(
                "salesforce.api_version",
                f'{_show(settings.api_version)} is too old for salesforce.mode = "voice": Salesforce creates '
                "VoiceCall records through the API only from version 63.0 (R-SFV-7); "
                'set api_version = "63.0" or remove the line',
            )
    return settings


def _read_front(ctx: _Context, raw: Any) -> FrontSettings:
    enabled = _peek(ctx, raw, "enabled", (True,), False) is True
    locale = _peek(ctx, raw, "subject_locale", LOCALES, "en")
    subjects = _read_subjects(FrontSubjects, FRONT_QUALIFICATIONS, lambda: locale)
    settings = _read_section(
        ctx, FrontSettings, raw, "front", all_lenient=not enabled, overrides={"subjects": subjects},
    )
    if enabled:
        ctx.required(settings, "front", "api_token", "front.enabled = true")
    return settings


def _read_live(ctx: _Context, raw: Any) -> LiveSettings:
    # Only `serve` and the webhook commands read [live]: an unset ${AIRCALL_WEBHOOK_TOKEN} must not
    # stop a cron sync. `serve` requires the token itself (live.app.require_serve_settings).
    settings = _read_section(ctx, LiveSettings, raw, "live", lenient=lambda key: key == "webhook_token")
    if ("live.tls_cert_file" not in ctx.bad and "live.tls_key_file" not in ctx.bad
            and bool(settings.tls_cert_file) != bool(settings.tls_key_file)):
        missing = "tls_key_file" if settings.tls_cert_file else "tls_cert_file"
        ctx.problem(f"live.{missing}", "is required when the other TLS file is set (uvicorn serves HTTPS "
                                       "with both, plain HTTP behind a TLS proxy with neither)")
    for key in ("tls_cert_file", "tls_key_file"):
        file = getattr(settings, key)
        if file is not None and f"live.{key}" not in ctx.bad and not _is_file(file):
            ctx.problem(f"live.{key}", f"file not found: {file}")
    for key, low, high in (("batch_window", dt.timedelta(0), dt.timedelta(minutes=1)),
                           ("reconcile_every", dt.timedelta(minutes=1), dt.timedelta(days=1)),
                           ("reconcile_window", dt.timedelta(minutes=10), dt.timedelta(days=7)),
                           ("keep_events", dt.timedelta(days=1), dt.timedelta(days=3650))):
        value = getattr(settings, key)
        if f"live.{key}" not in ctx.bad and not low <= value <= high:
            ctx.problem(f"live.{key}", f"expected a duration from {_span(low)} to {_span(high)}, got "
                                       f"{_span(value)}")
    return settings


def _span(value: dt.timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f'"{seconds // size}{unit}"'
    return f'"{seconds}s"'


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def parse_settings(
    data: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
    *,
    path: str | os.PathLike[str] | None = None,
) -> Settings:
    """Check and type settings already read from TOML; raise ``SettingsError`` with every problem.

    ``environ`` (default ``os.environ``) supplies ``${NAME}``; ``base_dir`` anchors
    relative paths (``None``: the current directory). Reads no file except to
    check that ``private_key_file`` / ``ca_bundle`` exist.
    """
    ctx = _Context(os.environ if environ is None else environ,
                   Path(base_dir) if base_dir is not None else None)
    where = str(path) if path is not None else None
    if not isinstance(data, Mapping):
        raise SettingsError([f"expected a TOML document (a table), got {_show(data)}"], where)
    data = dict(data)
    ctx.unknown_keys(data, "", Settings)
    settings = Settings(
        aircall=_read_aircall(ctx, data.get("aircall", _UNSET_TABLE)),
        sync=_read_sync(ctx, data.get("sync", _UNSET_TABLE)),
        salesforce=_read_salesforce(ctx, data.get("salesforce", _UNSET_TABLE)),
        front=_read_front(ctx, data.get("front", _UNSET_TABLE)),
        live=_read_live(ctx, data.get("live", _UNSET_TABLE)),
        path=Path(path) if path is not None else None,
    )
    if ctx.problems:
        raise SettingsError(ctx.problems, where)
    return settings


_TOML_POSITION_RE = re.compile(r"^(?P<msg>.*) \(at (?P<where>line \d+, column \d+|end of document)\)$")


def load_settings(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read, check and type a settings file; raise ``SettingsError`` with every problem."""
    file = Path(path)
    where = str(file)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise SettingsError(
            [f"{where}: no such settings file; run `aircall-sync init` to create one, "
             f"or pass --config PATH"],
            where,
        ) from None
    except OSError as exc:
        raise SettingsError(
            [f"{where}: cannot read the settings file: {exc.strerror or exc}"], where
        ) from None
    try:
        # utf-8-sig: editors on Windows add a byte-order mark TOML does not allow.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SettingsError([f"{where}: not UTF-8 text (byte {exc.start})"], where) from None
    try:
        data = tomllib.loads(text)
    except RecursionError:
        # tomllib recurses per nesting level: a pathological file is still the user's input.
        raise SettingsError([f"{where}: TOML syntax error: arrays or tables nested too deeply"], where) from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib names no key, only a position; its messages never quote values.
        match = _TOML_POSITION_RE.match(str(exc))
        if match:
            position = "end of file" if match["where"] == "end of document" else match["where"]
            problem = f"{position}: TOML syntax error: {match['msg']}"
        else:
            problem = f"TOML syntax error: {exc}"
        raise SettingsError([problem], where) from None
    return parse_settings(data, environ, base_dir=file.resolve().parent, path=file)


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$AIRCALL_SYNC_CONFIG``, else ``./settings.toml`` (DESIGN §3 ``--config``)."""
    env = os.environ if environ is None else environ
    return Path(env.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_NAME)


def default_settings_text() -> str:
    """The commented example settings shipped in the package."""
    return importlib.resources.files("aircall_sync").joinpath(EXAMPLE_RESOURCE).read_text("utf-8")


def write_example(path: str | os.PathLike[str], force: bool = False) -> Path:
    """Write the example settings to ``path`` (``aircall-sync init``); return the path.

    The file is created owner-only (0600): users are told to keep secrets in the
    environment, but some will paste them into it anyway.
    """
    target = Path(path)
    data = default_settings_text().encode("utf-8")
    if not force:
        try:
            # O_EXCL: no window between "does it exist?" and creating it.
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise SettingsFileExistsError(
                f"{target} already exists; use --force to overwrite it"
            ) from None
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        return target
    directory = target.parent if str(target.parent) else Path(".")
    # Write then rename, so an interrupted --force never leaves half a file.
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


_ALL_KEY_PATHS.extend(toml_key_paths(Settings))
