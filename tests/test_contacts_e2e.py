"""RULES §9 end to end: the real CLI (or the live worker) saves matched Salesforce records in the emulated
Aircall phone, and what landed is read from the emulator's contacts store.

Expectations are computed here from the emulated org (the records as stored, their Account names) and
``phonenumbers``, not with ``aircall_sync.aircall.contacts``: a mapping bug cannot hide behind itself. Requests
are counted on the Aircall emulator's request log (``/v1/contacts…``).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import phonenumbers
import pytest
from conftest import write_settings
from typer.testing import CliRunner

from aircall_sync.cli import app
from aircall_sync.sandbox.aircall_contacts import strip_emoji
from aircall_sync.sandbox.server import Faults
from aircall_sync.sandbox.stack import Sandbox, SandboxOptions

END = datetime(2026, 10, 31, 12, tzinfo=UTC)
FROM, TO = "2026-10-26", "2026-10-31"
CONTACTS = "/v1/contacts"
MARKER = re.compile(r"^Salesforce (Contact|Lead|Account) (\w{18})$")

runner = CliRunner()
#: Calls placed by hand from the hand-made records of ``mapped`` (a Contact, a Lead, an Account, a Person Account).
HAND_NUMBERS = ("+44 20 7946 0991", "+1 212-736-5000", "+49 30 901820", "+33 1 76 11 44 55")
HAND_E164 = ("+442079460991", "+12127365000", "+4930901820", "+33176114455")


def make_box(**kwargs) -> Sandbox:
    options = SandboxOptions(calls=kwargs.pop("calls", 300), seed=kwargs.pop("seed", 4), days=5, end=END, **kwargs)
    return Sandbox(options).start()


def settings_for(box: Sandbox, tmp_path: Path, name: str = "settings.toml", **contacts) -> Path:
    settings = box.settings(tmp_path / "state.sqlite3", targets=("salesforce",))
    settings["aircall"]["requests_per_minute"] = 60000
    settings["aircall"]["contacts"] = {"save_matched": True, **contacts}
    return write_settings(tmp_path / name, settings)


def run(config: Path, *args: str):
    return runner.invoke(app, ["--config", str(config), *args])


def contact_requests(box: Sandbox, method: str | None = None) -> int:
    return box.aircall_server.count(path_prefix=CONTACTS, method=method)


def report(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def saved_by_marker(box: Sandbox) -> dict[str, list[dict]]:
    """Salesforce record id -> the Aircall contacts whose information carries its line."""
    out: dict[str, list[dict]] = {}
    for contact in box.aircall_contacts.all():
        for line in (contact.get("information") or "").splitlines():
            m = MARKER.match(line)
            if m:
                out.setdefault(m.group(2), []).append(contact)
    return out


# ---------------------------------------------------------------- what R-CONTACT-1 says, computed here


def e164(value, region):
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    tries = [(text, region)]
    digits = "".join(ch for ch in text if ch.isdigit())
    for prefix in ("00", "011"):
        if not text.startswith("+") and digits.startswith(prefix):
            tries.append(("+" + digits[len(prefix):], None))
    for candidate, hint in tries:
        try:
            n = phonenumbers.parse(candidate, hint)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(n):
            return phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164)
    return None


def expected_contact(box: Sandbox, obj: str, record: dict, region: str | None) -> dict:
    """R-CONTACT-1 for one record of the emulated org, written out field by field."""
    if obj == "Account" and record.get("IsPersonAccount"):
        first, last, email, phone, mobile, company = (record.get("FirstName"), record.get("LastName"),
                                                       record.get("PersonEmail"), record.get("Phone"),
                                                       record.get("PersonMobilePhone"), None)
    elif obj == "Account":
        first, last, email, phone, mobile, company = None, record["Name"], None, record.get("Phone"), None, None
    elif obj == "Lead":
        first, last, email, phone, mobile, company = (record.get("FirstName"), record["LastName"], record.get("Email"),
                                                       record.get("Phone"), record.get("MobilePhone"),
                                                       record.get("Company"))
    else:
        account = {a["Id"]: a for a in box.sf_store.records("Account")}.get(record.get("AccountId"))
        first, last, email, phone, mobile, company = (record.get("FirstName"), record["LastName"], record.get("Email"),
                                                       record.get("Phone"), record.get("MobilePhone"),
                                                       account["Name"] if account else None)
    numbers = []
    if phone:  # the mobile only beside a Phone
        for value in (phone, mobile):
            number = e164(value, region)
            if number and number not in numbers:
                numbers.append(number)
    return {"first_name": first or None, "last_name": last, "company_name": company or None,
            "emails": [email] if email else [], "phone_numbers": numbers}


def region_of(number: str) -> str | None:
    parsed = phonenumbers.parse(number)
    region = phonenumbers.region_code_for_number(parsed)
    if region is None:
        main = phonenumbers.region_code_for_country_code(parsed.country_code)
        region = None if main == phonenumbers.UNKNOWN_REGION else main
    return region


# ---------------------------------------------------------------- done when: 1,000 calls, 300+ matched records


@pytest.mark.slow
def test_R_CONTACT_3_a_1000_call_backfill_saves_each_matched_record_once_and_a_rerun_asks_nothing(tmp_path):
    """Issue 14's done-when: a 1,000-call backfill whose calls match 300+ existing records saves each record once
    (one Aircall contact carries it, created or updated once), and running it again makes no contact request
    (counted on the emulator)."""
    box = make_box(calls=1000, seed=9, pool_size=4000)
    try:
        seed_ids = {rec["Id"] for obj in box.sf_store.schema for rec in box.sf_store.records(obj)}
        config = settings_for(box, tmp_path)
        first = run(config, "backfill", "--from", FROM, "--to", TO, "--report", str(tmp_path / "first.jsonl"))
        assert first.exit_code == 0, first.output
        lines = report(tmp_path / "first.jsonl")
        matched = {rid for line in lines if line["target"] == "salesforce" and line["outcome"] != "failed"
                   for obj, rid in line["records"].items() if obj != "Task" and rid in seed_ids}
        assert len(matched) >= 300
        contacts = [line for line in lines if line["target"] == "aircall"]
        per_record = Counter(rid for line in contacts for obj, rid in line["records"].items() if obj != "contact")
        # Once per record and run (R-CONTACT-3): every matched existing record has exactly one outcome.
        assert {r for r in per_record if r in seed_ids} == matched
        assert max(per_record.values()) == 1
        saved = {rid for line in contacts if line["outcome"] in ("created", "updated", "unchanged")
                 for obj, rid in line["records"].items() if obj != "contact"}
        not_saved = {rid for line in contacts if line["outcome"] == "skipped"
                     for obj, rid in line["records"].items() if rid in matched}
        assert saved | not_saved == matched and not saved & not_saved
        assert not [line for line in contacts if line["outcome"] == "failed"]
        # Each record saved is in exactly one Aircall contact, and was created at most once.
        markers = saved_by_marker(box)
        assert {rid: len(markers.get(rid, [])) for rid in saved} == dict.fromkeys(saved, 1)
        creates = [c for c in box.aircall_contacts.changes() if c.op == "create"]
        assert len(creates) == sum(1 for line in contacts if line["outcome"] == "created")
        assert len({c.changed["information"] for c in creates}) == len(creates)
        # Those not saved had nothing Aircall takes (no valid Phone) and no contact for their number.
        reasons = Counter(line["reason"] for line in contacts if line["outcome"] == "skipped")
        assert set(reasons) == {"no Aircall contact has the number, and the record has no valid Phone to create "
                                "one with (R-CONTACT-1)",
                                "created by aircall-sync for an unknown number (R-SF-MATCH-4); "
                                "aircall.contacts.save_created = false"}
        used = contact_requests(box)
        assert used <= 3 * len(matched), f"{used} contact requests for {len(matched)} matched records"
        assert "Aircall contacts: " in first.stdout

        before = contact_requests(box)
        again = run(config, "backfill", "--from", FROM, "--to", TO)
        assert again.exit_code == 0, again.output
        assert contact_requests(box) == before, "a re-run sent contact requests"
        assert "Aircall contacts: 0 created, 0 updated" in again.stdout
    finally:
        box.stop()


# ---------------------------------------------------------------- field mapping, per record type


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    """One backfill (person accounts on) whose saved contacts are compared with their records."""
    from aircall_sync.sandbox.salesforce_api import OrgOptions

    tmp = tmp_path_factory.mktemp("mapped")
    box = make_box(calls=400, seed=5, pool_size=900, salesforce_options=OrgOptions(person_accounts=True))
    # One record of each type by hand, emojis in their values (the emulator refuses emojis: R-CONTACT-4), each
    # called once: the seed's Person Accounts hold their number in Person* fields only, never in Phone.
    store = box.sf_store
    account = store.insert("Account", Name="Café 🇫🇷 Noir")
    store.insert("Contact", FirstName="Zoë 🎉", LastName="Émoji ✨", AccountId=account, Phone="020 7946 0991",
                 MobilePhone="+1 617 253 1000", Email="zoe@cafe.example")
    store.insert("Lead", FirstName="Lu", LastName="Ng 👩‍💻", Company="Rocket 🚀 Labs", Phone="(212) 736-5000",
                 Email="lu@rocket.example")
    store.insert("Account", Name="Globex 🌍 Ltd", Phone="+49 30 901820")
    store.insert("Account", FirstName="Per", LastName="Sona 😀", Phone="01 76 11 44 55",
                 PersonMobilePhone="+33 6 11 22 33 44", PersonEmail="per@sona.example",
                 RecordTypeId=store.record_types["Person Account"])
    at = int(END.timestamp()) - 3 * 3600
    box.aircall_store.add_calls([
        {"started_at": at + 60 * i, "answered_at": at + 60 * i + 5, "ended_at": at + 60 * i + 50, "raw_digits": raw}
        for i, raw in enumerate(HAND_NUMBERS)])
    config = settings_for(box, tmp)
    box.sent_updates = record_updates(box)
    result = run(config, "backfill", "--from", FROM, "--to", TO, "--report", str(tmp / "r.jsonl"))
    assert result.exit_code == 0, result.output
    yield box, report(tmp / "r.jsonl")
    box.stop()


def record_updates(box: Sandbox) -> list[tuple[int, dict, dict]]:
    """Every ``POST /v1/contacts/:id`` body the emulator receives, with the contact as it was just before."""
    book = box.aircall_contacts
    sent: list[tuple[int, dict, dict]] = []
    original = book.update

    def update(contact_id, body, **kwargs):
        sent.append((contact_id, dict(body) if isinstance(body, dict) else body, book.get(contact_id) or {}))
        return original(contact_id, body, **kwargs)

    book.update = update
    return sent


def test_R_CONTACT_1_R_CONTACT_4_field_mapping_per_record_type(mapped):
    box, lines = mapped
    calls = {c["id"]: c for c in box.aircall_store.iter_calls(0, 2**40)}
    by_id = {rec["Id"]: (obj, rec) for obj in ("Contact", "Lead", "Account") for rec in box.sf_store.records(obj)}
    seen: Counter = Counter()
    for line in lines:
        if line["target"] != "aircall" or line["outcome"] != "created":
            continue
        (kind, rid), = [(k, v) for k, v in line["records"].items() if k != "contact"]
        obj, record = by_id[rid]
        call = calls[line["call_id"]]
        number = phonenumbers.format_number(phonenumbers.parse(call["raw_digits"], (call.get("number") or {}).get(
            "country")), phonenumbers.PhoneNumberFormat.E164)
        want = expected_contact(box, obj, record, region_of(number))
        want = {k: strip_emoji(v) if isinstance(v, str) else v for k, v in want.items()}
        got = box.aircall_contacts.get(int(line["records"]["contact"]))
        assert got["first_name"] == want["first_name"], rid
        assert got["last_name"] == want["last_name"], rid
        assert got["company_name"] == want["company_name"], rid
        assert [p["value"] for p in got["phone_numbers"]] == want["phone_numbers"], rid
        assert [e["value"] for e in got["emails"]] == want["emails"], rid
        assert got["information"] == f"Salesforce {'Account' if kind == 'PersonAccount' else obj} {rid}"
        seen[kind] += 1
    # Every record type was created at least once, the hand-made ones (with emojis) among them.
    assert {k for k, n in seen.items() if n} >= {"Contact", "Lead", "Account", "PersonAccount"}, seen
    hand = {number: box.aircall_contacts.find_by_number(number) for number in HAND_E164}
    assert {n: len(found) for n, found in hand.items()} == dict.fromkeys(HAND_E164, 1)
    assert [(c[0]["first_name"], c[0]["last_name"], c[0]["company_name"]) for c in hand.values()] == [
        ("Zoë", "Émoji", "Café Noir"), ("Lu", "Ng", "Rocket Labs"), (None, "Globex Ltd", None), ("Per", "Sona", None)]
    assert [p["value"] for p in hand["+442079460991"][0]["phone_numbers"]] == ["+442079460991", "+16172531000"]
    assert [p["value"] for p in hand["+33176114455"][0]["phone_numbers"]] == ["+33176114455", "+33611223344"]


def test_R_CONTACT_2_a_calls_own_contact_is_updated_with_what_differs_only(mapped):
    box, lines = mapped
    changes = box.aircall_contacts.changes()
    updated = [line for line in lines if line["target"] == "aircall" and line["outcome"] == "updated"]
    assert updated
    calls = {c["id"]: c for c in box.aircall_store.iter_calls(0, 2**40)}
    for line in updated:
        cid = int(line["records"]["contact"])
        assert not any(c.op == "create" and c.contact_id == cid for c in changes)
        # The call's own Aircall contact (R-CONTACT-2), when the call had one.
        own = (calls[line["call_id"]].get("contact") or {}).get("id")
        assert own in (None, cid)
    # On the wire: every scalar sent differed from what the contact held just before.
    assert box.sent_updates
    for cid, body, before in box.sent_updates:
        assert body and all(before.get(k) != v for k, v in body.items()), (cid, body, before)
    # Not one contact was created for a number that already had one.
    created_numbers = [p["value"] for c in changes if c.op == "create" for p in c.changed["phone_numbers"]]
    for number in created_numbers:
        assert len(box.aircall_contacts.find_by_number(number)) == 1, number


# ---------------------------------------------------------------- by hand, R-CONTACT-2


def test_R_CONTACT_2_a_contact_made_by_hand_in_aircall_is_updated_not_duplicated(tmp_path):
    box = make_box(calls=120, seed=6, pool_size=300)
    try:
        store = box.sf_store
        account = store.insert("Account", Name="Hand & Co")
        lead = store.insert("Lead", FirstName="Hana", LastName="Handley", Company="Handmade Ltd",
                            Email="hana@handmade.example", Phone="+33 1 76 11 22 33", MobilePhone="06 98 76 54 32")
        contact = store.insert("Contact", FirstName="Paul", LastName="Pencil", AccountId=account,
                               Phone="(617) 555-0188", Email="paul@hand.example")
        # Agents saved both numbers by hand earlier, with other names, a note and an e-mail of their own.
        mine = box.aircall_contacts.add(first_name="H.", last_name="Handley", phone_numbers=["+33176112233"],
                                        emails=["hana@old.example"], information="Met at the fair")
        his = box.aircall_contacts.add(last_name="Pencil", company_name="Old name", phone_numbers=["+16175550188"])
        at = int(END.timestamp()) - 7200
        box.aircall_store.add_calls([
            {"started_at": at, "answered_at": at + 5, "ended_at": at + 65, "raw_digits": "+33 1 76 11 22 33"},
            {"started_at": at + 100, "answered_at": None, "ended_at": at + 130, "raw_digits": "+1 617-555-0188"},
        ])
        config = settings_for(box, tmp_path)
        result = run(config, "backfill", "--from", FROM, "--to", TO)
        assert result.exit_code == 0, result.output
        hana = box.aircall_contacts.find_by_number("+33176112233")
        paul = box.aircall_contacts.find_by_number("+16175550188")
        assert [c["id"] for c in hana] == [mine["id"]] and [c["id"] for c in paul] == [his["id"]]
        hana, paul = hana[0], paul[0]
        assert (hana["first_name"], hana["last_name"], hana["company_name"]) == ("Hana", "Handley", "Handmade Ltd")
        assert hana["information"] == f"Met at the fair\nSalesforce Lead {lead}"
        # Not created by the tool: it keeps the e-mail Salesforce does not have, and gains the record's.
        assert [e["value"] for e in hana["emails"]] == ["hana@old.example", "hana@handmade.example"]
        assert [p["value"] for p in hana["phone_numbers"]] == ["+33176112233", "+33698765432"]
        assert (paul["first_name"], paul["company_name"]) == ("Paul", "Hand & Co")
        assert paul["information"] == f"Salesforce Contact {contact}"
    finally:
        box.stop()


def test_R_CONTACT_2_R_CONTACT_3_a_record_changed_in_salesforce_sends_only_that_field(tmp_path):
    box = make_box(calls=120, seed=6, pool_size=300)
    try:
        lead = box.sf_store.insert("Lead", FirstName="Ann", LastName="Lee", Company="Acme", Phone="+1 650 253 0000",
                                   Email="ann@acme.example")
        at = int(END.timestamp()) - 4 * 3600

        def call_from_ann(minutes: int) -> None:
            start = at + 60 * minutes
            box.aircall_store.add_calls([{"started_at": start, "answered_at": start + 3, "ended_at": start + 40,
                                          "raw_digits": "+1 650-253-0000"}])

        call_from_ann(0)
        config = settings_for(box, tmp_path)
        assert run(config, "backfill", "--from", FROM, "--to", TO).exit_code == 0
        [ann] = box.aircall_contacts.find_by_number("+16502530000")
        sent = record_updates(box)
        # A new call, the record unchanged: nothing is sent to Aircall (R-CONTACT-3).
        call_from_ann(10)
        before = contact_requests(box)
        assert run(config, "backfill", "--from", FROM, "--to", TO).exit_code == 0
        assert contact_requests(box) == before
        # Renamed in Salesforce, then called again: one read, one update holding the first name only.
        box.sf_store.modify(lead, FirstName="Anne")
        call_from_ann(20)
        before = contact_requests(box)
        assert run(config, "backfill", "--from", FROM, "--to", TO).exit_code == 0
        assert contact_requests(box) - before == 2
        assert contact_requests(box, "GET") and [(cid, body) for cid, body, _ in sent] == [
            (ann["id"], {"first_name": "Anne"})]
        [after] = box.aircall_contacts.find_by_number("+16502530000")
        assert (after["id"], after["first_name"], after["last_name"]) == (ann["id"], "Anne", "Lee")
    finally:
        box.stop()


# ---------------------------------------------------------------- never twice: SIGKILL (the real CLI)


@pytest.fixture(scope="module")
def harness():
    from reliability_harness import Harness

    h = Harness()
    yield h
    h.close()


def markers_of(contacts: list[dict]) -> Counter:
    return Counter(line for c in contacts for line in (c.get("information") or "").splitlines() if MARKER.match(line))


@pytest.mark.parametrize("search_lag_s", [0, 3600], ids=["search-finds-it", "search-lags-an-hour"])
def test_never_twice_a_sigkill_between_the_aircall_create_and_its_state_record(harness, tmp_path, search_lag_s):
    """Aircall has no upsert: the CLI is killed once a create has landed in Aircall and before its answer
    reaches the state. The next run must not create a second contact for that record, even when Aircall's
    search does not show the new contact yet (then only the create mark, committed before the POST, helps)."""
    from reliability_harness import kill_at, run_cli

    box = harness.box(f"contacts-kill-{search_lag_s}", calls=200, seed=4, days=5, end=END, pool_size=500,
                      aircall_contacts={"search_lag_s": search_lag_s})
    try:
        config = box.write_settings(tmp_path / "settings.toml", tmp_path / "state.sqlite3",
                                    **{"aircall.contacts": {"save_matched": True}})
        kill = kill_at(box, config, "backfill", "--from", FROM, "--to", TO, api="aircall", method="POST",
                       path="/v1/contacts$", nth=2, phase="after")
        assert kill.request["status"] == 201 and kill.returncode == -9
        landed = [c for c in box.contacts()["changes"] if c[0] == "create"]
        assert len(landed) == 2  # the second create is in Aircall; the process died before recording it
        held_line = landed[1][2]["information"]
        result = run_cli(config, "backfill", "--from", FROM, "--to", TO)
        assert result.returncode == 0, result.output
        final = box.contacts()
        creates = [c for c in final["changes"] if c[0] == "create"]
        counts = markers_of(final["contacts"])
        assert counts[held_line] == 1, f"{held_line} is on {counts[held_line]} contacts"
        assert max(counts.values()) == 1
        assert len(creates) == len({c[2]["information"] for c in creates}), "a record was created twice"
        # And a third run asks Aircall nothing about contacts.
        before = sum(1 for r in box.request_log() if r[0] == "aircall" and r[2].startswith(CONTACTS))
        assert run_cli(config, "backfill", "--from", FROM, "--to", TO).returncode == 0
        assert sum(1 for r in box.request_log() if r[0] == "aircall" and r[2].startswith(CONTACTS)) == before
    finally:
        box.stop()


# ---------------------------------------------------------------- a read-only key; check


def test_a_read_only_key_stops_contact_saving_not_logging_and_check_names_the_setting(tmp_path):
    faults = Faults()
    # Every write to /v1/contacts is refused as a key that may only read would be (HTTP 403).
    faults.script(["403"] * 50, path_prefix=CONTACTS, method="POST")
    box = make_box(calls=120, seed=6, pool_size=300, aircall_faults=faults)
    try:
        config = settings_for(box, tmp_path)
        checked = run(config, "check")
        assert checked.exit_code == 2, checked.output
        assert ("this API key may not write contacts (HTTP 403 to a contact update), but "
                "aircall.contacts.save_matched = true: use an API key that may write contacts, or set "
                "aircall.contacts.save_matched = false") in checked.output
        posts_after_check = faults.pending()
        result = run(config, "backfill", "--from", FROM, "--to", TO, "--report", str(tmp_path / "r.jsonl"))
        assert result.exit_code == 0, result.output
        # The calls are logged all the same.
        assert f"salesforce: {len(box.sf_store.records('Task'))} created." in result.stdout
        assert len(box.sf_store.records("Task")) > 100
        assert result.output.count("may not write contacts") == 2  # the warning once, and the summary line
        assert "Aircall answered 403 (this API key may not write contacts)" in result.stdout
        assert posts_after_check - faults.pending() == 1  # one create tried, then nothing more
        lines = [line for line in report(tmp_path / "r.jsonl") if line["target"] == "aircall"]
        assert not [line for line in lines if line["outcome"] == "failed"]
        assert box.aircall_contacts.changes() == []
        # Nothing is lost: they wait, and a key that may write saves them on the next run.
        faults.clear()
        status = run(config, "status")
        assert "waiting for the next run" in status.stdout
        again = run(config, "backfill", "--from", FROM, "--to", TO)
        assert again.exit_code == 0
        assert [c.op for c in box.aircall_contacts.changes()].count("create") >= 1
        assert run(config, "check").exit_code == 0
    finally:
        box.stop()


# ---------------------------------------------------------------- dry run, explain, status


def test_dry_run_says_what_contacts_cost_and_sends_nothing(tmp_path):
    box = make_box(calls=120, seed=6, pool_size=300)
    try:
        config = settings_for(box, tmp_path)
        result = run(config, "backfill", "--from", FROM, "--to", TO, "--dry-run", "--format", "json")
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        contacts = doc["summary"]["contacts"]
        changes = [c for c in doc["changes"] if c["target"] == "aircall"]
        assert {c["object"] for c in changes} == {"contact"}
        assert Counter(c["action"] for c in changes) == Counter(
            {"create": contacts["create"], "update": contacts["update"], "skip": contacts["skipped"]})
        assert contacts["create"] and contacts["update"]
        assert contacts["requests"] >= 2 * (contacts["create"] + contacts["update"])
        assert contacts_requests_absent(box)
        text = run(config, "backfill", "--from", FROM, "--to", TO, "--dry-run")
        assert (f"would be created and {contacts['update']} updated in Aircall") in text.stdout
        assert f"about {contacts['requests']} Aircall request(s)" in text.stdout
        assert "at aircall.requests_per_minute = 60000" in text.stdout
        assert contacts_requests_absent(box) and not (tmp_path / "state.sqlite3").exists()
    finally:
        box.stop()


def contacts_requests_absent(box: Sandbox) -> bool:
    return contact_requests(box) == 0


def test_explain_shows_the_contact_a_call_would_save_and_status_counts_them(tmp_path):
    box = make_box(calls=120, seed=6, pool_size=300)
    try:
        lead = box.sf_store.insert("Lead", FirstName="Ann", LastName="Lee 🙂", Company="Acme",
                                   Phone="+1 650 253 0000", Email="ann@acme.example")
        at = int(END.timestamp()) - 4 * 3600
        [call_id] = box.aircall_store.add_calls([{"started_at": at, "answered_at": at + 3, "ended_at": at + 40,
                                                  "raw_digits": "+1 650-253-0000"}])
        config = settings_for(box, tmp_path)
        explained = run(config, "explain", str(call_id))
        assert explained.exit_code == 0, explained.output
        assert f"Would create contact for call {call_id}" in explained.stdout
        assert '    last_name = "Lee"' in explained.stdout
        assert f'    information = "Salesforce Lead {lead}"' in explained.stdout
        assert '    phone_numbers = ["+16502530000"]' in explained.stdout
        assert contact_requests(box) == 0
        assert run(config, "backfill", "--from", FROM, "--to", TO).exit_code == 0
        explained = run(config, "explain", str(call_id))
        assert f"Unchanged contact {box.aircall_contacts.find_by_number('+16502530000')[0]['id']}" in explained.stdout
        status = run(config, "status")
        assert status.exit_code == 0
        assert re.search(r"Aircall contacts: \d+ Salesforce record\(s\) saved \(\d+ in contacts aircall-sync "
                         r"created\), 0 waiting for the next run", status.stdout), status.stdout
    finally:
        box.stop()


# ---------------------------------------------------------------- live mode (serve's worker)


def test_live_mode_saves_the_record_of_a_call_and_of_a_message_once(tmp_path):
    """R-CONTACT-1 "after a call or message is logged": serve's worker goes through the same runner."""
    from live_helpers import LiveWorker, lifecycle
    from message_helpers import lifecycle as message_events
    from message_helpers import message

    box = make_box(calls=60, seed=6, pool_size=200)
    try:
        lead = box.sf_store.insert("Lead", FirstName="Liv", LastName="Moore", Company="Live Co",
                                   Phone="+1 650 253 0000")
        account = box.sf_store.insert("Account", Name="Texting Inc")
        texter = box.sf_store.insert("Contact", FirstName="Mia", LastName="Message", AccountId=account,
                                     Phone="+1 617 253 1000", Email="mia@texting.example")
        at = int(END.timestamp()) - 600
        [call_id] = box.aircall_store.add_calls([{"started_at": at, "answered_at": at + 3, "ended_at": at + 40,
                                                  "raw_digits": "+1 650-253-0000"}])
        call = next(c for c in box.aircall_store.iter_calls(0, 2**40) if c["id"] == call_id)
        settings = box.settings(tmp_path / "state.sqlite3", targets=("salesforce",))
        settings["aircall"]["requests_per_minute"] = 60000
        settings["aircall"]["contacts"] = {"save_matched": True}
        settings["live"] = {"webhook_token": "t", "batch_window": "0s"}
        live = LiveWorker(write_settings(tmp_path / "settings.toml", settings))
        try:
            live.deliver(*lifecycle(call))
            result = live.worker.run_once()
            assert result.outcomes.get(("aircall", "created")) == 1, result
            [saved] = box.aircall_contacts.find_by_number("+16502530000")
            assert (saved["first_name"], saved["last_name"], saved["information"]) == (
                "Liv", "Moore", f"Salesforce Lead {lead}")
            live.deliver(*message_events(message("SMcontact1", external="+1 617-253-1000")))
            result = live.worker.run_once()
            assert result.outcomes.get(("aircall", "created")) == 1, result
            [mia] = box.aircall_contacts.find_by_number("+16172531000")
            assert (mia["first_name"], mia["company_name"], mia["information"]) == (
                "Mia", "Texting Inc", f"Salesforce Contact {texter}")
            assert [e["value"] for e in mia["emails"]] == ["mia@texting.example"]
            before = contact_requests(box)
            live.deliver(*lifecycle(call))  # delivered again, and another message: nothing new for Aircall
            live.deliver(*message_events(message("SMcontact2", external="+1 617-253-1000", body="Thanks")))
            live.worker.run_once()
            assert contact_requests(box) == before
        finally:
            live.close()
    finally:
        box.stop()
