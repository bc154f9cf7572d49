"""Emulated Aircall contacts: the company's shared contacts and the ``/v1/contacts`` endpoints.

Behaviour follows ``shared/reference/aircall-api.md`` §12 (Contacts; cited
as §12 below), §3 (pagination, the 10k cap), §6 (the Contact object) and the
recorded create ``shared/reference/aircall/recorded/create-contact.json``:

- ``GET /v1/contacts``: ``page``, ``per_page`` (default 20, above 50 clamped),
  ``from`` / ``to`` in UNIX seconds on ``created_at``, **both inclusive**,
  ``order`` asc|desc, ``order_by`` created_at|updated_at (default created_at
  asc) → ``{"contacts": [...], "meta": {...}}``; ``page * per_page > 10000``
  → 400 with the cap's body (§3).
- ``GET /v1/contacts/search``: the same, plus ``phone_number`` (E.164; a
  ``+`` must be sent as ``%2B``) and ``email``; nothing else filters.
- ``GET /v1/contacts/:id`` → ``{"contact": ...}``; unknown → 404
  ``{"message": "Not Found"}`` (§12, EST C5).
- ``POST /v1/contacts`` ``{first_name, last_name, company_name, information,
  phone_numbers: [{label, value}], emails: [{label, value}]}`` → 201
  ``{"contact": ...}`` in the recorded create's shape: an id for the contact
  and for each number and email, ``is_shared: true``, int timestamps. No
  dedupe: the same body twice makes two contacts (§12).
- ``POST /v1/contacts/:id`` (and ``PUT``, see AMBIGUITIES): the four scalar
  fields only; a field sent blank is a 400 "can't be blank" → 200
  ``{"contact": ...}``. ``DELETE /v1/contacts/:id`` → 204, no tombstone.
- ``POST /v1/contacts/:id/phone_details`` ``{label, value}`` → 201
  ``{"phone_detail": {id, label, value}}``; ``PUT`` → 200 and ``DELETE`` →
  204 on ``/v1/contacts/:id/phone_details/:detail_id``; the same three on
  ``email_details`` with ``{"email_detail": ...}``.
- Validation (400, the observed error body of §1): ``phone_numbers``
  mandatory and non-empty, ``label`` and ``value`` on every entry, at most 20
  numbers and 20 emails, numbers in E.164, no emoji anywhere (or stripped:
  :class:`ContactOptions`), ``information`` up to 30,000 characters.

The store (:class:`ContactBook`) starts with the contacts the generated calls
reference (``call.contact`` with ``fetch_contact=true``): same ids, same data,
and a call shows a contact as the API left it (:meth:`World.contact
<.generator.World.contact>` asks the book once anything changed). Tests read
and seed it without HTTP (nothing counted): :meth:`ContactBook.all`,
:meth:`~ContactBook.find_by_number`, :meth:`~ContactBook.add` (a contact
made by hand in the Aircall app), :meth:`~ContactBook.changes` (what the API
changed). Requests go through :class:`~.aircall_api.AircallApp`, so they are
authenticated, paced by its rate limit and written to the server's request
log like every call request. Where the reference is silent or conflicting,
the decision taken is listed in :data:`AMBIGUITIES`.
"""

from __future__ import annotations

import copy
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import phonenumbers

from aircall_sync.sandbox.aircall_common import CAP_ERROR_BODY, error_body, list_meta, page_params
from aircall_sync.sandbox.generator import DEFAULT_BASE, World
from aircall_sync.sandbox.server import Request, Response

__all__ = [
    "AMBIGUITIES",
    "DETAIL_KINDS",
    "MAX_DETAILS",
    "MAX_INFORMATION",
    "NOT_FOUND_BODY",
    "SCALAR_FIELDS",
    "ContactBook",
    "ContactChange",
    "ContactEndpoints",
    "ContactError",
    "ContactOptions",
    "has_emoji",
    "strip_emoji",
]

#: §12 "The 4 scalar fields": the only ones an update changes.
SCALAR_FIELDS = ("first_name", "last_name", "company_name", "information")
MAX_DETAILS = 20            # §12 Create: "Each list holds at most 20; more gives a 400"
MAX_INFORMATION = 30_000    # §12 Limits: "Notes up to 30,000 characters" (Workspace app)
#: §12: EST C5, the only 404 recorded on contacts.
NOT_FOUND_BODY: dict[str, Any] = {"message": "Not Found"}
#: URL segment → (body key of a create, answer envelope, what its value must be).
DETAIL_KINDS: dict[str, tuple[str, str, str]] = {
    "phone_details": ("phone_numbers", "phone_detail", "phone"),
    "email_details": ("emails", "email_detail", "email"),
}

AMBIGUITIES: tuple[str, ...] = (
    "Seeded contacts: the contacts the generated calls carry (call.contact) are the company's shared "
    "contacts from the start, with the same ids and data; GET /v1/contacts/:id answers the same object, and "
    "once the API changed or deleted one, calls show it as it is now (null once deleted). Whether Aircall "
    "links a call to a contact at call time or at read time is not documented (no live matched sample, §12); "
    "the emulator links by id at read time.",
    "A contact created later (through the API or by hand) is linked to the calls of its number that start "
    "after its created_at, the earliest such contact first, and only for callers without a seeded contact (or "
    "whose seeded contact was deleted): "
    "Aircall's purpose is to show the caller's name on the next call (§12 'CRM Contact Sync'). Earlier calls "
    "keep contact: null. Numbers outside the generated callers' pool are never linked.",
    "Two shapes. Seeded contacts keep the keys the generated calls already carry (§6 Contact, with "
    "description: null). Contacts created through the API or by hand have exactly the recorded create's keys "
    "and order (no description key; company_name etc. null when not sent; number and email entries as "
    "{value, id, label}). A client must read both.",
    "Numbers must be E.164 on input: '+', a non-zero digit, at most 15 digits in all, possible for its "
    "country by libphonenumber's length rules. Anything else (spaces, dashes, no '+', too short) is a 400 "
    "naming the entry; nothing is normalized. The reference leaves it UNCONFIRMED whether '+1 812-641-5139' "
    "is normalized or refused, and the issue asks the emulator to validate E.164. A number that is possible "
    "but not valid is accepted: the recorded create saved +19001112222, which libphonenumber calls invalid.",
    "Emojis: the Workspace app strips them; RULES R-CONTACT-4 says Aircall refuses them; the API's "
    "behaviour is UNCONFIRMED. By default the emulator refuses any value (scalars, labels, numbers, emails) "
    "holding an emoji with a 400; ContactOptions(emoji='strip') strips them instead (a field left blank by "
    "stripping is then 'can't be blank'). An emoji is a code point of the ranges in _EMOJI_RANGES "
    "(pictographs, emoticons, dingbats, flags, keycap and tag sequences, the emoji variation selector); "
    "letters with accents, ©, ® and ™ are not emojis.",
    "Status codes: POST /v1/contacts answers 201 as documented (NANGO recorded 200 through a proxy); "
    "POST …/phone_details and …/email_details answer 201 too (a create; the Go and Laravel clients do not "
    "say); updates answer 200; every DELETE answers 204 with an empty body.",
    "Validation errors are 400 with the observed error body (aircall-api.md §1) and an `errors` text naming "
    "the field, e.g. \"phone_numbers can't be blank\" or \"phone_numbers[1].value is not an E.164 phone "
    "number\": no error body was recorded for contacts (§12, UNCONFIRMED). Checks run in body order: JSON "
    "object, scalars, phone_numbers, emails; the first failure answers.",
    "phone_numbers missing, null, not a list or empty is a 400: 'mandatory' (W6W) is read as at least one "
    "number. emails is optional. A 21st entry, in a create or through …/phone_details, is a 400. Deleting "
    "a contact's last number through …/phone_details/:id is allowed: contacts without numbers exist "
    "(recorded contact.created webhook).",
    "Emails must be one '@' between non-blank parts with a dot in the domain and no space; otherwise a 400 "
    "(the reference says nothing on e-mail validation).",
    "information longer than 30,000 characters is a 400 (the Workspace app's limit for notes, §12; whether "
    "the API applies it is UNCONFIRMED). No other length limit is enforced.",
    "Unknown body keys are ignored, is_shared included (not an input: API contacts are always shared, §12); "
    "so are phone_numbers and emails on an update (NANGO re-sent them with their ids and nothing changed).",
    "Update: PUT /v1/contacts/:id routes to the same update as POST (EST C4 says PUT also routes; the docs "
    "insist on POST). A scalar sent as null, '' or only spaces is a 400 \"<field> can't be blank\", whether "
    "the field had a value or not (W6W: defined fields can't be blank). An update that changes nothing "
    "leaves updated_at alone; any change, including a number or email detail, sets it to now.",
    "PUT …/phone_details/:id and …/email_details/:id change the label, the value or both; an empty body is a "
    "400. A detail id of another contact is a 404, as an unknown one is.",
    "Search: phone_number matches a contact whose number, written as '+' and its digits, equals the "
    "URL-decoded value exactly; a '+' sent raw decodes to a space and finds nothing (200, empty list), as "
    "§12's advice to encode it as %2B implies. email matches case-insensitively on the whole address. Both "
    "given: both must match. Neither: every contact, as unknown parameters are ignored (NANGO: query=… "
    "returned all).",
    "Search lag: off by default. ContactOptions(search_lag_s, search_lag_jitter_s) keeps a created contact "
    "(API or by hand) out of /v1/contacts/search for that long after its creation, plus a seeded share of "
    "the jitter per contact, on the store's clock; GET by id and the plain list see it at once (Fides polls "
    "search only, §12, UNCONFIRMED).",
    "Order: ties on created_at / updated_at are broken by id; an unknown order_by or order value falls back "
    "to created_at / asc (unknown parameters are ignored). from/to filter created_at even with "
    "order_by=updated_at; a non-integer from/to is a 400, as on /v1/calls.",
    "Ids: created contacts get ids above 482,884,000 (the recorded create's range) and number/email details "
    "ids above 1,818,273,000, each with a gap drawn from the sandbox seed (ids are global to Aircall); "
    "seeded ones keep the generator's (contact id * 10 + 1 for the email, + 2 for the number).",
    "A non-shared contact (only by hand: ContactBook.add(shared=False), an agent's private contact) is "
    "invisible to the API (not listed, not searched, 404 by id, never on a call): the API lists only shared "
    "contacts (§6, EST).",
    "No contact.* webhook event is sent when the API changes a contact: the events exist in the registry "
    "(aircall_webhooks) but the reference has no timing or payload rules for them beyond three 2022 samples.",
)

# Code points counted as emojis (see AMBIGUITIES).
_EMOJI_RANGES: tuple[tuple[int, int], ...] = (
    (0x1F000, 0x1FAFF),  # mahjong, cards, enclosed alphanumerics (flags), pictographs, emoticons, transport…
    (0x2600, 0x27BF),    # miscellaneous symbols and dingbats (☀ ✅ ❤ ✂)
    (0x2B05, 0x2B07), (0x2B1B, 0x2B1C), (0x2B50, 0x2B50), (0x2B55, 0x2B55),
    (0x231A, 0x231B), (0x23E9, 0x23F3), (0x23F8, 0x23FA),
    (0x20E3, 0x20E3),    # combining enclosing keycap
    (0xFE0F, 0xFE0F),    # emoji presentation selector
    (0xE0020, 0xE007F),  # tag characters (subdivision flags)
)
_ZWJ = "\u200d"

_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _is_emoji(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _EMOJI_RANGES)


def has_emoji(text: str) -> bool:
    """Whether ``text`` holds a code point the emulator counts as an emoji."""
    return any(_is_emoji(ch) for ch in text)


def strip_emoji(text: str) -> str:
    """``text`` without its emojis (and the joiners between them), trimmed, as the Aircall app saves it."""
    out: list[str] = []
    for i, ch in enumerate(text):
        if _is_emoji(ch):
            continue
        if ch == _ZWJ and (i == 0 or _is_emoji(text[i - 1]) or (i + 1 < len(text) and _is_emoji(text[i + 1]))):
            continue
        out.append(ch)
    return " ".join("".join(out).split()) if out else ""


def _e164(value: str) -> str | None:
    """A stored number as '+' and its digits, or ``None`` if it does not start with '+'."""
    value = value.strip()
    if not value.startswith("+"):
        return None
    digits = "".join(c for c in value if c.isdigit())
    return "+" + digits if digits else None


class ContactError(Exception):
    """A refused contact request: the HTTP ``status`` and the JSON ``body`` to answer."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body

    @classmethod
    def bad(cls, errors: str) -> ContactError:
        return cls(400, error_body(400, errors))

    @classmethod
    def not_found(cls) -> ContactError:
        return cls(404, dict(NOT_FOUND_BODY))


@dataclass(frozen=True)
class ContactOptions:
    """How the emulated contacts API behaves where the reference is unsure (see AMBIGUITIES)."""

    #: ``"refuse"``: a value holding an emoji is a 400; ``"strip"``: emojis are removed, as the app does.
    emoji: str = "refuse"
    #: Seconds a created contact stays out of ``/v1/contacts/search`` (0: found at once).
    search_lag_s: float = 0.0
    #: Plus up to this many seconds, drawn per contact from the seed.
    search_lag_jitter_s: float = 0.0

    def __post_init__(self) -> None:
        if self.emoji not in ("refuse", "strip"):
            raise ValueError("emoji must be 'refuse' or 'strip'")
        if self.search_lag_s < 0 or self.search_lag_jitter_s < 0:
            raise ValueError("search lags cannot be negative")


@dataclass(frozen=True)
class ContactChange:
    """One change to the store: what a test reads to see what the API (or the app) did.

    ``op`` is ``create``, ``update``, ``delete``, or ``phone_detail.create|update|delete`` /
    ``email_detail.…``. ``changed`` holds the new values of what changed (a create: the whole
    contact; a detail: the detail), ``before`` the old ones (empty for a create).
    """

    seq: int
    source: str          # "api" | "app"
    op: str
    contact_id: int
    detail_id: int | None
    changed: dict[str, Any]
    before: dict[str, Any]
    at: int


@dataclass
class _Rec:
    """A contact the store holds itself: created, made by hand, or a seeded one once changed."""

    id: int
    seeded: bool
    first_name: str | None
    last_name: str | None
    company_name: str | None
    information: str | None
    created_at: int
    updated_at: int
    phone_numbers: list[dict[str, Any]] = field(default_factory=list)   # {"id", "label", "value"}
    emails: list[dict[str, Any]] = field(default_factory=list)
    description: str | None = None
    is_shared: bool = True
    searchable_at: float = 0.0

    def details(self, kind: str) -> list[dict[str, Any]]:
        return self.phone_numbers if kind == "phone_details" else self.emails

    def render(self, base: str) -> dict[str, Any]:
        link = f"{base}/v1/contacts/{self.id}"
        if self.seeded:
            # The keys the generated calls carry (generator.World._make_contact).
            return {
                "id": self.id, "direct_link": link, "first_name": self.first_name, "last_name": self.last_name,
                "company_name": self.company_name, "description": self.description,
                "information": self.information, "is_shared": self.is_shared, "created_at": self.created_at,
                "updated_at": self.updated_at, "emails": [dict(e) for e in self.emails],
                "phone_numbers": [dict(p) for p in self.phone_numbers],
            }
        # create-contact.json, key for key and in its order.
        return {
            "id": self.id, "created_at": self.created_at, "updated_at": self.updated_at,
            "first_name": self.first_name, "last_name": self.last_name, "information": self.information,
            "company_name": self.company_name, "is_shared": self.is_shared, "direct_link": link,
            "phone_numbers": [{"value": p["value"], "id": p["id"], "label": p["label"]} for p in self.phone_numbers],
            "emails": [{"value": e["value"], "id": e["id"], "label": e["label"]} for e in self.emails],
        }


class ContactBook:
    """The company's Aircall contacts: the seeded ones of the generated callers, plus every created one.

    Thread-safe. Registers itself as ``world.contact_book`` so that calls show
    contacts as they are now (:meth:`resolve_caller`, :meth:`resolve`). One
    book per world: build it with :meth:`for_world`.
    """

    def __init__(self, world: World, *, clock: Callable[[], float] = time.time,
                 options: ContactOptions | None = None) -> None:
        if world.contact_book is not None:
            raise ValueError("this world already has a contact book: use ContactBook.for_world")
        self.world = world
        self.options = options or ContactOptions()
        self.clock = clock
        #: The base URL of ``direct_link`` in what the helpers return (the stack sets the server's).
        self.base_url = DEFAULT_BASE
        self._lock = threading.RLock()
        self._records: dict[int, _Rec] = {}
        self._deleted: set[int] = set()
        self._changes: list[ContactChange] = []
        self.version = 0
        self._seed_ids: list[int] | None = None
        self._order_cache: dict[tuple[Any, ...], list[int]] = {}
        self._number_cache: tuple[int, dict[str, list[int]]] | None = None
        pool = world.pool_size
        rng = random.Random(f"contacts:{world.seed}")
        self._id_rng = rng
        self._lag_rng = random.Random(f"contacts-lag:{world.seed}")
        # Above every seeded id (120_000_000 + 11 * code + 9) and detail id (that * 10 + 2).
        self._next_id = max(482_884_000, 120_000_000 + 11 * pool + 10)
        self._next_detail_id = max(1_818_273_000, (120_000_000 + 11 * pool + 10) * 10)
        world.contact_book = self

    @classmethod
    def for_world(cls, world: World, *, clock: Callable[[], float] = time.time,
                  options: ContactOptions | None = None) -> ContactBook:
        """The world's book, made on first use (later arguments are then ignored)."""
        with world._lock:
            book = world.contact_book
        return book if book is not None else cls(world, clock=clock, options=options)

    # -- what the generator asks ------------------------------------------------

    @property
    def active(self) -> bool:
        """False until anything changed: until then calls show the generator's contacts as they are."""
        return bool(self._records or self._deleted)

    def resolve(self, contact: Mapping[str, Any], base: str) -> dict[str, Any] | None:
        """A contact a call embedded (by id) as it is now; ``None`` once deleted or private."""
        cid = contact.get("id")
        with self._lock:
            if cid in self._deleted:
                return None
            rec = self._records.get(cid) if isinstance(cid, int) else None
            if rec is None:
                return dict(contact)
            return rec.render(base) if rec.is_shared else None

    def resolve_caller(self, code: int, seeded: dict[str, Any] | None, base: str,
                       at: int | None) -> dict[str, Any] | None:
        """The contact a call from pool caller ``code`` started at ``at`` (None: now) shows."""
        with self._lock:
            if seeded is not None and seeded["id"] not in self._deleted:
                rec = self._records.get(seeded["id"])
                if rec is None:
                    return seeded
                if rec.is_shared:
                    return rec.render(base)
            ext = self.world.ext(code)
            if not ext.digits:
                return None
            for cid in self._by_number().get("+" + ext.digits, ()):
                rec = self._records[cid]
                if rec.is_shared and (at is None or rec.created_at <= at):
                    return rec.render(base)
            return None

    def _by_number(self) -> dict[str, list[int]]:
        """Created (not seeded) contacts by E.164 number, earliest first (lock held)."""
        cached = self._number_cache
        if cached is not None and cached[0] == self.version:
            return cached[1]
        index: dict[str, list[int]] = {}
        for rec in sorted(self._records.values(), key=lambda r: (r.created_at, r.id)):
            if rec.seeded:
                continue
            for p in rec.phone_numbers:
                n = _e164(p["value"])
                if n is not None and rec.id not in index.get(n, ()):
                    index.setdefault(n, []).append(rec.id)
        self._number_cache = (self.version, index)
        return index

    # -- reading ------------------------------------------------------------------

    def _seeded(self) -> list[int]:
        """Ids of every seeded contact, by pool code (built on first use; lock held)."""
        if self._seed_ids is None:
            world = self.world
            self._seed_ids = [core["id"] for code in range(world.pool_size)
                              if (core := world.contact_core(code)) is not None]
        return self._seed_ids

    def _core(self, cid: int) -> dict[str, Any] | None:
        code = self.world.contact_code(cid)
        return None if code is None else self.world.contact_core(code)

    def _row(self, cid: int) -> tuple[int, int] | None:
        """``(created_at, updated_at)`` of a contact the API can see, else ``None`` (lock held)."""
        if cid in self._deleted:
            return None
        rec = self._records.get(cid)
        if rec is not None:
            return (rec.created_at, rec.updated_at) if rec.is_shared else None
        core = self._core(cid)
        return None if core is None else (core["created_at"], core["updated_at"])

    def _render(self, cid: int, base: str) -> dict[str, Any] | None:
        rec = self._records.get(cid)
        if rec is not None:
            return rec.render(base)
        code = self.world.contact_code(cid)
        if code is None or cid in self._deleted:
            return None
        core = self.world.contact_core(code)
        assert core is not None
        return {"id": cid, "direct_link": f"{base}/v1/contacts/{cid}", **{k: v for k, v in core.items() if k != "id"}}

    def _numbers_emails(self, cid: int) -> tuple[list[str], list[str]]:
        rec = self._records.get(cid)
        src: Any = rec if rec is not None else self._core(cid)
        phones = rec.phone_numbers if rec is not None else src["phone_numbers"]
        emails = rec.emails if rec is not None else src["emails"]
        return ([n for p in phones if (n := _e164(p["value"])) is not None],
                [e["value"].strip().casefold() for e in emails])

    def select(self, *, from_ts: int | None = None, to_ts: int | None = None, order_by: str = "created_at",
               desc: bool = False, phone_number: str | None = None, email: str | None = None,
               search: bool = False) -> list[int]:
        """Ids of the contacts the API lists, in order (§12); ``search`` applies the search lag."""
        with self._lock:
            key = (self.version, from_ts, to_ts, order_by, phone_number, email)
            ids = self._order_cache.get(key)
            if ids is None:
                rows = []
                for cid in (*self._seeded(), *(r.id for r in self._records.values() if not r.seeded)):
                    row = self._row(cid)
                    if row is None:
                        continue
                    created, updated = row
                    # §12: from/to on created_at, both inclusive.
                    if (from_ts is not None and created < from_ts) or (to_ts is not None and created > to_ts):
                        continue
                    if phone_number is not None or email is not None:
                        numbers, emails = self._numbers_emails(cid)
                        if phone_number is not None and phone_number not in numbers:
                            continue
                        if email is not None and email.strip().casefold() not in emails:
                            continue
                    rows.append((updated if order_by == "updated_at" else created, cid))
                rows.sort()
                ids = [cid for _, cid in rows]
                if len(self._order_cache) > 16:
                    self._order_cache.clear()
                self._order_cache[key] = ids
            if search:
                now = self.clock()
                ids = [cid for cid in ids if (rec := self._records.get(cid)) is None or rec.searchable_at <= now]
            return ids[::-1] if desc else list(ids)

    def render_many(self, ids: Iterable[int], base: str) -> list[dict[str, Any]]:
        with self._lock:
            return [c for cid in ids if (c := self._render(cid, base)) is not None]

    def get(self, contact_id: int, *, base: str | None = None, private: bool = True) -> dict[str, Any] | None:
        """A contact, private ones included unless ``private=False``; ``None`` if unknown or deleted.
        Serialize it, do not mutate it (a seeded contact shares its lists with the calls)."""
        with self._lock:
            rec = self._records.get(contact_id)
            if rec is not None and not rec.is_shared and not private:
                return None
            return self._render(contact_id, base or self.base_url)

    def all(self, *, private: bool = False, base: str | None = None) -> list[dict[str, Any]]:
        """Every contact the API can see (with ``private``: the agents' own too), by ``(created_at, id)``:
        private copies, free to mutate."""
        with self._lock:
            ids = self.select()
            if private:
                rows = [(self._created_at(i), i) for i in ids]
                rows += [(r.created_at, r.id) for r in self._records.values() if not r.is_shared]
                ids = [cid for _, cid in sorted(rows)]
            return copy.deepcopy(self.render_many(ids, base or self.base_url))

    def _created_at(self, cid: int) -> int:
        rec = self._records.get(cid)
        return rec.created_at if rec is not None else self._core(cid)["created_at"]  # type: ignore[index]

    def __len__(self) -> int:
        return len(self.select())

    def find_by_number(self, number: str, *, base: str | None = None) -> list[dict[str, Any]]:
        """Contacts (private ones too) with this number in any international form ('+' first), by id:
        private copies."""
        want = _e164(number)
        with self._lock:
            out = []
            ids = [*self._seeded(), *(r.id for r in self._records.values() if not r.seeded)]
            for cid in sorted(set(ids)):
                if cid in self._deleted:
                    continue
                if want is not None and want in self._numbers_emails(cid)[0]:
                    out.append(self._render(cid, base or self.base_url))
            return copy.deepcopy(out)

    def find_by_email(self, email: str, *, base: str | None = None) -> list[dict[str, Any]]:
        want = email.strip().casefold()
        with self._lock:
            ids = [*self._seeded(), *(r.id for r in self._records.values() if not r.seeded)]
            return copy.deepcopy([self._render(cid, base or self.base_url) for cid in sorted(set(ids))
                                  if cid not in self._deleted and want in self._numbers_emails(cid)[1]])

    def changes(self, source: str | None = "api", *, since: int = 0) -> list[ContactChange]:
        """What changed, oldest first: by ``source`` (``"api"``, ``"app"``, or ``None`` for both),
        after sequence number ``since``."""
        with self._lock:
            return [c for c in self._changes if c.seq > since and (source is None or c.source == source)]

    # -- changing -------------------------------------------------------------------

    def _now(self) -> int:
        return int(self.clock())

    def _log(self, source: str, op: str, cid: int, detail_id: int | None, changed: dict[str, Any],
             before: dict[str, Any], at: int) -> None:
        self._changes.append(ContactChange(len(self._changes) + 1, source, op, cid, detail_id, changed, before, at))
        self.version += 1

    def _new_id(self) -> int:
        self._next_id += self._id_rng.randint(1, 400)
        return self._next_id

    def _new_detail_id(self) -> int:
        self._next_detail_id += self._id_rng.randint(1, 40)
        return self._next_detail_id

    def _materialize(self, cid: int) -> _Rec:
        """The record of a contact the API can see, copying a seeded one on its first change (lock held)."""
        rec = self._records.get(cid)
        if rec is not None:
            if not rec.is_shared:
                raise ContactError.not_found()
            return rec
        core = self._core(cid)
        if core is None or cid in self._deleted:
            raise ContactError.not_found()
        rec = _Rec(
            id=cid, seeded=True, first_name=core["first_name"], last_name=core["last_name"],
            company_name=core["company_name"], information=core["information"],
            description=core["description"], created_at=core["created_at"], updated_at=core["updated_at"],
            phone_numbers=[dict(p) for p in core["phone_numbers"]], emails=[dict(e) for e in core["emails"]],
        )
        self._records[cid] = rec
        return rec

    def _require(self, contact_id: int) -> None:
        """:class:`ContactError` 404 unless the API can see this contact (lock held)."""
        if self._row(contact_id) is None:
            raise ContactError.not_found()

    def _writable(self, contact_id: int) -> _Rec:
        """The record of a contact the API can see, ready to change, or :class:`ContactError` 404 (lock held)."""
        self._require(contact_id)
        return self._materialize(contact_id)

    # validation: each returns the value to store or raises a 400

    def _text(self, name: str, value: Any, *, blank_ok: bool) -> str | None:
        if value is None:
            if blank_ok:
                return None
            raise ContactError.bad(f"{name} can't be blank")
        if not isinstance(value, str):
            raise ContactError.bad(f"{name} must be a string")
        if has_emoji(value):
            if self.options.emoji == "refuse":
                raise ContactError.bad(f"{name} must not contain emojis")
            value = strip_emoji(value)
        if not value.strip() and not blank_ok:
            raise ContactError.bad(f"{name} can't be blank")
        if name == "information" and len(value) > MAX_INFORMATION:
            raise ContactError.bad(f"information is too long (maximum is {MAX_INFORMATION} characters)")
        return value

    def _detail_value(self, name: str, value: Any, what: str) -> str:
        text = self._text(name, value, blank_ok=False)
        assert text is not None
        if what == "phone":
            ok = bool(_E164.match(text))
            if ok:
                try:
                    ok = phonenumbers.is_possible_number(phonenumbers.parse(text, None))
                except phonenumbers.NumberParseException:
                    ok = False
            if not ok:
                raise ContactError.bad(f"{name} is not an E.164 phone number (e.g. +19001112222)")
        elif not _EMAIL.match(text):
            raise ContactError.bad(f"{name} is not an email address")
        return text

    def _entries(self, name: str, value: Any, what: str, *, required: bool) -> list[tuple[str, str]]:
        if value is None or value == []:
            if required:
                raise ContactError.bad(f"{name} can't be blank")
            return []
        if not isinstance(value, list):
            raise ContactError.bad(f"{name} must be an array of {{label, value}}")
        if len(value) > MAX_DETAILS:
            raise ContactError.bad(f"{name} is too long (maximum is {MAX_DETAILS} entries)")
        out = []
        for i, entry in enumerate(value):
            if not isinstance(entry, dict):
                raise ContactError.bad(f"{name}[{i}] must be an object with label and value")
            label = self._text(f"{name}[{i}].label", entry.get("label"), blank_ok=False)
            assert label is not None
            out.append((label, self._detail_value(f"{name}[{i}].value", entry.get("value"), what)))
        return out

    def _body(self, body: Any) -> dict[str, Any]:
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise ContactError.bad("The body must be a JSON object.")
        return body

    def create(self, body: Any, *, base: str | None = None) -> dict[str, Any]:
        """``POST /v1/contacts``: validate, then add a contact (no dedupe, §12). Returns it rendered."""
        body = self._body(body)
        scalars = {k: self._text(k, body.get(k), blank_ok=True) for k in SCALAR_FIELDS}
        phones = self._entries("phone_numbers", body.get("phone_numbers"), "phone", required=True)
        emails = self._entries("emails", body.get("emails"), "email", required=False)
        rec = self._insert(scalars, phones, emails, shared=True, source="api", created_at=None)
        return rec.render(base or self.base_url)

    def _insert(self, scalars: dict[str, str | None], phones: list[tuple[str, str]], emails: list[tuple[str, str]],
                *, shared: bool, source: str, created_at: int | None) -> _Rec:
        with self._lock:
            now = self._now() if created_at is None else created_at
            cid = self._new_id()
            # create-contact.json: the email got its id before the number.
            email_rows = [{"id": self._new_detail_id(), "label": lb, "value": v} for lb, v in emails]
            phone_rows = [{"id": self._new_detail_id(), "label": lb, "value": v} for lb, v in phones]
            lag = self.options.search_lag_s + self._lag_rng.random() * self.options.search_lag_jitter_s
            rec = _Rec(id=cid, seeded=False, created_at=now, updated_at=now, phone_numbers=phone_rows,
                       emails=email_rows, is_shared=shared, searchable_at=self.clock() + lag, **scalars)
            self._records[cid] = rec
            self._log(source, "create", cid, None, rec.render(self.base_url), {}, now)
            return rec

    def update(self, contact_id: int, body: Any, *, base: str | None = None) -> dict[str, Any]:
        """``POST|PUT /v1/contacts/:id``: the four scalar fields only (§12). Returns the contact rendered."""
        with self._lock:
            self._require(contact_id)  # 404 before 400
        body = self._body(body)
        given = {k: self._text(k, body[k], blank_ok=False) for k in SCALAR_FIELDS if k in body}
        with self._lock:
            self._require(contact_id)
            before = {k: old for k, v in given.items() if (old := self._scalar(contact_id, k)) != v}
            if before:
                return self._apply(self._materialize(contact_id), given, before, "api").render(base or self.base_url)
            rendered = self._render(contact_id, base or self.base_url)
            assert rendered is not None
            return rendered

    def _scalar(self, contact_id: int, name: str) -> Any:
        rec = self._records.get(contact_id)
        return getattr(rec, name) if rec is not None else self._core(contact_id)[name]  # type: ignore[index]

    def _apply(self, rec: _Rec, given: dict[str, Any], before: dict[str, Any], source: str) -> _Rec:
        now = self._now()
        for k in before:
            setattr(rec, k, given[k])
        rec.updated_at = now
        self._log(source, "update", rec.id, None, {k: given[k] for k in before}, before, now)
        return rec

    def delete(self, contact_id: int) -> None:
        """``DELETE /v1/contacts/:id``: gone, no tombstone (§12)."""
        with self._lock:
            rec = self._writable(contact_id)
            before = rec.render(self.base_url)
            if rec.seeded:
                self._deleted.add(contact_id)
            self._records.pop(contact_id, None)
            self._log("api", "delete", contact_id, None, {}, before, self._now())

    def add_detail(self, contact_id: int, kind: str, body: Any) -> dict[str, Any]:
        """``POST /v1/contacts/:id/phone_details|email_details`` ``{label, value}``."""
        list_name, envelope, what = DETAIL_KINDS[kind]
        with self._lock:
            self._require(contact_id)
        body = self._body(body)
        label = self._text("label", body.get("label"), blank_ok=False)
        value = self._detail_value("value", body.get("value"), what)
        with self._lock:
            rec = self._writable(contact_id)
            rows = rec.details(kind)
            if len(rows) >= MAX_DETAILS:
                raise ContactError.bad(f"{list_name} is too long (maximum is {MAX_DETAILS} entries)")
            row = {"id": self._new_detail_id(), "label": label, "value": value}
            rows.append(row)
            rec.updated_at = self._now()
            self._log("api", f"{envelope}.create", contact_id, row["id"], dict(row), {}, rec.updated_at)
            return dict(row)

    def _find_detail(self, rec: _Rec, kind: str, detail_id: int) -> dict[str, Any]:
        for row in rec.details(kind):
            if row["id"] == detail_id:
                return row
        raise ContactError.not_found()

    def update_detail(self, contact_id: int, kind: str, detail_id: int, body: Any) -> dict[str, Any]:
        """``PUT /v1/contacts/:id/{kind}/:detail_id`` ``{label?, value?}``."""
        _, envelope, what = DETAIL_KINDS[kind]
        with self._lock:
            self._require(contact_id)
            rows = self._records[contact_id].details(kind) if contact_id in self._records else \
                self._core(contact_id)["phone_numbers" if kind == "phone_details" else "emails"]  # type: ignore[index]
            if not any(r["id"] == detail_id for r in rows):
                raise ContactError.not_found()
        body = self._body(body)
        new: dict[str, str] = {}
        if "label" in body:
            new["label"] = self._text("label", body["label"], blank_ok=False)  # type: ignore[assignment]
        if "value" in body:
            new["value"] = self._detail_value("value", body["value"], what)
        if not new:
            raise ContactError.bad("label or value is required")
        with self._lock:
            rec = self._writable(contact_id)
            row = self._find_detail(rec, kind, detail_id)
            before = {k: row[k] for k in new if row[k] != new[k]}
            if before:
                row.update(new)
                rec.updated_at = self._now()
                self._log("api", f"{envelope}.update", contact_id, detail_id, {k: new[k] for k in before}, before,
                          rec.updated_at)
            return dict(row)

    def delete_detail(self, contact_id: int, kind: str, detail_id: int) -> None:
        _, envelope, _ = DETAIL_KINDS[kind]
        with self._lock:
            rec = self._writable(contact_id)
            row = self._find_detail(rec, kind, detail_id)
            rec.details(kind).remove(row)
            rec.updated_at = self._now()
            self._log("api", f"{envelope}.delete", contact_id, detail_id, {}, dict(row), rec.updated_at)

    # -- by hand, as an agent in the Aircall app (no HTTP, nothing counted) -------------------

    def add(self, *, first_name: str | None = None, last_name: str | None = None, company_name: str | None = None,
            information: str | None = None, phone_numbers: Iterable[str | Mapping[str, str]] = (),
            emails: Iterable[str | Mapping[str, str]] = (), shared: bool = True,
            created_at: int | None = None) -> dict[str, Any]:
        """A contact an agent saves in the Aircall app: emojis stripped (§12 Limits), numbers saved in
        E.164 (every live contact number is, §12), labels ``Work`` unless given. ``shared=False`` is the
        agent's own contact, which the API never shows. Raises ``ValueError`` for a number that is not
        international or not possible, or more than 20 numbers or emails."""
        def rows(items: Iterable[str | Mapping[str, str]], phone: bool) -> list[tuple[str, str]]:
            out = []
            for item in items:
                label, value = ("Work", item) if isinstance(item, str) else (item.get("label", "Work"), item["value"])
                value = strip_emoji(value)
                if phone:
                    try:
                        num = phonenumbers.parse(value, None)
                    except phonenumbers.NumberParseException:
                        raise ValueError(f"not an international phone number: {value!r}") from None
                    if not phonenumbers.is_possible_number(num):
                        raise ValueError(f"not a possible phone number: {value!r}")
                    value = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
                out.append((strip_emoji(label) or "Work", value))
            if len(out) > MAX_DETAILS:
                raise ValueError(f"at most {MAX_DETAILS} entries")
            return out

        scalars = {k: (strip_emoji(v) or None) if v is not None else None for k, v in (
            ("first_name", first_name), ("last_name", last_name), ("company_name", company_name),
            ("information", information))}
        rec = self._insert(scalars, rows(phone_numbers, True), rows(emails, False), shared=shared, source="app",
                           created_at=created_at)
        return rec.render(self.base_url)

    def edit(self, contact_id: int, **fields: str) -> dict[str, Any]:
        """Change scalar fields by hand, as an agent in the app (emojis stripped; private contacts too)."""
        unknown = set(fields) - set(SCALAR_FIELDS)
        if unknown:
            raise ValueError(f"only {', '.join(SCALAR_FIELDS)} can be edited, not {sorted(unknown)}")
        given = {k: strip_emoji(v) if v is not None else None for k, v in fields.items()}
        with self._lock:
            rec = self._records.get(contact_id)
            if rec is None:
                if self._row(contact_id) is None:
                    raise KeyError(contact_id)
                rec = self._materialize(contact_id)
            before = {k: getattr(rec, k) for k, v in given.items() if getattr(rec, k) != v}
            if before:
                self._apply(rec, given, before, "app")
            return rec.render(self.base_url)


class ContactEndpoints:
    """The HTTP side of the book; :class:`~.aircall_api.AircallApp` routes ``/v1/contacts…`` to it."""

    def __init__(self, book: ContactBook) -> None:
        self.book = book

    def routes(self, request: Request, rest: list[str]) -> list[tuple[str, Callable[[], Response]]]:
        """``(method, handler)`` pairs for ``/v1/contacts`` + ``rest``; empty when no such path."""
        if not rest:
            return [("GET", lambda: self._list(request, search=False)), ("POST", lambda: self._create(request))]
        if rest == ["search"]:
            return [("GET", lambda: self._list(request, search=True))]
        cid = int(rest[0]) if rest[0].isdigit() else -1
        if len(rest) == 1:
            return [
                ("GET", lambda: self._guard(lambda: self._one(request, cid))),
                ("POST", lambda: self._guard(lambda: self._update(request, cid))),
                ("PUT", lambda: self._guard(lambda: self._update(request, cid))),
                ("DELETE", lambda: self._guard(lambda: self._delete(cid))),
            ]
        kind = rest[1]
        if kind not in DETAIL_KINDS or len(rest) > 3:
            return []
        envelope = DETAIL_KINDS[kind][1]
        if len(rest) == 2:
            return [("POST", lambda: self._guard(lambda: Response.json(
                {envelope: self.book.add_detail(cid, kind, self._json(request))}, status=201)))]
        did = int(rest[2]) if rest[2].isdigit() else -1
        return [
            ("PUT", lambda: self._guard(lambda: Response.json(
                {envelope: self.book.update_detail(cid, kind, did, self._json(request))}))),
            ("DELETE", lambda: self._guard(lambda: self._delete_detail(cid, kind, did))),
        ]

    @staticmethod
    def _guard(fn: Callable[[], Response]) -> Response:
        try:
            return fn()
        except ContactError as exc:
            return Response.json(exc.body, status=exc.status)

    @staticmethod
    def _json(request: Request) -> Any:
        try:
            return request.json()
        except (ValueError, UnicodeDecodeError):
            raise ContactError.bad("The body is not valid JSON.") from None

    def _list(self, request: Request, *, search: bool) -> Response:
        q = request.query
        page, per_page, over_cap = page_params(q)
        if over_cap:  # §3: on the requested position, before anything else
            return Response.json(CAP_ERROR_BODY, status=400)
        try:
            from_ts = int(q["from"]) if q.get("from", "") != "" else None
            to_ts = int(q["to"]) if q.get("to", "") != "" else None
        except ValueError:
            return Response.json(error_body(400, "from and to must be UNIX timestamps (seconds)."), status=400)
        order_by = "updated_at" if (q.get("order_by") or "").strip().lower() == "updated_at" else "created_at"
        desc = (q.get("order") or "asc").strip().lower() == "desc"
        phone = email = None
        if search:
            # A raw '+' arrives as a space: kept as is, it matches nothing (AMBIGUITIES).
            phone = q.get("phone_number") or None
            email = q.get("email") or None
        ids = self.book.select(from_ts=from_ts, to_ts=to_ts, order_by=order_by, desc=desc,
                               phone_number=phone, email=email, search=search)
        chunk = ids[(page - 1) * per_page: page * per_page]
        contacts = self.book.render_many(chunk, request.base_url)
        path = "/v1/contacts/search" if search else "/v1/contacts"
        meta = list_meta(request, path, count=len(contacts), total=len(ids), page=page, per_page=per_page)
        return Response.json({"contacts": contacts, "meta": meta})

    def _one(self, request: Request, cid: int) -> Response:
        contact = self.book.get(cid, base=request.base_url, private=False)
        if contact is None:
            raise ContactError.not_found()
        return Response.json({"contact": contact})

    def _create(self, request: Request) -> Response:
        return self._guard(lambda: Response.json(
            {"contact": self.book.create(self._json(request), base=request.base_url)}, status=201))

    def _update(self, request: Request, cid: int) -> Response:
        with self.book._lock:
            self.book._require(cid)  # 404 before a body error
        return Response.json({"contact": self.book.update(cid, self._json(request), base=request.base_url)})

    def _delete(self, cid: int) -> Response:
        self.book.delete(cid)
        return Response(status=204)

    def _delete_detail(self, cid: int, kind: str, did: int) -> Response:
        self.book.delete_detail(cid, kind, did)
        return Response(status=204)
