"""RULES §9, the run's part (``aircall_sync.contacts.ContactSaver``) against an in-memory Aircall.

The fake below keeps contacts as Aircall's API describes them (aircall-api.md §12: no upsert, ids per number
and e-mail, search by number) and logs every request, so each test counts what the saver sent. The end-to-end
tests (``test_contacts_e2e.py``) run the same paths through the CLI against the sandbox's emulator.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import pytest

from aircall_sync.aircall.client import AircallApiError, ContactsForbiddenError
from aircall_sync.contacts import CREATED_REASON, NO_NUMBER_REASON, ContactSaver, Source
from aircall_sync.errors import ServiceError
from aircall_sync.settings import parse_settings
from aircall_sync.state import State


class FakeAircall:
    """Contacts as Aircall keeps them; ``lose_next_create``: the create lands, its answer is lost."""

    def __init__(self) -> None:
        self.contacts: dict[int, dict] = {}
        self.log: list[tuple[str, ...]] = []
        self.ids = itertools.count(500)
        self.forbid_writes = False
        self.lose_next_create = False
        self.contacts_forbidden = False
        self.clock = 1_800_000_000

    def _now(self) -> int:
        self.clock += 1
        return self.clock

    def add(self, first, last, numbers, emails=(), information=None, company=None) -> int:
        cid = next(self.ids)
        self.contacts[cid] = {"id": cid, "first_name": first, "last_name": last, "company_name": company,
                              "information": information, "created_at": self._now(), "updated_at": self.clock,
                              "phone_numbers": [{"id": next(self.ids), "label": "Work", "value": n} for n in numbers],
                              "emails": [{"id": next(self.ids), "label": "Work", "value": e} for e in emails]}
        return cid

    def _write(self, what: str) -> None:
        if self.forbid_writes:
            raise ContactsForbiddenError(f"Aircall answered HTTP 403 for {what}: Forbidden", 403)

    def get_contact(self, cid):
        self.log.append(("GET", f"/contacts/{cid}"))
        return self.contacts.get(cid)

    def search_contacts(self, *, phone_number=None, email=None):
        self.log.append(("GET", "/contacts/search", phone_number))
        return [c for c in self.contacts.values() if any(p["value"] == phone_number for p in c["phone_numbers"])]

    def recent_contacts(self, page=1):
        self.log.append(("GET", "/contacts", str(page)))
        newest = sorted(self.contacts.values(), key=lambda c: (-c["created_at"], -c["id"]))
        return newest[50 * (page - 1):50 * page], len(newest) > 50 * page

    def create_contact(self, body):
        self.log.append(("POST", "/contacts"))
        self._write("POST /v1/contacts")
        cid = self.add(body.get("first_name"), body.get("last_name"), [p["value"] for p in body["phone_numbers"]],
                       [e["value"] for e in body.get("emails", [])], body.get("information"), body.get("company_name"))
        if self.lose_next_create:
            self.lose_next_create = False
            raise ServiceError("Aircall did not answer after 1 attempts (ReadTimeout)")
        return self.contacts[cid]

    def update_contact(self, cid, fields):
        self.log.append(("POST", f"/contacts/{cid}"))
        self._write("POST /v1/contacts/:id")
        if cid not in self.contacts:
            return None
        self.contacts[cid].update(fields)
        return self.contacts[cid]

    def add_contact_detail(self, cid, kind, label, value):
        self.log.append(("POST", f"/contacts/{cid}/{kind}_details"))
        self._write("POST …_details")
        key = "phone_numbers" if kind == "phone" else "emails"
        self.contacts[cid][key].append({"id": next(self.ids), "label": label, "value": value})
        return True

    def update_contact_detail(self, cid, kind, did, label, value):
        self.log.append(("PUT", f"/contacts/{cid}/{kind}_details/{did}"))
        key = "phone_numbers" if kind == "phone" else "emails"
        for d in self.contacts[cid][key]:
            if d["id"] == did:
                d.update(label=label, value=value)
        return True

    def delete_contact_detail(self, cid, kind, did):
        self.log.append(("DELETE", f"/contacts/{cid}/{kind}_details/{did}"))
        key = "phone_numbers" if kind == "phone" else "emails"
        self.contacts[cid][key] = [d for d in self.contacts[cid][key] if d["id"] != did]

    def creates(self) -> int:
        return sum(1 for entry in self.log if entry[:2] == ("POST", "/contacts"))


def settings(**contacts):
    return parse_settings({"aircall": {"api_id": "i", "api_token": "t",
                                       "contacts": {"save_matched": True, **contacts}}}, environ={})


@pytest.fixture
def state(tmp_path: Path):
    with State.open(tmp_path / "state.sqlite3") as st:
        yield st


def lead(record_id="00Q000000000001AAA", number="+16176105413", **row) -> Source:
    fields = {"FirstName": "Ann", "LastName": "Lee", "Company": "Acme", "Phone": number, **row}
    return Source(key=101, message_id=None, object="Lead", record_id=record_id, row=fields, region="US",
                  number=number)


def run(state, aircall, sources, **options) -> tuple[ContactSaver, list]:
    """One run's chunk: queue in a transaction (as the runner does), then save."""
    saver = ContactSaver(settings(**options), aircall, state)
    with state.transaction():
        outcomes = saver.enqueue(sources)
    return saver, outcomes + saver.drain()


def test_R_CONTACT_1_created_after_a_search(state) -> None:
    aircall = FakeAircall()
    saver, outcomes = run(state, aircall, [lead()])
    assert [o.outcome for o in outcomes] == ["created"]
    assert aircall.log == [("GET", "/contacts/search", "+16176105413"), ("POST", "/contacts")]
    [made] = aircall.contacts.values()
    assert (made["first_name"], made["last_name"], made["company_name"], made["information"]) == (
        "Ann", "Lee", "Acme", "Salesforce Lead 00Q000000000001AAA")
    assert [p["value"] for p in made["phone_numbers"]] == ["+16176105413"]
    assert outcomes[0].records == {"contact": str(made["id"]), "Lead": "00Q000000000001AAA"}
    assert saver.stats.to_json(60, False)["created"] == 1 and saver.stats.requests == 2


def test_R_CONTACT_3_unchanged_record_costs_no_request_in_this_run_or_the_next(state) -> None:
    aircall = FakeAircall()
    run(state, aircall, [lead()])
    before = len(aircall.log)
    # The same run meets the record again (a later chunk): once per record and run.
    saver = ContactSaver(settings(), aircall, state)
    with state.transaction():
        saver.enqueue([lead()])
    with state.transaction():
        assert saver.enqueue([lead()]) == []
    saver.drain()
    # The next run: the same fingerprint.
    _, outcomes = run(state, aircall, [lead(), lead()])
    assert [o.outcome for o in outcomes] == ["unchanged"]
    assert len(aircall.log) == before
    # Changed in Salesforce: saved again, only what differs (the first name), in the contact it went to.
    _, outcomes = run(state, aircall, [lead(FirstName="Anne")])
    [cid] = aircall.contacts
    assert [o.outcome for o in outcomes] == ["updated"]
    assert aircall.log[before:] == [("GET", f"/contacts/{cid}"), ("POST", f"/contacts/{cid}")]
    assert aircall.contacts[cid]["first_name"] == "Anne"


def test_R_CONTACT_2_a_contact_made_by_hand_is_updated_not_duplicated(state) -> None:
    aircall = FakeAircall()
    cid = aircall.add("A.", "Lee", ["+16176105413", "+14155550000"], ["ann@home.example"], information="VIP")
    _, outcomes = run(state, aircall, [lead(Email="ann@acme.example")])
    assert [o.outcome for o in outcomes] == ["updated"] and aircall.creates() == 0
    contact = aircall.contacts[cid]
    assert (contact["first_name"], contact["company_name"], contact["information"]) == (
        "Ann", "Acme", "VIP\nSalesforce Lead 00Q000000000001AAA")
    # Not ours: it keeps the number and the e-mail Salesforce does not have.
    assert [p["value"] for p in contact["phone_numbers"]] == ["+16176105413", "+14155550000"]
    assert [e["value"] for e in contact["emails"]] == ["ann@home.example", "ann@acme.example"]
    assert aircall.log[1:] == [("POST", f"/contacts/{cid}"), ("POST", f"/contacts/{cid}/email_details")]


def test_R_CONTACT_2_the_calls_own_contact_is_the_one_updated(state) -> None:
    aircall = FakeAircall()
    other = aircall.add("Ann", "Lee", ["+16176105413"])  # a second contact with the number
    own = aircall.add("Ann", "Lee", ["+16176105413"], company="Acme", information="Salesforce Lead 00Q000000000001AAA")
    source = lead()
    source = Source(**{**source.__dict__, "call_contact_id": own})
    _, outcomes = run(state, aircall, [source])
    assert [o.outcome for o in outcomes] == ["unchanged"]  # equal already: no write
    assert aircall.log == [("GET", f"/contacts/{own}")]
    assert state.get_contacts([source.record_id])[source.record_id].contact_id == own != other


def test_R_CONTACT_2_a_contact_deleted_in_aircall_is_found_again_or_created(state) -> None:
    aircall = FakeAircall()
    run(state, aircall, [lead()])
    aircall.contacts.clear()
    _, outcomes = run(state, aircall, [lead(FirstName="Anne")])
    assert [o.outcome for o in outcomes] == ["created"] and aircall.creates() == 2
    assert len(aircall.contacts) == 1


def test_R_CONTACT_1_records_created_by_the_tool_are_not_saved_unless_save_created(state) -> None:
    aircall = FakeAircall()
    created = Source(**{**lead().__dict__, "created": True})
    _, outcomes = run(state, aircall, [created])
    assert [(o.outcome, o.reason) for o in outcomes] == [("skipped", CREATED_REASON)] and aircall.log == []
    # A later run finds it as an existing record: still as created, still not saved.
    _, outcomes = run(state, aircall, [lead()])
    assert [o.outcome for o in outcomes] == ["skipped"] and aircall.log == []
    # Edited in Salesforce since: a person gave it a name; now it is worth saving.
    _, outcomes = run(state, aircall, [lead(FirstName="Zed")])
    assert [o.outcome for o in outcomes] == ["created"]
    # save_created = true: saved as soon as it is created.
    _, outcomes = run(state, aircall, [Source(**{**lead("00Q000000000002AAA", "+16175550143").__dict__,
                                                  "created": True})], save_created=True)
    assert [o.outcome for o in outcomes] == ["created"]


def test_R_CONTACT_1_no_valid_phone_and_no_contact_is_not_saved(state) -> None:
    aircall = FakeAircall()
    source = lead(Phone=None, MobilePhone="+16175550143")  # matched on the mobile, Phone empty
    _, outcomes = run(state, aircall, [source])
    assert [(o.outcome, o.reason) for o in outcomes] == [("skipped", NO_NUMBER_REASON)]
    assert aircall.creates() == 0
    _, outcomes = run(state, aircall, [source])  # the same record again: no request
    assert [o.outcome for o in outcomes] == ["skipped"] and len(aircall.log) == 1


def test_never_twice_a_create_whose_answer_is_lost_is_found_not_repeated(state) -> None:
    """Aircall has no upsert: the create landed, its answer was lost; the same run finds it by the mark."""
    aircall = FakeAircall()
    aircall.lose_next_create = True
    _, outcomes = run(state, aircall, [lead()])
    assert [o.outcome for o in outcomes] == ["created"]
    assert aircall.creates() == 1 and len(aircall.contacts) == 1
    _, outcomes = run(state, aircall, [lead(FirstName="Anne")])
    assert aircall.creates() == 1 and [o.outcome for o in outcomes] == ["updated"]


def test_never_twice_a_run_killed_after_the_create_finds_it_before_creating(state) -> None:
    """The process died between the create and its state record: the mark was committed before the POST, the
    queue in the chunk's transaction. The next run lists what was created since the mark and takes it."""
    aircall = FakeAircall()
    saver = ContactSaver(settings(), aircall, state)
    with state.transaction():
        saver.enqueue([lead()])

    class Killed(BaseException):
        pass

    create = aircall.create_contact

    def create_then_die(body):
        create(body)
        raise Killed

    aircall.create_contact = create_then_die
    with pytest.raises(Killed):
        saver.drain()
    aircall.create_contact = create
    row = state.get_contacts(["00Q000000000001AAA"])["00Q000000000001AAA"]
    assert row.creating_at is not None and row.queued is not None and row.contact_id is None
    # A search may lag a create (aircall-api.md §12): make it find nothing, so only the mark can help.
    aircall.search_contacts = lambda **kw: aircall.log.append(("GET", "/contacts/search")) or []
    saver = ContactSaver(settings(), aircall, state)
    outcomes = saver.drain()
    assert [o.outcome for o in outcomes] == ["created"]
    assert aircall.creates() == 1 and len(aircall.contacts) == 1
    row = state.get_contacts(["00Q000000000001AAA"])["00Q000000000001AAA"]
    assert (row.contact_id, row.ours, row.creating_at, row.queued) == (next(iter(aircall.contacts)), True, None, None)


def test_a_read_only_key_stops_contact_saving_with_one_warning(state, caplog) -> None:
    aircall = FakeAircall()
    aircall.forbid_writes = True
    sources = [lead(), lead("00Q000000000002AAA", "+16175550143")]
    with caplog.at_level(logging.WARNING, logger="aircall_sync.contacts"):
        saver, outcomes = run(state, aircall, sources)
        run(state, aircall, [lead("00Q000000000003AAA", "+16175550144")])  # the same client: nothing sent
    assert [o.outcome for o in outcomes] == ["skipped"]
    assert saver.stats.forbidden and aircall.creates() == 1
    assert len([r for r in caplog.records if "403" in r.getMessage()]) == 1
    assert "aircall.contacts.save_matched = false" in caplog.records[0].getMessage()
    # Nothing is lost: the three records wait, and a key that may write saves them.
    assert len(state.queued_contacts()) == 3
    aircall.forbid_writes = aircall.contacts_forbidden = False
    saver = ContactSaver(settings(), aircall, state)
    assert sorted(o.outcome for o in saver.drain()) == ["created"] * 3


def test_a_refused_contact_is_reported_and_waits_for_a_change(state) -> None:
    aircall = FakeAircall()

    def refuse(body):
        aircall.log.append(("POST", "/contacts"))
        raise AircallApiError("Aircall answered HTTP 400 for POST /v1/contacts: BAD_REQUEST", 400)

    aircall.create_contact = refuse
    _, outcomes = run(state, aircall, [lead()])
    assert [(o.outcome, o.error["code"]) for o in outcomes] == [("failed", "400")]
    assert state.contact_counts()["failed"] == 1 and state.queued_contacts() == []
    assert state.get_contacts(["00Q000000000001AAA"])["00Q000000000001AAA"].creating_at is None


def test_dry_run_preview_counts_creates_updates_and_requests(state) -> None:
    aircall = FakeAircall()
    run(state, aircall, [lead()])
    before = len(aircall.log)
    saver = ContactSaver(settings(), aircall, state, dry_run=True)
    changes = saver.preview([lead(FirstName="Anne"), lead("00Q000000000002AAA", "+16175550143"),
                             Source(**{**lead("00Q000000000003AAA", "+16175550144").__dict__, "created": True})])
    assert [(c.target, c.object, c.action.value) for c in changes] == [
        ("aircall", "contact", "update"), ("aircall", "contact", "create"), ("aircall", "contact", "skip")]
    assert changes[1].fields["phone_numbers"] == ["+16175550143"]
    stats = saver.stats.to_json(60, True)
    assert (stats["create"], stats["update"], stats["skipped"], stats["requests"], stats["seconds"]) == (1, 1, 1, 4, 4)
    assert len(aircall.log) == before and state.queued_contacts() == []


def test_R_CONTACT_3_a_saved_record_that_lost_its_contact_and_its_phone_costs_nothing_next_run(state) -> None:
    """Saved once; then its Aircall contact was deleted and its Phone emptied in Salesforce: nothing to create
    it with (R-CONTACT-1). That is remembered against the new fingerprint, so the next run asks nothing."""
    aircall = FakeAircall()
    run(state, aircall, [lead()])
    aircall.contacts.clear()
    phoneless = lead(Phone=None, MobilePhone="+16175550143")
    _, outcomes = run(state, aircall, [phoneless])
    assert [(o.outcome, o.reason) for o in outcomes] == [("skipped", NO_NUMBER_REASON)]
    before = len(aircall.log)
    _, outcomes = run(state, aircall, [phoneless])
    assert [o.outcome for o in outcomes] == ["skipped"] and len(aircall.log) == before
