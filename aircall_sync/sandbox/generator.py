"""Deterministic Aircall data for the sandbox: a company, its calls, a compact store.

Shapes follow ``shared/reference/aircall-api.md`` §5–7 and the live payload
``shared/reference/aircall/call-list-response-live-shape.json``: every call
has exactly the keys of that live call, plus ``conference_participants`` on
calls that carry participants (§5 "participants / conference_participants").

The data set covers what the tool must handle (DESIGN.md §7, RULES.md §1):
every call kind of R-CALL-2 (outbound answered / unanswered, inbound answered,
missed with each of the six ``missed_call_reason`` values of §7, voicemail),
transfers to a user and to a team, conferences (more than two parties) and
two-party participant lists that are *not* conferences (R-CALL-3), tags,
comments by agents and through the API (``posted_by: null``, §6), anonymous,
invalid (parse but not valid) and impossible numbers (R-CALL-4), repeat
callers, matched contacts, assigned and archived calls, lines in five
countries and time zones, and a few calls still in progress at the end of the
range (``ended_at: null``, §5) next to calls not yet finalized (``cost``
``"0.0"``, ``pricing_type: null`` and a duration one second too long, as
observed in §5 "Calls are rewritten after they end").

Memory: the store keeps, per call, a handful of small integers in
``array.array`` columns (start time, id, and the choices that define the call)
and renders the full JSON object only when a page is served; a seeded
``random.Random`` per call fills in the details, so rendering is repeatable.
Mutations (comments, tags, field changes) live in a small overlay keyed by
call id. Hand-made calls (:meth:`CallStore.add_calls`) are kept as the
partial dicts the test gave and completed at render time.

Same arguments ⇒ byte-identical data (:meth:`CallStore.dump_json`).
"""

from __future__ import annotations

import bisect
import copy
import hashlib
import json
import random
import threading
import unicodedata
import uuid
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers

__all__ = [
    "CallStore",
    "DEFAULT_BASE",
    "MISSED_CALL_REASONS",
    "TimeLike",
    "generate",
    "to_epoch",
]

# Links rendered outside an HTTP request (store.get, dump_json) use this host;
# the emulator always renders with its own base URL instead.
DEFAULT_BASE = "http://aircall.sandbox.invalid"

# aircall-api.md §7, in the documented order.
MISSED_CALL_REASONS = (
    "out_of_opening_hours",
    "short_abandoned",
    "abandoned_in_ivr",
    "abandoned_in_classic",
    "no_available_agent",
    "agents_did_not_answer",
)

TimeLike = datetime | int | float

# Agents were rung but did not pick up: the only missed case that may name a user.
_REASON_RANG = MISSED_CALL_REASONS.index("agents_did_not_answer") + 1

# Call kinds (RULES.md R-CALL-2 names): the generator's ground truth.
KINDS = ("outbound_answered", "outbound_unanswered", "inbound_answered", "missed", "voicemail")
K_OUT_ANS, K_OUT_UNANS, K_IN_ANS, K_MISSED, K_VOICEMAIL = range(5)

# Per-call flags.
F_TRANSFER = 1 << 0          # transferred to a user
F_TRANSFER_TEAM = 1 << 1     # transferred to a team: transferred_to = the team's first user (§5)
F_CONFERENCE = 1 << 2        # conference_participants with more than two parties
F_TWO_PARTIES = 1 << 3       # conference_participants with exactly two: not a conference (R-CALL-3)
F_COMMENT_USER = 1 << 4
F_COMMENT_API = 1 << 5       # posted_by null (§6)
F_ASSIGNED = 1 << 6
F_ARCHIVED = 1 << 7
F_IN_PROGRESS = 1 << 8       # status answered/initial, ended_at null
F_RINGING = 1 << 9           # with F_IN_PROGRESS: status initial
F_NO_RECORDING = 1 << 10

# External number codes (the `ext` column): >= 0 is an index into the pool.
EXT_ANONYMOUS = -1
_INVALID_NUMBERS = ("+1 123-456-7890", "+44 20 7946", "+33 0 12 34 56 78", "+1 999-555-0199")
_IMPOSSIBLE_NUMBERS = ("+33 1 23 45", "+44 20", "+1 555")
_EXT_INVALID0 = -10
_EXT_IMPOSSIBLE0 = -20

# Finalization lag observed in §5 (cost and pricing_type change ~20 min after the end).
_FINALIZE_S = 20 * 60


def to_epoch(t: TimeLike) -> int:
    """UNIX seconds from a datetime (naive = UTC) or a number."""
    if isinstance(t, datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        return int(t.timestamp())
    return int(t)


def _iso(ts: int) -> str:
    # §6: user / number created_at are ISO-8601 strings in UTC with milliseconds.
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _digits(s: str | None) -> str:
    return "".join(c for c in s if c.isdigit()) if s else ""


def _ascii(s: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", s) if c.isascii() and c.isalnum()).lower()


def _hex(*parts: object, n: int = 16) -> str:
    return hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=n).hexdigest()


# --------------------------------------------------------------------------
# The company: lines, agents, teams, tags, callers
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Line:
    id: int
    name: str
    country: str
    time_zone: str
    digits: str
    is_ivr: bool
    live_recording: bool
    availability_status: str
    users: tuple[int, ...]
    team: int
    created_ts: int
    weight: float


@dataclass(frozen=True, slots=True)
class _Agent:
    id: int
    name: str
    email: str
    time_zone: str
    language: str
    extension: str
    availability_status: str
    created_ts: int


@dataclass(frozen=True, slots=True)
class _Team:
    id: int
    name: str
    users: tuple[int, ...]
    created_ts: int


@dataclass(frozen=True, slots=True)
class _TagDef:
    id: int
    name: str
    color: str
    description: str | None


@dataclass(frozen=True, slots=True)
class _Ext:
    raw: str
    digits: str
    country: str | None


# (name, country, time zone, agent indices, team, is_ivr, live recording, weight)
_LINES = (
    ("Support US", "US", "America/New_York", (0, 2, 10), 0, False, True, 0.28),
    ("Sales US", "US", "America/Chicago", (1, 0), 1, False, True, 0.20),
    ("Paris Office", "FR", "Europe/Paris", (3, 4), 2, True, True, 0.15),
    ("Berlin Office", "DE", "Europe/Berlin", (5, 6), 2, False, False, 0.10),
    ("London Office", "GB", "Europe/London", (7, 3), 2, False, True, 0.13),
    ("Sydney Support", "AU", "Australia/Sydney", (8, 9), 3, True, True, 0.14),
)

# (name, email, time zone, language). Index 10 is a new hire created inside
# the range; index 3's e-mail has capitals (owners are matched case-insensitively).
_AGENTS = (
    ("Alex Martin", "alex.martin@example.com", "Etc/UTC", "en-US"),
    ("Jordan Lee", "jordan.lee@example.com", "America/Chicago", "en-US"),
    ("Priya Shah", "priya.shah@example.com", "America/New_York", "en-US"),
    ("Chloé Dubois", "Chloe.Dubois@Example.com", "Europe/Paris", "fr-FR"),
    ("Julien Moreau", "julien.moreau@example.fr", "Europe/Paris", "fr-FR"),
    ("Lena Fischer", "lena.fischer@example.de", "Europe/Berlin", "de-DE"),
    ("Jonas Weber", "jonas.weber@example.de", "Europe/Berlin", "de-DE"),
    ("Oliver Bennett", "oliver.bennett@example.co.uk", "Europe/London", "en-GB"),
    ("Mia Nguyen", "mia.nguyen@example.com.au", "Australia/Sydney", "en-AU"),
    ("Liam O'Connor", "liam.oconnor@example.com.au", "Australia/Sydney", "en-AU"),
    ("Sam Taylor", "sam.taylor@example.com", "Etc/UTC", "en-US"),
)

_TEAMS = (
    ("Support", (0, 2, 10)),
    ("Sales", (1, 0)),
    ("EMEA", (3, 4, 5, 6, 7)),
    ("APAC", (8, 9)),
)

# Names with a comma, an apostrophe and an accent: they end up inside the
# Python-list-style CallDisposition string (RULES.md R-SF-DISP). No emojis:
# Aircall strips them (§6).
_TAGS = (
    ("Hot lead", "#ff5a5f", None),
    ("Support", "#00b388", None),
    ("Billing, refunds", "#ffb400", None),
    ("Callback requested", "#4f7bff", "queue_callback"),
    ("VIP", "#8e44ad", None),
    ("Won't renew", "#95a5a6", None),
    ("Réclamation", "#e67e22", None),
    ("Demo booked", "#2ecc71", None),
)
_TAG_CALLBACK = 3

# National number patterns: (country calling code, national prefix, random digits).
_PATTERNS: dict[str, tuple[int, tuple[tuple[str, int], ...]]] = {
    "US": (1, (("617", 7), ("212", 7), ("415", 7), ("312", 7), ("984", 7), ("305", 7), ("206", 7), ("512", 7), ("646", 7), ("303", 7))),
    "CA": (1, (("416", 7), ("604", 7), ("514", 7))),
    "FR": (33, (("1", 8), ("6", 8), ("7", 8), ("4", 8))),
    "DE": (49, (("30", 8), ("89", 7), ("151", 8), ("176", 8))),
    "GB": (44, (("20", 8), ("161", 7), ("7", 9))),
    "AU": (61, (("2", 8), ("3", 8), ("4", 8))),
    "ES": (34, (("6", 8), ("91", 7))),
    "IT": (39, (("3", 9), ("06", 8))),
    "NL": (31, (("6", 8), ("20", 7))),
    "BR": (55, (("119", 8),)),
    "JP": (81, (("90", 8), ("3", 8))),
}
_REGION_WEIGHTS = (
    ("US", 0.38), ("FR", 0.14), ("DE", 0.12), ("GB", 0.12), ("AU", 0.09), ("CA", 0.04),
    ("ES", 0.03), ("IT", 0.03), ("NL", 0.02), ("BR", 0.015), ("JP", 0.015),
)

_FIRST = ("Emma", "Noah", "Olivia", "Lucas", "Sofia", "Mateo", "Hannah", "Leon", "Camille", "Hugo",
          "Grace", "Ethan", "Zoé", "Felix", "Isla", "Arjun", "Yuki", "Ana", "Marco", "Fatima")
_LAST = ("Smith", "García", "Müller", "Martin", "Brown", "Rossi", "Dupont", "Schneider", "Wilson",
         "Tanaka", "Silva", "Jansen", "O'Brien", "Nguyen", "Kowalski", "Lefèvre", "Hughes", "Patel")
_COMPANIES = ("Acme Corp", "Globex", "Initech", "Umbrella SAS", "Stark Industries", "Wayne GmbH",
              "Hooli", "Soylent Ltd", "Vandelay Imports", "Pied Piper", "Tyrell Pty", None, None)
_COMMENTS = (
    "Customer asked for a callback tomorrow morning.",
    "Sent the pricing sheet by email.",
    "Escalated to billing — see ticket #4821.",
    "Rappeler le client avant vendredi.",
    "Kunde wünscht Rückruf.",
    "Follow-up:\n- send the contract\n- book a demo",
    "Wrong department, redirected to sales.",
    'Said "call me after 5pm".',
)


def _valid_number(rng: random.Random, region: str) -> _Ext:
    cc, prefixes = _PATTERNS[region]
    for _ in range(40):
        prefix, n = rng.choice(prefixes)
        tail = str(rng.randint(2, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(n - 1))
        num = phonenumbers.parse(f"+{cc}{prefix}{tail}", None)
        if phonenumbers.is_valid_number(num):
            break
    else:
        num = phonenumbers.example_number(region)
    raw = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    return _Ext(raw, _digits(raw), region)


_UNSET: Any = object()


class World:
    """The emulated company: lines, agents, teams, tags and a pool of callers.

    Built from a seed; callers (external numbers and their contacts) are
    materialized lazily by index, so a large pool costs nothing until used.
    """

    def __init__(self, seed: int, start_ts: int, end_ts: int, pool_size: int) -> None:
        self.seed = seed
        self.pool_size = max(1, pool_size)
        rng = random.Random(f"world:{seed}")
        span = max(end_ts - start_ts, 1)

        self.agents: list[_Agent] = []
        uid = 2_078_800 + rng.randint(0, 40)
        for i, (name, email, tz, lang) in enumerate(_AGENTS):
            uid += rng.randint(3, 60)
            created = start_ts + int(span * 0.4) if i == 10 else start_ts - rng.randint(30 * 86400, 900 * 86400)
            self.agents.append(_Agent(
                id=uid, name=name, email=email, time_zone=tz, language=lang,
                extension=f"{i + 1:03d}",
                availability_status=rng.choice(("available", "available", "custom", "unavailable")),
                created_ts=created,
            ))

        self.teams = [
            _Team(id=61_000 + 17 * i + rng.randint(0, 9), name=name, users=users,
                  created_ts=start_ts - rng.randint(100 * 86400, 900 * 86400))
            for i, (name, users) in enumerate(_TEAMS)
        ]

        self.lines: list[_Line] = []
        nid = 1_389_800 + rng.randint(0, 40)
        for name, country, tz, users, team, ivr, rec, weight in _LINES:
            nid += rng.randint(5, 90)
            digits = _valid_number(rng, country).raw
            self.lines.append(_Line(
                id=nid, name=name, country=country, time_zone=tz, digits=digits,
                is_ivr=ivr, live_recording=rec,
                availability_status=rng.choice(("open", "custom", "closed")) if ivr else "open",
                users=users, team=team, created_ts=start_ts - rng.randint(100 * 86400, 900 * 86400),
                weight=weight,
            ))
        self.line_cum = list(accumulate(line.weight for line in self.lines))
        self.line_digits = [_digits(line.digits) for line in self.lines]

        self.tags = [
            _TagDef(id=88_000 + 13 * i + rng.randint(0, 9), name=n, color=c, description=d)
            for i, (n, c, d) in enumerate(_TAGS)
        ]
        self.tag_index = {t.id: i for i, t in enumerate(self.tags)}
        self.tag_by_name = {t.name.casefold(): i for i, t in enumerate(self.tags)}

        # Repeat callers: a Zipf-like weight makes the first numbers call often.
        self.pool_cum = list(accumulate(1.0 / (k + 1) ** 0.9 for k in range(self.pool_size)))
        self.region_cum = list(accumulate(w for _, w in _REGION_WEIGHTS))
        self._pool: dict[int, _Ext] = {}
        self._base_cache: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self._contacts: dict[tuple[int, str], dict[str, Any] | None] = {}
        self._contact_cores: dict[int, dict[str, Any] | None] = {}
        #: The company's contacts store once the contacts API exists (:class:`.aircall_contacts.ContactBook`);
        #: duck-typed (``active``, ``resolve_caller``, ``resolve``) so that this module imports nothing of it.
        self.contact_book: Any = None
        self._lock = threading.Lock()

    # -- callers --------------------------------------------------------------

    def ext(self, code: int) -> _Ext:
        if code == EXT_ANONYMOUS:
            return _Ext("anonymous", "", None)
        if code <= _EXT_IMPOSSIBLE0:
            raw = _IMPOSSIBLE_NUMBERS[_EXT_IMPOSSIBLE0 - code]
            return _Ext(raw, _digits(raw), None)
        if code <= _EXT_INVALID0:
            raw = _INVALID_NUMBERS[_EXT_INVALID0 - code]
            return _Ext(raw, _digits(raw), None)
        ext = self._pool.get(code)
        if ext is None:
            if code == 0:
                # The number of the live sample (§5): a frequent caller.
                ext = _Ext("+1 617-610-5413", "16176105413", "US")
            else:
                rng = random.Random(f"caller:{self.seed}:{code}")
                region = _REGION_WEIGHTS[bisect.bisect_right(self.region_cum, rng.random() * self.region_cum[-1])][0]
                ext = _valid_number(rng, region)
            with self._lock:
                self._pool[code] = ext
        return ext

    def pick_caller(self, rng: random.Random) -> int:
        return min(bisect.bisect_right(self.pool_cum, rng.random() * self.pool_cum[-1]), self.pool_size - 1)

    def has_contact(self, code: int) -> bool:
        return code >= 0 and random.Random(f"contact:{self.seed}:{code}").random() < 0.4

    def contact_code(self, contact_id: int) -> int | None:
        """The pool code whose seeded contact has this id, if any (ids are ``120_000_000 + 11 * code + 0..9``)."""
        code, rest = divmod(contact_id - 120_000_000, 11)
        if contact_id < 120_000_000 or rest > 9 or code >= self.pool_size:
            return None
        core = self.contact_core(code)
        return code if core is not None and core["id"] == contact_id else None

    def contact_core(self, code: int) -> dict[str, Any] | None:
        """A caller's seeded contact without its ``direct_link`` (the only base-dependent key), or ``None``.

        Shared by :meth:`contact` and the contacts store (:mod:`.aircall_contacts`): serialize, do not mutate.
        """
        hit = self._contact_cores.get(code, _UNSET)
        if hit is not _UNSET:
            return hit
        core = self._make_contact(code)
        with self._lock:
            self._contact_cores[code] = core
        return core

    def contact(self, code: int, base: str, at: int | None = None) -> dict[str, Any] | None:
        """The shared Aircall contact of a caller as a call started at ``at`` shows it (§6 Contact).

        Built once per caller and base URL (every call from that caller embeds
        it, and building it seeds two RNGs): serialize it, do not mutate it.
        Once the contacts API has changed anything, :attr:`contact_book`
        decides instead (the contact as it is now, none once deleted, or a
        contact created later with the caller's number for a call started
        after it).
        """
        key = (code, base)
        seeded = self._contacts.get(key, _UNSET)
        if seeded is _UNSET:
            core = self.contact_core(code) if code >= 0 else None
            seeded = None if core is None else {"id": core["id"], "direct_link": f"{base}/v1/contacts/{core['id']}",
                                                **{k: v for k, v in core.items() if k != "id"}}
            with self._lock:
                if len(self._contacts) > 8 * self.pool_size:  # many base URLs: start over, as nested() does
                    self._contacts.clear()
                self._contacts[key] = seeded
        book = self.contact_book
        if book is None or not book.active or code < 0:
            return seeded
        return book.resolve_caller(code, seeded, base, at)

    def _make_contact(self, code: int) -> dict[str, Any] | None:
        if not self.has_contact(code):
            return None
        rng = random.Random(f"contact:{self.seed}:{code}")
        rng.random()
        cid = 120_000_000 + code * 11 + rng.randint(0, 9)
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        company = rng.choice(_COMPANIES)
        created = 1_600_000_000 + rng.randint(0, 150_000_000)
        emails = []
        if rng.random() < 0.7:
            domain = _ascii((company or "mail").split()[0])
            email = f"{_ascii(first)}.{_ascii(last)}@{domain}.example"
            emails.append({"id": cid * 10 + 1, "label": "Work", "value": email})
        return {
            "id": cid,
            "first_name": first,
            "last_name": last,
            "company_name": company,
            "description": None,
            "information": None,
            "is_shared": True,
            "created_at": created,
            "updated_at": created + rng.randint(0, 5_000_000),
            "emails": emails,
            # aircall-api.md §12: every live contact number is unspaced E.164, unlike a call's raw_digits.
            "phone_numbers": [{"id": cid * 10 + 2, "label": rng.choice(("Work", "Mobile", "Home")),
                               "value": "+" + self.ext(code).digits}],
        }

    def number(self, number_id: int, base: str) -> dict[str, Any] | None:
        """A line as ``GET /v1/numbers/:id`` shows it: the nested number plus its ``users`` (§6)."""
        nested = self.nested(base)
        for k, line in enumerate(self.lines):
            if line.id == number_id:
                return {**nested["numbers"][k], "users": [nested["users_short"][u] for u in line.users]}
        return None

    # -- nested objects, rendered once per base URL ---------------------------

    def nested(self, base: str) -> dict[str, list[dict[str, Any]]]:
        cached = self._base_cache.get(base)
        if cached is not None:
            return cached
        users, users_short = [], []
        for a in self.agents:
            short = {
                "id": a.id,
                "direct_link": f"{base}/v1/users/{a.id}",
                "name": a.name,
                "email": a.email,
                "available": a.availability_status == "available",
                "availability_status": a.availability_status,
                "created_at": _iso(a.created_ts),
            }
            users_short.append(short)
            # Keys of the user in the live sample (§6: the copy nested in a call).
            users.append(short | {
                "time_zone": a.time_zone,
                "language": a.language,
                "state": "always_opened",
                "wrap_up_time": 0,
                "extension": a.extension,
            })
        numbers = []
        for line in self.lines:
            media = f"{base}/media/numbers/{line.id}"
            numbers.append({
                "id": line.id,
                "direct_link": f"{base}/v1/numbers/{line.id}",
                "name": line.name,
                "digits": line.digits,
                "country": line.country,
                "time_zone": line.time_zone,
                "open": line.availability_status != "closed",
                "availability_status": line.availability_status,
                "is_ivr": line.is_ivr,
                "live_recording_activated": line.live_recording,
                "priority": None,
                "messages": {k: f"{media}/{k}.mp3" for k in (
                    "welcome", "waiting", "ivr", "voicemail", "closed", "callback_later",
                    "unanswered_call", "after_hours", "ringing_tone")},
                "created_at": _iso(line.created_ts),
                "flow_editor_enabled": line.is_ivr,
            })
        teams = [
            {
                "id": t.id,
                "direct_link": f"{base}/v1/teams/{t.id}",
                "name": t.name,
                "created_at": _iso(t.created_ts),
                "users": [users_short[u] for u in t.users],
            }
            for t in self.teams
        ]
        tags = [
            {"id": t.id, "direct_link": f"{base}/v1/tags/{t.id}", "name": t.name,
             "color": t.color, "description": t.description}
            for t in self.tags
        ]
        out = {"users": users, "users_short": users_short, "numbers": numbers, "teams": teams, "tags": tags}
        with self._lock:
            if len(self._base_cache) > 8:
                self._base_cache.clear()
            self._base_cache[base] = out
        return out


# --------------------------------------------------------------------------
# Batches of generated calls
# --------------------------------------------------------------------------


@dataclass(slots=True)
class _Batch:
    seed: int
    end_ts: int
    span: int
    kind: array = field(default_factory=lambda: array("b"))
    flags: array = field(default_factory=lambda: array("H"))
    line: array = field(default_factory=lambda: array("b"))
    user: array = field(default_factory=lambda: array("b"))
    user2: array = field(default_factory=lambda: array("b"))
    reason: array = field(default_factory=lambda: array("b"))   # index+1 into MISSED_CALL_REASONS, 0 = none
    ext: array = field(default_factory=lambda: array("i"))
    tags: array = field(default_factory=lambda: array("H"))    # bit i = world.tags[i]


@dataclass(frozen=True, slots=True)
class _Scenario:
    kind: int
    flags: int = 0
    reason: str | None = None
    ext: str | None = None          # "anonymous" | "invalid" | "impossible" | "contact"
    tags: int = 0
    line: int | None = None


# One call of each is placed at evenly spaced positions of a covering batch,
# so any data set of a few dozen calls or more has every case at least once.
_SCENARIOS = (
    _Scenario(K_OUT_ANS),
    _Scenario(K_OUT_UNANS),
    _Scenario(K_IN_ANS),
    *(_Scenario(K_MISSED, reason=r) for r in MISSED_CALL_REASONS),
    _Scenario(K_VOICEMAIL, reason="out_of_opening_hours"),
    _Scenario(K_VOICEMAIL, reason="agents_did_not_answer", flags=F_ASSIGNED),
    _Scenario(K_IN_ANS, flags=F_TRANSFER),
    _Scenario(K_IN_ANS, flags=F_TRANSFER_TEAM),
    _Scenario(K_OUT_ANS, flags=F_TRANSFER),
    _Scenario(K_IN_ANS, flags=F_CONFERENCE),
    _Scenario(K_OUT_ANS, flags=F_CONFERENCE),
    _Scenario(K_IN_ANS, flags=F_TWO_PARTIES),
    _Scenario(K_IN_ANS, tags=0b11),
    _Scenario(K_OUT_ANS, flags=F_COMMENT_USER),
    _Scenario(K_MISSED, reason="no_available_agent", flags=F_COMMENT_API),
    _Scenario(K_IN_ANS, flags=F_COMMENT_USER | F_COMMENT_API, tags=1 << 2 | 1 << 5 | 1 << 6),
    _Scenario(K_MISSED, reason="short_abandoned", ext="anonymous"),
    _Scenario(K_IN_ANS, ext="anonymous"),
    _Scenario(K_VOICEMAIL, reason="no_available_agent", ext="anonymous"),
    _Scenario(K_IN_ANS, ext="invalid"),
    _Scenario(K_MISSED, reason="agents_did_not_answer", ext="invalid"),
    _Scenario(K_OUT_UNANS, ext="impossible"),
    _Scenario(K_IN_ANS, ext="contact"),
    _Scenario(K_OUT_ANS, ext="contact"),
    _Scenario(K_MISSED, reason="abandoned_in_classic", flags=F_ASSIGNED, tags=1 << _TAG_CALLBACK),
    _Scenario(K_OUT_ANS, flags=F_ARCHIVED),
    _Scenario(K_IN_ANS, line=3),  # Berlin: live recording off, answered without a recording
    _Scenario(K_IN_ANS, line=5),  # Sydney
    _Scenario(K_OUT_ANS, line=4),  # London
)


class _LocalClock:
    """Local hour and weekday of a line, with the UTC offset cached per hour."""

    def __init__(self, tz: str) -> None:
        self.zone = ZoneInfo(tz)
        self.cache: dict[int, int] = {}

    def business(self, ts: int) -> bool:
        h = ts // 3600
        off = self.cache.get(h)
        if off is None:
            off = int(datetime.fromtimestamp(h * 3600, self.zone).utcoffset().total_seconds())  # type: ignore[union-attr]
            self.cache[h] = off
        local = ts + off
        weekday = (local // 86400 + 3) % 7  # 1970-01-01 was a Thursday
        hour = local % 86400 // 3600
        return weekday < 5 and 8 <= hour < 19


def _pick(rng: random.Random, weights: tuple[float, ...]) -> int:
    return bisect.bisect_right(list(accumulate(weights)), rng.random() * sum(weights))


def _generate_batch(
    world: World, n: int, start_ts: int, end_ts: int, seed: int,
    first_id: int, *, cover: bool, in_progress: int,
) -> tuple[_Batch, array, array]:
    rng = random.Random(f"batch:{seed}")
    span = max(end_ts - start_ts, 0)
    # Shape arrival times by each line's business hours only on ranges of
    # days; a dense burst (10k calls in one second) is just a burst.
    shaped = span >= 86400
    clocks = [_LocalClock(line.time_zone) for line in world.lines]
    in_progress = min(in_progress, n)
    n_main = n - in_progress

    # (started_at, line, line open at that time, still in progress at the end)
    entries: list[tuple[int, int, bool, bool]] = []
    for _ in range(n_main):
        line = bisect.bisect_right(world.line_cum, rng.random() * world.line_cum[-1])
        while True:
            t = start_ts + (rng.randrange(span) if span > 0 else 0)
            open_now = clocks[line].business(t) if shaped else True
            if open_now or rng.random() < 0.06:
                break
        entries.append((t, line, open_now, False))
    for _ in range(in_progress):
        t = max(start_ts, end_ts - rng.randint(30, 900))
        line = bisect.bisect_right(world.line_cum, rng.random() * world.line_cum[-1])
        entries.append((t, line, True, True))
    entries.sort(key=lambda e: e[0])

    forced: dict[int, _Scenario] = {}
    if cover and n_main >= len(_SCENARIOS):
        for s, sc in enumerate(_SCENARIOS):
            forced[int((s + 0.5) * n_main / len(_SCENARIOS))] = sc

    b = _Batch(seed=seed, end_ts=end_ts, span=span)
    started = array("q")
    ids = array("q")
    cid = first_id
    prog_seen = 0
    main_pos = 0
    contact_caller = next((k for k in range(world.pool_size) if world.has_contact(k)), 0)

    for t, line, open_now, prog in entries:
        # Real ids are global to Aircall, so one company's ids have gaps.
        cid += rng.randint(1, 4000)
        started.append(t)
        ids.append(cid)
        sc: _Scenario | None = None
        if prog:
            flags = F_IN_PROGRESS | (F_RINGING if prog_seen % 3 == 0 else 0)
            kind = (K_IN_ANS, K_IN_ANS, K_OUT_ANS)[prog_seen % 3]
            prog_seen += 1
        else:
            sc = forced.get(main_pos)
            main_pos += 1
            flags = 0
            if sc is not None:
                kind = sc.kind
                if sc.line is not None:
                    line = sc.line
            elif open_now:
                kind = _pick(rng, (0.30, 0.15, 0.33, 0.14, 0.08))
            else:
                kind = _pick(rng, (0.10, 0.05, 0.10, 0.50, 0.25))

        L = world.lines[line]
        eligible = [u for u in L.users if world.agents[u].created_ts <= t] or [L.users[0]]
        answered = kind in (K_OUT_ANS, K_IN_ANS)
        inbound = kind in (K_IN_ANS, K_MISSED, K_VOICEMAIL)

        # Missed-call reason (§7): out of opening hours when the line is closed.
        reason = 0
        if kind in (K_MISSED, K_VOICEMAIL) and not flags & F_IN_PROGRESS:
            if sc is not None and sc.reason:
                r = sc.reason
            elif not open_now:
                r = "out_of_opening_hours"
            elif kind == K_VOICEMAIL:
                r = rng.choice(("agents_did_not_answer", "no_available_agent"))
            else:
                r = MISSED_CALL_REASONS[1 + _pick(rng, (0.25, 0.15 if L.is_ivr else 0.0, 0.2, 0.15, 0.3))]
            reason = MISSED_CALL_REASONS.index(r) + 1

        # The agent: who made or took the call; missed calls mostly have none.
        user = rng.choice(eligible)
        if kind in (K_MISSED, K_VOICEMAIL) and not (reason == _REASON_RANG and rng.random() < 0.5):
            user = -1
        user2 = -1

        if sc is not None:
            flags |= sc.flags
        elif not flags & F_IN_PROGRESS:
            r = rng.random()
            if answered and r < (0.08 if inbound else 0.03):
                flags |= F_TRANSFER
            elif answered and inbound and r < 0.11:
                flags |= F_TRANSFER_TEAM
            elif answered and r < 0.14:
                flags |= F_CONFERENCE
            elif answered and r < 0.15:
                flags |= F_TWO_PARTIES
            if rng.random() < 0.10:
                flags |= F_COMMENT_USER
            if rng.random() < 0.04:
                flags |= F_COMMENT_API
            if kind in (K_MISSED, K_VOICEMAIL) and rng.random() < 0.3:
                flags |= F_ASSIGNED
            if rng.random() < 0.05:
                flags |= F_ARCHIVED
            if answered and rng.random() < 0.03:
                flags |= F_NO_RECORDING
        if flags & F_TRANSFER:
            others = [u for u in range(len(world.agents)) if u != user and world.agents[u].created_ts <= t]
            user2 = rng.choice(others) if others else -1
        elif flags & F_TRANSFER_TEAM:
            team = world.teams[(L.team + 1 + rng.randrange(len(world.teams) - 1)) % len(world.teams)]
            user2 = team.users[0] if team.users[0] != user else team.users[-1]

        ext_spec = sc.ext if sc is not None else None
        if ext_spec == "anonymous":
            ext = EXT_ANONYMOUS
        elif ext_spec == "invalid":
            ext = _EXT_INVALID0 - rng.randrange(len(_INVALID_NUMBERS))
        elif ext_spec == "impossible":
            ext = _EXT_IMPOSSIBLE0 - rng.randrange(len(_IMPOSSIBLE_NUMBERS))
        elif ext_spec == "contact":
            ext = contact_caller
        else:
            r = rng.random()
            if r < 0.03 and inbound:
                ext = EXT_ANONYMOUS
            elif r < 0.045:
                ext = _EXT_INVALID0 - rng.randrange(len(_INVALID_NUMBERS))
            elif r < 0.05:
                ext = _EXT_IMPOSSIBLE0 - rng.randrange(len(_IMPOSSIBLE_NUMBERS))
            else:
                ext = world.pick_caller(rng)

        tags = 0
        if sc is not None:
            tags = sc.tags
        elif not flags & F_IN_PROGRESS:
            if rng.random() < 0.25:
                for _ in range(rng.randint(1, 2)):
                    tags |= 1 << rng.randrange(len(world.tags))
            if kind == K_MISSED and rng.random() < 0.3:
                tags |= 1 << _TAG_CALLBACK

        b.kind.append(kind)
        b.flags.append(flags)
        b.line.append(line)
        b.user.append(user)
        b.user2.append(user2)
        b.reason.append(reason)
        b.ext.append(ext)
        b.tags.append(tags)
    return b, started, ids


def _talk(rng: random.Random) -> int:
    return max(5, min(5400, int(rng.lognormvariate(4.5, 1.0))))


def _render_generated(
    world: World, b: _Batch, i: int, call_id: int, started: int, base: str,
    fetch_contact: bool, fetch_short_urls: bool,
) -> dict[str, Any]:
    nested = world.nested(base)
    rng = random.Random(b.seed * 1_000_003 + i)
    kind, flags, line_i = b.kind[i], b.flags[i], b.line[i]
    L = world.lines[line_i]
    ext = world.ext(b.ext[i])
    inbound = kind in (K_IN_ANS, K_MISSED, K_VOICEMAIL)
    now = b.end_ts

    answered_at: int | None = None
    ended_at: int | None
    reason = MISSED_CALL_REASONS[b.reason[i] - 1] if b.reason[i] else None
    if kind == K_OUT_ANS:
        answered_at = started + rng.randint(3, 25)
        ended_at = answered_at + _talk(rng)
    elif kind == K_IN_ANS:
        answered_at = started + rng.randint(2, 40) + (rng.randint(5, 20) if L.is_ivr else 0)
        ended_at = answered_at + _talk(rng)
    elif kind == K_OUT_UNANS:
        ended_at = started + rng.randint(8, 45)
    elif kind == K_MISSED:
        lo, hi = {
            "short_abandoned": (1, 4), "abandoned_in_ivr": (8, 60), "abandoned_in_classic": (10, 120),
            "no_available_agent": (1, 8), "agents_did_not_answer": (20, 60), "out_of_opening_hours": (2, 15),
        }[reason or "agents_did_not_answer"]
        ended_at = started + rng.randint(lo, hi)
    else:
        ended_at = started + rng.randint(15, 40) + rng.randint(8, 90)

    in_progress = bool(flags & F_IN_PROGRESS)
    if not in_progress and b.span >= 3600 and ended_at > now:
        # A call still going at the end of the range is reported as such (§5).
        in_progress = True
        if answered_at is not None and answered_at > now:
            answered_at = None
    if in_progress:
        if flags & F_RINGING:
            answered_at = None
        elif answered_at is not None and answered_at > now:
            answered_at = max(now, started)
        status = "answered" if answered_at is not None else "initial"
        ended_at = None
        reason = None

    user = nested["users"][b.user[i]] if b.user[i] >= 0 else None
    sid = "CA" + _hex("sid", call_id)
    finalized = ended_at is not None and ended_at <= now - _FINALIZE_S
    duration = 0 if ended_at is None else ended_at - started + (0 if finalized else 1)
    if not in_progress:
        status = "done"

    recording = voicemail = asset = rec_short = vm_short = None
    if not in_progress and answered_at is not None and L.live_recording and not flags & F_NO_RECORDING:
        recording = f"{base}/recordings/{sid}.mp3"
        asset = f"{base}/assets/calls/{call_id}/recording"
        rec_short = f"{base}/short-urls/v1/{uuid.UUID(_hex('rec', call_id))}"
    if not in_progress and kind == K_VOICEMAIL:
        voicemail = f"{base}/voicemails/{sid}.mp3"
        asset = f"{base}/assets/calls/{call_id}/voicemail"
        vm_short = f"{base}/short-urls/v1/{uuid.UUID(_hex('vm', call_id))}"

    if finalized:
        cost = f"{rng.randint(1, 30)}.0" if kind in (K_OUT_ANS,) else "0.0"
        pricing = "in_bundle"
    else:
        cost, pricing = "0.0", None

    transferred_by = transferred_to = None
    if flags & (F_TRANSFER | F_TRANSFER_TEAM) and b.user2[i] >= 0 and not in_progress:
        transferred_by = user
        transferred_to = nested["users"][b.user2[i]]

    assigned = None
    if flags & F_ASSIGNED:
        assigned = nested["users"][rng.choice(L.users)]

    comments = []
    if not in_progress and ended_at is not None:
        posted = ended_at
        for j, who in enumerate((F_COMMENT_USER, F_COMMENT_API)):
            if flags & who:
                posted = posted + rng.randint(5, 1800)
                if b.span >= 3600:
                    posted = max(ended_at, min(posted, now))
                author = None
                if who == F_COMMENT_USER:
                    agent = b.user[i] if b.user[i] >= 0 else rng.choice(L.users)
                    author = nested["users_short"][agent]
                comments.append({
                    "id": call_id * 10 + j,
                    "content": rng.choice(_COMMENTS),
                    "posted_at": posted,
                    "posted_by": author,
                })

    mask = b.tags[i]
    tags = [nested["tags"][k] for k in range(len(world.tags)) if mask >> k & 1]

    call: dict[str, Any] = {
        "id": call_id,
        "sid": sid,
        "direct_link": f"{base}/v1/calls/{call_id}",
        "direction": "inbound" if inbound else "outbound",
        "status": status,
        "missed_call_reason": reason,
        "started_at": started,
        "answered_at": answered_at,
        "ended_at": ended_at,
        "duration": duration,
        "archived": bool(flags & F_ARCHIVED) and not in_progress,
        "cost": cost,
        "voicemail": voicemail,
        "recording": recording,
        "asset": asset,
        "raw_digits": ext.raw,
        "user": user,
        "contact": world.contact(b.ext[i], base, started) if fetch_contact else None,
        "assigned_to": assigned,
        "transferred_by": transferred_by,
        "transferred_to": transferred_to,
        "comments": comments,
        "number": nested["numbers"][line_i],
        # §5: teams are set on inbound calls only.
        "teams": [nested["teams"][L.team]] if inbound else [],
        "tags": tags,
        "recording_short_url": rec_short if fetch_short_urls else None,
        "voicemail_short_url": vm_short if fetch_short_urls else None,
        "country_code_a2": ext.country,
        "pricing_type": pricing,
    }
    if flags & (F_CONFERENCE | F_TWO_PARTIES) and not in_progress:
        agent = b.user[i] if b.user[i] >= 0 else L.users[0]
        parts: list[dict[str, Any]] = [
            {"type": "user", "id": world.agents[agent].id, "name": world.agents[agent].name},
            {"type": "external", "phone_number": ext.raw},
        ]
        if flags & F_CONFERENCE:
            for _ in range(rng.randint(1, 3)):
                r = rng.random()
                if r < 0.4:
                    mate = rng.choice([u for u in range(len(world.agents)) if u != agent])
                    parts.append({"type": "user", "id": world.agents[mate].id, "name": world.agents[mate].name})
                else:
                    other = world.pick_caller(rng)
                    contact = world.contact(other, base, started) if r < 0.7 else None
                    if contact is not None:
                        parts.append({
                            "type": "contact", "id": contact["id"],
                            "name": f"{contact['first_name']} {contact['last_name']}",
                            "phone_number": world.ext(other).raw,
                        })
                    else:
                        parts.append({"type": "external", "phone_number": world.ext(other).raw})
        call["conference_participants"] = parts
    return call


# --------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------


@dataclass(slots=True)
class _Overlay:
    fields: dict[str, Any] = field(default_factory=dict)
    comments: list[dict[str, Any]] = field(default_factory=list)
    tags: list[dict[str, Any]] = field(default_factory=list)


_CUSTOM = -1


class CallStore:
    """All calls of the emulated company, kept compact and sorted by start time.

    Thread-safe. Calls are ordered by ``(started_at, id)``; ``from``/``to``
    windows are found by bisection, so a page costs the same at 1k or 1M
    calls. Build one with :func:`generate`.
    """

    def __init__(self, world: World) -> None:
        self.world = world
        self._lock = threading.RLock()
        self._batches: list[_Batch] = []
        self._started = array("q")
        self._ids = array("q")
        self._ref = array("q")          # batch << 32 | index, or _CUSTOM
        self._pending: list[tuple[int, int, int]] = []
        self._dirty = False
        self._id_sorted = array("q")
        self._id_pos = array("q")
        self._custom: dict[int, dict[str, Any]] = {}
        self._overlay: dict[int, _Overlay] = {}
        self._next_id = 4_100_000_000
        self._next_comment_id = 1_000_000_000_000
        self.version = 0

    # -- building -------------------------------------------------------------

    def _add_batch(self, n: int, start: TimeLike, end: TimeLike, seed: int, *, cover: bool, in_progress: int) -> list[int]:
        s, e = to_epoch(start), to_epoch(end)
        if e < s:
            raise ValueError("end is before start")
        with self._lock:
            batch, started, ids = _generate_batch(
                self.world, n, s, e, seed, self._next_id, cover=cover, in_progress=in_progress
            )
            bno = len(self._batches)
            self._batches.append(batch)
            if ids:
                self._next_id = ids[-1] + 1
            refs = array("q", ((bno << 32) | i for i in range(n)))
            if not self._dirty and not self._pending and (
                not self._started or (started and (started[0], ids[0]) > (self._started[-1], self._ids[-1]))
            ):
                # Common case (one data set, or bursts added later in time): append.
                self._started.extend(started)
                self._ids.extend(ids)
                self._ref.extend(refs)
                self._dirty = True
            else:
                self._pending.extend(zip(started, ids, refs))
                self._dirty = True
            self.version += 1
            return list(ids)

    def add_generated(
        self, n: int, start: TimeLike, end: TimeLike, seed: int = 0, *,
        cover: bool = False, in_progress: int = 0,
    ) -> list[int]:
        """Add ``n`` generated calls starting in ``[start, end)`` (all at ``start`` if equal).

        Each call costs a few dozen bytes, so this is the way to build dense
        windows (10k+ calls in one second, 25k in a day). Ids continue above
        every id already in the store. Returns the new ids.
        """
        return self._add_batch(n, start, end, seed, cover=cover, in_progress=in_progress)

    def add_calls(self, calls: Iterable[Mapping[str, Any]]) -> list[int]:
        """Add hand-made calls. Each needs ``started_at``; every missing key
        gets a default (a finished inbound answered call on the first line);
        a missing ``id`` is allocated. Returns the ids, in input order."""
        out = []
        with self._lock:
            self._ensure_sorted()
            for c in calls:
                if "started_at" not in c:
                    raise ValueError("a call needs started_at")
                partial = dict(c)
                if "id" not in partial:
                    partial["id"] = self._next_id
                cid = int(partial["id"])
                if cid in self._custom or self._find(cid) is not None:
                    raise ValueError(f"call id {cid} already exists")
                self._next_id = max(self._next_id, cid + 1)
                self._custom[cid] = partial
                self._pending.append((int(partial["started_at"]), cid, _CUSTOM))
                out.append(cid)
            self._dirty = True
            self.version += 1
        return out

    def reserve_id(self, gap: int = 1) -> int:
        """A fresh call id, ``gap`` above the last one, for a call added later.

        Live traffic must return a call's id when the call is *placed*, before
        it starts and is added (:meth:`add_calls` with that id); reserving
        keeps any other call from taking the id meanwhile. A gap of more than
        one mimics Aircall's ids, global to every company.
        """
        with self._lock:
            cid = self._next_id + max(0, gap - 1)
            self._next_id = cid + 1
            return cid

    def _ensure_sorted(self) -> None:
        if not self._dirty:
            return
        if self._pending:
            rows = sorted([*zip(self._started, self._ids, self._ref), *self._pending])
            self._pending = []
            self._started = array("q", (r[0] for r in rows))
            self._ids = array("q", (r[1] for r in rows))
            self._ref = array("q", (r[2] for r in rows))
        order = sorted(range(len(self._ids)), key=self._ids.__getitem__)
        self._id_sorted = array("q", (self._ids[p] for p in order))
        self._id_pos = array("q", order)
        self._dirty = False

    def _find(self, call_id: int) -> int | None:
        """Position of a call in the started_at order (store lock held)."""
        self._ensure_sorted()
        k = bisect.bisect_left(self._id_sorted, call_id)
        if k < len(self._id_sorted) and self._id_sorted[k] == call_id:
            return self._id_pos[k]
        return None

    @property
    def lock(self) -> threading.RLock:
        """Hold it to read several positions consistently while other threads add calls."""
        return self._lock

    # -- reading --------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return len(self._started) + len(self._pending)

    def __contains__(self, call_id: object) -> bool:
        with self._lock:
            return isinstance(call_id, int) and self._find(call_id) is not None

    def window(self, from_ts: int | None = None, to_ts: int | None = None) -> range:
        """Positions of calls with ``started_at ∈ (from_ts, to_ts]`` (aircall-api.md §2)."""
        with self._lock:
            self._ensure_sorted()
            lo = 0 if from_ts is None else bisect.bisect_right(self._started, from_ts)
            hi = len(self._started) if to_ts is None else bisect.bisect_right(self._started, to_ts)
            return range(lo, max(lo, hi))

    def render_at(self, pos: int, *, base: str = DEFAULT_BASE, fetch_contact: bool = True,
                  fetch_short_urls: bool = True) -> dict[str, Any]:
        """The call at a position, as the API returns it. The dict may share
        nested objects with other calls: serialize it, do not mutate it."""
        with self._lock:
            self._ensure_sorted()
            call_id, started, ref = self._ids[pos], self._started[pos], self._ref[pos]
            if ref == _CUSTOM:
                call = _complete(self._custom[call_id], self.world, base)
                book = self.world.contact_book
                if not fetch_contact:
                    call["contact"] = None
                elif book is not None and book.active and isinstance(call.get("contact"), dict):
                    # A placed call embeds its contact as it was then; show the contact as it is now.
                    call["contact"] = book.resolve(call["contact"], base)
                if not fetch_short_urls:
                    call["recording_short_url"] = None
                    call["voicemail_short_url"] = None
            else:
                b = self._batches[ref >> 32]
                call = _render_generated(self.world, b, ref & 0xFFFFFFFF, call_id, started, base,
                                         fetch_contact, fetch_short_urls)
            ov = self._overlay.get(call_id)
            if ov is not None:
                call.update(ov.fields)
                if ov.comments:
                    call["comments"] = [*call.get("comments", []), *ov.comments]
                if ov.tags:
                    have = {t["id"] for t in call.get("tags", [])}
                    call["tags"] = [*call.get("tags", []), *(t for t in ov.tags if t["id"] not in have)]
                if not fetch_contact:
                    call["contact"] = None
                if not fetch_short_urls:
                    call["recording_short_url"] = None
                    call["voicemail_short_url"] = None
            return call

    def position(self, call_id: int) -> int | None:
        with self._lock:
            return self._find(call_id)

    def get(self, call_id: int, *, base: str = DEFAULT_BASE, fetch_contact: bool = True,
            fetch_short_urls: bool = True) -> dict[str, Any] | None:
        """A private copy of one call (``None`` if unknown)."""
        with self._lock:
            pos = self._find(call_id)
            if pos is None:
                return None
            return copy.deepcopy(self.render_at(pos, base=base, fetch_contact=fetch_contact,
                                                fetch_short_urls=fetch_short_urls))

    def ids(self) -> list[int]:
        """Every call id, in ``(started_at, id)`` order."""
        with self._lock:
            self._ensure_sorted()
            return list(self._ids)

    def iter_calls(self, from_ts: int | None = None, to_ts: int | None = None, *,
                   base: str = DEFAULT_BASE) -> Iterator[dict[str, Any]]:
        """Calls with ``started_at ∈ (from_ts, to_ts]``, rendered with every ``fetch_*`` flag on."""
        for pos in self.window(from_ts, to_ts):
            yield self.render_at(pos, base=base)

    def dump_json(self, *, base: str = DEFAULT_BASE) -> str:
        """The whole data set as one JSON document (for determinism checks)."""
        return json.dumps(list(self.iter_calls(base=base)), sort_keys=True, ensure_ascii=False)

    def external_numbers(self) -> list[str]:
        """Every caller of the pool in E.164 (a CRM seeded from them has records to match)."""
        out = []
        for code in range(self.world.pool_size):
            ext = self.world.ext(code)
            if ext.country and ext.digits:
                out.append("+" + ext.digits)
        return list(dict.fromkeys(out))

    def agents(self) -> list[dict[str, str]]:
        """The company's Aircall users: ``name`` and ``email`` (to seed CRM users)."""
        return [{"name": a.name, "email": a.email} for a in self.world.agents]

    def truth(self, call_id: int) -> dict[str, Any] | None:
        """What the generator meant a call to be, for end-to-end assertions:
        ``kind`` (RULES.md R-CALL-2 name, ``None`` while in progress),
        ``conference``, ``number_class`` (``valid`` | ``invalid`` |
        ``impossible`` | ``anonymous``), ``has_contact``, ``in_progress``.
        ``None`` for hand-made calls."""
        with self._lock:
            pos = self._find(call_id)
            if pos is None or self._ref[pos] == _CUSTOM:
                return None
            ref = self._ref[pos]
            b, i = self._batches[ref >> 32], ref & 0xFFFFFFFF
            call = self.render_at(pos)
        code = b.ext[i]
        number_class = (
            "anonymous" if code == EXT_ANONYMOUS
            else "impossible" if code <= _EXT_IMPOSSIBLE0
            else "invalid" if code <= _EXT_INVALID0
            else "valid"
        )
        in_progress = call["ended_at"] is None
        return {
            "kind": None if in_progress else KINDS[b.kind[i]],
            "conference": len(call.get("conference_participants") or ()) > 2,
            "number_class": number_class,
            "has_contact": self.world.has_contact(code),
            "in_progress": in_progress,
            "transferred": call["transferred_to"] is not None,
        }

    # -- search filters (aircall-api.md §2, /v1/calls/search) -----------------

    def matches(self, pos: int, *, direction: str | None = None, user_id: int | None = None,
                phone_digits: str | None = None, tag_ids: frozenset[int] = frozenset()) -> bool:
        with self._lock:
            call_id, ref = self._ids[pos], self._ref[pos]
            if ref == _CUSTOM or call_id in self._overlay:
                return _dict_matches(self.render_at(pos), direction, user_id, phone_digits, tag_ids)
            b, i = self._batches[ref >> 32], ref & 0xFFFFFFFF
            w = self.world
            if direction is not None:
                inbound = b.kind[i] in (K_IN_ANS, K_MISSED, K_VOICEMAIL)
                if direction != ("inbound" if inbound else "outbound"):
                    return False
            if user_id is not None:
                # "the user who made or received the call": the agent, or
                # the user it was transferred to.
                u, u2 = b.user[i], b.user2[i]
                if not ((u >= 0 and w.agents[u].id == user_id) or (u2 >= 0 and w.agents[u2].id == user_id)):
                    return False
            if phone_digits is not None:
                if phone_digits not in (w.ext(b.ext[i]).digits, w.line_digits[b.line[i]]):
                    return False
            if tag_ids:
                have = {w.tags[k].id for k in range(len(w.tags)) if b.tags[i] >> k & 1}
                if not tag_ids <= have:
                    return False
            return True

    # -- mutations --------------------------------------------------------------

    def _overlay_for(self, call_id: int) -> _Overlay:
        if self._find(call_id) is None:
            raise KeyError(call_id)
        return self._overlay.setdefault(call_id, _Overlay())

    def add_comment(self, call_id: int, content: str, *, posted_at: int | None = None,
                    posted_by: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Append a comment. Through the API ``posted_by`` is ``null`` (§6)."""
        with self._lock:
            ov = self._overlay_for(call_id)
            self._next_comment_id += 1
            comment = {
                "id": self._next_comment_id,
                "content": content,
                "posted_at": int(posted_at if posted_at is not None else datetime.now(UTC).timestamp()),
                "posted_by": dict(posted_by) if posted_by is not None else None,
            }
            ov.comments.append(comment)
            self.version += 1
            return dict(comment)

    def add_tags(self, call_id: int, tags: Iterable[int | str], *, base: str = DEFAULT_BASE) -> list[dict[str, Any]]:
        """Tag a call with company tags given by id or by name (the sources
        disagree on which the API takes, §2). Unknown tags raise ``LookupError``."""
        w = self.world
        idx = []
        for t in tags:
            if isinstance(t, bool):
                raise LookupError(t)
            if isinstance(t, int) or (isinstance(t, str) and t.isdigit()):
                k = w.tag_index.get(int(t))
            else:
                k = w.tag_by_name.get(str(t).strip().casefold())
            if k is None:
                raise LookupError(t)
            idx.append(k)
        with self._lock:
            ov = self._overlay_for(call_id)
            nested = w.nested(base)["tags"]
            have = {t["id"] for t in ov.tags}
            for k in idx:
                if w.tags[k].id not in have:
                    ov.tags.append(nested[k])
                    have.add(w.tags[k].id)
            self.version += 1
            return [dict(nested[k]) for k in idx]

    def update_call(self, call_id: int, **fields: Any) -> None:
        """Overwrite top-level fields of a call, e.g. to emulate Aircall
        finalizing it (§5: ``cost``, ``pricing_type``, ``duration`` and even
        ``started_at`` change after the end)."""
        if "id" in fields:
            raise ValueError("a call's id cannot change")
        with self._lock:
            ov = self._overlay_for(call_id)
            ov.fields.update(fields)
            if "started_at" in fields:
                pos = self._find(call_id)
                assert pos is not None
                self._started[pos] = int(fields["started_at"])
                if self._ref[pos] == _CUSTOM:
                    self._custom[call_id]["started_at"] = int(fields["started_at"])
                # Re-sort through the pending path.
                self._pending.append((self._started.pop(pos), self._ids.pop(pos), self._ref.pop(pos)))
                self._dirty = True
            self.version += 1


def _dict_matches(call: Mapping[str, Any], direction: str | None, user_id: int | None,
                  phone_digits: str | None, tag_ids: frozenset[int]) -> bool:
    if direction is not None and call.get("direction") != direction:
        return False
    if user_id is not None:
        ids = {(call.get(k) or {}).get("id") for k in ("user", "transferred_to")}
        if user_id not in ids:
            return False
    if phone_digits is not None:
        if phone_digits not in (_digits(call.get("raw_digits")), _digits((call.get("number") or {}).get("digits"))):
            return False
    if tag_ids and not tag_ids <= {t.get("id") for t in call.get("tags") or ()}:
        return False
    return True


def _complete(partial: Mapping[str, Any], world: World, base: str) -> dict[str, Any]:
    """A hand-made call with every key of the live shape filled in."""
    cid = int(partial["id"])
    started = int(partial["started_at"])
    nested = world.nested(base)
    answered = partial.get("answered_at", started + 5)
    ended = partial.get("ended_at", (answered if answered is not None else started) + 60)
    call: dict[str, Any] = {
        "id": cid,
        "sid": "CA" + _hex("sid", cid),
        "direct_link": f"{base}/v1/calls/{cid}",
        "direction": "inbound",
        "status": "done" if ended is not None else ("answered" if answered is not None else "initial"),
        "missed_call_reason": None,
        "started_at": started,
        "answered_at": answered,
        "ended_at": ended,
        "duration": (ended - started) if ended is not None else 0,
        "archived": False,
        "cost": "0.0",
        "voicemail": None,
        "recording": None,
        "asset": None,
        "raw_digits": "+1 617-610-5413",
        "user": nested["users"][world.lines[0].users[0]] if answered is not None else None,
        "contact": None,
        "assigned_to": None,
        "transferred_by": None,
        "transferred_to": None,
        "comments": [],
        "number": nested["numbers"][0],
        "teams": [],
        "tags": [],
        "recording_short_url": None,
        "voicemail_short_url": None,
        "country_code_a2": "US",
        "pricing_type": None,
    }
    call.update(partial)
    call["id"] = cid
    call["started_at"] = started
    return call


def generate(
    calls: int = 500,
    seed: int = 1,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    *,
    pool_size: int | None = None,
    in_progress: int | None = None,
) -> CallStore:
    """A store holding ``calls`` generated calls with ``started_at`` in ``[start, end)``.

    ``end`` defaults to now (rounded down to the minute) and ``start`` to 30
    days before ``end``: pass both for byte-identical data across runs.
    ``pool_size`` is the number of distinct external numbers (default:
    about one per three calls, so numbers repeat). ``in_progress`` is how
    many calls are still going at ``end`` (default 2, or 3 from 1,000 calls).
    Every case listed in this module's docstring is present from about 40
    calls.
    """
    if end is None:
        end = datetime.now(UTC).replace(second=0, microsecond=0)
    e = to_epoch(end)
    s = to_epoch(start) if start is not None else e - int(timedelta(days=30).total_seconds())
    if pool_size is None:
        pool_size = max(30, calls // 3)
    if in_progress is None:
        in_progress = 0 if calls < 10 or e - s < 3600 else (2 if calls < 1000 else 3)
    store = CallStore(World(seed, s, e, pool_size))
    store._add_batch(calls, s, e, seed, cover=True, in_progress=in_progress)
    return store
