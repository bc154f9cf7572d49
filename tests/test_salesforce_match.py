"""RULES.md §3 (R-SF-MATCH-1..4) on plain data, plus the SOQL/SOSL quoting helpers.

salesforce-api.md §5: phones are stored as typed, so matching is done on E.164 in
Python after a SOSL search over several digit forms; §8: SOSL has no escaper, so
reserved characters are escaped by hand. Each table names the rule it proves.
"""

from __future__ import annotations

import functools
import itertools
import random
import re

import phonenumbers
import pytest
from builders import NUMBER, call_payload

from aircall_sync import rules
from aircall_sync.aircall.models import Call, Contact
from aircall_sync.sandbox import soql as sandbox_soql
from aircall_sync.targets import salesforce_match as m
from aircall_sync.targets.salesforce import SaveResult, soql_in, soql_quote, sosl_term
from aircall_sync.targets.salesforce_task import Match

US, FR, DE = "+16176105413", "+33176111111", "+4930901820"


@functools.cache
def number(raw: str, country: str = "US") -> rules.ExternalNumber:
    """The external number exactly as R-CALL-4 builds it from a call."""
    found = rules.external_number(Call.parse(call_payload(raw_digits=raw, number=dict(NUMBER, country=country))))
    assert found is not None, raw
    return found


def record(kind: str, rid: str = "001000000000001AAA", modified: str | None = None, **fields) -> dict:
    """A record as SOSL/SOQL return it (``attributes.type``; a person account is an Account)."""
    sobject = "Account" if kind == "PersonAccount" else kind
    out = {"attributes": {"type": sobject, "url": f"/services/data/v62.0/sobjects/{sobject}/{rid}"}, "Id": rid}
    if kind == "PersonAccount":
        out["IsPersonAccount"] = True
    elif kind == "Account":
        out["IsPersonAccount"] = False
    if modified is not None:
        out["LastModifiedDate"] = modified
    out.update(fields)
    return out


def digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


# ------------------------------------------------------------ R-SF-MATCH-1

#: (the call's number, a value as someone typed it into the CRM)
TYPED = [
    (US, "(617) 610-5413"),
    (US, "617.610.5413"),
    (US, "+1 617 610 5413"),
    (US, "001 617 610 5413"),
    (US, "1-617-610-5413"),
    (US, "6176105413"),
    (US, "+16176105413"),
    (FR, "01 76 11 11 11"),
    (FR, "0176111111"),
    (FR, "+33 (0)1 76 11 11 11"),
    (FR, "+33 1 76 11 11 11"),
    (DE, "0049 30 901820"),
    (DE, "030 901820"),
    (DE, "+49 30 901820"),
]

#: Every phone field of every object (R-SF-MATCH-1), as (kind, field).
FIELD_SLOTS = [(kind, name) for kind, names in m.PHONE_FIELDS.items() for name in names]


def test_R_SF_MATCH_1_phone_fields_are_the_rule_list():
    assert m.PHONE_FIELDS == {
        "Contact": ("Phone", "MobilePhone", "HomePhone", "OtherPhone", "AssistantPhone"),
        "Lead": ("Phone", "MobilePhone"),
        "Account": ("Phone",),
        "PersonAccount": ("PersonMobilePhone", "PersonHomePhone", "PersonOtherPhone"),
    }


@pytest.mark.parametrize("kind, field", FIELD_SLOTS)
@pytest.mark.parametrize("e164, stored", TYPED)
def test_R_SF_MATCH_1_typed_values_match_in_every_phone_field(e164, stored, kind, field):
    assert m.holds_number(record(kind, **{field: stored}), number(e164))


def test_R_SF_MATCH_1_person_account_also_matches_on_account_phone():
    # A person account is an Account: its plain Phone counts too.
    assert m.holds_number(record("PersonAccount", Phone="(617) 610-5413"), number(US))


@pytest.mark.parametrize(
    "e164, kind, fields",
    [
        # A different number, however close, never matches.
        (US, "Contact", {"Phone": "(617) 610-5414"}),
        (US, "Contact", {"Phone": "617-610-541"}),
        (US, "Contact", {"MobilePhone": "+44 617 610 5413"}),
        (US, "Lead", {"Phone": "+1 617 610 5413 0"}),
        (FR, "Lead", {"MobilePhone": "01 76 11 11 12"}),
        (FR, "Account", {"Phone": "+49 176 111111"}),
        (DE, "Contact", {"HomePhone": "030 901821"}),
        (DE, "Contact", {"Phone": "+33 30 901820"}),
        # The right number in a field the rule does not list: not searched.
        (US, "Contact", {"Fax": "(617) 610-5413"}),
        (US, "Lead", {"HomePhone": "(617) 610-5413"}),
        (US, "Account", {"PersonMobilePhone": "(617) 610-5413"}),  # business account: Phone only
        (US, "Account", {"Fax": "(617) 610-5413"}),
        # An object outside the rule, or no type at all.
        (US, "User", {"Phone": "(617) 610-5413"}),
    ],
)
def test_R_SF_MATCH_1_other_numbers_and_fields_never_match(e164, kind, fields):
    rec = record(kind, **fields)
    assert not m.holds_number(rec, number(e164))
    assert m.choose([rec], number(e164)) is None


def test_R_SF_MATCH_1_record_without_type_never_matches():
    rec = {"Id": "003000000000001AAA", "Phone": "(617) 610-5413"}
    assert m.kind_of(rec) == ""
    assert not m.holds_number(rec, number(US))


GARBAGE = [None, "", " ", "\t\n", "abc", "+", "00", "011", "0", "\x00", "+999999999999999999999999", "x" * 5000,
           "١٢٣", "(617)", "0016", 6176105413, 6.17, True, ["6176105413"], {"Phone": "6176105413"}, b"6176105413"]


@pytest.mark.parametrize("value", GARBAGE, ids=lambda v: repr(v)[:20])
@pytest.mark.parametrize("e164", [US, FR, DE])
def test_R_SF_MATCH_1_garbage_values_do_not_crash(value, e164):
    rec = record("Contact", Phone=value, MobilePhone=value, HomePhone=value, OtherPhone=value, AssistantPhone=value)
    assert m.holds_number(rec, number(e164)) is False
    assert m.choose([rec], number(e164)) is None


def test_R_SF_MATCH_1_garbage_in_one_field_does_not_hide_another():
    rec = record("Contact", Phone="call reception", MobilePhone="", OtherPhone="(617) 610-5413")
    assert m.holds_number(rec, number(US))


@pytest.mark.parametrize("e164, stored", TYPED)
def test_R_SF_MATCH_1_search_terms_cover_the_stored_digits(e164, stored):
    # The sandbox's SOSL compares digits only (sandbox/soql.py); one of our terms
    # must equal the stored value's digits or the record is never returned.
    terms = m.search_terms(number(e164))
    assert digits(stored) in terms, (stored, terms)


@pytest.mark.parametrize("e164", [US, FR, DE, "+442079460018", "+390612345678"])
def test_R_SF_MATCH_1_search_terms_are_distinct_digit_strings(e164):
    terms = m.search_terms(number(e164))
    assert terms and len(terms) == len(set(terms))
    assert all(t.isdigit() and len(t) >= 5 for t in terms)
    assert terms[0] == e164.lstrip("+")  # E.164 digits first: what this tool stores


def test_R_SF_MATCH_1_search_terms_us_international_prefix():
    # Someone in the US dialling out types 011; only then is that form searched.
    assert "01116176105413" in m.search_terms(number(US))
    assert not any(t.startswith("011") for t in m.search_terms(number(FR)))


# ------------------------------------------------------------ R-CALL-4 x R-SF-MATCH-1: every format, valid or not
#
# R-CALL-4: a number that parses and is possible but not valid for phonenumbers is still
# an external number, looked up and matched; phonenumbers' metadata lags new area codes,
# so real numbers can be "invalid" to it. A CRM value written without a country code is
# read in the region of the number being matched, whatever its validity; the stored
# value may carry an extension, which is not part of the number.

#: (the caller as Aircall sends it, the Aircall line's country, valid for phonenumbers,
#: values typed into a CRM that hold that number)
FORMATS = [
    # NANP: 211 is a service code, no area code: possible, not valid, no region claims it.
    ("+1 211-555-2002", "US", False,
     ["(211) 555-2002", "211.555.2002", "211 555 2002", "211-555-2002", "2115552002", "1 (211) 555-2002",
      "1-211-555-2002", "+1 211 555 2002", "+1 (211) 555-2002", "+12115552002", "001 211 555 2002",
      "011 1 211 555 2002", "(211) 555-2002 x123", "211.555.2002 ext. 45", "+1 211 555 2002 ext 7",
      "211-555-2002 #9", "001 211 555 2002 ext. 45"]),
    # The same caller on a Canadian line, and typed nationally into Aircall.
    ("+1 211-555-2002", "CA", False, ["(211) 555-2002", "211.555.2002", "+1 211 555 2002", "(211) 555-2002 x123"]),
    ("(211) 555-2002", "US", False, ["(211) 555-2002", "211 555 2002", "211.555.2002 ext. 45"]),
    # Valid counterparts (US, and CA which shares +1).
    ("+1 617-610-5413", "US", True,
     ["(617) 610-5413", "617.610.5413", "617 610 5413", "+1 617 610 5413", "(617) 610-5413 x123",
      "617.610.5413 ext. 45"]),
    ("+1 416-555-1234", "CA", True, ["(416) 555-1234", "416.555.1234", "416 555 1234", "+1 416 555 1234 x12"]),
    # GB: phonenumbers knows no 0111 range; no region of +44 (GB, GG, IM, JE) claims it.
    ("+44 111 111 1111", "GB", False,
     ["0111 111 1111", "01111 111111", "01111111111", "0111.111.1111", "+44 111 111 1111", "+44 (0)111 111 1111",
      "0044 111 111 1111", "0111 111 1111 ext. 45", "01111 111111 x123"]),
    ("+44 20 7946 0018", "GB", True,
     ["020 7946 0018", "02079460018", "020.7946.0018", "+44 20 7946 0018", "+44 (0)20 7946 0018",
      "0044 20 7946 0018", "020 7946 0018 ext. 45", "020 7946 0018 x123"]),
    # AU: phonenumbers knows no range starting with 5, and formats it without the trunk 0.
    ("+61 5 1111 1111", "AU", False,
     ["05 1111 1111", "(05) 1111 1111", "0511111111", "05.1111.1111", "+61 5 1111 1111", "+61 (0)5 1111 1111",
      "0061 5 1111 1111", "05 1111 1111 x123", "(05) 1111 1111 ext. 45"]),
    ("+61 2 9999 9999", "AU", True, ["(02) 9999 9999", "02 9999 9999", "0299999999", "+61 2 9999 9999 ext. 45"]),
    # FI: +358 shared with the Åland Islands (AX); phonenumbers knows no 011 range.
    ("+358 11 111111", "FI", False, ["011 111111", "011-111111", "011111111", "+358 11 111111", "011 111111 x9"]),
    # Single-region countries: an invalid number's region was never in doubt; kept so.
    ("+33 7 00 11 11 11", "FR", False,
     ["07 00 11 11 11", "07.00.11.11.11", "0700111111", "+33 7 00 11 11 11", "+33 (0)7 00 11 11 11",
      "0033 7 00 11 11 11", "07 00 11 11 11 ext. 45", "07 00 11 11 11 x123"]),
    ("+33 1 76 11 11 11", "FR", True, ["01 76 11 11 11", "01.76.11.11.11", "+33 1 76 11 11 11 x123"]),
    ("+49 9999 99999", "DE", False, ["09999 99999", "0999999999", "09999-99999", "+49 9999 99999", "0049 9999 99999",
                                     "09999 99999 x123"]),
    ("+49 30 901820", "DE", True, ["030 901820", "030-901820", "030.901820", "+49 30 901820", "030 901820 ext. 45"]),
]
FORMAT_ROWS = [(raw, line, stored) for raw, line, _, values in FORMATS for stored in values]
#: The same rows without an extension: the forms a search term must equal (see below).
PLAIN_ROWS = [row for row in FORMAT_ROWS if not re.search(r"x|ext|#", row[2])]


@pytest.mark.parametrize("raw, line, valid", [row[:3] for row in FORMATS])
def test_R_CALL_4_the_table_holds_valid_and_possible_but_invalid_numbers(raw, line, valid):
    n = number(raw, line)
    assert n.valid is valid, n


@pytest.mark.parametrize("kind, field", [("Contact", "Phone"), ("Contact", "AssistantPhone"), ("Lead", "MobilePhone"),
                                         ("Account", "Phone"), ("PersonAccount", "PersonOtherPhone")])
@pytest.mark.parametrize("raw, line, stored", FORMAT_ROWS)
def test_R_CALL_4_R_SF_MATCH_1_any_typed_format_matches_valid_or_not(raw, line, stored, kind, field):
    n = number(raw, line)
    rec = record(kind, **{field: stored})
    assert m.holds_number(rec, n)
    assert m.choose([rec], n) is rec
    # The batch index the resolver uses (read only where the last digits fit) finds it too.
    assert m.index_by_number([rec], [n]).get(n.e164) == [rec]


@pytest.mark.parametrize("raw, line, stored", PLAIN_ROWS)
def test_R_CALL_4_R_SF_MATCH_1_a_search_term_equals_the_stored_digits_valid_or_not(raw, line, stored):
    # The sandbox's SOSL compares the digits of the whole value (sandbox/soql.py); one of our
    # terms must equal them or the record never comes back to be compared. Values with an
    # extension hold more digits than any term: how Salesforce tokenises them is UNCONFIRMED
    # (salesforce-api.md §5), so they are only proven on the comparison side above.
    assert digits(stored) in m.search_terms(number(raw, line)), (stored, m.search_terms(number(raw, line)))


@pytest.mark.parametrize(
    "raw, line, stored",
    [
        # One digit off, in the area code, or missing.
        ("+1 211-555-2002", "US", "(211) 555-2003"),
        ("+1 211-555-2002", "US", "(212) 555-2002"),
        ("+1 211-555-2002", "US", "211.555.200"),
        # The extension is not part of the number: these digits spell another one.
        ("+1 211-555-2002", "US", "(211) 555-200 x2"),
        ("+1 211-555-2002", "US", "(211) 555-2009 x2002"),
        # A local number without its area code could be anyone's.
        ("+1 211-555-2002", "US", "555-2002"),
        # The same national digits under another country code.
        ("+1 211-555-2002", "US", "+44 211 555 2002"),
        ("+1 211-555-2002", "US", "0044 211 555 2002"),
        ("+44 111 111 1111", "GB", "0111 111 1112"),
        ("+44 111 111 1111", "GB", "+1 111 111 1111"),
        ("+44 111 111 1111", "GB", "0111 111 111 x1"),
        ("+61 5 1111 1111", "AU", "05 1111 1112"),
        ("+61 5 1111 1111", "AU", "5111 1111"),
        ("+61 5 1111 1111", "AU", "+33 5 11 11 11 11"),
        ("+358 11 111111", "FI", "011 111112"),
        ("+33 7 00 11 11 11", "FR", "07 00 11 11 12"),
        ("+33 7 00 11 11 11", "FR", "+49 700 111111"),
        ("+49 9999 99999", "DE", "09999 99998"),
        ("+1 617-610-5413", "US", "(617) 610-5414 x5413"),
    ],
)
def test_R_CALL_4_R_SF_MATCH_1_a_different_number_never_matches_valid_or_not(raw, line, stored):
    n = number(raw, line)
    rec = record("Contact", Phone=stored, MobilePhone=stored)
    assert not m.holds_number(rec, n)
    assert m.choose([rec], n) is None
    assert n.e164 not in m.index_by_number([rec], [n])


@pytest.mark.parametrize("raw", sorted({raw for raw, _, valid, _ in FORMATS if not valid and raw.startswith("+")}))
def test_R_CALL_4_every_region_of_the_country_code_reads_the_national_format_alike(raw):
    # Why the region a value is read in is the main region of the country calling code,
    # not the Aircall line's country: matches are remembered per E.164, so the reading must
    # depend on the number alone, and the regions sharing a code differ only in how they
    # complete a short local number (with their own area code, never the number's).
    parsed = phonenumbers.parse(raw)
    national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
    read = {region: phonenumbers.format_number(phonenumbers.parse(national, region),
                                                phonenumbers.PhoneNumberFormat.E164)
            for region in phonenumbers.region_codes_for_country_code(parsed.country_code)}
    assert set(read.values()) == {number(raw).e164}, read


# ------------------------------------------------------------ R-SF-MATCH-2 / -3

OLD, NEW = "2026-09-01T08:00:00.000+0000", "2026-10-01T12:00:00.000+0000"


def test_R_SF_MATCH_2_priority_constant():
    assert m.PRIORITY == ("Contact", "Lead", "Account", "PersonAccount")


@pytest.mark.parametrize(
    "kinds",
    [combo for size in (2, 3, 4) for combo in itertools.combinations(m.PRIORITY, size)],
    ids=lambda kinds: "+".join(kinds),
)
def test_R_SF_MATCH_2_priority(kinds):
    # The lower-priority records are the more recently modified: priority beats recency.
    recs = [
        record(kind, rid=f"{i:03d}000000000001AAA", modified=NEW if i else OLD, Phone="(617) 610-5413",
               PersonMobilePhone="(617) 610-5413")
        for i, kind in enumerate(kinds)
    ]
    for order in itertools.permutations(recs):
        chosen = m.choose(order, number(US))
        assert chosen is not None and m.kind_of(chosen) == kinds[0]


def test_R_SF_MATCH_2_only_records_holding_the_number_count():
    contact = record("Contact", rid="003000000000001AAA", Phone="(617) 610-9999")  # someone else
    lead = record("Lead", rid="00Q000000000001AAA", MobilePhone="617.610.5413")
    assert m.choose([contact, lead], number(US)) is lead
    assert m.choose([], number(US)) is None


@pytest.mark.parametrize(
    "dates, winner",
    [
        ((OLD, NEW), 1),
        ((NEW, OLD), 0),
        (("2026-10-01T12:00:00.000+0000", "2026-10-01T12:00:00.001+0000"), 1),
        (("2025-12-31T23:59:59.000+0000", "2026-01-01T00:00:00.000+0000"), 1),
        # Same instant written two ways is a tie (the id decides: index 0 has the smaller id).
        (("2026-10-01T12:00:00.000+0000", "2026-10-01T12:00:00Z"), 0),
        # Compared as instants, not as text.
        (("2026-10-01T12:00:00.000+0200", "2026-10-01T11:00:00.000+0000"), 1),
        # A record without a date loses to any dated one.
        ((None, OLD), 1),
        ((OLD, "not a date"), 0),
    ],
)
@pytest.mark.parametrize("kind", m.PRIORITY)
def test_R_SF_MATCH_3_most_recently_modified_wins(kind, dates, winner):
    recs = [
        record(kind, rid=f"{kind[:3]}00000000000{i}AAA", modified=d, Phone="+1 617 610 5413",
               PersonHomePhone="+1 617 610 5413")
        for i, d in enumerate(dates)
    ]
    for order in (recs, recs[::-1]):
        assert m.choose(order, number(US)) is recs[winner]


def test_R_SF_MATCH_3_tie_break_is_deterministic():
    recs = [record("Contact", rid=rid, modified=NEW, Phone="6176105413")
            for rid in ("003B00000000002AAA", "003A00000000009AAA", "003C00000000001AAA")]
    rng = random.Random(4)
    for _ in range(12):
        rng.shuffle(recs)
        assert m.choose(recs, number(US))["Id"] == "003A00000000009AAA"


def test_R_SF_MATCH_3_newest_of_the_top_type_beats_older_of_same_type_among_others():
    recs = [
        record("Lead", rid="00Q000000000001AAA", modified="2026-10-30T00:00:00.000+0000", Phone="6176105413"),
        record("Contact", rid="003000000000001AAA", modified=OLD, MobilePhone="6176105413"),
        record("Contact", rid="003000000000002AAA", modified=NEW, AssistantPhone="6176105413"),
        record("Contact", rid="003000000000003AAA", modified="2026-10-31T00:00:00.000+0000", Phone="6176105400"),
    ]
    assert m.choose(recs, number(US))["Id"] == "003000000000002AAA"


# ------------------------------------------------------------ kind_of / to_match


@pytest.mark.parametrize(
    "rec, kind",
    [
        ({"attributes": {"type": "Contact"}}, "Contact"),
        ({"attributes": {"type": "Lead"}}, "Lead"),
        ({"attributes": {"type": "Account"}}, "Account"),
        ({"attributes": {"type": "Account"}, "IsPersonAccount": False}, "Account"),
        ({"attributes": {"type": "Account"}, "IsPersonAccount": True}, "PersonAccount"),
        ({"attributes": {"type": "Contact"}, "IsPersonAccount": True}, "Contact"),
        ({"attributes": None}, ""),
        ({}, ""),
    ],
)
def test_kind_of(rec, kind):
    assert m.kind_of(rec) == kind


@pytest.mark.parametrize(
    "rec, created, expected",
    [
        (record("Contact", rid="003X", Name="Ada Lovelace", OwnerId="005A", AccountId="001A"), False,
         Match("Contact", "003X", "Ada Lovelace", "005A", account_id="001A")),
        (record("Lead", rid="00QX", Name="Bob", OwnerId="005A", AccountId="001A"), True,
         Match("Lead", "00QX", "Bob", "005A", created=True)),
        (record("Account", rid="001X", Name="", OwnerId=None, PersonContactId="003P"), False,
         Match("Account", "001X", None, None)),
        (record("PersonAccount", rid="001P", Name="Carla", OwnerId="005B", PersonContactId="003P",
                AccountId="001Z"), False,
         Match("PersonAccount", "001P", "Carla", "005B", person_contact_id="003P")),
    ],
)
def test_to_match(rec, created, expected):
    assert m.to_match(rec, created=created) == expected


# ------------------------------------------------------------ R-SF-MATCH-4


def contact(first=None, last=None, company=None) -> Contact:
    return Contact(id=1, first_name=first, last_name=last, company_name=company)


@pytest.mark.parametrize(
    "aircall_contact, setting, sobject, fields",
    [
        (contact("Ada", "Lovelace", "Analytical Ltd"), "lead", "Lead",
         {"FirstName": "Ada", "LastName": "Lovelace", "Company": "Analytical Ltd", "Phone": US}),
        (contact("Ada", "Lovelace"), "lead", "Lead",
         {"FirstName": "Ada", "LastName": "Lovelace", "Company": "Unknown company", "Phone": US}),
        (contact(None, "Lovelace", "Analytical Ltd"), "lead", "Lead",
         {"LastName": "Lovelace", "Company": "Analytical Ltd", "Phone": US}),
        (contact("Ada", None), "lead", "Lead", {"LastName": "Ada", "Company": "Unknown company", "Phone": US}),
        (contact(None, None, "Analytical Ltd"), "lead", "Lead",
         {"LastName": "+1 617-610-5413", "Company": "Analytical Ltd", "Phone": US}),
        (None, "lead", "Lead", {"LastName": "+1 617-610-5413", "Company": "Unknown company", "Phone": US}),
        (contact("Ada", "Lovelace", "Analytical Ltd"), "contact", "Contact",
         {"FirstName": "Ada", "LastName": "Lovelace", "Phone": US}),
        (contact("Ada", None), "contact", "Contact", {"LastName": "Ada", "Phone": US}),
        (None, "contact", "Contact", {"LastName": "+1 617-610-5413", "Phone": US}),
        (contact("Ada", "Lovelace", "Analytical Ltd"), "account", "Account", {"Name": "Ada Lovelace", "Phone": US}),
        (contact(None, "Lovelace"), "account", "Account", {"Name": "Lovelace", "Phone": US}),
        (None, "account", "Account", {"Name": "+1 617-610-5413", "Phone": US}),
    ],
)
def test_R_SF_MATCH_4_new_record(aircall_contact, setting, sobject, fields):
    created = m.new_record(number("(617) 610-5413"), aircall_contact, setting, "Unknown company")
    assert created is not None
    assert created.sobject == sobject
    assert created.fields == fields


@pytest.mark.parametrize(
    "raw, country, phone, name",
    [
        ("01 76 11 11 11", "FR", FR, "+33 1 76 11 11 11"),
        ("0049 30 901820", "FR", DE, "+49 30 901820"),
        ("+1 800-123-4567", "US", "+18001234567", "+1 800-123-4567"),  # invalid but possible (R-CALL-4)
    ],
)
def test_R_SF_MATCH_4_new_record_phone_in_e164_and_name_formatted(raw, country, phone, name):
    created = m.new_record(number(raw, country), None, "lead", "Walk-ins")
    assert created.fields == {"LastName": name, "Company": "Walk-ins", "Phone": phone}


def test_R_SF_MATCH_4_new_lead_company_is_configurable():
    created = m.new_record(number(US), contact("Ada", "Lovelace"), "lead", "Société inconnue")
    assert created.fields["Company"] == "Société inconnue"


@pytest.mark.parametrize("aircall_contact", [None, contact("Ada", "Lovelace", "Analytical Ltd")])
def test_R_SF_MATCH_4_nothing_creates_nothing(aircall_contact):
    assert m.new_record(number(US), aircall_contact, "nothing", "Unknown company") is None


@pytest.mark.parametrize("setting", ["lead", "contact", "account"])
def test_R_SF_MATCH_4_created_record_is_found_again(setting):
    # R-SF-MATCH-5's premise: what we create (Phone in E.164) matches the number.
    created = m.new_record(number("617.610.5413"), None, setting, "Unknown company")
    assert m.holds_number(record(created.sobject, **created.fields), number(US))


# ------------------------------------------------------------ sosl_queries

_PHRASE = re.compile(r'"((?:\\.|[^"\\])*)"')


def phrases(query: str) -> list[str]:
    """The quoted terms between FIND's braces, unescaped."""
    inside = query[query.index("{") + 1: closing_brace(query)]
    return [re.sub(r"\\(.)", r"\1", p) for p in _PHRASE.findall(inside)]


def closing_brace(query: str) -> int:
    """Index of the first ``}`` not escaped by a backslash after ``FIND {``."""
    assert query.startswith("FIND {")
    i = len("FIND {")
    while i < len(query):
        if query[i] == "\\":
            i += 2
            continue
        if query[i] == "}":
            return i
        i += 1
    raise AssertionError("FIND is never closed")


def returning(query: str) -> dict[str, sandbox_soql.Returning]:
    parsed = sandbox_soql.parse_sosl(query)
    assert parsed.scope == "PHONE"
    return {r.sobject: r for r in parsed.returning}


def numbers_us(count: int) -> list[rules.ExternalNumber]:
    return [number(f"+1617610{i:04d}") for i in range(count)]


@functools.cache
def terms_of(n: rules.ExternalNumber) -> frozenset[str]:
    return frozenset(m.search_terms(n))


@pytest.mark.parametrize("count", [1, 2, 49, 50, 51, 52, 150])  # one query holds 49 (person accounts) or 51
@pytest.mark.parametrize("person_accounts", [False, True])
def test_sosl_queries_budget_and_each_number_exactly_once(count, person_accounts):
    nums = numbers_us(count)
    queries = m.sosl_queries(nums, person_accounts)
    assert queries
    # §5: above 10,000 characters SOSL returns no rows; above 4,000 it drops the operators
    # and ORs the terms, which is all these queries ask for anyway.
    assert m.SOSL_BUDGET < 10_000
    assert all(len(q) <= m.SOSL_BUDGET for q in queries)
    per_query = [phrases(q) for q in queries]
    found_sets = [set(found) for found in per_query]
    for n in nums:
        holding = [i for i, found in enumerate(found_sets) if terms_of(n) & found]
        assert len(holding) == 1, (n.e164, holding)
        assert terms_of(n) <= found_sets[holding[0]]
    # Nothing but those terms, and no term twice.
    flat = [t for found in per_query for t in found]
    assert sorted(flat) == sorted(t for n in nums for t in m.search_terms(n))
    # Packed greedily: the next query's first number would not have fitted in the previous one.
    for i in range(len(queries) - 1):
        first_next = next(n for n in nums if terms_of(n) <= found_sets[i + 1])
        extra = " OR ".join(sosl_term(t) for t in m.search_terms(first_next))
        at = closing_brace(queries[i])
        assert len(queries[i][:at] + " OR " + extra + queries[i][at:]) > m.SOSL_BUDGET


def test_sosl_queries_split_when_over_budget():
    queries = m.sosl_queries(numbers_us(150), False)
    assert len(queries) > 1


def test_sosl_queries_empty():
    assert m.sosl_queries([], False) == []
    assert m.sosl_queries([], True) == []


@pytest.mark.parametrize("person_accounts", [False, True])
def test_sosl_queries_returning_clause(person_accounts):
    (query,) = m.sosl_queries([number(US), number(FR)], person_accounts)
    assert query.startswith("FIND {")
    objects = returning(query)
    assert set(objects) == {"Contact", "Lead", "Account"}
    contact_r, lead_r, account_r = objects["Contact"], objects["Lead"], objects["Account"]
    # Every phone field of R-SF-MATCH-1 comes back, to be compared in Python.
    assert set(m.PHONE_FIELDS["Contact"]) <= set(contact_r.fields)
    assert set(m.PHONE_FIELDS["Lead"]) <= set(lead_r.fields)
    assert "Phone" in account_r.fields
    for r in objects.values():
        assert {"Id", "Name", "OwnerId", "LastModifiedDate"} <= set(r.fields)
    assert "AccountId" in contact_r.fields
    # Converted leads are never matched.
    assert re.fullmatch(r"\s*IsConverted\s*=\s*false\s*", lead_r.where_text, re.I)
    assert "IsConverted = false" in query
    if person_accounts:
        assert re.fullmatch(r"\s*IsPersonAccount\s*=\s*false\s*", contact_r.where_text, re.I)
        assert set(m.PHONE_FIELDS["PersonAccount"]) <= set(account_r.fields)
        assert {"IsPersonAccount", "PersonContactId"} <= set(account_r.fields)
    else:
        # The org has no such fields: naming them would fail the whole search.
        assert not contact_r.where_text.strip()
        assert "IsPersonAccount" not in query and "Person" not in query
    assert account_r.where is None or "IsPersonAccount" not in account_r.where_text


def test_sosl_queries_terms_are_quoted_phrases():
    (query,) = m.sosl_queries([number(FR)], False)
    inside = query[len("FIND {"): closing_brace(query)]
    assert inside == " OR ".join(f'"{t}"' for t in m.search_terms(number(FR)))


# ------------------------------------------------------------ exact_queries


@pytest.mark.parametrize("sobject", ["Contact", "Lead", "Account"])
@pytest.mark.parametrize("person_accounts", [False, True])
def test_exact_queries(sobject, person_accounts):
    nums = numbers_us(301)
    queries = m.exact_queries(nums, sobject, person_accounts)
    assert len(queries) == 2  # 300 values per statement
    seen: list[str] = []
    for q in queries:
        parsed = sandbox_soql.parse_soql(q)
        assert parsed.sobject == sobject
        fields = {s.path for s in parsed.select}
        assert {"Id", "Name", "OwnerId", "LastModifiedDate", "Phone"} <= fields
        assert ("AccountId" in fields) is (sobject == "Contact")
        assert ({"IsPersonAccount", "PersonContactId"} <= fields) is (sobject == "Account" and person_accounts)
        assert ("IsConverted = false" in q) is (sobject == "Lead")
        tokens = sandbox_soql.tokenize(q)
        seen += [t.value for t in tokens if t.kind == "string"]
    assert seen == [n.e164 for n in nums]


def test_exact_queries_empty():
    assert m.exact_queries([], "Lead", False) == []


# ------------------------------------------------------------ injection (salesforce-api.md §8)

HOSTILE = [
    "plain",
    "",
    "O'Brien",
    "it\\'s",
    "\\",
    "\\\\'",
    "'",
    "''); DELETE",
    "' OR Name != '",
    '"quoted"',
    "{braces}",
    "}",
    "\\}",
    "} IN ALL FIELDS RETURNING User(Id)",
    "x\\} IN ALL FIELDS RETURNING User(Id) FIND {y",
    "line\nbreak\r\nand\ttab",
    "? & | ! { } [ ] ( ) ^ ~ * : \\ \" ' + -",
    "+1 (617) 610-5413*",
    "😀 ünïcödé",
]

SOQL_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "'": "'", "\\": "\\"}


def scan_soql_literal(text: str, start: int) -> tuple[str, int]:
    """Read a SOQL string literal at ``start``; return its value and the index of its closing quote."""
    assert text[start] == "'"
    out, i = [], start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            assert text[i + 1] in SOQL_ESCAPES, f"bad escape {text[i:i + 2]!r}"
            out.append(SOQL_ESCAPES[text[i + 1]])
            i += 2
            continue
        assert ch not in "\r\n", "raw line break inside a literal"
        if ch == "'":
            return "".join(out), i
        out.append(ch)
        i += 1
    raise AssertionError("literal never closed")


@pytest.mark.parametrize("value", HOSTILE)
def test_soql_quote_literal_ends_at_its_last_character(value):
    quoted = soql_quote(value)
    decoded, end = scan_soql_literal(quoted, 0)
    assert end == len(quoted) - 1
    assert decoded == value
    # A second witness: the sandbox's SOQL tokenizer reads one string token.
    (token,) = sandbox_soql.tokenize(quoted)[:1]
    assert token.kind == "string" and token.value == value and token.text == quoted


def test_soql_in_is_a_list_of_intact_literals():
    text = soql_in(HOSTILE)
    assert text[0] == "(" and text[-1] == ")"
    values, i = [], 1
    while True:
        value, end = scan_soql_literal(text, i)
        values.append(value)
        if text[end + 1] == ")":
            assert end + 1 == len(text) - 1
            break
        assert text[end + 1: end + 3] == ", "
        i = end + 3
    assert values == HOSTILE
    query = f"SELECT Id FROM Lead WHERE Phone IN {text} AND IsConverted = false"
    parsed = sandbox_soql.parse_soql(query)
    assert parsed.sobject == "Lead"
    assert [t.value for t in sandbox_soql.tokenize(query) if t.kind == "string"] == HOSTILE


def test_soql_in_empty():
    assert soql_in([]) == "()"


@pytest.mark.parametrize("value", [v for v in HOSTILE if v])
def test_sosl_term_cannot_close_the_find_braces(value):
    term = sosl_term(value)
    query = "FIND {" + term + "} IN PHONE FIELDS RETURNING Contact(Id)"
    # The only unescaped "}" is the one closing FIND.
    assert closing_brace(query) == len("FIND {") + len(term)
    # The phrase, read respecting backslash escapes, ends exactly at its last character.
    assert term[0] == '"'
    i = 1
    while term[i] != '"':
        i += 2 if term[i] == "\\" else 1
    assert i == len(term) - 1
    # Every reserved character is escaped, and unescaping gives the value back.
    j, out = 1, []
    while j < len(term) - 1:
        if term[j] == "\\":
            out.append(term[j + 1])
            j += 2
        else:
            assert term[j] not in set('?&|!{}[]()^~*:"\'+-\\'), term
            out.append(term[j])
            j += 1
    assert "".join(out) == value
    # The sandbox's SOSL parser sees one phrase holding the value, and only the RETURNING we wrote.
    parsed = sandbox_soql.parse_sosl(query)
    assert parsed.terms == ("TERM", value, True)
    assert [r.sobject for r in parsed.returning] == ["Contact"]


# ------------------------------------------------------------ SaveResult.parse


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"id": "00T1", "success": True, "errors": []}, SaveResult("00T1", True, (), None)),
        ({"id": "00T1", "success": True, "errors": [], "created": True}, SaveResult("00T1", True, (), True)),
        ({"id": "00T1", "success": True, "created": False}, SaveResult("00T1", True, (), False)),
    ],
)
def test_save_result_parse_success(raw, expected):
    assert SaveResult.parse(raw) == expected


@pytest.mark.parametrize(
    "raw, codes, messages, fields",
    [
        ({"success": False, "errors": [{"statusCode": "UNABLE_TO_LOCK_ROW", "message": "locked", "fields": []}]},
         ["UNABLE_TO_LOCK_ROW"], ["locked"], [()]),
        ({"success": False, "errors": [{"statusCode": "REQUIRED_FIELD_MISSING", "message": "Required: Subject",
                                        "fields": ["Subject"]},
                                       {"errorCode": "INVALID_FIELD", "message": "bad"}]},
         ["REQUIRED_FIELD_MISSING", "INVALID_FIELD"], ["Required: Subject", "bad"], [("Subject",), ()]),
        ({"success": False, "errors": [{}]}, ["UNKNOWN"], [""], [()]),
        ({"success": False, "errors": ["not a mapping", None, {"statusCode": "X"}]}, ["X"], [""], [()]),
        ({"success": False, "errors": None}, [], [], []),
        ({}, [], [], []),
    ],
)
def test_save_result_parse_errors(raw, codes, messages, fields):
    result = SaveResult.parse(raw)
    assert result.success is False and result.id is None
    assert [e.code for e in result.errors] == codes
    assert [e.message for e in result.errors] == messages
    assert [e.fields for e in result.errors] == fields
    assert result.error == (result.errors[0] if codes else None)
