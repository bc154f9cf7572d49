"""Messages in live mode, in-process against the sandbox (RULES §7, DESIGN §10).

Message events go into a real inbox; ``Worker.run_once`` processes them through
the runner and the targets, over real HTTP(S) to the emulators; what landed is
read from the emulators' stores, field by field.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import write_settings
from live_helpers import LiveWorker, envelope, webhook_form
from message_helpers import ALEX, LINE, T0_MS, event, lifecycle, message
from test_front_e2e import assert_contract
from typer.testing import CliRunner

from aircall_sync.aircall.messages import message_key
from aircall_sync.cli import app
from aircall_sync.sandbox.stack import Sandbox, SandboxOptions

END = datetime(2026, 10, 31, 12, tzinfo=UTC)
CUSTOMER = "+33 6 12 34 56 78"  # the Contact below
CUSTOMER_E164 = "+33612345678"
STRANGER = "+44 7700 900123"  # matches no record: a Lead is created (R-SF-MATCH-4)
STRANGER_E164 = "+447700900123"


def make_box() -> Sandbox:
    box = Sandbox(SandboxOptions(end=END, calls=40, seed=21, days=2)).start()
    integration = box.sf_store.integration_user_id
    # A Contact owned by the integration user, with an open Case: R-SF-OWNER moves it to the message's
    # user, R-SF-MATCH-6 links the Task to the Case.
    account = box.sf_store.insert("Account", Name="Lumen SARL")
    contact = box.sf_store.insert("Contact", FirstName="Zoé", LastName="Messager", MobilePhone="06 12 34 56 78",
                                  AccountId=account, OwnerId=integration)
    box.sf_store.insert("Case", Subject="Order late", ContactId=contact, AccountId=account, Status="New",
                        Origin="Web")
    return box


def config_for(box: Sandbox, tmp: Path, *, targets=("salesforce", "front"), mode: str = "task",
               **sections) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    settings = box.settings(tmp / "state.sqlite3", targets=targets)
    settings["aircall"]["requests_per_minute"] = 60000
    if "front" in settings:
        settings["front"]["requests_per_minute"] = 60000
    if "salesforce" in settings:
        settings["salesforce"]["mode"] = mode
        settings["salesforce"].setdefault("matching", {})["link_to"] = "case"
        if mode == "voice":
            settings["salesforce"].setdefault("voice", {})["call_center_id"] = box.sf_store.records("CallCenter")[0]["Id"]
    settings["live"] = {"webhook_token": "t", "batch_window": "0s"}
    for path, values in sections.items():
        table = settings
        for part in path.split("."):
            table = table.setdefault(part, {})
        table.update(values)
    return write_settings(tmp / "settings.toml", settings)


Live = LiveWorker


@pytest.fixture
def box():
    b = make_box()
    yield b
    b.stop()


@pytest.fixture
def live(box, tmp_path):
    handle = Live(config_for(box, tmp_path / "live"))
    yield box, handle
    handle.close()


def tasks(box) -> dict[str, dict]:
    return {t["CallObject"]: t for t in box.sf_store.records("Task")}


def front_messages(box) -> dict[str, object]:
    out = {}
    for conversation in box.front_store.conversations.values():
        for m in conversation.messages:
            out[m.external_id] = (conversation, m)
    return out


def writes(box) -> int:
    """Salesforce requests that write: a POST to /composite carries only reads (several queries in one)."""
    server = box.salesforce.server
    reads = server.count(method="POST", path_prefix="/services/data/v63.0/composite") - server.count(
        method="POST", path_prefix="/services/data/v63.0/composite/")
    return server.count(method="POST") - reads + server.count(method="PATCH") + server.count(method="DELETE")


# ---------------------------------------------------------------- field by field


def test_R_MSG_4_R_MSG_5_messages_land_field_by_field_in_salesforce_and_front(live):
    box, handle = live
    contact = box.sf_store.find_one("Contact", LastName="Messager")
    case = box.sf_store.find_one("Case", ContactId=contact["Id"])
    alex = box.sf_store.find_one("User", Email="alex.martin@example.com")
    inbound = message("SMin0001", body="Hello, is my order on its way?")
    outbound = message("SMout0002", direction="outbound", body="Yes, it ships today.", user=ALEX,
                       created_ms=T0_MS + 60_000, status="sent")
    whatsapp = message("WAout0003", direction="outbound", external=STRANGER, channel="whatsapp",
                       body="Your appointment is confirmed", created_ms=T0_MS + 120_000,
                       number={k: v for k, v in LINE.items() if k != "name"})
    mms = message("MMin0004", body="", media=("https://media.aircall.io/a.jpg?X-Amz-Expires=600",
                                              "https://media.aircall.io/b.png"), created_ms=T0_MS + 180_000)
    handle.deliver(*lifecycle(inbound), *lifecycle(outbound, final="delivered"), *lifecycle(whatsapp),
                   *lifecycle(mms))
    result = handle.worker.run_once()
    assert result.messages == 4 and result.retried == 0

    found = tasks(box)
    assert set(found) == {"message:SMin0001", "message:SMout0002", "message:WAout0003", "message:MMin0004"}
    lead = box.sf_store.find_one("Lead", Phone=STRANGER_E164)
    owned = box.sf_store.get(contact["Id"])["OwnerId"]
    assert owned == alex["Id"]  # R-SF-OWNER: the integration-owned Contact goes to the message's user

    def task(key):
        t = found[key]
        return {k: t[k] for k in ("Subject", "TaskSubtype", "Type", "Status", "ActivityDate", "Description",
                                  "CallObject", "WhoId", "WhatId", "OwnerId", "CallType", "CallDurationInSeconds",
                                  "CallDisposition")}

    assert task("message:SMin0001") == {
        "Subject": "SMS received from Zoé Messager to Support US", "TaskSubtype": "Task", "Type": None,
        "Status": "Completed", "ActivityDate": "2026-10-31", "Description": "Hello, is my order on its way?",
        "CallObject": "message:SMin0001", "WhoId": contact["Id"], "WhatId": case, "OwnerId": alex["Id"],
        "CallType": None, "CallDurationInSeconds": None, "CallDisposition": None,
    } | {"WhatId": case["Id"]}
    assert task("message:SMout0002") == {
        "Subject": "SMS sent from Alex Martin via Support US to Zoé Messager", "TaskSubtype": "Task", "Type": None,
        "Status": "Completed", "ActivityDate": "2026-10-31", "Description": "Yes, it ships today.",
        "CallObject": "message:SMout0002", "WhoId": contact["Id"], "WhatId": case["Id"], "OwnerId": alex["Id"],
        "CallType": None, "CallDurationInSeconds": None, "CallDisposition": None,
    }
    # No name in the event's number: the Aircall number's name (GET /v1/numbers/:id), else its E.164; no user:
    # "from {user_name} " is left out; WhatsApp instead of SMS; a new Lead, owned by the integration user.
    whatsapp_task = task("message:WAout0003")
    assert whatsapp_task["Subject"] in ("WhatsApp sent via Support US to +44 7700 900123",
                                        "WhatsApp sent via +12127347440 to +44 7700 900123")
    assert whatsapp_task | {"Subject": None} == {
        "Subject": None, "TaskSubtype": "Task", "Type": None, "Status": "Completed", "ActivityDate": "2026-10-31",
        "Description": "Your appointment is confirmed", "CallObject": "message:WAout0003", "WhoId": lead["Id"],
        "WhatId": None, "OwnerId": box.sf_store.integration_user_id, "CallType": None,
        "CallDurationInSeconds": None, "CallDisposition": None,
    }
    assert task("message:MMin0004")["Description"] == (
        "Attachment: https://media.aircall.io/a.jpg?X-Amz-Expires=600\nAttachment: https://media.aircall.io/b.png")

    landed = front_messages(box)
    assert set(landed) == {"aircall-message-SMin0001", "aircall-message-SMout0002", "aircall-message-WAout0003",
                           "aircall-message-MMin0004"}
    conversation, m = landed["aircall-message-SMin0001"]
    assert (m.type, m.is_inbound, m.body, m.sender_handle, m.to, m.created_at) == (
        "sms", True, "Hello, is my order on its way?", CUSTOMER_E164, ["+12127347440"], T0_MS // 1000)
    same, out = landed["aircall-message-SMout0002"]
    assert same.id == conversation.id  # R-FRONT-2: one open conversation per contact
    assert (out.type, out.is_inbound, out.body, out.sender_handle, out.to) == (
        "sms", False, "Yes, it ships today.", "+12127347440", [CUSTOMER_E164])
    assert conversation.subject == "SMS - Support US" and conversation.status != "archived"
    assert landed["aircall-message-WAout0003"][0].id != conversation.id
    assert_contract(box)


def test_R_MSG_4_voice_mode_logs_messages_as_tasks(box, tmp_path):
    handle = Live(config_for(box, tmp_path / "voice", mode="voice", targets=("salesforce",)))
    try:
        handle.deliver(*lifecycle(message("SMv1")), *lifecycle(message("SMv2", direction="outbound", user=ALEX,
                                                                       external=STRANGER)))
        call = next(c for c in box.aircall_store.iter_calls(0, 2**40) if c["status"] == "done" and c["ended_at"])
        handle.deliver(envelope("call.ended", webhook_form(call, box.aircall_url), call["ended_at"] + 30))
        result = handle.worker.run_once()
        assert (result.calls, result.messages, result.retried) == (1, 2, 0)
    finally:
        handle.close()
    found = tasks(box)
    assert set(found) == {"message:SMv1", "message:SMv2"}  # the call is a VoiceCall, not a Task (R-SFV-1)
    assert len(box.sf_store.records("VoiceCall")) == 1
    contact = box.sf_store.find_one("Contact", LastName="Messager")
    assert found["message:SMv1"]["WhoId"] == contact["Id"]
    assert found["message:SMv1"]["Subject"] == "SMS received from Zoé Messager to Support US"
    assert found["message:SMv2"]["WhoId"] == box.sf_store.find_one("Lead", Phone=STRANGER_E164)["Id"]


# ---------------------------------------------------------------- R-MSG-1: once, whatever the deliveries


def test_R_MSG_1_duplicates_and_reordering_change_nothing(box, tmp_path):
    datas = [message(f"SMdup{i:02d}", direction="outbound" if i % 2 else "inbound",
                     external=CUSTOMER if i % 3 else STRANGER, created_ms=T0_MS + i * 1000,
                     user=ALEX if i % 2 else None, body=f"message {i}") for i in range(12)]
    deliveries = [e for d in datas for e in lifecycle(d, final="delivered" if d["direction"] == "outbound" else None)]
    handle = Live(config_for(box, tmp_path / "a"))
    try:
        handle.deliver(*deliveries)
        handle.worker.run_once()
        clean_tasks = {k: _comparable(v) for k, v in tasks(box).items()}
        clean_front = {k: (m.type, m.is_inbound, m.body) for k, (_c, m) in front_messages(box).items()}
        before = writes(box), box.front_sandbox.server.count(method="POST")
        rng = random.Random(3)
        again = deliveries + rng.sample(deliveries, len(deliveries) // 2)
        rng.shuffle(again)
        for chunk in (again[:7], again[7:]):  # in two batches
            handle.deliver(*(dict(e, timestamp=e["timestamp"]) for e in chunk))
            handle.worker.run_once()
        # Repeated deliveries are new arrivals of the same snapshots: nothing is written again.
        assert (writes(box), box.front_sandbox.server.count(method="POST")) == before
        assert {k: _comparable(v) for k, v in tasks(box).items()} == clean_tasks
    finally:
        handle.close()
    assert len(clean_tasks) == 12 and len(clean_front) == 12

    # The same events in another order, duplicated, in another sandbox: the same records.
    other = make_box()
    try:
        handle = Live(config_for(other, tmp_path / "b"))
        try:
            shuffled = deliveries + deliveries[:5]
            random.Random(9).shuffle(shuffled)
            handle.deliver(*shuffled[:10])
            handle.worker.run_once()
            handle.deliver(*shuffled[10:])
            handle.worker.run_once()
        finally:
            handle.close()
        assert {k: _comparable(v) for k, v in tasks(other).items()} == _renamed(clean_tasks, box, other)
        assert {k: (m.type, m.is_inbound, m.body) for k, (_c, m) in front_messages(other).items()} == clean_front
    finally:
        other.stop()


def _comparable(task: dict) -> dict:
    return {k: task[k] for k in ("Subject", "TaskSubtype", "Status", "ActivityDate", "Description", "CallObject",
                                 "WhoId", "WhatId", "OwnerId")}


def _renamed(clean: dict, box, other) -> dict:
    """Record ids of the first sandbox mapped to the second's (the Lead created for the stranger differs)."""
    lead_a = box.sf_store.find_one("Lead", Phone=STRANGER_E164)["Id"]
    lead_b = other.sf_store.find_one("Lead", Phone=STRANGER_E164)["Id"]
    return json.loads(json.dumps(clean).replace(lead_a, lead_b))


def test_R_MSG_1_a_status_update_whose_sent_event_never_came_logs_the_message(live):
    box, handle = live
    data = message("SMlate1", direction="outbound", user=ALEX, status="delivered")
    handle.deliver(event("message.status_updated", data, T0_MS // 1000 + 5))
    assert handle.worker.run_once().messages == 1
    assert tasks(box)["message:SMlate1"]["Subject"] == "SMS sent from Alex Martin via Support US to Zoé Messager"
    assert "aircall-message-SMlate1" in front_messages(box)


def test_R_MSG_6_a_failed_delivery_is_marked_and_other_status_changes_write_nothing(live):
    box, handle = live
    data = message("SMfail1", direction="outbound", user=ALEX, status="sent")
    handle.deliver(event("message.sent", data, T0_MS // 1000))
    handle.worker.run_once()
    subject = tasks(box)["message:SMfail1"]["Subject"]
    before = writes(box), box.front_sandbox.server.count(method="POST")
    handle.deliver(event("message.status_updated", dict(data, status="delivered"), T0_MS // 1000 + 3))
    handle.worker.run_once()
    assert (writes(box), box.front_sandbox.server.count(method="POST")) == before  # nothing new
    assert tasks(box)["message:SMfail1"]["Subject"] == subject
    handle.deliver(event("message.status_updated", dict(data, status="undelivered"), T0_MS // 1000 + 9))
    handle.worker.run_once()
    assert tasks(box)["message:SMfail1"]["Subject"] == "Failed: " + subject
    assert len([m for k, m in front_messages(box).items() if k == "aircall-message-SMfail1"]) == 1
    # An older "sent" snapshot arriving late does not undo the failure.
    handle.deliver(event("message.sent", dict(data, body=data["body"]), T0_MS // 1000 - 1))
    handle.worker.run_once()
    assert tasks(box)["message:SMfail1"]["Subject"] == "Failed: " + subject


def test_R_MSG_1_a_group_message_is_logged_once_against_its_first_external_participant(live):
    box, handle = live
    data = message("GMgroup1", direction="outbound", external=None, raw_digits="", user=ALEX,
                   group_conversation_id="gc-1",
                   participants=[{"type": "user", "id": 5101, "name": "Alex Martin"},
                                 {"type": "external", "phone_number": CUSTOMER},
                                 {"type": "external", "phone_number": STRANGER}])
    handle.deliver(event("group_message.sent", data, T0_MS // 1000),
                   event("group_message.status_updated", dict(data, status="delivered"), T0_MS // 1000 + 2))
    handle.worker.run_once()
    found = tasks(box)
    assert list(found) == ["message:GMgroup1"]
    assert found["message:GMgroup1"]["WhoId"] == box.sf_store.find_one("Contact", LastName="Messager")["Id"]
    assert box.sf_store.find("Lead", Phone=STRANGER_E164) == []
    assert list(front_messages(box)) == ["aircall-message-GMgroup1"]


# ---------------------------------------------------------------- R-MSG-2, R-MSG-3 end to end


def test_R_MSG_3_per_target_filters_and_R_MSG_2_no_number(box, tmp_path):
    config = config_for(box, tmp_path / "f", **{"salesforce.messages": {"log": "inbound"},
                                                "front.messages": {"log": "outbound"}})
    handle = Live(config)
    try:
        handle.deliver(*lifecycle(message("SMi1")), *lifecycle(message("SMo1", direction="outbound", user=ALEX)),
                       *lifecycle(message("SManon", external="anonymous", raw_digits="anonymous")))
        handle.worker.run_once()
    finally:
        handle.close()
    assert set(tasks(box)) == {"message:SMi1"}
    assert set(front_messages(box)) == {"aircall-message-SMo1"}


def test_R_MSG_3_business_hours_for_messages(box, tmp_path):
    """log_messages = business_hours skips a Saturday-night message, in the number's time zone."""
    from message_helpers import WEEKDAY_MS

    handle = Live(config_for(box, tmp_path / "h", sync={"log_messages": "business_hours"}))
    try:
        handle.deliver(*lifecycle(message("SMsat", created_ms=T0_MS)),
                       *lifecycle(message("SMtue", created_ms=WEEKDAY_MS)))
        handle.worker.run_once()
    finally:
        handle.close()
    assert set(tasks(box)) == {"message:SMtue"}
    assert set(front_messages(box)) == {"aircall-message-SMtue"}


# ---------------------------------------------------------------- budgets


def test_budget_a_message_alone_costs_one_salesforce_write_beyond_its_lookups(live):
    """Issue 13's budget: a message that arrives alone costs one Salesforce request beyond the lookups of its
    batch (number search, the exact lookup of created records, the key lookup, the user; the Case link)."""
    box, handle = live
    start = box.salesforce.server.count()
    start_writes = writes(box)
    handle.deliver(*lifecycle(message("SMalone1")))  # inbound: no user
    handle.worker.run_once()
    used = box.salesforce.server.count() - start
    written = writes(box) - start_writes
    assert written == 1, f"{written} Salesforce writes for one message"
    # Lookups: SOSL by number; the exact query of Leads created by the tool and the Task by CallObject, together
    # in one Composite request; the open Case of the Contact. Nothing else; the one write is the Task (sObject
    # Collections).
    assert used == 3 + 1, f"{used} Salesforce requests for one message"
    assert box.salesforce.server.count(method="POST", path_prefix="/services/data/v63.0/composite/sobjects") == 1
    # The same message again: nothing at all (its fingerprint is unchanged).
    start = box.salesforce.server.count()
    handle.deliver(event("message.received", message("SMalone1"), T0_MS // 1000 + 1))
    handle.worker.run_once()
    assert box.salesforce.server.count() == start


def test_budget_calls_and_messages_of_one_batch_share_their_lookups(live):
    box, handle = live
    calls = [c for c in box.aircall_store.iter_calls(0, 2**40) if c["status"] == "done" and c["ended_at"]][:5]
    start = box.salesforce.server.count(method="GET")
    handle.deliver(*(envelope("call.ended", webhook_form(c, box.aircall_url), c["ended_at"] + 30) for c in calls))
    handle.deliver(*(e for i in range(5) for e in lifecycle(message(f"SMshare{i}", created_ms=T0_MS + i))))
    result = handle.worker.run_once()
    assert (result.calls, result.messages) == (5, 5)
    reads = box.salesforce.server.count(method="GET") - start
    searches = box.salesforce.server.count(method="GET", path_prefix="/services/data/v63.0/search")
    assert searches == 1, "one SOSL search for the numbers of the calls and the messages of a batch"
    assert reads <= 6, f"{reads} Salesforce reads for a batch of 5 calls and 5 messages"
    assert sum(1 for t in tasks(box) if t.startswith("message:")) == 5


# ---------------------------------------------------------------- status, explain, secrets


def test_status_explain_and_retry_name_messages_by_their_id(live):
    """DESIGN §3: a message is shown by its ``message_id``; ``explain`` reads it from the inbox (it exists nowhere
    else); ``status`` lists a failed message as "message <id>"; ``retry`` rebuilds it from its stored events."""
    box, handle = live
    # An id too long for Task.CallObject (255): Salesforce refuses that one Task (STRING_TOO_LONG).
    long_id = "SM" + "x" * 260
    handle.deliver(*lifecycle(message("SMfine1")), *lifecycle(message(long_id)))
    handle.worker.run_once()
    assert set(tasks(box)) == {"message:SMfine1"}
    failures = handle.state.failures()
    assert [(f.label, f.target, f.code) for f in failures] == [(f"message {long_id}", "salesforce", "STRING_TOO_LONG")]
    runner = CliRunner()
    config = str(handle.settings.path)
    status = runner.invoke(app, ["--config", config, "status"])
    assert status.exit_code == 0, status.output
    assert f"  message {long_id} (salesforce Task): STRING_TOO_LONG: " in status.stdout
    assert str(message_key(long_id)) not in status.stdout

    explained = runner.invoke(app, ["--config", config, "explain", "SMfine1"])
    assert explained.exit_code == 0, explained.output
    out = explained.stdout
    assert "Message SMfine1: inbound SMS, created 2026-10-31T08:00:00Z on Support US" in out
    assert f"external number: {CUSTOMER_E164}" in out
    assert "stored events: 1 (message.received)" in out
    assert "salesforce: log" in out and "front: log" in out
    assert "Task" in out and "for message SMfine1" in out
    unknown = runner.invoke(app, ["--config", config, "explain", "SMnever"])
    assert unknown.exit_code == 2
    assert "no call or message SMnever" in unknown.output

    # retry rebuilds the failed message from the inbox: still too long, still one failure, nothing asked of Aircall.
    aircall_before = box.aircall_server.count()
    handle.close()
    retried = runner.invoke(app, ["--config", config, "retry", "--dry-run", "--format", "json"])
    assert retried.exit_code == 0, retried.output
    plan = json.loads(retried.stdout)
    assert {c.get("message_id") for c in plan["changes"]} == {long_id}
    assert all("call_id" not in c for c in plan["changes"])
    assert box.aircall_server.count() == aircall_before
    handle.__init__(handle.settings.path)
