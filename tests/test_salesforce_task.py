"""RULES.md §4 (Salesforce Task, mode ``task``), rule by rule. Each table names the rule it proves."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from builders import NUMBER, T0, call_payload, user

from aircall_sync import rules
from aircall_sync.aircall.models import Call
from aircall_sync.settings import Settings, parse_settings
from aircall_sync.targets.salesforce_task import (
    Match,
    SfUser,
    TaskContext,
    TaskDraft,
    build_task,
    description,
    disposition,
    owner,
    sf_length,
    subject,
    update_fields,
)

NOW = datetime.fromtimestamp(T0, UTC) + timedelta(days=1)
STARTED = datetime.fromtimestamp(T0, UTC)
INTEGRATION = "005000000000INTAAA"
FALLBACK = "005000000000FBKAAA"
OTHER_OWNER = "005000000000OWNAAA"
QUEUE = "00G000000000QUEAAA"
RECORD_TYPE = "012000000000RTYAAA"

AIRCALL = {"api_id": "123456", "api_token": "aircall-token"}
SALESFORCE = {"enabled": True, "instance_url": "https://example.my.salesforce.com", "access_token": "sf-token"}

CUSTOM = (
    "aircall__Waiting_Time__c",
    "aircall__Answered_by__c",
    "aircall__Phone_number__c",
    "aircall__Country__c",
    "aircall__Call_Recording__c",
    "aircall__Transferred_to__c",
    "aircall__Timezone__c",
    "aircall__Hour_of_the_day__c",
    "aircall__Connection_status__c",
    "aircall__Has_connected__c",
)
STANDARD = frozenset({
    "Id", "Subject", "Type", "TaskSubtype", "Status", "Priority", "ActivityDate", "CallType",
    "CallDurationInSeconds", "CallObject", "CallDisposition", "Description", "WhoId", "WhatId", "OwnerId",
    "RecordTypeId",
})
ORG = STANDARD | frozenset(CUSTOM)

# One call of each kind (R-CALL-2), from the same base payload.
KINDS: dict[str, dict[str, Any]] = {
    "outbound_answered": {"direction": "outbound"},
    "outbound_unanswered": {"direction": "outbound", "answered_at": None},
    "inbound_answered": {},
    "missed": {"answered_at": None, "missed_call_reason": "no_available_agent"},
    "voicemail": {"answered_at": None, "voicemail": "https://mp3/vm", "voicemail_short_url": "https://short/v",
                  "asset": "https://assets.aircall.io/calls/4186780376/voicemail"},
}
CONFERENCE = {"conference_participants": [{"type": "user", "id": 1}, {"type": "user", "id": 2},
                                          {"type": "external", "phone_number": "+16176105413"}]}
RECORDING = {"asset": "https://assets.aircall.io/calls/4186780376/recording",
             "recording": "https://mp3/rec", "recording_short_url": "https://short/r"}

JANE = Match("Contact", "003000000000JANAAA", "Jane Doe", OTHER_OWNER, account_id="001000000000ACCAAA")
LEAD = Match("Lead", "00Q000000000LEDAAA", "Lee Lead", OTHER_OWNER)
ACME = Match("Account", "001000000000ACMAAA", "Acme", OTHER_OWNER)
PERSON = Match("PersonAccount", "001000000000PERAAA", "Pat Person", OTHER_OWNER,
               person_contact_id="003000000000PERAAA")
CASE = "500000000000CASAAA"

ALEX = SfUser("005000000000ALXAAA", "alex.martin@example.com", True, STARTED - timedelta(days=30))
BEN = SfUser("005000000000BENAAA", "ben.ode@example.com", True, STARTED - timedelta(days=30))


def settings(sync: dict[str, Any] | None = None, **salesforce: Any) -> Settings:
    data: dict[str, Any] = {"aircall": AIRCALL, "salesforce": {**SALESFORCE, **salesforce}}
    if sync is not None:
        data["sync"] = sync
    return parse_settings(data, environ={})


def call(**overrides: Any) -> Call:
    return Call.parse(call_payload(**overrides))


def comment(cid: int, content: str, at: int | None, by: dict | None) -> dict:
    return {"id": cid, "content": content, "posted_at": at, "posted_by": by}


def ctx(match: Match | None = JANE, what_id: str | None = None, users: tuple[SfUser, ...] = (),
        task_fields: frozenset[str] | None = ORG) -> TaskContext:
    return TaskContext(match, what_id, {u.email.lower(): u for u in users}, INTEGRATION, task_fields)


def draft(overrides: dict[str, Any] | None = None, sf: dict[str, Any] | None = None,
          sync: dict[str, Any] | None = None, **context: Any) -> TaskDraft:
    s = settings(sync, **(sf or {}))
    c = call(**(overrides or {}))
    return build_task(c, rules.assess(c, s, NOW), ctx(**context), s)


# R-SF-TASK-1: Type = TaskSubtype = "Call"; TaskSubtype is create-only
@pytest.mark.parametrize("kind", list(KINDS))
def test_R_SF_TASK_1_type_and_subtype_call_create_only(kind):
    fields = draft(KINDS[kind]).fields
    assert (fields["Type"], fields["TaskSubtype"]) == ("Call", "Call")
    updated = update_fields(fields)
    assert "TaskSubtype" not in updated
    assert updated == {k: v for k, v in fields.items() if k != "TaskSubtype"}
    assert updated["Type"] == "Call"


# R-SF-TASK-2: CallType, ActivityDate (UTC date), CallDurationInSeconds (talk time), CallObject
LATE_UTC = int(datetime(2026, 9, 28, 23, 30, tzinfo=UTC).timestamp())  # already the 29th in Paris


@pytest.mark.parametrize(
    "overrides, call_type, activity_date, duration, call_object",
    [
        (KINDS["outbound_answered"], "Outbound", "2026-09-28", 88, "4186780376"),
        (KINDS["outbound_unanswered"], "Outbound", "2026-09-28", 0, "4186780376"),
        (KINDS["inbound_answered"], "Inbound", "2026-09-28", 88, "4186780376"),
        (KINDS["missed"], "Inbound", "2026-09-28", 0, "4186780376"),
        (KINDS["voicemail"], "Inbound", "2026-09-28", 0, "4186780376"),
        # Duration is talk time, not Aircall's duration (which includes the ringing).
        ({"answered_at": T0 + 40, "ended_at": T0 + 100, "duration": 100}, "Inbound", "2026-09-28", 60,
         "4186780376"),
        ({"started_at": LATE_UTC, "answered_at": LATE_UTC + 5, "ended_at": LATE_UTC + 65,
          "number": dict(NUMBER, time_zone="Europe/Paris")}, "Inbound", "2026-09-28", 60, "4186780376"),
        ({"id": 9_007_199_254_740_993}, "Inbound", "2026-09-28", 88, "9007199254740993"),
    ],
)
def test_R_SF_TASK_2_call_fields(overrides, call_type, activity_date, duration, call_object):
    fields = draft(overrides).fields
    assert fields["CallType"] == call_type
    assert fields["ActivityDate"] == activity_date
    assert fields["CallDurationInSeconds"] == duration and isinstance(fields["CallDurationInSeconds"], int)
    assert fields["CallObject"] == call_object


# R-SF-TASK-3: Status from the call flow (configurable values); Priority never set
@pytest.mark.parametrize(
    "overrides, task, flow, status",
    [
        (KINDS["inbound_answered"], {}, {}, "Completed"),
        (KINDS["outbound_unanswered"], {}, {}, "Completed"),
        (KINDS["missed"], {}, {}, "In Progress"),
        (KINDS["voicemail"], {}, {}, "In Progress"),
        (KINDS["missed"], {"status_open": "Not Started"}, {}, "Not Started"),
        (KINDS["inbound_answered"], {"status_completed": "Done"}, {}, "Done"),
        (KINDS["voicemail"], {}, {"voicemail": "completed"}, "Completed"),
        (KINDS["outbound_answered"], {}, {"outbound_answered": "open"}, "In Progress"),
    ],
)
def test_R_SF_TASK_3_status_and_no_priority(overrides, task, flow, status):
    fields = draft(overrides, sf={"task": task, "call_flow": flow}).fields
    assert fields["Status"] == status
    assert "Priority" not in fields


# R-SF-TASK-4: WhoId / WhatId per matched object; a Lead never gets a WhatId
@pytest.mark.parametrize(
    "match, what_id, who, what",
    [
        (None, None, None, None),
        (None, CASE, None, None),
        (JANE, None, JANE.id, None),  # no Case/Opportunity: Salesforce derives AccountId itself
        (JANE, CASE, JANE.id, CASE),
        (LEAD, None, LEAD.id, None),
        (LEAD, CASE, LEAD.id, None),
        (ACME, None, None, ACME.id),
        (ACME, CASE, None, ACME.id),  # R-SF-MATCH-6: Cases/Opportunities only for Contacts
        (PERSON, None, PERSON.person_contact_id, PERSON.id),
        (PERSON, CASE, PERSON.person_contact_id, PERSON.id),
        (Match("PersonAccount", "001000000000NPCAAA", "No Contact", None), None, None, "001000000000NPCAAA"),
    ],
)
def test_R_SF_TASK_4_who_and_what(match, what_id, who, what):
    fields = draft(match=match, what_id=what_id).fields
    # Empty values are left out on create (Salesforce defaults them to empty).
    assert fields.get("WhoId", "absent") == (who or "absent")
    assert fields.get("WhatId", "absent") == (what or "absent")


# R-SF-TASK-5: RecordTypeId when configured
@pytest.mark.parametrize(
    "record_type_id, task_fields, expected, warned",
    [
        ("", ORG, None, False),
        (RECORD_TYPE, ORG, RECORD_TYPE, False),
        (RECORD_TYPE, None, RECORD_TYPE, False),
        # An org without Task record types has no RecordTypeId: sending it would fail the record.
        (RECORD_TYPE, ORG - {"RecordTypeId"}, None, True),
    ],
)
def test_R_SF_TASK_5_record_type(record_type_id, task_fields, expected, warned):
    result = draft(sf={"task": {"record_type_id": record_type_id}}, task_fields=task_fields)
    assert result.fields.get("RecordTypeId") == expected
    assert any("salesforce.task.record_type_id" in w for w in result.warnings) is warned


# R-SF-TASK-6: Type must be visible to the API user; when it is not, left out with a warning
@pytest.mark.parametrize(
    "task_fields, has_type, warnings",
    [
        (ORG, True, ()),
        (None, True, ()),
        (ORG - {"Type"}, False, ("Task field Type is not visible to the integration user: left out (R-SF-TASK-6); "
                                 "give that user's profile access to Task.Type (field-level security)",)),
    ],
)
def test_R_SF_TASK_6_type_visibility(task_fields, has_type, warnings):
    result = draft(task_fields=task_fields)
    assert ("Type" in result.fields) is has_type
    assert result.warnings == warnings
    assert result.fields["TaskSubtype"] == "Call"


# R-SF-SUBJ: templates per kind, conference variants, locales, placeholders, 255 max
@pytest.mark.parametrize(
    "locale, task, overrides, match, expected",
    [
        ("en", {}, KINDS["outbound_answered"], JANE, "Outbound answered call to Jane Doe with Support US"),
        ("en", {}, KINDS["outbound_unanswered"], JANE, "Outbound unanswered call to Jane Doe with Support US"),
        ("en", {}, KINDS["inbound_answered"], JANE, "Inbound call from Jane Doe on Support US"),
        ("en", {}, KINDS["missed"], JANE, "Missed call from Jane Doe on Support US"),
        ("en", {}, KINDS["voicemail"], JANE, "Voicemail from Jane Doe on Support US"),
        ("en", {}, {**KINDS["outbound_answered"], **CONFERENCE}, JANE,
         "Outbound conference call to Jane Doe with Support US"),
        ("en", {}, {**KINDS["inbound_answered"], **CONFERENCE}, LEAD, "Inbound call from Lee Lead on Support US"),
        # A conference changes only answered calls' subjects.
        ("en", {}, {**KINDS["outbound_unanswered"], **CONFERENCE}, JANE,
         "Outbound unanswered call to Jane Doe with Support US"),
        ("fr", {}, KINDS["outbound_answered"], JANE, "Appel sortant avec réponse vers Jane Doe depuis Support US"),
        ("fr", {}, KINDS["missed"], ACME, "Appel manqué de Acme sur Support US"),
        ("fr", {}, {**KINDS["outbound_answered"], **CONFERENCE}, JANE,
         "Conférence sortante avec Jane Doe depuis Support US"),
        ("de", {}, KINDS["voicemail"], PERSON, "Voicemail von Pat Person auf Support US"),
        ("de", {}, {**KINDS["inbound_answered"], **CONFERENCE}, JANE,
         "Eingehender Anruf von Jane Doe auf Support US"),
        ("de", {}, KINDS["outbound_unanswered"], JANE,
         "Ausgehender unbeantworteter Anruf an Jane Doe mit Support US"),
        ("es", {}, KINDS["inbound_answered"], JANE, "Llamada entrante de Jane Doe en Support US"),
        ("es", {}, {**KINDS["outbound_answered"], **CONFERENCE}, JANE,
         "Llamada de conferencia saliente a Jane Doe desde Support US"),
        # {record_name}: the record, else the number (international format), else anonymous.
        ("en", {}, {}, None, "Inbound call from +1 617-610-5413 on Support US"),
        ("en", {}, {}, Match("Lead", "00Q000000000NONAAA", None, None),
         "Inbound call from +1 617-610-5413 on Support US"),
        ("en", {}, {"raw_digits": "anonymous"}, None, "Inbound call from anonymous on Support US"),
        ("en", {}, {"raw_digits": "not a number"}, None, "Inbound call from anonymous on Support US"),
        # {number_name}: the line's name, else its digits, else empty (no trailing space).
        ("en", {}, {"number": dict(NUMBER, name=None)}, JANE, "Inbound call from Jane Doe on +1 984-314-0278"),
        ("en", {}, {"number": None}, JANE, "Inbound call from Jane Doe on"),
        # {user_name} (the agent: R-CALL-9 when answered, else the call's user) and {direction}.
        ("en", {"subjects": {"inbound_answered": "{direction} {record_name} / {user_name}"}},
         {"transferred_to": user(2, "Ben Ode", "ben.ode@example.com")}, JANE, "inbound Jane Doe / Ben Ode"),
        ("en", {"subjects": {"missed": "{direction} {record_name} / {user_name}"}}, KINDS["missed"], JANE,
         "inbound Jane Doe / Alex Martin"),
        ("en", {"subjects": {"outbound_unanswered": "{user_name} {direction} to {record_name}"}},
         {**KINDS["outbound_unanswered"], "user": None}, JANE, "outbound to Jane Doe"),
        ("fr", {"subjects": {"missed": "Raté: {record_name}"}}, KINDS["missed"], JANE, "Raté: Jane Doe"),
        # 255 at most, cut with an ellipsis.
        ("en", {}, {}, Match("Contact", "003000000000LNGAAA", "N" * 300, None),
         ("Inbound call from " + "N" * 300)[:254] + "…"),
    ],
)
def test_R_SF_SUBJ_subject(locale, task, overrides, match, expected):
    s = settings(task={"subject_locale": locale, **task})
    c = call(**overrides)
    text = subject(c, rules.assess(c, s, NOW), match, s.salesforce.task.subjects)
    assert text == expected
    assert len(text) <= 255
    assert draft(overrides, sf={"task": {"subject_locale": locale, **task}}, match=match).fields["Subject"] == text


# R-SF-DISP: CallDisposition, a Python-list literal, 255 max by dropping tags from the end
def tags(*names: str) -> list[dict]:
    return [{"id": i, "name": n} for i, n in enumerate(names, 1)]


TAGS_11 = [f"tag_number_{i:02}" for i in range(11)]  # with the fixed part: 54 + 11 × 17 = 241 characters
FIXED = ["aircall", "inbound", "answered_call", "19843140278"]


@pytest.mark.parametrize(
    "overrides, expected, dropped",
    [
        ({"tags": tags("tag_1", "tag_2"), "missed_call_reason": "no_available_agent",
          "number": dict(NUMBER, digits="+1 888-240-6923")},
         "['tag_1', 'tag_2', 'aircall', 'inbound', 'answered_call', '18882406923', 'no_available_agent']", ()),
        ({}, "['aircall', 'inbound', 'answered_call', '19843140278']", ()),
        ({**KINDS["outbound_unanswered"], "tags": tags("Sales")},
         "['Sales', 'aircall', 'outbound', 'unanswered_call', '19843140278']", ()),
        ({"answered_at": None, "missed_call_reason": "out_of_opening_hours"},
         "['aircall', 'inbound', 'unanswered_call', '19843140278', 'out_of_opening_hours']", ()),
        (KINDS["voicemail"], "['aircall', 'inbound', 'unanswered_call', '19843140278']", ()),
        # e164_digits wins over digits; an unknown line keeps its slot as ''.
        ({"number": dict(NUMBER, e164_digits="+33176111111", country="FR")},
         "['aircall', 'inbound', 'answered_call', '33176111111']", ()),
        ({"number": None}, "['aircall', 'inbound', 'answered_call', '']", ()),
        # Quotes, backslashes, newlines and non-ASCII stay readable by ast.literal_eval.
        ({"tags": tags("it's", 'say "hi"', "back\\slash", "two\nlines", "café 🔥")},
         "['it\\'s', 'say \"hi\"', 'back\\\\slash', 'two\\nlines', 'café 🔥', "
         "'aircall', 'inbound', 'answered_call', '19843140278']", ()),
        # Exactly 255 fits; one character more drops the last tag, never the fixed part.
        ({"tags": tags(*TAGS_11, "ten_chars!")},
         "[" + ", ".join(f"'{t}'" for t in [*TAGS_11, "ten_chars!", *FIXED]) + "]", ()),
        ({"tags": tags(*TAGS_11, "ten_chars!!")},
         "[" + ", ".join(f"'{t}'" for t in [*TAGS_11, *FIXED]) + "]", ("ten_chars!!",)),
        ({"tags": tags(*TAGS_11, "aaaa", "bbbb", "cccc")},
         "[" + ", ".join(f"'{t}'" for t in [*TAGS_11, "aaaa", *FIXED]) + "]", ("bbbb", "cccc")),
        ({"tags": tags("x" * 300), "answered_at": None, "missed_call_reason": "abandoned_in_ivr"},
         "['aircall', 'inbound', 'unanswered_call', '19843140278', 'abandoned_in_ivr']", ("x" * 300,)),
        # Counted as Salesforce counts (UTF-16): 126 emoji are 252 units, more than fits with the rest.
        ({"tags": tags("ok", "🔥" * 126)}, "['ok', 'aircall', 'inbound', 'answered_call', '19843140278']",
         ("🔥" * 126,)),
    ],
)
def test_R_SF_DISP_call_disposition(overrides, expected, dropped):
    c = call(**overrides)
    text, left_out = disposition(c)
    assert text == expected
    assert left_out == dropped
    assert sf_length(text) <= 255
    kept = [t.name for t in c.tags][: len(c.tags) - len(dropped)]
    assert ast.literal_eval(text) == kept + _fixed(c)
    result = draft(overrides)
    assert result.fields["CallDisposition"] == expected
    assert any(w.startswith("CallDisposition over 255") for w in result.warnings) is bool(dropped)


def _fixed(c: Call) -> list[str]:
    e164 = rules.aircall_number_e164(c)
    fixed = ["aircall", "inbound" if rules.is_inbound(c) else "outbound",
             "answered_call" if rules.is_answered(c) else "unanswered_call", e164[1:] if e164 else ""]
    return fixed + ([c.missed_call_reason] if c.missed_call_reason else [])


# R-SF-DESC: media line, then comments oldest first; 32,000 max with an ellipsis
ALEX_JSON = user()
REC_DESC = {"recording": {"where": "description"}}
VM_DESC = {"voicemail": {"where": "description"}}
API_LINE = "API added a new comment:\n"
LONG = API_LINE + "x" * 40_000
EXACT = API_LINE + "y" * (32_000 - len(API_LINE))
EMOJI = API_LINE + "🔥" * 16_000  # 16,000 characters but 32,000 UTF-16 units, plus the label


@pytest.mark.parametrize(
    "overrides, sf, expected, warned",
    [
        ({}, {}, None, False),
        (RECORDING, {}, None, False),  # default: the recording goes to the field only
        (RECORDING, REC_DESC, "Find the recording here: https://assets.aircall.io/calls/4186780376/recording", False),
        (RECORDING, {"recording": {"where": "both", "link": "short_url"}},
         "Find the recording here: https://short/r", False),
        (RECORDING, {"recording": {"where": "description", "store": False}}, None, False),
        (KINDS["voicemail"], VM_DESC, "Find voicemail here: https://assets.aircall.io/calls/4186780376/voicemail",
         False),
        (KINDS["voicemail"], {"voicemail": {"where": "both", "link": "short_url"}},
         "Find voicemail here: https://short/v", False),
        # A voicemail follows [salesforce.voicemail] only: never written as a recording.
        (KINDS["voicemail"], REC_DESC, None, False),
        (KINDS["voicemail"], {"voicemail": {"where": "description", "store": False}, **REC_DESC}, None, False),
        # Comments oldest first (posted_at, not list order); the API posts without an author.
        ({**RECORDING, "comments": [comment(2, "second", T0 + 300, None), comment(1, "first", T0 + 200, ALEX_JSON)]},
         REC_DESC,
         "Find the recording here: https://assets.aircall.io/calls/4186780376/recording\n\n"
         "Alex Martin added a new comment:\nfirst\n\nAPI added a new comment:\nsecond", False),
        ({"comments": [comment(5, "by mail", T0 + 10, {"id": 7, "email": "nameless@example.com"}),
                       comment(4, "undated", None, ALEX_JSON)]}, {},
         "nameless@example.com added a new comment:\nby mail\n\nAlex Martin added a new comment:\nundated", False),
        ({"comments": [comment(9, "later id", T0 + 50, None), comment(8, "same time", T0 + 50, ALEX_JSON)]}, {},
         "Alex Martin added a new comment:\nsame time\n\nAPI added a new comment:\nlater id", False),
        # Over 32,000: cut at the end to exactly 32,000 with "…"; exactly 32,000 is kept whole.
        ({"comments": [comment(1, "x" * 40_000, T0, None)]}, {}, LONG[:31_999] + "…", True),
        ({"comments": [comment(1, EXACT[len(API_LINE):], T0, None)]}, {}, EXACT, False),
        ({"comments": [comment(1, EMOJI[len(API_LINE):], T0, None)]}, {},
         API_LINE + "🔥" * ((31_999 - len(API_LINE)) // 2) + "…", True),
    ],
)
def test_R_SF_DESC_description(overrides, sf, expected, warned):
    s = settings(**sf)
    text, warning = description(call(**overrides), s.salesforce)
    assert text == expected
    assert (warning is not None) is warned
    if text is not None:
        assert sf_length(text) <= 32_000
    if warned:
        assert sf_length(text) >= 31_999 and text.endswith("…")
        assert warning.startswith("Description cut to 32,000 characters")
    result = draft(overrides, sf=sf)
    assert result.fields.get("Description") == expected  # no parts: left out
    assert (warning in result.warnings) if warned else not any("Description" in w for w in result.warnings)


# R-SF-FIELDS: custom fields, their values, settings that turn them off, fields the org lacks
TRANSFER = {"transferred_to": user(2, "Ben Ode", "ben.ode@example.com"), **RECORDING}
FULL = {
    "aircall__Waiting_Time__c": 12,
    "aircall__Answered_by__c": "Ben Ode",
    "aircall__Phone_number__c": "19843140278",
    "aircall__Country__c": "United States",
    "aircall__Call_Recording__c": "https://assets.aircall.io/calls/4186780376/recording",
    "aircall__Transferred_to__c": "Ben Ode",
    "aircall__Timezone__c": "America/Chicago",
    "aircall__Hour_of_the_day__c": 8,  # 13:44 UTC is 08:44 CDT
    "aircall__Connection_status__c": "connected",
    "aircall__Has_connected__c": True,
}


def without(mapping: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k not in keys}


@pytest.mark.parametrize(
    "overrides, sf, sync, task_fields, expected, warnings",
    [
        (TRANSFER, {}, None, ORG, FULL, ()),
        (TRANSFER, {}, None, None, FULL, ()),
        # Outbound: no waiting, no connection status.
        ({**KINDS["outbound_answered"]}, {}, None, ORG,
         {**without(FULL, "aircall__Connection_status__c", "aircall__Has_connected__c", "aircall__Transferred_to__c",
                    "aircall__Call_Recording__c"), "aircall__Waiting_Time__c": 0,
          "aircall__Answered_by__c": "Alex Martin"}, ()),
        # Missed: waited until hang-up, nobody answered, not connected.
        (KINDS["missed"], {}, None, ORG,
         {**without(FULL, "aircall__Answered_by__c", "aircall__Transferred_to__c", "aircall__Call_Recording__c"),
          "aircall__Waiting_Time__c": 100, "aircall__Connection_status__c": "not connected",
          "aircall__Has_connected__c": False}, ()),
        (KINDS["voicemail"], {"voicemail": {"link": "short_url"}}, None, ORG,
         {**without(FULL, "aircall__Answered_by__c", "aircall__Transferred_to__c"),
          "aircall__Waiting_Time__c": 100, "aircall__Connection_status__c": "not connected",
          "aircall__Has_connected__c": False, "aircall__Call_Recording__c": "https://short/v"}, ()),
        # The link goes to the field only when stored there.
        (TRANSFER, REC_DESC, None, ORG, without(FULL, "aircall__Call_Recording__c"), ()),
        (TRANSFER, {"recording": {"store": False}}, None, ORG, without(FULL, "aircall__Call_Recording__c"), ()),
        (TRANSFER, {"recording": {"where": "both"}}, None, ORG, FULL, ()),
        # An invalid (but possible) number has no country.
        ({**TRANSFER, "raw_digits": "+1 800-123-4567"}, {}, None, ORG, without(FULL, "aircall__Country__c"), ()),
        ({**TRANSFER, "raw_digits": "anonymous"}, {}, None, ORG, without(FULL, "aircall__Country__c"), ()),
        # No usable time zone on the line: sync.timezone, named in the timezone field too.
        ({**TRANSFER, "number": dict(NUMBER, time_zone="Not/AZone")}, {}, {"timezone": "Europe/Paris"}, ORG,
         {**FULL, "aircall__Timezone__c": "Europe/Paris", "aircall__Hour_of_the_day__c": 15}, ()),
        # An empty API name turns a field off; a custom API name is used as configured.
        (TRANSFER, {"task": {"fields": {"country": "", "timezone": "", "waiting_time": "Wait__c"}}}, None,
         ORG | {"Wait__c"},
         {**without(FULL, "aircall__Country__c", "aircall__Timezone__c", "aircall__Waiting_Time__c"),
          "Wait__c": 12}, ()),
        # A configured field the org lacks: left out, one warning naming the setting that turns it off.
        (TRANSFER, {}, None, ORG - {"aircall__Country__c", "aircall__Has_connected__c"},
         without(FULL, "aircall__Country__c", "aircall__Has_connected__c"),
         ('Task field aircall__Country__c is not in the org: left out; create it, or turn it off with '
          'salesforce.task.fields.country = ""',
          'Task field aircall__Has_connected__c is not in the org: left out; create it, or turn it off with '
          'salesforce.task.fields.has_connected = ""')),
        # Missing with no value to write this time: still reported, so check/run messages are stable.
        (KINDS["outbound_answered"], {}, None, ORG - {"aircall__Transferred_to__c"},
         {**without(FULL, "aircall__Connection_status__c", "aircall__Has_connected__c", "aircall__Transferred_to__c",
                    "aircall__Call_Recording__c"), "aircall__Waiting_Time__c": 0,
          "aircall__Answered_by__c": "Alex Martin"},
         ('Task field aircall__Transferred_to__c is not in the org: left out; create it, or turn it off with '
          'salesforce.task.fields.transferred_to = ""',)),
        # API names are case-insensitive: the org's spelling is sent.
        (TRANSFER, {}, None, (ORG - {"aircall__Answered_by__c"}) | {"aircall__Answered_By__c"},
         {**without(FULL, "aircall__Answered_by__c"), "aircall__Answered_By__c": "Ben Ode"}, ()),
        # A custom setting naming a field the rules already write never overwrites it.
        (TRANSFER, {"task": {"fields": {"country": "Subject"}}}, None, ORG,
         without(FULL, "aircall__Country__c"),
         ("salesforce.task.fields.country names Task field Subject, already written (Subject): left out",)),
    ],
)
def test_R_SF_FIELDS_custom_fields(overrides, sf, sync, task_fields, expected, warnings):
    result = draft(overrides, sf=sf, sync=sync, task_fields=task_fields)
    custom = {k: v for k, v in result.fields.items() if k not in STANDARD}
    assert custom == expected
    assert all(type(v) is type(expected[k]) for k, v in custom.items())  # 8 stays int, True stays bool
    assert result.warnings == warnings


# R-SF-OWNER: the 3 steps, and moving an integration-owned record to the agent
def aged(u: SfUser, age: timedelta, active: bool = True) -> SfUser:
    return SfUser(u.id, u.email, active, STARTED - age)


MINE = Match("Contact", "003000000000MINAAA", "Mine", INTEGRATION)
NEW_LEAD = Match("Lead", "00Q000000000NEWAAA", "+1 617-610-5413", None, created=True)
MY_PERSON = Match("PersonAccount", "001000000000MPAAAA", "My Person", INTEGRATION,
                  person_contact_id="003000000000MPAAAA")
NO_OWNER = Match("Contact", "003000000000NOWAAA", "No Owner", None)
QUEUED = Match("Lead", "00Q000000000QUEAAA", "Queued", QUEUE)
HOUR = timedelta(hours=1)
DAY = timedelta(hours=24)
NO_REASSIGN = {"reassign_integration_owned": False}
WITH_FALLBACK = {"fallback_owner_id": FALLBACK}


@pytest.mark.parametrize(
    "overrides, match, users, matching, expected, step, reassign",
    [
        # 1. the answering user: same e-mail (any case), active, created ≥ 24 h before the call
        ({}, JANE, (ALEX,), {}, ALEX.id, 1, None),
        ({"user": user(email="Alex.Martin@EXAMPLE.com")}, JANE, (ALEX,), {}, ALEX.id, 1, None),
        ({}, JANE, (aged(ALEX, DAY),), {}, ALEX.id, 1, None),  # exactly 24 h: old enough
        ({}, JANE, (aged(ALEX, DAY - timedelta(seconds=1)),), {}, OTHER_OWNER, 2, None),
        ({}, JANE, (aged(ALEX, HOUR),), {}, OTHER_OWNER, 2, None),
        ({}, JANE, (aged(ALEX, 30 * DAY, active=False),), {}, OTHER_OWNER, 2, None),
        ({"user": user(email="someone.else@example.com")}, JANE, (ALEX,), {}, OTHER_OWNER, 2, None),
        ({"user": user(email=None)}, JANE, (ALEX,), {}, OTHER_OWNER, 2, None),
        # The answering user is the transfer target (R-CALL-9), not the first agent.
        ({"transferred_to": user(2, "Ben Ode", "ben.ode@example.com")}, JANE, (ALEX, BEN), {}, BEN.id, 1, None),
        ({"transferred_to": user(2, "Ben Ode", "ben.ode@example.com")}, JANE, (ALEX,), {}, OTHER_OWNER, 2, None),
        # Unanswered calls have no answering user, whoever placed or was rung.
        (KINDS["missed"], JANE, (ALEX,), {}, OTHER_OWNER, 2, None),
        (KINDS["outbound_unanswered"], JANE, (ALEX,), {}, OTHER_OWNER, 2, None),
        (KINDS["voicemail"], LEAD, (ALEX,), WITH_FALLBACK, OTHER_OWNER, 2, None),
        # 2. the record's owner (a record the tool created belongs to the integration user)
        (KINDS["missed"], NEW_LEAD, (), WITH_FALLBACK, INTEGRATION, 2, None),
        # 3. the fallback owner, else the integration user
        (KINDS["missed"], None, (ALEX,), WITH_FALLBACK, FALLBACK, 3, None),
        (KINDS["missed"], None, (ALEX,), {}, INTEGRATION, 3, None),
        (KINDS["missed"], NO_OWNER, (), WITH_FALLBACK, FALLBACK, 3, None),
        (KINDS["missed"], NO_OWNER, (), {}, INTEGRATION, 3, None),
        # A queue-owned Lead: Tasks are not given to the queue.
        (KINDS["missed"], QUEUED, (), WITH_FALLBACK, FALLBACK, 3, None),
        ({}, None, (ALEX,), WITH_FALLBACK, ALEX.id, 1, None),
        # Reassignment: integration-owned record + step 1 found a user + setting on.
        ({}, MINE, (ALEX,), {}, ALEX.id, 1, (MINE.id, ALEX.id)),
        ({}, MINE, (ALEX,), NO_REASSIGN, ALEX.id, 1, None),
        ({}, NEW_LEAD, (ALEX,), {}, ALEX.id, 1, (NEW_LEAD.id, ALEX.id)),
        ({}, MY_PERSON, (ALEX,), {}, ALEX.id, 1, (MY_PERSON.id, ALEX.id)),  # moved through the Account
        (KINDS["missed"], MINE, (ALEX,), {}, INTEGRATION, 2, None),
        ({}, MINE, (aged(ALEX, HOUR),), {}, INTEGRATION, 2, None),
        ({}, JANE, (ALEX,), {}, ALEX.id, 1, None),  # owned by someone else: left alone
        ({}, MINE, (SfUser(INTEGRATION, "alex.martin@example.com", True, STARTED - 30 * DAY),), {},
         INTEGRATION, 1, None),  # the agent is the integration user: nothing to move
    ],
)
def test_R_SF_OWNER_owner_and_reassignment(overrides, match, users, matching, expected, step, reassign):
    c = call(**overrides)
    by_email = {u.email.lower(): u for u in users}
    chosen = owner(c, match, by_email, INTEGRATION, matching.get("fallback_owner_id", ""))
    assert (chosen.id, chosen.step) == (expected, step)
    result = draft(overrides, sf={"matching": matching}, match=match, users=users)
    assert result.fields["OwnerId"] == expected
    assert result.reassign == reassign


def test_match_rejects_an_unknown_object():
    with pytest.raises(ValueError, match="unknown match object"):
        Match("Opportunity", "006000000000OPPAAA", "Deal", None)


def test_build_task_sends_only_json_ready_values():
    result = draft({**TRANSFER, "tags": tags("a"), "comments": [comment(1, "hello", T0, None)]},
                   sf=REC_DESC, match=JANE, what_id=CASE, users=(ALEX, BEN))
    assert all(type(v) in (str, int, bool) for v in result.fields.values())
    assert list(result.fields)[:4] == ["Subject", "Type", "TaskSubtype", "Status"]
