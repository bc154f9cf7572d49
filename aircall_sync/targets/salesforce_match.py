"""Matching an external number to a Salesforce record: RULES.md §3.

Pure parts (search terms, the choice among candidates) are separate from the
resolver that asks the org, so each rule is tested on plain data.

Facts relied on (``../shared/reference/salesforce-api.md`` §5): Salesforce
stores phones as typed; whether SOSL matches ``+14155551212`` against
``(415) 555-1212`` is unconfirmed. So we search several digit forms of each
number in one SOSL ``FIND {…} IN PHONE FIELDS`` (OR between terms), keep each
query under ``SOSL_BUDGET`` characters, and compare in Python on E.164. Records the tool
creates carry the number in E.164, and are also found by an exact SOQL match,
which does not wait for the search index.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import phonenumbers

from aircall_sync.rules import ExternalNumber
from aircall_sync.targets.salesforce import soql_in, sosl_term
from aircall_sync.targets.salesforce_task import Match

#: R-SF-MATCH-1: the phone fields searched, per object.
PHONE_FIELDS: dict[str, tuple[str, ...]] = {
    "Contact": ("Phone", "MobilePhone", "HomePhone", "OtherPhone", "AssistantPhone"),
    "Lead": ("Phone", "MobilePhone"),
    "Account": ("Phone",),
    "PersonAccount": ("PersonMobilePhone", "PersonHomePhone", "PersonOtherPhone"),
}
#: R-SF-MATCH-2.
PRIORITY = ("Contact", "Lead", "Account", "PersonAccount")
#: Characters per SOSL statement (§5): above 10,000 SOSL returns no rows; above
#: 4,000 it drops logical operators and ORs the terms, which is all we ask for.
#: 9,000 also keeps the URL-encoded statement under the 16,384-byte URI limit (§9),
#: which matters because Composite cannot carry a search.
SOSL_BUDGET = 9000


def search_terms(number: ExternalNumber) -> list[str]:
    """Digit strings a CRM may hold for this number, however it was typed."""
    parsed = phonenumbers.parse(number.e164)
    e164_digits = number.e164.lstrip("+")
    national = str(parsed.national_number)
    national_format = _digits(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL))
    terms = [e164_digits, national, national_format, "00" + e164_digits]
    # "+33 (0)1 76 11 11 11": the country code kept before the national trunk prefix.
    terms.append(str(parsed.country_code) + national_format)
    if not number.valid:
        # R-CALL-4: phonenumbers formats a number it does not know as the bare national
        # number, without the trunk prefix people type ("05 1111 1111" for +61 5 1111 1111):
        # search that form too, and its "+61 (0)5…" spelling. Where the trunk prefix is the
        # country code itself (NANP's 1) it spells the E.164 digits, already searched.
        with_trunk = _trunk_prefix(region_of(number)) + phonenumbers.national_significant_number(parsed)
        if with_trunk != e164_digits:
            terms += [with_trunk, str(parsed.country_code) + with_trunk]
    if parsed.country_code == 1:
        terms.append("011" + e164_digits)
    return list(dict.fromkeys(t for t in terms if len(t) >= 5))


#: RULES R-CONTACT-1: what saving a matched record in Aircall reads, beside what matching reads (only when
#: ``aircall.contacts.save_matched``, and only the fields the API user can see).
CONTACT_FIELDS: dict[str, tuple[str, ...]] = {
    "Contact": ("FirstName", "LastName", "Email", "MobilePhone", "Phone"),
    "Lead": ("FirstName", "LastName", "Email", "Company", "MobilePhone", "Phone"),
    "Account": ("Name", "Phone"),
    "PersonAccount": ("FirstName", "LastName", "PersonEmail", "PersonMobilePhone"),
}


def sosl_queries(numbers: Sequence[ExternalNumber], person_accounts: bool,
                 extra: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """SOSL statements covering ``numbers``, each under ``SOSL_BUDGET`` characters. ``extra``: more fields to
    return per object (``Contact``, ``Lead``, ``Account``), e.g. what R-CONTACT-1 saves."""
    returning = _returning(person_accounts, extra)
    queries, terms = [], []
    for number in numbers:
        mine = [sosl_term(t) for t in search_terms(number)]
        candidate = terms + mine
        if terms and len(_sosl(candidate, returning)) > SOSL_BUDGET:
            queries.append(_sosl(terms, returning))
            candidate = mine
        terms = candidate
    if terms:
        queries.append(_sosl(terms, returning))
    return queries


def _sosl(terms: list[str], returning: str) -> str:
    return "FIND {" + " OR ".join(terms) + "} IN PHONE FIELDS RETURNING " + returning


def _more(sobject: str, have: Sequence[str], extra: Mapping[str, Sequence[str]] | None) -> str:
    """``, F1, F2`` for the ``extra`` fields of ``sobject`` not among ``have`` (any case)."""
    known = {f.lower() for f in have}
    more = [f for f in (extra or {}).get(sobject, ()) if f.lower() not in known and not known.add(f.lower())]
    return "".join(f", {f}" for f in more)


def _returning(person_accounts: bool, extra: Mapping[str, Sequence[str]] | None = None) -> str:
    common = "Id, Name, OwnerId, LastModifiedDate"
    base = common.split(", ")
    contact_where = " WHERE IsPersonAccount = false" if person_accounts else ""
    account_fields = [*base, "Phone"]
    account = f"Account({common}, Phone"
    if person_accounts:
        account += ", IsPersonAccount, PersonContactId, " + ", ".join(PHONE_FIELDS["PersonAccount"])
        account_fields += ["IsPersonAccount", "PersonContactId", *PHONE_FIELDS["PersonAccount"]]
    account += _more("Account", account_fields, extra) + ")"
    contact_fields = [*base, "AccountId", *PHONE_FIELDS["Contact"]]
    lead_fields = [*base, *PHONE_FIELDS["Lead"]]
    return ", ".join(
        [
            f"Contact({common}, AccountId, {', '.join(PHONE_FIELDS['Contact'])}"
            f"{_more('Contact', contact_fields, extra)}{contact_where})",
            f"Lead({common}, {', '.join(PHONE_FIELDS['Lead'])}{_more('Lead', lead_fields, extra)} "
            "WHERE IsConverted = false)",
            account,
        ]
    )


def exact_queries(numbers: Sequence[ExternalNumber], sobject: str, person_accounts: bool,
                  extra: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """SOQL finding records stored with the E.164 value itself (records this tool created)."""
    fields = {"Contact": "Id, Name, OwnerId, LastModifiedDate, AccountId, Phone",
              "Lead": "Id, Name, OwnerId, LastModifiedDate, Phone",
              "Account": "Id, Name, OwnerId, LastModifiedDate, Phone"}[sobject]
    if sobject == "Account" and person_accounts:
        fields += ", IsPersonAccount, PersonContactId"
    fields += _more(sobject, fields.split(", "), extra)
    extra = " AND IsConverted = false" if sobject == "Lead" else ""
    if sobject == "Contact" and person_accounts:
        extra = " AND IsPersonAccount = false"  # person contacts match as their Person Account
    values = [n.e164 for n in numbers]
    return [f"SELECT {fields} FROM {sobject} WHERE Phone IN {soql_in(values[i:i + 300])}{extra}"
            for i in range(0, len(values), 300)]


def kind_of(record: Mapping) -> str:
    sobject = (record.get("attributes") or {}).get("type", "")
    if sobject == "Account" and record.get("IsPersonAccount"):
        return "PersonAccount"
    return sobject


def _trunk_prefix(region: str | None) -> str:
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region) if region else None
    return (metadata.national_prefix or "") if metadata else ""


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


#: Where an extension begins in a typed value ("(211) 555-2002 x123", "… ext. 45", "…#9"):
#: the first letter, "#", ";" or "," that follows a digit with no digit in between.
_EXTENSION = re.compile(r"(?<=\d)\D*?(?:[^\W\d_]|[#;,])")
_NO_REGIONS: frozenset[str | None] = frozenset()


def _may_have_extension(text: str) -> bool:
    # Most values have no letter and no "#;,": this test costs a fraction of the search,
    # and every value of every record returned by a batch's searches goes through it.
    return text.lower() != text.upper() or "#" in text or ";" in text or "," in text


def _number_digits(text: str) -> str:
    """The digits of a typed phone value without its extension, if it has one."""
    cut = _EXTENSION.search(text) if _may_have_extension(text) else None
    return _digits(text[:cut.start()] if cut else text)


@functools.lru_cache(maxsize=65536)
def _normalized(value: str, region: str | None) -> str | None:
    try:
        parsed = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def record_numbers(record: Mapping, region: str | None) -> set[str]:
    """The E.164 numbers a record's phone fields hold, reading national formats in ``region``."""
    kind = kind_of(record)
    fields = PHONE_FIELDS.get(kind, ())
    if kind == "PersonAccount":
        fields = fields + PHONE_FIELDS["Account"]
    found: set[str] = set()
    for name in fields:
        value = record.get(name)
        if not (isinstance(value, str) and value.strip()):
            continue
        text = value.strip()
        normalized = _normalized(text, region)
        if normalized:
            found.add(normalized)
        # Strings typed with an international prefix: "00…" / "011…" (an extension's
        # digits would run into the number's here; phonenumbers parses them apart above).
        digits = _number_digits(text)
        for prefix in ("00", "011"):
            if digits.startswith(prefix):
                normalized = _normalized("+" + digits[len(prefix):], None)
                if normalized:
                    found.add(normalized)
    return found


@functools.lru_cache(maxsize=65536)
def _region(e164: str) -> str | None:
    parsed = phonenumbers.parse(e164)
    region = phonenumbers.region_code_for_number(parsed)
    if region is None:
        main = phonenumbers.region_code_for_country_code(parsed.country_code)
        region = None if main == phonenumbers.UNKNOWN_REGION else main
    return region


def region_of(number: ExternalNumber) -> str | None:
    """The region a CRM value written without a country code is read in, for this number.

    ``region_code_for_number`` names one only for a valid number or one whose leading
    digits a region claims. A possible-but-invalid number (R-CALL-4: phonenumbers'
    metadata lags new area codes; ``+1 211…``, ``+44 111…``) gets None, and with no region
    ``(211) 555-2002`` never parses: it is read in the main region of its country
    calling code (US for +1, GB for +44), whatever its validity.

    Not the Aircall line's country: a match is remembered per E.164, so the reading must
    depend on the number alone; and the regions sharing a calling code read a full
    national number alike, differing only in how they complete a short local number
    (with their own area code, which that region then claims).
    """
    return _region(number.e164)


def holds_number(record: Mapping, number: ExternalNumber) -> bool:
    """R-SF-MATCH-1: one of the record's phone fields is this number, compared on E.164."""
    return number.e164 in record_numbers(record, region_of(number))


def index_by_number(records: Iterable[Mapping], numbers: Iterable[ExternalNumber]) -> dict[str, list[Mapping]]:
    """E.164 -> the records holding it, built once for a batch (linear, not numbers x records).

    A stored value is read only in the regions of the searched numbers whose last
    seven digits it ends with (before an extension, when it has one): parsing every
    value in every region is the costly part.
    """
    by_tail: dict[str, set[str | None]] = {}
    for number in numbers:
        by_tail.setdefault(number.e164[-7:], set()).add(region_of(number))
    index: dict[str, list[Mapping]] = {}
    for record in records:
        held: set[str] = set()
        regions: set[str | None] = set()
        for name in PHONE_FIELDS.get(kind_of(record), ()) + PHONE_FIELDS["Account"]:
            value = record.get(name)
            if isinstance(value, str):
                regions |= by_tail.get(_digits(value)[-7:], _NO_REGIONS)
                if _may_have_extension(value):
                    regions |= by_tail.get(_number_digits(value)[-7:], _NO_REGIONS)
        for region in regions:
            held |= record_numbers(record, region)
        for e164 in held:
            index.setdefault(e164, []).append(record)
    return index


def _modified(record: Mapping) -> datetime:
    text = str(record.get("LastModifiedDate") or "")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("+0000", "+00:00"))
    except ValueError:
        return datetime.fromtimestamp(0, UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def choose(records: Iterable[Mapping], number: ExternalNumber) -> Mapping | None:
    """R-SF-MATCH-2 and -3: the best record holding the number, or None."""
    holding = [r for r in records if kind_of(r) in PRIORITY and holds_number(r, number)]
    if not holding:
        return None
    # Priority first; within a type the most recently modified wins; the id breaks exact ties.
    return min(holding, key=lambda r: (PRIORITY.index(kind_of(r)), -_modified(r).timestamp(), str(r.get("Id"))))


def to_match(record: Mapping, created: bool = False) -> Match:
    kind = kind_of(record)
    return Match(
        object=kind,
        id=str(record["Id"]),
        name=record.get("Name") or None,
        owner_id=record.get("OwnerId"),
        account_id=record.get("AccountId") if kind == "Contact" else None,
        person_contact_id=record.get("PersonContactId") if kind == "PersonAccount" else None,
        created=created,
    )


@dataclass(frozen=True, slots=True)
class NewRecord:
    """What R-SF-MATCH-4 creates for an unknown number."""

    sobject: str  # Lead | Contact | Account
    fields: dict


def new_record(number: ExternalNumber, contact, unknown_number: str, new_lead_company: str) -> NewRecord | None:
    """R-SF-MATCH-4: the record to create, or None when the setting says ``nothing``."""
    first = ((contact.first_name or "").strip() if contact else "") or None
    last = ((contact.last_name or "").strip() if contact else "") or None
    full = " ".join(p for p in (first, last) if p) or number.international
    if unknown_number == "lead":
        fields = {"LastName": last or (number.international if not first else first),
                  "Company": ((contact.company_name or "").strip() if contact else "") or new_lead_company,
                  "Phone": number.e164}
        if first and last:
            fields["FirstName"] = first
        return NewRecord("Lead", fields)
    if unknown_number == "contact":
        fields = {"LastName": last or (number.international if not first else first), "Phone": number.e164}
        if first and last:
            fields["FirstName"] = first
        return NewRecord("Contact", fields)
    if unknown_number == "account":
        return NewRecord("Account", {"Name": full, "Phone": number.e164})
    return None
