"""RULES §9, the pure part: a Salesforce record as an Aircall contact, and only what differs written.

Table-driven, one row per record type and per rule; each expectation is written out by hand from RULES.md
R-CONTACT-1…4 and aircall-api.md §12, not computed with the code under test.
"""

from __future__ import annotations

import pytest

from aircall_sync.aircall.contacts import (
    AircallContact,
    Desired,
    Detail,
    desired_from_record,
    e164_of,
    fingerprint,
    information_value,
    plan_writes,
    strip_emojis,
)

# ---------------------------------------------------------------- R-CONTACT-1: mapping per record type

MAPPING = [
    pytest.param(
        "Contact",
        {"Id": "003A", "FirstName": "Ann", "LastName": "Lee", "Email": "ann@acme.example", "Phone": "(617) 610-5413",
         "MobilePhone": "+1 617 555 0143", "HomePhone": "+1 617 555 0199", "AccountId": "001X"},
        {"account_name": "Acme Corp", "region": "US"},
        {"first_name": "Ann", "last_name": "Lee", "company_name": "Acme Corp",
         "information": "Salesforce Contact 003A", "phone_numbers": ["+16176105413", "+16175550143"],
         "emails": ["ann@acme.example"]},
        id="contact: company = its Account's name; Phone then MobilePhone, other phones not saved"),
    pytest.param(
        "Lead",
        {"Id": "00QB", "FirstName": "Bo", "LastName": "Ek", "Company": "Initech", "Email": "bo@initech.example",
         "Phone": "01 76 11 11 11", "MobilePhone": "06 12 34 56 78"},
        {"region": "FR"},
        {"first_name": "Bo", "last_name": "Ek", "company_name": "Initech", "information": "Salesforce Lead 00QB",
         "phone_numbers": ["+33176111111", "+33612345678"], "emails": ["bo@initech.example"]},
        id="lead: company = Company; national numbers read in the call's region"),
    pytest.param(
        "Account",
        {"Id": "001C", "Name": "Globex Ltd", "Phone": "+44 20 7946 0018"},
        {"region": "GB"},
        {"last_name": "Globex Ltd", "information": "Salesforce Account 001C", "phone_numbers": ["+442079460018"]},
        id="account: its name as last name, no first name, no company"),
    pytest.param(
        "PersonAccount",
        {"Id": "001D", "FirstName": "Cy", "LastName": "Roe", "PersonEmail": "cy@home.example",
         "Phone": "+49 30 901820", "PersonMobilePhone": "+49 1512 3456789", "Name": "Cy Roe"},
        {"region": "DE"},
        {"first_name": "Cy", "last_name": "Roe", "information": "Salesforce Account 001D",
         "phone_numbers": ["+4930901820", "+4915123456789"], "emails": ["cy@home.example"]},
        id="person account: a person, named 'Salesforce Account' (the sObject)"),
    pytest.param(
        "Contact",
        {"Id": "003E", "LastName": "Solo", "MobilePhone": "+1 617 555 0143"},
        {"region": "US"},
        {"last_name": "Solo", "information": "Salesforce Contact 003E", "phone_numbers": []},
        id="mobile only when Phone is set (Aircall's rule)"),
    pytest.param(
        "Lead",
        {"Id": "00QF", "LastName": "Odd", "Company": "X", "Phone": "+1 211 555 2002", "MobilePhone": "+1 617 555 0143"},
        {"region": "US"},
        {"last_name": "Odd", "company_name": "X", "information": "Salesforce Lead 00QF",
         "phone_numbers": ["+16175550143"]},
        id="an invalid Phone is left out (R-CALL-4); it is set, so the mobile is taken"),
    pytest.param(
        "Contact",
        {"Id": "003G", "LastName": "Twin", "Phone": "+1 617 555 0143", "MobilePhone": "617.555.0143"},
        {"region": "US"},
        {"last_name": "Twin", "information": "Salesforce Contact 003G", "phone_numbers": ["+16175550143"]},
        id="the same number twice is saved once"),
    pytest.param(
        "Contact",
        {"Id": "003H", "FirstName": "Zoë 🎉", "LastName": "🔥 Park 👩‍💻", "Email": "zoe@x.example",
         "Phone": "+1 617 555 0143"},
        {"account_name": "Café 🇫🇷 Noir ❤️", "region": "US"},
        {"first_name": "Zoë", "last_name": "Park", "company_name": "Café Noir",
         "information": "Salesforce Contact 003H", "phone_numbers": ["+16175550143"], "emails": ["zoe@x.example"]},
        id="R-CONTACT-4: emojis (sequences, flags, variation selectors) removed from every value"),
    pytest.param(
        "Lead",
        {"Id": "00QI", "FirstName": "🙂", "LastName": "Quiet", "Company": "🙂", "Email": "not an address",
         "Phone": "0033 1 76 11 11 11"},
        {"region": "US"},
        {"last_name": "Quiet", "information": "Salesforce Lead 00QI", "phone_numbers": ["+33176111111"]},
        id="a value that is only emojis is no value; an e-mail without @ is left out; 00 prefix read"),
]


@pytest.mark.parametrize(("obj", "row", "context", "expected"), MAPPING)
def test_R_CONTACT_1_R_CONTACT_4_record_as_contact(obj, row, context, expected) -> None:
    desired = desired_from_record(obj, row, **context)
    assert desired.shown() == {**expected, **({} if expected.get("emails") else {})}
    body = desired.create_body()
    assert body["information"] == expected["information"]
    assert [p["value"] for p in body["phone_numbers"]] == expected["phone_numbers"]
    assert all(p["label"] for p in body["phone_numbers"])


def test_R_CONTACT_1_labels_phone_work_mobile_mobile() -> None:
    desired = desired_from_record("Contact", {"Id": "003A", "LastName": "L", "Phone": "+16176105413",
                                              "MobilePhone": "+16175550143", "Email": "l@x.example"}, region="US")
    assert desired.create_body()["phone_numbers"] == [{"label": "Work", "value": "+16176105413"},
                                                      {"label": "Mobile", "value": "+16175550143"}]
    assert desired.create_body()["emails"] == [{"label": "Work", "value": "l@x.example"}]


@pytest.mark.parametrize(("text", "expected"), [
    ("Plain Name", "Plain Name"),
    ("Zoë Ødegård-Łukasz 李", "Zoë Ødegård-Łukasz 李"),
    ("😀", None),
    ("A 👍🏽 B", "A B"),
    ("keycap 1️⃣", "keycap 1"),
    ("", None),
    (None, None),
])
def test_R_CONTACT_4_strip_emojis(text, expected) -> None:
    assert strip_emojis(text) == expected


@pytest.mark.parametrize(("value", "region", "expected"), [
    ("(617) 610-5413", "US", "+16176105413"),
    ("+33 1 76 11 11 11", None, "+33176111111"),
    ("011 33 1 76 11 11 11", "US", "+33176111111"),
    ("(211) 555-2002", "US", None),  # parses, not valid: left out
    ("anonymous", "US", None),
    ("", "US", None),
    (None, "US", None),
])
def test_R_CALL_4_numbers_saved_are_valid_e164(value, region, expected) -> None:
    assert e164_of(value, region) == expected


def test_R_CONTACT_3_fingerprint_follows_what_is_saved_only() -> None:
    base = {"Id": "003A", "FirstName": "Ann", "LastName": "Lee", "Phone": "(617) 610-5413", "AccountId": "001X"}
    one = desired_from_record("Contact", base, account_name="Acme", region="US")
    # Formatting of the same number, a field not saved, an emoji: the same contact, the same fingerprint.
    same = desired_from_record("Contact", {**base, "Phone": "+1 617-610-5413", "HomePhone": "1", "LastName": "Lee 😀"},
                               account_name="Acme", region="US")
    assert fingerprint(one) == fingerprint(same)
    for changed in ({**base, "FirstName": "Anne"}, {**base, "Email": "a@x.example"}, {**base, "Phone": "+16175550143"}):
        assert fingerprint(desired_from_record("Contact", changed, account_name="Acme", region="US")) != fingerprint(one)
    assert fingerprint(desired_from_record("Contact", base, account_name="Acme 2", region="US")) != fingerprint(one)
    assert Desired.from_json(one.to_json()) == one


# ---------------------------------------------------------------- R-CONTACT-2: only what differs


DESIRED = Desired("Lead", "00QB", "Bo", "Ek", "Initech", (("Work", "+33176111111"), ("Mobile", "+33612345678")),
                  (("Work", "bo@initech.example"),))


def contact(**kw) -> AircallContact:
    base = dict(id=7, first_name="Bo", last_name="Ek", company_name="Initech", information="Salesforce Lead 00QB",
                phones=(Detail(71, "Work", "+33176111111"), Detail(72, "Mobile", "+33612345678")),
                emails=(Detail(73, "Work", "bo@initech.example"),))
    base.update(kw)
    return AircallContact(**base)


@pytest.mark.parametrize("ours", [True, False])
def test_R_CONTACT_2_an_equal_contact_needs_no_write(ours) -> None:
    assert not plan_writes(DESIRED, contact(), ours=ours)
    # The same number written another way, an e-mail in other case: equal.
    assert not plan_writes(DESIRED, contact(phones=(Detail(71, "Work", "+33 1 76 11 11 11"),
                                                    Detail(72, None, "+33612345678")),
                                            emails=(Detail(73, "x", "Bo@Initech.example"),)), ours=ours)


def test_R_CONTACT_2_only_the_scalars_that_differ_are_sent() -> None:
    writes = plan_writes(DESIRED, contact(first_name="Bob", company_name=None), ours=False)
    assert writes.scalars == {"first_name": "Bo", "company_name": "Initech"}
    assert writes.details == [] and writes.requests == 1
    assert writes.diff == {"first_name": ("Bob", "Bo"), "company_name": (None, "Initech")}


def test_R_CONTACT_2_a_scalar_the_record_lacks_is_never_blanked() -> None:
    bare = Desired("Account", "001C", None, "Globex", None, (("Work", "+442079460018"),))
    current = AircallContact(7, first_name="Gary", last_name="Globex", company_name="Globex Ltd",
                             information="Salesforce Account 001C", phones=(Detail(1, "Work", "+442079460018"),),
                             emails=(Detail(2, "Work", "g@globex.example"),))
    # Aircall cannot blank a scalar: the first name and company stay, for any contact.
    assert not plan_writes(bare, current, ours=False)
    # A contact aircall-sync created follows the record: its e-mail goes, the scalars stay.
    writes = plan_writes(bare, current, ours=True)
    assert writes.scalars == {} and writes.details == [("email", "delete", Detail(2, "Work", "g@globex.example"))]


def test_R_CONTACT_2_a_contact_not_ours_keeps_numbers_and_emails_the_record_lacks() -> None:
    current = contact(phones=(Detail(71, "Home", "+14155550000"),), emails=(Detail(73, "Work", "old@x.example"),))
    writes = plan_writes(DESIRED, current, ours=False)
    assert writes.scalars == {}
    assert writes.details == [("phone", "add", Detail(None, "Work", "+33176111111")),
                              ("phone", "add", Detail(None, "Mobile", "+33612345678")),
                              ("email", "add", Detail(None, "Work", "bo@initech.example"))]
    assert writes.diff["phone_numbers"] == (["+14155550000"], ["+33176111111", "+33612345678", "+14155550000"])


def test_R_CONTACT_2_a_contact_ours_follows_the_record() -> None:
    current = contact(phones=(Detail(71, "Work", "+33176111111"), Detail(72, "Mobile", "+33699999999"),
                              Detail(74, "Work", "+33188888888")), emails=())
    writes = plan_writes(DESIRED, current, ours=True)
    assert writes.details == [("phone", "put", Detail(72, "Mobile", "+33612345678")),
                              ("phone", "delete", Detail(74, "Work", "+33188888888")),
                              ("email", "add", Detail(None, "Work", "bo@initech.example"))]
    assert writes.requests == 3


def test_R_CONTACT_1_information_keeps_what_a_person_wrote() -> None:
    assert information_value(None, "Salesforce Lead 00QB") == "Salesforce Lead 00QB"
    assert information_value("VIP, call mornings", "Salesforce Lead 00QB") == (
        "VIP, call mornings\nSalesforce Lead 00QB")
    assert information_value("VIP\nSalesforce Lead 00QB", "Salesforce Lead 00QB") is None
    writes = plan_writes(DESIRED, contact(information="VIP"), ours=False)
    assert writes.scalars == {"information": "VIP\nSalesforce Lead 00QB"}


def test_parse_contact_reads_the_recorded_answer() -> None:
    """reference/aircall/recorded/create-contact.json's answer."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "shared" / "reference" / "aircall" / "recorded" / "create-contact.json"
    if not path.exists():
        pytest.skip("the shared reference is not next to this clone")
    answer = json.loads(path.read_text())["api"]["post"]["/v1/contacts"]["response"]
    parsed = AircallContact.parse(answer)
    assert parsed.id == 482884061 and parsed.company_name is None
    assert parsed.phones == (Detail(1818273296, "Work", "+19001112222"),)
    assert parsed.emails == (Detail(1818273295, "Office", "gary.jennings@acme.com"),)
    assert parsed.information == "external_custom_id:87123"
    assert AircallContact.parse({"contact": {"id": "x"}}) is None
