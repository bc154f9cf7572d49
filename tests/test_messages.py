"""Messages, the pure parts: the model, RULES §7 (R-MSG-1…6) and the Task and Front mappings, table-driven."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest
from message_helpers import ALEX, LINE, T0_MS, WEEKDAY_MS, message

from aircall_sync.aircall.messages import Message, MessageParseError, message_key
from aircall_sync.live.inbox import Event
from aircall_sync.live.messages import NumberNames, message_from_events
from aircall_sync.message_rules import assess_message, decide_message, external_number, number_name
from aircall_sync.plan import Action, Change, Outcome
from aircall_sync.settings import parse_settings
from aircall_sync.targets import front
from aircall_sync.targets.salesforce_message import (
    build_message_task,
    message_description,
    message_fingerprint,
    message_subject,
)
from aircall_sync.targets.salesforce_task import Match, SfUser, TaskContext

ENV = {"AIRCALL_API_ID": "id", "AIRCALL_API_TOKEN": "tok"}


def settings(**tables):
    data = {"aircall": {"api_id": "id", "api_token": "tok"},
            "salesforce": {"enabled": True, "instance_url": "https://x.my.salesforce.com", "access_token": "a"},
            "front": {"enabled": True, "api_token": "f"}}
    for path, values in tables.items():
        table = data
        for part in path.split("."):
            table = table.setdefault(part, {})
        table.update(values)
    return parse_settings(data, environ={})


# ---------------------------------------------------------------- the model (R-MSG-1)


@pytest.mark.parametrize(("created", "expected"), [
    (1722758201825, datetime(2024, 8, 4, 7, 56, 41, 825000, tzinfo=UTC)),  # epoch ms (support article)
    (1722758201, datetime(2024, 8, 4, 7, 56, 41, tzinfo=UTC)),  # epoch s
    ("2024-08-04T07:56:41.000Z", datetime(2024, 8, 4, 7, 56, 41, tzinfo=UTC)),  # ISO (Riprock)
    ("1722758201825", datetime(2024, 8, 4, 7, 56, 41, 825000, tzinfo=UTC)),  # a numeric string
])
def test_R_MSG_1_timestamps_in_every_format(created, expected):
    assert Message.parse({"id": "SM1", "created_at": created}).created_at == expected


def test_R_MSG_1_parses_the_reference_samples_tolerantly():
    send = Message.parse({"id": "abcdSMc6Dc8ea2bc71ab19102c3de4f60ba18aa", "status": "pending",
                          "direction": "outbound", "created_at": 1722758201825, "raw_digits": "13023063029",
                          "number": {"id": 84848484, "direct_link": "https://api.aircall.io/v1/numbers/1234567"}})
    assert (send.id, send.direction, send.raw_digits, send.number.id, send.number.name, send.user, send.channel,
            send.body, send.attachments) == ("abcdSMc6Dc8ea2bc71ab19102c3de4f60ba18aa", "outbound", "13023063029",
                                             84848484, None, None, None, "", ())
    received = Message.parse({"id": "abdcSM11da5", "status": "received", "direction": "inbound",
                              "body": "The SMS text", "raw_digits": "18704575426",
                              "number": {"id": 476258, "digits": "+1 424-416-2288"}},
                             fallback=datetime(2024, 8, 3, tzinfo=UTC))
    assert received.created_at == datetime(2024, 8, 3, tzinfo=UTC)  # no time in the object: the envelope's
    assert Message.parse({"id": 12345, "created_at": 1}).id == "12345"  # an integer id is read as text
    whatsapp = Message.parse({"id": "WA1", "created_at": 1, "channel": "WhatsApp", "user": {}, "contact": None})
    assert whatsapp.whatsapp and whatsapp.user is None and whatsapp.contact is None
    # direction absent: from the event name
    assert Message.parse({"id": "x", "created_at": 1}, event="message.sent").direction == "outbound"
    assert Message.parse({"id": "x", "created_at": 1}, event="message.received").direction == "inbound"


@pytest.mark.parametrize("payload", [None, [], {"id": ""}, {"id": None}, {"id": True}, {"id": "SM1"},
                                     {"id": "SM1", "created_at": "yesterday"}])
def test_R_MSG_1_unusable_messages_are_refused(payload):
    with pytest.raises(MessageParseError):
        Message.parse(payload)


def test_R_MSG_1_media_from_both_shapes_without_repeats():
    m = Message.parse({"id": "MM1", "created_at": 1,
                       "media_details": [{"file_name": "a.jpg", "presigned_url": "https://m/a.jpg"}, "junk", {}],
                       "media_url": ["https://m/a.jpg", "https://m/b.png"]})
    assert m.attachments == ("https://m/a.jpg", "https://m/b.png")


def test_R_MSG_1_message_keys_never_meet_call_ids():
    assert message_key("SM1") < 0 and message_key("SM1") == Message.parse({"id": "SM1", "created_at": 1}).key


def _event(seq, name, data, ts):
    return Event(seq=seq, event=name, kind="message", object_id=str(data.get("id")), event_ms=ts * 1000,
                 finished=False, received_at=datetime.now(UTC), body={"event": name, "data": data}, attempts=0)


def test_R_MSG_1_the_newest_snapshot_decides_and_older_ones_fill_what_it_lacks():
    sent = message("SM9", direction="outbound", status="sent", body="Hi")
    update = {"id": "SM9", "status": "undelivered"}  # a status update that carries only the status
    stale = dict(sent, status="pending", body="Hi (draft)")
    events = [_event(3, "message.status_updated", update, 200), _event(1, "message.sent", sent, 100),
              _event(2, "message.sent", stale, 50)]
    m = message_from_events(events)
    assert (m.status, m.failed, m.body, m.direction) == ("undelivered", True, "Hi", "outbound")
    assert message_from_events(list(reversed(events))) == m  # arrival order does not matter
    alone = message_from_events([_event(7, "message.status_updated", dict(sent, status="delivered"), 300)])
    assert alone.direction == "outbound" and alone.body == "Hi"  # R-MSG-1: any event carrying the message
    group = message_from_events([_event(8, "group_message.status_updated", sent, 300)])
    assert group.group


# ---------------------------------------------------------------- R-MSG-2


@pytest.mark.parametrize(("data", "expected"), [
    ({"external_number": "+44 7474 626067", "raw_digits": "33612345678"}, "+447474626067"),  # webhooks first
    ({"raw_digits": "+33 6 12 34 56 78"}, "+33612345678"),
    ({"raw_digits": "(212) 555-0142"}, "+12125550142"),  # region from the number's country (US)
    ({"raw_digits": "anonymous"}, None),
    ({"raw_digits": ""}, None),
    ({"external_number": "12"}, None),  # not a possible number
    ({"external_number": "not a number"}, None),
])
def test_R_MSG_2_external_number_read_as_R_CALL_4(data, expected):
    m = Message.parse({"id": "SM", "created_at": 1, "number": LINE, **data})
    found = external_number(m)
    assert (found.e164 if found else None) == expected


def test_R_MSG_2_region_from_the_lines_digits_when_it_has_no_country():
    m = Message.parse({"id": "SM", "created_at": 1, "raw_digits": "06 12 34 56 78",
                       "number": {"id": 1, "digits": "+33 1 86 65 00 00"}})
    assert external_number(m).e164 == "+33612345678"


def test_R_MSG_1_a_group_message_is_read_from_its_first_external_participant():
    m = Message.parse({"id": "G1", "created_at": 1, "external_number": "+1 617-610-5413",
                       "participants": [{"type": "user", "phone_number": "+12127347440"},
                                        {"type": "external", "phone_number": "+44 7700 900123"},
                                        "+33 6 12 34 56 78"]}, event="group_message.sent")
    assert m.group and external_number(m).e164 == "+447700900123"


# ---------------------------------------------------------------- R-MSG-3


HOURS = dict(days=("mon", "tue", "wed", "thu", "fri"), start=time(9), end=time(18), default_zone=ZoneInfo("UTC"))


@pytest.mark.parametrize(("log", "log_messages", "direction", "created_ms", "skipped", "reason"), [
    ("all", "always", "inbound", T0_MS, False, None),
    ("all", "always", "outbound", T0_MS, False, None),
    ("inbound", "always", "outbound", T0_MS, True, 'outbound message (salesforce.messages.log = "inbound")'),
    ("inbound", "always", "inbound", T0_MS, False, None),
    ("outbound", "always", "inbound", T0_MS, True, 'inbound message (salesforce.messages.log = "outbound")'),
    ("none", "always", "inbound", WEEKDAY_MS, True, 'messages not logged (salesforce.messages.log = "none")'),
    ("all", "business_hours", "inbound", T0_MS, True, "outside business hours (sat 04:00 America/New_York)"),
    ("all", "business_hours", "inbound", WEEKDAY_MS, False, None),
])
def test_R_MSG_3_which_messages_per_target(log, log_messages, direction, created_ms, skipped, reason):
    m = Message.parse(message("SM", direction=direction, created_ms=created_ms))
    decision = decide_message(m, external_number(m), target="salesforce", log=log, log_messages=log_messages,
                              **HOURS)
    assert (decision.skipped, decision.reason) == (skipped, reason)


def test_R_MSG_2_no_external_number_is_a_skip_with_the_reason():
    m = Message.parse(message("SM", external=None, raw_digits="anonymous"))
    decision = decide_message(m, None, target="front", log="all", log_messages="always", **HOURS)
    assert (decision.skipped, decision.reason) == (True, "no external number (R-MSG-2)")


def test_R_MSG_3_settings_per_target():
    a = assess_message(Message.parse(message("SM", direction="outbound")),
                       settings(**{"salesforce.messages": {"log": "inbound"}, "front.messages": {"log": "all"}}))
    assert a.decisions["salesforce"].skipped and not a.decisions["front"].skipped


# ---------------------------------------------------------------- R-MSG-4


def _assess(data, s=None, names=None):
    return assess_message(Message.parse(data), s or settings(), number_names=names)


CONTACT = Match("Contact", "003C", "Zoé Messager", "005INTEGRATION", account_id="001A")


@pytest.mark.parametrize(("locale", "direction", "user", "channel", "failed", "expected"), [
    ("en", "inbound", None, None, False, "SMS received from Zoé Messager to Support US"),
    ("en", "outbound", ALEX, None, False, "SMS sent from Alex Martin via Support US to Zoé Messager"),
    ("en", "outbound", None, None, False, "SMS sent via Support US to Zoé Messager"),
    ("en", "outbound", ALEX, "whatsapp", False, "WhatsApp sent from Alex Martin via Support US to Zoé Messager"),
    ("en", "inbound", None, "whatsapp", False, "WhatsApp received from Zoé Messager to Support US"),
    ("en", "outbound", ALEX, None, True, "Failed: SMS sent from Alex Martin via Support US to Zoé Messager"),
    ("fr", "outbound", ALEX, None, False, "SMS envoyé par Alex Martin via Support US à Zoé Messager"),
    ("fr", "outbound", None, None, False, "SMS envoyé via Support US à Zoé Messager"),
    ("fr", "inbound", None, "whatsapp", False, "WhatsApp reçu de Zoé Messager sur Support US"),
    ("de", "outbound", ALEX, None, False, "SMS gesendet von Alex Martin über Support US an Zoé Messager"),
    ("de", "inbound", None, None, False, "SMS empfangen von Zoé Messager auf Support US"),
    ("es", "outbound", None, None, False, "SMS enviado desde Support US a Zoé Messager"),
    ("es", "inbound", None, None, False, "SMS recibido de Zoé Messager en Support US"),
])
def test_R_MSG_4_R_MSG_6_subjects(locale, direction, user, channel, failed, expected):
    s = settings(**{"salesforce.task": {"subject_locale": locale}})
    a = _assess(message("SM", direction=direction, user=user, channel=channel,
                        status="failed" if failed else None), s)
    assert message_subject(a, CONTACT, s.salesforce.messages.subjects) == expected


def test_R_MSG_4_number_name_event_then_aircall_then_e164():
    named = Message.parse(message("SM"))
    unnamed = Message.parse(message("SM", number={"id": 7, "digits": "+1 212-734-7440", "country": "US"}))
    assert number_name(named) == "Support US"
    assert number_name(unnamed, "Sales line") == "Sales line"
    assert number_name(unnamed) == "+12127347440"


class _Client:
    def __init__(self, names):
        self.names = names
        self.asked = []

    def get_number(self, number_id):
        self.asked.append(number_id)
        from aircall_sync.aircall.client import AircallApiError

        if number_id not in self.names:
            raise AircallApiError("HTTP 404", 404)
        return {"id": number_id, "name": self.names[number_id]}


def test_R_MSG_4_an_aircall_number_name_is_read_once_per_number_and_process():
    client = _Client({7: "Sales line"})
    names = NumberNames(client)
    unnamed = message("SM", number={"id": 7, "digits": "+1 212-734-7440", "country": "US"})
    gone = message("SM2", number={"id": 8, "digits": "+1 212-734-7441", "country": "US"})
    results = [_assess(d, names=names).number_name for d in (unnamed, unnamed, gone, gone, message("SM3"))]
    assert results == ["Sales line", "Sales line", "+12127347441", "+12127347441", "Support US"]
    assert client.asked == [7, 8]  # once each; never for a number the event names


def test_R_MSG_4_the_task_fields_and_nothing_else():
    s = settings(**{"salesforce.messages": {"task_type": "SMS"}})
    alex = SfUser("005ALEX", "alex.martin@example.com", True, datetime(2025, 1, 1, tzinfo=UTC))
    a = _assess(message("SMx", direction="outbound", user=ALEX, body="Hi there",
                        media=("https://m/a.jpg",)), s)
    ctx = TaskContext(match=CONTACT, what_id="500CASE", users_by_email={"alex.martin@example.com": alex},
                      integration_user_id="005INTEGRATION", task_fields=None)
    draft = build_message_task(a, ctx, s)
    assert draft.fields == {
        "Subject": "SMS sent from Alex Martin via Support US to Zoé Messager", "Type": "SMS", "TaskSubtype": "Task",
        "Status": "Completed", "ActivityDate": "2026-10-31", "Description": "Hi there\n\nAttachment: https://m/a.jpg",
        "CallObject": "message:SMx", "WhoId": "003C", "WhatId": "500CASE", "OwnerId": "005ALEX",
    }
    assert draft.reassign == ("003C", "005ALEX")  # R-SF-OWNER: the integration-owned record moves
    # Without a user (rule 2: the record's owner); a Lead never gets a WhatId; Type unset by default.
    plain = _assess(message("SMy"))
    lead = Match("Lead", "00QL", None, "005OWNER")
    fields = build_message_task(plain, TaskContext(lead, "500CASE", {}, "005INTEGRATION", None), settings()).fields
    assert "Type" not in fields and "WhatId" not in fields
    assert (fields["WhoId"], fields["OwnerId"], fields["Subject"]) == (
        "00QL", "005OWNER", "SMS received from +33 6 12 34 56 78 to Support US")
    # A user created less than 24 h before the message is not its owner (R-SF-OWNER step 1).
    young = SfUser("005YOUNG", "alex.martin@example.com", True, datetime(2026, 10, 31, 1, tzinfo=UTC))
    ctx = TaskContext(CONTACT, None, {"alex.martin@example.com": young}, "005INTEGRATION", None)
    assert build_message_task(a, ctx, s).fields["OwnerId"] == "005INTEGRATION"


@pytest.mark.parametrize(("body", "media", "expected"), [
    ("Hi", (), "Hi"),
    ("Hi", ("https://m/a", "https://m/b"), "Hi\n\nAttachment: https://m/a\nAttachment: https://m/b"),
    ("", ("https://m/a",), "Attachment: https://m/a"),
    ("", (), None),
])
def test_R_MSG_4_description(body, media, expected):
    assert message_description(Message.parse(message("SM", body=body, media=media)))[0] == expected


def test_R_MSG_6_only_a_failure_changes_the_fingerprint():
    s = settings()
    base = message("SM", direction="outbound", status="sent")
    prints = {status: message_fingerprint(_assess(dict(base, status=status)), s)
              for status in ("sent", "delivered", "pending", "failed", "undelivered")}
    assert prints["sent"] == prints["delivered"] == prints["pending"]
    assert prints["failed"] == prints["undelivered"] != prints["sent"]
    front_prints = {front.message_fingerprint(_assess(dict(base, status=st)), s) for st in ("sent", "failed")}
    assert len(front_prints) == 1  # Front: a status change writes nothing


# ---------------------------------------------------------------- R-MSG-5


def test_R_MSG_5_the_front_import_body():
    a = _assess(message("SM5", direction="outbound", user=ALEX, body="On our way"))
    body = front.message_import_body(a, subject_text="SMS - Support US", teammate_id="tea_1")
    assert body == {
        "sender": {"handle": "+12127347440", "name": "Alex Martin", "author_id": "tea_1"},
        "to": ["+33612345678"], "subject": "SMS - Support US", "body": "On our way",
        "external_id": "aircall-message-SM5", "created_at": T0_MS // 1000, "type": "sms",
        "metadata": {"is_inbound": False, "is_archived": False, "should_skip_rules": False},
    }
    inbound = front.message_import_body(_assess(message("SM6")), subject_text="s", teammate_id=None)
    assert (inbound["sender"], inbound["to"], inbound["metadata"]["is_inbound"]) == (
        {"handle": "+33612345678"}, ["+12127347440"], True)
    from aircall_sync.sandbox.front_api import validate_request

    assert validate_request("POST", "/inboxes/inb_1/imported_messages", body) == []


# ---------------------------------------------------------------- DESIGN §3


def test_json_shows_message_id_instead_of_call_id():
    key = message_key("SM7")
    change = Change(key, "salesforce", "Task", Action.CREATE, fields={"Subject": "s"}, message_id="SM7")
    outcome = Outcome(key, "front", "created", records={"contact": "crd_1"}, message_id="SM7")
    assert change.to_json()["message_id"] == "SM7" and "call_id" not in change.to_json()
    assert outcome.to_json() == {"message_id": "SM7", "target": "front", "outcome": "created",
                                 "records": {"contact": "crd_1"}}
    assert json.loads(json.dumps(Outcome(5, "front", "skipped").to_json()))["call_id"] == 5


def test_settings_message_subjects_follow_the_task_locale_and_check_placeholders():
    from aircall_sync.errors import SettingsError

    s = settings(**{"salesforce.task": {"subject_locale": "de"},
                    "salesforce.messages.subjects": {"inbound": "{channel} von {record_name}"}})
    assert s.salesforce.messages.subjects.inbound == "{channel} von {record_name}"
    assert s.salesforce.messages.subjects.outbound.startswith("{channel} gesendet von {user_name}")
    with pytest.raises(SettingsError, match=r"salesforce.messages.subjects.outbound: unknown placeholder \{kind\}"):
        settings(**{"salesforce.messages.subjects": {"outbound": "{kind} sent"}})
    with pytest.raises(SettingsError, match=r"front.messages.log"):
        settings(**{"front.messages": {"log": "some"}})


def test_R_MSG_1_nested_objects_merge_key_by_key():
    """The emulator (and Aircall's samples) send ``number`` as the full object in some events and as
    ``{id, digits}`` in others: the time zone and name of the full one are kept."""
    full = message("SM10", direction="outbound", status="sent")
    bare = dict(full, status="delivered", number={"id": LINE["id"], "digits": LINE["digits"]})
    m = message_from_events([_event(1, "message.sent", full, 100), _event(2, "message.status_updated", bare, 101)])
    assert (m.status, m.number.name, m.number.time_zone, m.number.country) == (
        "delivered", "Support US", "America/New_York", "US")


class _Org:
    user_id = "005INTEGRATION"

    def __init__(self, task):
        self.task = task
        self.asked = []

    def describe_many(self, names):
        self.asked.append(list(names))
        voice = {"createable": True, "fields": [{"name": "aircall__Aircall_Voice__c"}]}
        custom = {"fields": [{"name": n} for n in ("aircall__Call_Id__c",)]}
        return {"VoiceCall": voice, "aircall__Aircall_Voice__c": custom, "Task": self.task}


@pytest.mark.parametrize(("log", "task_type", "task", "expected"), [
    ("all", "", {"createable": False, "fields": []}, "Task: messages are logged as Tasks in mode voice too"),
    ("all", "SMS", {"createable": True, "fields": [{"name": "Subject"}]}, "Task.Type is not visible"),
    ("all", "SMS", {"createable": True, "fields": [{"name": "Type"}]}, None),
    ("none", "", {"createable": False, "fields": []}, None),
])
def test_R_MSG_4_check_in_voice_mode_names_what_message_tasks_need(log, task_type, task, expected):
    from aircall_sync.targets.salesforce_target import check_voice

    s = settings(salesforce={"mode": "voice", "voice": {"call_center_id": "04v000000000001"}},
                 **{"salesforce.messages": {"log": log, "task_type": task_type}})
    org = _Org(task)
    _infos, problems = check_voice(s, org)
    found = [p for p in problems if "Task" in p and "VoiceCall" not in p]
    assert len(found) == (1 if expected else 0), problems
    if expected:
        assert found[0].startswith(expected)
    assert ("Task" in org.asked[0]) == (log != "none")  # no describe of Task when messages are not logged
