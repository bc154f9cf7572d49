"""RULES.md §5 (Salesforce Service Cloud Voice, mode ``voice``), rule by rule. Each table names its rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from builders import NUMBER, T0, call_payload, user

from aircall_sync import rules
from aircall_sync.aircall.models import Call
from aircall_sync.settings import Settings, parse_settings
from aircall_sync.targets.salesforce_task import Match, sf_length
from aircall_sync.targets.salesforce_voice import (
    VoiceContext,
    VoiceDraft,
    build_voice,
    detailed_type,
    link_field_name,
    no_aircall_voice_reason,
    sf_datetime,
    voice_call_update_fields,
)

NOW = datetime.fromtimestamp(T0, UTC) + timedelta(days=1)
CALL_CENTER = "04v000000000CCCAAA"
AIRCALL = {"api_id": "123456", "api_token": "aircall-token"}
SALESFORCE = {"enabled": True, "instance_url": "https://example.my.salesforce.com", "access_token": "sf-token",
              "mode": "voice", "voice": {"call_center_id": CALL_CENTER}}

# The VoiceCall describe (voicecall_fields.json) plus the Aircall package's lookup.
VOICE_CALL = frozenset({
    "Id", "Name", "CallType", "VendorType", "CallStartDateTime", "CallEndDateTime", "CallDurationInSeconds",
    "FromPhoneNumber", "ToPhoneNumber", "CallCenterId", "VendorCallKey", "VendorParentCallKey", "RelatedRecordId",
    "ActivityId", "CallDisposition", "CallRecordingId", "CallResolution", "Description", "OwnerId",
    "aircall__Aircall_Voice__c",
})
AVO_FIELDS = (
    "aircall__Call_Id__c", "aircall__Call_Type__c", "aircall__Detailed_Type__c", "aircall__Started_At__c",
    "aircall__Answered_At__c", "aircall__Ended_At__c", "aircall__Duration__c", "aircall__Aircall_Number__c",
    "aircall__Contact__c", "aircall__Lead__c", "aircall__Account__c", "aircall__Recording__c", "aircall__Tags__c",
    "aircall__Comments__c", "aircall__Assigned_To__c", "aircall__Answered_By__c",
)
AVO = frozenset({"Id", "Name", "OwnerId", *AVO_FIELDS})

KINDS: dict[str, dict[str, Any]] = {
    "outbound_answered": {"direction": "outbound"},
    "outbound_unanswered": {"direction": "outbound", "answered_at": None},
    "inbound_answered": {},
    "missed": {"answered_at": None, "missed_call_reason": "no_available_agent"},
    "voicemail": {"answered_at": None, "voicemail": "https://mp3/vm", "voicemail_short_url": "https://short/v",
                  "asset": "https://assets.aircall.io/calls/4186780376/voicemail"},
}
RECORDING = {"asset": "https://assets.aircall.io/calls/4186780376/recording",
             "recording": "https://mp3/rec", "recording_short_url": "https://short/r"}
INVALID = {"raw_digits": "+1 800-123-4567"}  # parses, possible, not valid (R-CALL-4)
ANON = {"raw_digits": "anonymous"}
GARBLED = {"raw_digits": "not a number"}

JANE = Match("Contact", "003000000000JANAAA", "Jane Doe", None, account_id="001000000000ACCAAA")
LEAD = Match("Lead", "00Q000000000LEDAAA", "Lee Lead", None)
ACME = Match("Account", "001000000000ACMAAA", "Acme", None)
PERSON = Match("PersonAccount", "001000000000PERAAA", "Pat Person", None, person_contact_id="003000000000PERAAA")

STARTED = "2026-09-28T13:44:10.000+0000"
ANSWERED = "2026-09-28T13:44:22.000+0000"
ENDED = "2026-09-28T13:45:50.000+0000"
CUSTOMER = "+16176105413"
LINE = "+19843140278"


def settings(**salesforce: Any) -> Settings:
    voice = {**SALESFORCE["voice"], **salesforce.pop("voice", {})}
    return parse_settings({"aircall": AIRCALL, "salesforce": {**SALESFORCE, "voice": voice, **salesforce}},
                          environ={})


def call(**overrides: Any) -> Call:
    return Call.parse(call_payload(**overrides))


def comment(cid: int, content: str, at: int | None, by: dict | None) -> dict:
    return {"id": cid, "content": content, "posted_at": at, "posted_by": by}


def tags(*names: str) -> list[dict]:
    return [{"id": i, "name": n} for i, n in enumerate(names, 1)]


def draft(overrides: dict[str, Any] | None = None, sf: dict[str, Any] | None = None, match: Match | None = JANE,
          call_fields: frozenset[str] | None = VOICE_CALL, object_fields: frozenset[str] | None = AVO) -> VoiceDraft:
    s = settings(**(sf or {}))
    c = call(**(overrides or {}))
    return build_voice(c, rules.assess(c, s, NOW), VoiceContext(match, call_fields, object_fields), s)


def json_ready(fields: dict[str, Any]) -> bool:
    return all(type(v) in (str, int) for v in fields.values())


# R-SFV-1: one VoiceCall and one Aircall Voice record per call, no Task; the link is the writer's
@pytest.mark.parametrize(
    "overrides, voice, call_fields, link, warned",
    [
        ({}, {}, VOICE_CALL, "aircall__Aircall_Voice__c", False),
        (KINDS["missed"], {}, VOICE_CALL, "aircall__Aircall_Voice__c", False),
        (KINDS["outbound_unanswered"], {}, None, "aircall__Aircall_Voice__c", False),
        # Configurable object and lookup; the org's spelling of the lookup is used.
        ({}, {"aircall_voice_object": "aircall2gp__Aircall_Voice__c",
              "voice_call_link_field": "aircall2gp__aircall_voice__c"},
         VOICE_CALL | {"aircall2gp__Aircall_Voice__c"}, "aircall2gp__Aircall_Voice__c", False),
        # The lookup is missing: the records are still drafted, and the run is told.
        ({}, {}, VOICE_CALL - {"aircall__Aircall_Voice__c"}, None, True),
    ],
)
def test_R_SFV_1_two_records_and_no_task(overrides, voice, call_fields, link, warned):
    result = draft(overrides, sf={"voice": voice}, call_fields=call_fields)
    assert result.voice_call and result.aircall_voice
    assert not {"Subject", "TaskSubtype", "WhoId", "WhatId", "CallObject"} & set(result.voice_call)
    configured = settings(voice=voice).salesforce.voice.voice_call_link_field
    assert configured.lower() not in {k.lower() for k in result.voice_call}  # set by the writer
    assert link_field_name(VoiceContext(JANE, call_fields, AVO), settings(voice=voice)) == link
    link_warnings = [w for w in result.warnings if "cannot be linked" in w]
    assert link_warnings == ([
        "VoiceCall field aircall__Aircall_Voice__c is not in the org: the VoiceCall cannot be linked to its Aircall "
        "Voice record; create that lookup, or set salesforce.voice.voice_call_link_field to the org's lookup"
    ] if warned else [])


# R-SFV-2: the VoiceCall a create sends
def voice_call(**changes: Any) -> dict[str, Any]:
    base = {
        "CallType": "Inbound", "VendorType": "ContactCenter", "CallCenterId": CALL_CENTER,
        "CallStartDateTime": STARTED, "CallEndDateTime": ENDED, "FromPhoneNumber": CUSTOMER, "ToPhoneNumber": LINE,
        "CallDurationInSeconds": 88, "VendorCallKey": "4186780376", "RelatedRecordId": JANE.id,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


MS = int(datetime(2026, 9, 28, 13, 44, 10, 123456, tzinfo=UTC).timestamp() * 1_000_000) / 1_000_000


@pytest.mark.parametrize(
    "overrides, sf, match, call_fields, expected, warnings",
    [
        # Direction: inbound ⇒ customer → Aircall line; outbound ⇒ Aircall line → customer.
        ({}, {}, JANE, VOICE_CALL, voice_call(), ()),
        (KINDS["outbound_answered"], {}, JANE, VOICE_CALL,
         voice_call(CallType="Outbound", FromPhoneNumber=LINE, ToPhoneNumber=CUSTOMER), ()),
        # Talk time, 0 for every unanswered call (not Aircall's ringing-inclusive duration).
        (KINDS["outbound_unanswered"], {}, JANE, VOICE_CALL,
         voice_call(CallType="Outbound", FromPhoneNumber=LINE, ToPhoneNumber=CUSTOMER, CallDurationInSeconds=0), ()),
        (KINDS["missed"], {}, JANE, VOICE_CALL, voice_call(CallDurationInSeconds=0), ()),
        (KINDS["voicemail"], {}, JANE, VOICE_CALL, voice_call(CallDurationInSeconds=0), ()),
        ({"answered_at": T0 + 40, "ended_at": T0 + 100, "duration": 100}, {}, JANE, VOICE_CALL,
         voice_call(CallDurationInSeconds=60), ()),
        # The customer's side: E.164, an invalid number as it is, else the literal "anonymous".
        (ANON, {}, None, VOICE_CALL, voice_call(FromPhoneNumber="anonymous", RelatedRecordId=None), ()),
        (GARBLED, {}, None, VOICE_CALL, voice_call(FromPhoneNumber="anonymous", RelatedRecordId=None), ()),
        ({**KINDS["outbound_unanswered"], **ANON}, {}, None, VOICE_CALL,
         voice_call(CallType="Outbound", FromPhoneNumber=LINE, ToPhoneNumber="anonymous", CallDurationInSeconds=0,
                    RelatedRecordId=None), ()),
        (INVALID, {}, None, VOICE_CALL, voice_call(FromPhoneNumber="+18001234567", RelatedRecordId=None), ()),
        ({"raw_digits": "(617) 610-5413"}, {}, JANE, VOICE_CALL, voice_call(), ()),  # national, region of the line
        # The Aircall side: the line in E.164 from e164_digits, else digits.
        ({"number": dict(NUMBER, digits=None, e164_digits="+33184884848", country="FR")}, {}, JANE, VOICE_CALL,
         voice_call(ToPhoneNumber="+33184884848"), ()),
        ({"number": None}, {}, JANE, VOICE_CALL, voice_call(ToPhoneNumber=None),
         ("VoiceCall ToPhoneNumber left out: the call has no Aircall number (Salesforce requires it)",)),
        ({**KINDS["outbound_answered"], "number": None}, {}, JANE, VOICE_CALL,
         voice_call(CallType="Outbound", FromPhoneNumber=None, ToPhoneNumber=CUSTOMER),
         ("VoiceCall FromPhoneNumber left out: the call has no Aircall number (Salesforce requires it)",)),
        # RelatedRecordId: the matched record; a Person Account through its Account id.
        ({}, {}, LEAD, VOICE_CALL, voice_call(RelatedRecordId=LEAD.id), ()),
        ({}, {}, ACME, VOICE_CALL, voice_call(RelatedRecordId=ACME.id), ()),
        ({}, {}, PERSON, VOICE_CALL, voice_call(RelatedRecordId=PERSON.id), ()),
        ({}, {}, None, VOICE_CALL, voice_call(RelatedRecordId=None), ()),
        # Times: UTC, milliseconds, +0000, whatever the input spelling.
        ({"started_at": "2026-09-28T15:44:10.123456+02:00", "answered_at": MS + 2, "ended_at": MS + 62}, {}, JANE,
         VOICE_CALL, voice_call(CallStartDateTime="2026-09-28T13:44:10.123+0000",
                                CallEndDateTime="2026-09-28T13:45:12.123+0000", CallDurationInSeconds=60), ()),
        ({"ended_at": None, "status": "answered"}, {}, JANE, VOICE_CALL,
         voice_call(CallEndDateTime=None, CallDurationInSeconds=0),
         ("VoiceCall CallEndDateTime left out: the call has not ended (Salesforce requires it)",)),
        # The reconciliation key is the id as text, exact beyond 2**53.
        ({"id": 9_007_199_254_740_993}, {}, JANE, VOICE_CALL, voice_call(VendorCallKey="9007199254740993"), ()),
        # CallCenterId from the settings; omitted when empty (mode "voice" requires it, "task" does not).
        ({}, {"mode": "task", "voice": {"call_center_id": ""}}, JANE, VOICE_CALL, voice_call(CallCenterId=None), ()),
        # Describe: no filter; the org's spelling; a field the org lacks is left out, once, with a warning.
        ({}, {}, JANE, None, voice_call(), ()),
        ({}, {}, JANE, (VOICE_CALL - {"VendorCallKey"}) | {"vendorcallkey"},
         {**voice_call(VendorCallKey=None), "vendorcallkey": "4186780376"}, ()),
        ({}, {}, JANE, VOICE_CALL - {"CallCenterId"}, voice_call(CallCenterId=None),
         ('VoiceCall field CallCenterId is not in the org: left out; give the integration user access to it, '
          'or set salesforce.voice.call_center_id = ""',)),
        ({}, {}, JANE, VOICE_CALL - {"RelatedRecordId"}, voice_call(RelatedRecordId=None),
         ("VoiceCall field RelatedRecordId is not in the org (or not visible to the integration user): left out",)),
    ],
)
def test_R_SFV_2_voice_call(overrides, sf, match, call_fields, expected, warnings):
    result = draft(overrides, sf=sf, match=match, call_fields=call_fields)
    assert result.voice_call == expected
    assert json_ready(result.voice_call)
    assert type(result.voice_call.get("CallDurationInSeconds", 0)) is int
    assert tuple(w for w in result.warnings if w.startswith("VoiceCall")) == warnings


# R-SFV-3: the Aircall Voice record, its configurable fields, and fields the org lacks
ALEX = user()
BEN = user(2, "Ben Ode", "ben.ode@example.com")
RICH = {
    **RECORDING,
    "tags": tags("vip", "billing"),
    "comments": [comment(2, "second", T0 + 300, None), comment(1, "first", T0 + 200, ALEX)],
    "assigned_to": user(3, "Cleo Ray", "cleo.ray@example.com"),
    "transferred_to": BEN,
}
FULL = {
    "aircall__Call_Id__c": "4186780376",
    "aircall__Call_Type__c": "Inbound",
    "aircall__Detailed_Type__c": "Inbound answered",
    "aircall__Started_At__c": STARTED,
    "aircall__Answered_At__c": ANSWERED,
    "aircall__Ended_At__c": ENDED,
    "aircall__Duration__c": 88,
    "aircall__Aircall_Number__c": "19843140278",
    "aircall__Contact__c": JANE.id,
    "aircall__Recording__c": "https://assets.aircall.io/calls/4186780376/recording",
    "aircall__Tags__c": "vip, billing",
    "aircall__Comments__c": "Alex Martin added a new comment:\nfirst\n\nAPI added a new comment:\nsecond",
    "aircall__Assigned_To__c": "Cleo Ray",
    "aircall__Answered_By__c": "Ben Ode",  # R-CALL-9: the transfer target
}
BARE = {k: FULL[k] for k in ("aircall__Call_Id__c", "aircall__Call_Type__c", "aircall__Detailed_Type__c",
                             "aircall__Started_At__c", "aircall__Ended_At__c", "aircall__Aircall_Number__c",
                             "aircall__Contact__c")}
API_LINE = "API added a new comment:\n"
LONG = API_LINE + "x" * 40_000
TAG = "t" * 9_999


def without(mapping: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k not in keys}


def missing(api: str, key: str) -> str:
    return (f"Aircall Voice field {api} is not in the org: left out; create it on aircall__Aircall_Voice__c, "
            f'or turn it off with salesforce.voice.fields.{key} = ""')


@pytest.mark.parametrize(
    "overrides, sf, match, object_fields, expected, warnings",
    [
        (RICH, {}, JANE, AVO, FULL, ()),
        (RICH, {}, JANE, None, FULL, ()),
        # call_type / detailed_type per kind; answered_at only when answered; duration = talk time.
        (KINDS["outbound_answered"], {}, JANE, AVO,
         {**BARE, "aircall__Call_Type__c": "Outbound", "aircall__Detailed_Type__c": "Outbound answered",
          "aircall__Answered_At__c": ANSWERED, "aircall__Duration__c": 88, "aircall__Answered_By__c": "Alex Martin"},
         ()),
        (KINDS["outbound_unanswered"], {}, JANE, AVO,
         {**BARE, "aircall__Call_Type__c": "Outbound", "aircall__Detailed_Type__c": "Outbound unanswered",
          "aircall__Duration__c": 0}, ()),
        (KINDS["missed"], {}, JANE, AVO, {**BARE, "aircall__Detailed_Type__c": "Missed call",
                                          "aircall__Duration__c": 0}, ()),
        (KINDS["voicemail"], {}, JANE, AVO,
         {**BARE, "aircall__Detailed_Type__c": "Voicemail", "aircall__Duration__c": 0,
          "aircall__Recording__c": "https://assets.aircall.io/calls/4186780376/voicemail"}, ()),
        # Lookups by match type; a Person Account goes to the Account lookup; no match, no lookup.
        ({}, {}, LEAD, AVO, {**without(BARE, "aircall__Contact__c"), "aircall__Lead__c": LEAD.id,
                             "aircall__Answered_At__c": ANSWERED, "aircall__Duration__c": 88,
                             "aircall__Answered_By__c": "Alex Martin"}, ()),
        ({}, {}, ACME, AVO, {**without(BARE, "aircall__Contact__c"), "aircall__Account__c": ACME.id,
                             "aircall__Answered_At__c": ANSWERED, "aircall__Duration__c": 88,
                             "aircall__Answered_By__c": "Alex Martin"}, ()),
        ({}, {}, PERSON, AVO, {**without(BARE, "aircall__Contact__c"), "aircall__Account__c": PERSON.id,
                               "aircall__Answered_At__c": ANSWERED, "aircall__Duration__c": 88,
                               "aircall__Answered_By__c": "Alex Martin"}, ()),
        (KINDS["missed"], {}, None, AVO, {**without(BARE, "aircall__Contact__c"),
                                          "aircall__Detailed_Type__c": "Missed call", "aircall__Duration__c": 0}, ()),
        # media_link (R-CALL-8): link mode and store from the media settings; "where" is for Task Comments.
        (RICH, {"recording": {"link": "short_url"}}, JANE, AVO, {**FULL, "aircall__Recording__c": "https://short/r"},
         ()),
        (RICH, {"recording": {"store": False}}, JANE, AVO, without(FULL, "aircall__Recording__c"), ()),
        (RICH, {"recording": {"where": "description"}}, JANE, AVO, FULL, ()),
        (KINDS["voicemail"], {"voicemail": {"link": "short_url"}, "recording": {"store": False}}, JANE, AVO,
         {**BARE, "aircall__Detailed_Type__c": "Voicemail", "aircall__Duration__c": 0,
          "aircall__Recording__c": "https://short/v"}, ()),
        (KINDS["voicemail"], {"voicemail": {"store": False}}, JANE, AVO,
         {**BARE, "aircall__Detailed_Type__c": "Voicemail", "aircall__Duration__c": 0}, ()),
        # No Aircall number: left out.
        ({**RICH, "number": None}, {}, JANE, AVO, without(FULL, "aircall__Aircall_Number__c"),
         ("VoiceCall ToPhoneNumber left out: the call has no Aircall number (Salesforce requires it)",)),
        # Agent names: assigned_to as given, answered_by = the user when not transferred; nameless ⇒ left out.
        ({**RICH, "transferred_to": None, "assigned_to": {"id": 9, "email": "x@example.com"}}, {}, JANE, AVO,
         {**without(FULL, "aircall__Assigned_To__c"), "aircall__Answered_By__c": "Alex Martin"}, ()),
        # Comments over 32,000: cut to exactly 32,000 with "…", and a warning.
        ({"comments": [comment(1, "x" * 40_000, T0, None)]}, {}, JANE, AVO,
         {**BARE, "aircall__Answered_At__c": ANSWERED, "aircall__Duration__c": 88,
          "aircall__Answered_By__c": "Alex Martin", "aircall__Comments__c": LONG[:31_999] + "…"},
         ("Aircall Voice comments cut to 32,000 characters (was 40,025): the end of the comments is lost",)),
        # Tags over 32,000: whole tags dropped from the end, and a warning.
        ({"tags": tags(TAG, TAG, TAG, TAG, "z")}, {}, JANE, AVO,
         {**BARE, "aircall__Answered_At__c": ANSWERED, "aircall__Duration__c": 88,
          "aircall__Answered_By__c": "Alex Martin", "aircall__Tags__c": ", ".join([TAG] * 3)},
         ("Aircall Voice tags over 32,000 characters: 2 tag(s) left out",)),
        # Custom API names; "" turns a field off; the org's spelling is sent.
        (RICH, {"voice": {"fields": {"tags": "", "comments": "My_Notes__c", "call_id": "Key__c"}}}, JANE,
         AVO | {"my_notes__c", "Key__c"},
         {**without(FULL, "aircall__Tags__c", "aircall__Comments__c", "aircall__Call_Id__c"),
          "my_notes__c": FULL["aircall__Comments__c"], "Key__c": "4186780376"}, ()),
        # A field the org lacks: left out with one warning naming its setting (also without a value this time).
        (RICH, {}, JANE, AVO - {"aircall__Tags__c", "aircall__Lead__c"}, without(FULL, "aircall__Tags__c"),
         (missing("aircall__Lead__c", "lead"), missing("aircall__Tags__c", "tags"))),
        # The reconciliation key's field missing: no record at all (a re-run would duplicate it).
        (RICH, {}, JANE, AVO - {"aircall__Call_Id__c"}, None,
         ("Aircall Voice field aircall__Call_Id__c (the reconciliation key) is not in the org: no Aircall Voice "
          "record is written; create it on aircall__Aircall_Voice__c, or set salesforce.voice.fields.call_id to "
          "the field that holds the Aircall call id",)),
        # Two keys naming one field: the first in table order keeps it; call_id always wins.
        (RICH, {"voice": {"fields": {"tags": "aircall__Call_Id__c", "assigned_to": "aircall__Answered_By__c"}}},
         JANE, AVO, {**without(FULL, "aircall__Tags__c", "aircall__Assigned_To__c"),
                     "aircall__Answered_By__c": "Cleo Ray"},
         ("salesforce.voice.fields.tags names aircall__Call_Id__c, already written "
          "(salesforce.voice.fields.call_id): left out",
          "salesforce.voice.fields.answered_by names aircall__Answered_By__c, already written "
          "(salesforce.voice.fields.assigned_to): left out")),
    ],
)
def test_R_SFV_3_aircall_voice_record(overrides, sf, match, object_fields, expected, warnings):
    result = draft(overrides, sf=sf, match=match, object_fields=object_fields)
    assert result.aircall_voice == expected
    if expected is not None:
        assert json_ready(result.aircall_voice)
        assert all(sf_length(v) <= 32_000 for v in result.aircall_voice.values() if isinstance(v, str))
        call_id_field = settings(**sf).salesforce.voice.fields.call_id
        assert {k.lower() for k in expected} >= {call_id_field.lower()}  # the key is always there
    assert result.warnings == warnings


@pytest.mark.parametrize(
    "kind, expected",
    [("inbound_answered", "Inbound answered"), ("missed", "Missed call"), ("voicemail", "Voicemail"),
     ("outbound_answered", "Outbound answered"), ("outbound_unanswered", "Outbound unanswered")],
)
def test_R_SFV_3_detailed_type(kind, expected):
    assert detailed_type(kind) == detailed_type(rules.Kind(kind)) == expected
    assert rules.call_kind(call(**KINDS[kind])).value == kind


# R-SFV-4: never answered and no (or an invalid) external number ⇒ VoiceCall only
@pytest.mark.parametrize(
    "overrides, has_record, reason",
    [
        ({}, True, None),
        (ANON, True, None),  # answered: the record exists, whatever the number
        ({**KINDS["outbound_answered"], **INVALID}, True, None),
        (KINDS["missed"], True, None),
        (KINDS["outbound_unanswered"], True, None),
        ({**KINDS["missed"], **ANON}, False, "never answered and no external number (R-SFV-4)"),
        ({**KINDS["voicemail"], **GARBLED}, False, "never answered and no external number (R-SFV-4)"),
        ({**KINDS["missed"], "raw_digits": ""}, False, "never answered and no external number (R-SFV-4)"),
        ({**KINDS["missed"], **INVALID}, False, "never answered and the external number is invalid (R-SFV-4)"),
        ({**KINDS["outbound_unanswered"], **INVALID}, False,
         "never answered and the external number is invalid (R-SFV-4)"),
        ({**KINDS["outbound_unanswered"], **ANON}, False, "never answered and no external number (R-SFV-4)"),
    ],
)
def test_R_SFV_4_voice_call_only(overrides, has_record, reason):
    s = settings()
    c = call(**overrides)
    a = rules.assess(c, s, NOW)
    assert no_aircall_voice_reason(c, a) == reason
    result = draft(overrides, match=None)
    assert (result.aircall_voice is not None) is has_record
    assert result.voice_call["VendorCallKey"] == "4186780376"
    assert result.warnings == ()
    # Warnings about the org stay the same whether or not this call gets a record.
    lacking = draft(overrides, match=None, object_fields=AVO - {"aircall__Tags__c"})
    assert lacking.warnings == (missing("aircall__Tags__c", "tags"),)
    assert (lacking.aircall_voice is not None) is has_record


# R-SFV-8: an update sends only the updateable VoiceCall fields
@pytest.mark.parametrize(
    "fields, expected",
    [
        (voice_call(), {"RelatedRecordId": JANE.id}),
        (voice_call(RelatedRecordId=None), {}),
        ({**voice_call(), "OwnerId": "005000000000ALXAAA", "Description": "d", "CallResolution": "Resolved",
          "ActivityId": "00T000000000TSKAAA", "CallDisposition": "completed", "CallRecordingId": "0Lr000000000RECAAA"},
         {"RelatedRecordId": JANE.id, "OwnerId": "005000000000ALXAAA", "Description": "d",
          "CallResolution": "Resolved", "ActivityId": "00T000000000TSKAAA"}),
        # Names are case-insensitive and kept as given; custom lookups (the Aircall Voice link) are updateable.
        ({"relatedrecordid": LEAD.id, "aircall__Aircall_Voice__c": "a00000000000AVOAAA", "vendorcallkey": "1"},
         {"relatedrecordid": LEAD.id, "aircall__Aircall_Voice__c": "a00000000000AVOAAA"}),
    ],
)
def test_R_SFV_8_update_sends_updateable_fields_only(fields, expected):
    assert voice_call_update_fields(fields) == expected
    for kind in KINDS:
        drafted = draft(KINDS[kind], match=LEAD).voice_call
        assert voice_call_update_fields(drafted) == {"RelatedRecordId": LEAD.id}


@pytest.mark.parametrize(
    "moment, expected",
    [
        (datetime(2026, 10, 14, 9, 30, tzinfo=UTC), "2026-10-14T09:30:00.000+0000"),
        (datetime(2026, 10, 14, 9, 30, 5, 999_999, tzinfo=UTC), "2026-10-14T09:30:05.999+0000"),  # cut, not rounded
        (datetime.fromisoformat("2026-10-14T11:30:00+02:00"), "2026-10-14T09:30:00.000+0000"),
        (datetime(2026, 10, 14, 9, 30), "2026-10-14T09:30:00.000+0000"),  # naive: taken as UTC
        (datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC), "0999-01-02T03:04:05.000+0000"),
    ],
)
def test_R_SFV_2_salesforce_datetime_format(moment, expected):
    assert sf_datetime(moment) == expected
