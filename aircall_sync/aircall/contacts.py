"""Salesforce records as Aircall contacts: RULES §9 (R-CONTACT-1…4), the pure part.

What a matched record becomes in Aircall (``desired``), how that is compared with
the contact Aircall holds (``plan_writes``), and the fingerprint that tells
whether a record changed since it was saved (R-CONTACT-3). No I/O: the run's
saver (``aircall_sync.contacts``) reads the state and talks to Aircall.

Facts relied on (``../shared/reference/aircall-api.md`` §12):

- ``POST /v1/contacts`` takes ``first_name, last_name, company_name,
  information, phone_numbers[{label,value}], emails[{label,value}]``; at least
  one number (the docs call ``phone_numbers`` mandatory); no upsert, so a
  contact is searched by number first;
- ``POST /v1/contacts/:id`` updates the four scalars only, and a defined one
  "can't be blank": a value is never cleared, only replaced;
- numbers and e-mails are changed one by one through ``…/phone_details`` and
  ``…/email_details`` (``POST`` to add, ``PUT``/``DELETE`` on a detail's id);
- values are E.164 (``+390294759727``); emojis are refused (R-CONTACT-4);
- ``information`` is the only place for a foreign key.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import phonenumbers

__all__ = [
    "AircallContact",
    "Desired",
    "Detail",
    "Writes",
    "desired_from_record",
    "e164_of",
    "fingerprint",
    "information_value",
    "marker",
    "plan_writes",
    "strip_emojis",
]

PHONE_LABEL = "Work"
MOBILE_LABEL = "Mobile"
EMAIL_LABEL = "Work"
#: The Salesforce object named in ``information`` (a Person Account is an Account).
SOBJECT = {"Contact": "Contact", "Lead": "Lead", "Account": "Account", "PersonAccount": "Account"}
#: R-CONTACT-1: the fields each record type gives (first name, last name, e-mail, Phone, mobile).
RECORD_FIELDS: dict[str, dict[str, str | None]] = {
    "Contact": {"first": "FirstName", "last": "LastName", "email": "Email", "phone": "Phone",
                "mobile": "MobilePhone"},
    "Lead": {"first": "FirstName", "last": "LastName", "email": "Email", "phone": "Phone", "mobile": "MobilePhone",
             "company": "Company"},
    "Account": {"first": None, "last": "Name", "email": None, "phone": "Phone", "mobile": None},
    "PersonAccount": {"first": "FirstName", "last": "LastName", "email": "PersonEmail", "phone": "Phone",
                      "mobile": "PersonMobilePhone"},
}
#: Bumped when the mapping changes, so that every record is saved again once (R-CONTACT-3).
MAPPING_VERSION = 1


# ---------------------------------------------------------------- R-CONTACT-4: emojis

# Unicode's Extended_Pictographic ranges (emoji-data.txt), which hold every emoji and the
# pictographs that may be shown as one (©, ® and ™ among them), plus the emoji components: ZWJ,
# variation selectors, skin tones, regional indicators (flags), the keycap mark and tag characters.
_PICTOGRAPHIC = (
    (0x00A9, 0x00A9), (0x00AE, 0x00AE), (0x203C, 0x203C), (0x2049, 0x2049), (0x2122, 0x2122),
    (0x2139, 0x2139), (0x2194, 0x2199), (0x21A9, 0x21AA), (0x231A, 0x231B), (0x2328, 0x2328),
    (0x2388, 0x2388), (0x23CF, 0x23CF), (0x23E9, 0x23F3), (0x23F8, 0x23FA), (0x24C2, 0x24C2),
    (0x25AA, 0x25AB), (0x25B6, 0x25B6), (0x25C0, 0x25C0), (0x25FB, 0x25FE), (0x2600, 0x2605),
    (0x2607, 0x2612), (0x2614, 0x2685), (0x2690, 0x2705), (0x2708, 0x2712), (0x2714, 0x2714),
    (0x2716, 0x2716), (0x271D, 0x271D), (0x2721, 0x2721), (0x2728, 0x2728), (0x2733, 0x2734),
    (0x2744, 0x2744), (0x2747, 0x2747), (0x274C, 0x274C), (0x274E, 0x274E), (0x2753, 0x2755),
    (0x2757, 0x2757), (0x2763, 0x2767), (0x2795, 0x2797), (0x27A1, 0x27A1), (0x27B0, 0x27B0),
    (0x27BF, 0x27BF), (0x2934, 0x2935), (0x2B05, 0x2B07), (0x2B1B, 0x2B1C), (0x2B50, 0x2B50),
    (0x2B55, 0x2B55), (0x3030, 0x3030), (0x303D, 0x303D), (0x3297, 0x3297), (0x3299, 0x3299),
    (0x1F000, 0x1F0FF), (0x1F10D, 0x1F10F), (0x1F12F, 0x1F12F), (0x1F16C, 0x1F171), (0x1F17E, 0x1F17F),
    (0x1F18E, 0x1F18E), (0x1F191, 0x1F19A), (0x1F1AD, 0x1F1FF), (0x1F201, 0x1F20F), (0x1F21A, 0x1F21A),
    (0x1F22F, 0x1F22F), (0x1F232, 0x1F23A), (0x1F23C, 0x1F23F), (0x1F249, 0x1F3FA), (0x1F3FB, 0x1F3FF),
    (0x1F400, 0x1F53D), (0x1F546, 0x1F64F), (0x1F680, 0x1F6FF), (0x1F774, 0x1F77F), (0x1F7D5, 0x1F7FF),
    (0x1F80C, 0x1F80F), (0x1F848, 0x1F84F), (0x1F85A, 0x1F85F), (0x1F888, 0x1F88F), (0x1F8AE, 0x1F8FF),
    (0x1F90C, 0x1F93A), (0x1F93C, 0x1F945), (0x1F947, 0x1FAFF), (0x1FC00, 0x1FFFD),
    # components
    (0x200D, 0x200D), (0x20E3, 0x20E3), (0xFE00, 0xFE0F), (0xE0020, 0xE007F),
    # and, whole, the blocks where emojis live (symbols and dingbats, the supplementary pictograph
    # planes): what another reading of "emoji" may count is removed too (Aircall's is not documented).
    (0x2600, 0x27BF), (0x1F000, 0x1FAFF),
)
_EMOJI = re.compile("[" + "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in _PICTOGRAPHIC) + "]")
_SPACES = re.compile(r"[ \t]{2,}")


def strip_emojis(text: str | None) -> str | None:
    """R-CONTACT-4: ``text`` without emojis (Aircall refuses them), spaces they left tidied; None when empty."""
    if text is None:
        return None
    cleaned = _EMOJI.sub("", unicodedata.normalize("NFC", str(text)))
    cleaned = _SPACES.sub(" ", cleaned).strip()
    return cleaned or None


# ---------------------------------------------------------------- R-CONTACT-1: the record as a contact


def e164_of(value: Any, region: str | None) -> str | None:
    """A CRM phone value in E.164, or None when it is empty or not a valid number (R-CALL-4: left out).

    A value written without a country code is read in ``region`` (the region of the call's number, as
    matching reads it); ``00…``/``011…`` international prefixes are read as ``+``.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    candidates = [(text, region)]
    digits = "".join(ch for ch in text if ch.isdigit())
    for prefix in ("00", "011"):
        if not text.startswith("+") and digits.startswith(prefix):
            candidates.append(("+" + digits[len(prefix):], None))
    for candidate, hint in candidates:
        try:
            parsed = phonenumbers.parse(candidate, hint)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(parsed):
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return None


def marker(obj: str, record_id: str) -> str:
    """R-CONTACT-1: ``Salesforce {object} {Id}``, the foreign key kept in the contact's ``information``."""
    return f"Salesforce {SOBJECT.get(obj, obj)} {record_id}"


@dataclass(frozen=True)
class Desired:
    """A Salesforce record as an Aircall contact (R-CONTACT-1, emojis removed: R-CONTACT-4)."""

    object: str  # Contact | Lead | Account | PersonAccount
    record_id: str
    first_name: str | None
    last_name: str | None
    company_name: str | None
    phones: tuple[tuple[str, str], ...] = ()  # (label, E.164)
    emails: tuple[tuple[str, str], ...] = ()  # (label, address)

    @property
    def information(self) -> str:
        return marker(self.object, self.record_id)

    def scalars(self) -> dict[str, str]:
        """The scalar fields that have a value (an empty one is never sent: Aircall cannot clear it)."""
        values = {"first_name": self.first_name, "last_name": self.last_name, "company_name": self.company_name}
        return {k: v for k, v in values.items() if v}

    def create_body(self) -> dict[str, Any]:
        """``POST /v1/contacts``."""
        body: dict[str, Any] = {**self.scalars(), "information": self.information,
                                "phone_numbers": [{"label": label, "value": value} for label, value in self.phones]}
        if self.emails:
            body["emails"] = [{"label": label, "value": value} for label, value in self.emails]
        return body

    def shown(self) -> dict[str, Any]:
        """What is saved, for the dry run and ``explain``."""
        return {**self.scalars(), "information": self.information,
                "phone_numbers": [value for _, value in self.phones],
                **({"emails": [value for _, value in self.emails]} if self.emails else {})}

    def to_json(self) -> dict[str, Any]:
        return {"object": self.object, "record_id": self.record_id, "first_name": self.first_name,
                "last_name": self.last_name, "company_name": self.company_name,
                "phones": [list(p) for p in self.phones], "emails": [list(e) for e in self.emails]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Desired:
        return cls(object=str(data["object"]), record_id=str(data["record_id"]), first_name=data.get("first_name"),
                   last_name=data.get("last_name"), company_name=data.get("company_name"),
                   phones=tuple((str(a), str(b)) for a, b in data.get("phones") or ()),
                   emails=tuple((str(a), str(b)) for a, b in data.get("emails") or ()))


def _text(row: Mapping[str, Any], name: str | None) -> str | None:
    if not name:
        return None
    value = row.get(name)
    return strip_emojis(value) if isinstance(value, str) else None


def desired_from_record(obj: str, row: Mapping[str, Any], *, account_name: str | None = None,
                        region: str | None = None) -> Desired:
    """R-CONTACT-1: first and last name (an Account's name as last name), company (a Contact's Account name, a
    Lead's Company), e-mail, and ``Phone`` plus the mobile only when ``Phone`` is set, each in E.164 with invalid
    numbers left out; emojis removed from every value (R-CONTACT-4)."""
    names = RECORD_FIELDS[obj]
    company = _text(row, names.get("company")) if obj == "Lead" else (
        strip_emojis(account_name) if obj == "Contact" else None)
    phones: list[tuple[str, str]] = []
    phone_value = row.get(names["phone"]) if names["phone"] else None
    if isinstance(phone_value, str) and phone_value.strip():
        # Aircall's rule: the mobile is taken only beside a Phone.
        for label, name in ((PHONE_LABEL, names["phone"]), (MOBILE_LABEL, names["mobile"])):
            number = e164_of(row.get(name), region) if name else None
            if number and number not in {v for _, v in phones}:
                phones.append((label, number))
    email = _text(row, names["email"])
    emails = ((EMAIL_LABEL, email),) if email and "@" in email else ()
    return Desired(object=obj, record_id=str(row.get("Id") or ""), first_name=_text(row, names["first"]),
                   last_name=_text(row, names["last"]), company_name=company, phones=tuple(phones), emails=emails)


def fingerprint(desired: Desired) -> str:
    """R-CONTACT-3: what the record says as a contact, hashed; the same hash ⇒ nothing to save."""
    payload = {"v": MAPPING_VERSION, **desired.to_json()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:32]


# ---------------------------------------------------------------- the contact Aircall holds


@dataclass(frozen=True)
class Detail:
    """One number or e-mail of an Aircall contact (``id`` is what ``…/phone_details/:id`` takes)."""

    id: int | None
    label: str | None
    value: str


@dataclass(frozen=True)
class AircallContact:
    id: int
    first_name: str | None = None
    last_name: str | None = None
    company_name: str | None = None
    information: str | None = None
    phones: tuple[Detail, ...] = ()
    emails: tuple[Detail, ...] = ()
    updated_at: int = 0

    @classmethod
    def parse(cls, payload: Any) -> AircallContact | None:
        """A contact object of the API (``{"contact": …}`` unwrapped or not); None when it has no id."""
        if isinstance(payload, Mapping) and isinstance(payload.get("contact"), Mapping):
            payload = payload["contact"]
        if not isinstance(payload, Mapping):
            return None
        cid = payload.get("id")
        if not isinstance(cid, int) or isinstance(cid, bool):
            return None

        def details(key: str) -> tuple[Detail, ...]:
            out = []
            for item in payload.get(key) or ():
                if isinstance(item, Mapping) and isinstance(item.get("value"), str) and item["value"].strip():
                    did = item.get("id")
                    out.append(Detail(did if isinstance(did, int) and not isinstance(did, bool) else None,
                                      item.get("label") if isinstance(item.get("label"), str) else None,
                                      item["value"]))
            return tuple(out)

        def text(key: str) -> str | None:
            value = payload.get(key)
            return value if isinstance(value, str) and value.strip() else None

        updated = payload.get("updated_at")
        return cls(id=cid, first_name=text("first_name"), last_name=text("last_name"),
                   company_name=text("company_name"), information=text("information"),
                   phones=details("phone_numbers"), emails=details("emails"),
                   updated_at=updated if isinstance(updated, int) and not isinstance(updated, bool) else 0)

    def has_marker(self, line: str) -> bool:
        return line in (self.information or "").splitlines()


# ---------------------------------------------------------------- R-CONTACT-2: only what differs


@dataclass
class Writes:
    """What to send to bring an Aircall contact to a record (R-CONTACT-2): each list in request order."""

    scalars: dict[str, str] = field(default_factory=dict)  # POST /v1/contacts/:id
    #: (kind, action, detail): kind "phone" | "email"; action "add" (POST) | "put" | "delete".
    details: list[tuple[str, str, Detail]] = field(default_factory=list)
    diff: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return (1 if self.scalars else 0) + len(self.details)

    def __bool__(self) -> bool:
        return bool(self.requests)


def information_value(current: str | None, line: str) -> str | None:
    """The ``information`` to write so that it holds ``line``, or None when it holds it already.

    What a person wrote there is kept: the line is added below it (**decision**: ``information`` is the
    contact's notes in the phone app, and the foreign key must not wipe them).
    """
    text = (current or "").strip()
    if line in text.splitlines():
        return None
    return f"{text}\n{line}" if text else line


def _same_number(a: str, b: str) -> bool:
    return _canonical_number(a) == _canonical_number(b)


def _canonical_number(value: str) -> str:
    try:
        parsed = phonenumbers.parse(value, None)
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    except phonenumbers.NumberParseException:
        return "+" + "".join(ch for ch in value if ch.isdigit())


def _plan_details(kind: str, wanted: Sequence[tuple[str, str]], current: Sequence[Detail], ours: bool,
                  same) -> list[tuple[str, str, Detail]]:
    missing = [(label, value) for label, value in wanted if not any(same(d.value, value) for d in current)]
    # A contact aircall-sync created mirrors the record: what the record no longer has goes (reused for what
    # it gained, one PUT instead of a DELETE and a POST). Any other contact keeps what it had.
    stale = [d for d in current if d.id is not None and not any(same(d.value, v) for _, v in wanted)] if ours else []
    out: list[tuple[str, str, Detail]] = []
    for label, value in missing:
        if stale:
            old = stale.pop(0)
            out.append((kind, "put", Detail(old.id, label, value)))
        else:
            out.append((kind, "add", Detail(None, label, value)))
    out.extend((kind, "delete", d) for d in stale)
    return out


def plan_writes(desired: Desired, current: AircallContact, *, ours: bool) -> Writes:
    """R-CONTACT-2: the writes that bring ``current`` to ``desired``; nothing for a field already equal.

    A scalar is replaced when the record has a value that differs (Aircall cannot blank one). Numbers and
    e-mails the record lacks are added; a contact the tool created (``ours``) also loses those the record no
    longer has, any other contact keeps them (what the CRM has no value for).
    """
    writes = Writes()
    for name, value in desired.scalars().items():
        if (getattr(current, name) or "").strip() != value:
            writes.scalars[name] = value
            writes.diff[name] = (getattr(current, name), value)
    info = information_value(current.information, desired.information)
    if info is not None:
        writes.scalars["information"] = info
        writes.diff["information"] = (current.information, info)
    writes.details += _plan_details("phone", desired.phones, current.phones, ours, _same_number)
    writes.details += _plan_details("email", desired.emails, current.emails, ours,
                                    lambda a, b: a.strip().lower() == b.strip().lower())
    for kind, key, mine in (("phone", "phone_numbers", desired.phones), ("email", "emails", desired.emails)):
        if any(k == kind for k, _a, _d in writes.details):
            old = [d.value for d in (current.phones if kind == "phone" else current.emails)]
            new = [v for _, v in mine] + ([] if ours else [v for v in old if not any(
                (_same_number if kind == "phone" else (lambda a, b: a.lower() == b.lower()))(v, w) for _, w in mine)])
            writes.diff[key] = (old, new)
    return writes
