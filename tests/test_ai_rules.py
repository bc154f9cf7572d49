"""RULES §8 as tables: which calls are eligible and when an insight is asked (R-AI-1), where each insight goes
and how it is cut (R-AI-4), and that the fingerprints carry them (R-FLOW-3). No network."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from builders import T0, call_payload

from aircall_sync import rules
from aircall_sync.ai import RETRY_AFTER, due, eligible, seconds_for, to_ask
from aircall_sync.aircall.insights import Insights
from aircall_sync.aircall.models import Call
from aircall_sync.render import ai_plan_line, duration_words
from aircall_sync.settings import parse_settings
from aircall_sync.state import InsightState
from aircall_sync.targets import front
from aircall_sync.targets.salesforce_target import fingerprint as sf_fingerprint
from aircall_sync.targets.salesforce_task import Match, TaskContext, build_task, sf_length
from aircall_sync.targets.salesforce_voice import VoiceContext, build_voice

STARTED = datetime.fromtimestamp(T0, UTC)
NOW = STARTED + timedelta(days=1)
AIRCALL = {"api_id": "123456", "api_token": "aircall-token"}
SF = {"enabled": True, "instance_url": "https://example.my.salesforce.com", "access_token": "sf-token"}
INTEGRATION = "005000000000INTAAA"
JANE = Match("Contact", "003000000000JANAAA", "Jane Doe", "005000000000OWNAAA")
FULL = Insights(summary="The customer asked for a refund.", topics="billing, refund", sentiment="Positive",
                action_items="- Issue the refund\n- Email the invoice",
                transcription="Customer: Hello?\nAgent: Hi, how can I help?")
AI_VOICE = {"aircall__AI_Summary__c": 32768, "aircall__AI_Topics__c": 1000, "aircall__AI_Sentiment__c": 255,
            "aircall__AI_Action_Items__c": 32768, "aircall__AI_Transcription__c": 131072}


def settings(ai: dict | None = None, **salesforce: Any):
    return parse_settings({"aircall": {**AIRCALL, "ai": {"enabled": True, **(ai or {})}},
                           "salesforce": {**SF, **salesforce}}, environ={})


def assess(overrides: dict | None = None, s=None, insights: Insights | None = None, now: datetime = NOW):
    c = Call.parse(call_payload(**(overrides or {})))
    a = rules.assess(c, s or settings(), now)
    return dataclasses.replace(a, insights=insights) if insights is not None else a


# ---------------------------------------------------------------- R-AI-1 which calls, which insights


def ended_ago(seconds: int) -> dict:
    """A call that ended ``seconds`` before NOW, after 120 s of talk."""
    end = int(NOW.timestamp()) - seconds
    return {"started_at": end - 130, "answered_at": end - 120, "ended_at": end}


@pytest.mark.parametrize(("overrides", "ai", "sf", "expected"), [
    ({}, {}, {}, True),  # answered, 98 s of talk (builders' call), settled
    ({"answered_at": None}, {}, {}, False),  # not answered
    ({"answered_at": T0 + 80}, {}, {}, False),  # 20 s of talk < 30
    ({"answered_at": T0 + 70}, {}, {}, True),  # exactly 30 s of talk
    ({}, {"min_talk_seconds": 120}, {}, False),
    ({"status": "answered", "ended_at": None}, {}, {}, False),  # not finished: not settled (R-CALL-5)
    ({}, {}, {"call_flow": {"inbound_answered": "skip"}}, False),  # no target logs it
])
def test_R_AI_1_eligible_calls(overrides, ai, sf, expected):
    base = {"started_at": T0, "answered_at": T0 + 12, "ended_at": T0 + 100}
    s = settings(ai, **sf)
    assert eligible(assess({**base, **overrides}, s), s) is expected


SETTLE = timedelta(hours=2)
END = NOW - timedelta(minutes=30)


def known(status: str, asked_ago: timedelta, text: str | None = None) -> InsightState:
    return InsightState("summary", status, text, NOW - asked_ago)


@pytest.mark.parametrize(("state", "ended", "expected"), [
    (None, END, True),  # never asked
    (known("found", timedelta(days=1), "S"), END, False),  # found: never again
    (known("none", timedelta(days=1)), END, False),  # final
    # 404 before settle: asked again once the call is twice as old as it was then, at least 10 min later
    (known("asked", timedelta(minutes=5)), NOW - timedelta(minutes=30), False),
    (known("asked", timedelta(minutes=15)), NOW - timedelta(minutes=30), True),  # asked at 15 min old, now 30
    (known("asked", timedelta(minutes=9)), NOW - timedelta(minutes=12), False),  # at least RETRY_AFTER
    (known("asked", RETRY_AFTER), NOW - timedelta(minutes=12), True),
    (known("asked", timedelta(minutes=40)), NOW - timedelta(minutes=100), False),  # 60 min old then, 100 now
    # ... and once more as soon as it has settled (the last word, final either way)
    (known("asked", timedelta(minutes=10)), NOW - SETTLE, True),
])
def test_R_AI_1_when_an_insight_is_asked(state, ended, expected):
    assert due(state, ended, NOW, SETTLE) is expected


def test_R_AI_1_to_ask_lists_what_is_missing_in_rules_order():
    a = assess(ended_ago(3600))
    assert to_ask(a, {}, NOW, SETTLE) == ["summary", "topics", "sentiment", "action_items", "transcription"]
    have = {"summary": InsightState("summary", "found", "S", NOW), "topics": InsightState("topics", "none", None, NOW)}
    assert to_ask(a, have, NOW, SETTLE) == ["sentiment", "action_items", "transcription"]


@pytest.mark.parametrize(("requests", "rpm", "seconds", "words"), [
    (0, 60, 0, "0 s"), (5, 60, 5, "5 s"), (500, 60, 500, "9 min"), (5 * 1000, 60, 5000, "1 h 24 min"),
    (7, 120, 4, "4 s"), (3600, 60, 3600, "1 h"),
])
def test_R_AI_2_how_long_requests_take(requests, rpm, seconds, words):
    assert seconds_for(requests, rpm) == seconds
    assert duration_words(seconds) == words


def test_R_AI_2_the_dry_run_line():
    line = ai_plan_line({"eligible_calls": 200, "requests": 1000, "seconds": 1000, "requests_per_minute": 60})
    assert line == ("AI insights: 200 eligible call(s); a run would make 1000 more Aircall request(s) for them (at "
                    "most 5 per call, none for an insight known), about 17 min at aircall.requests_per_minute = 60. "
                    "None was fetched now.")


# ---------------------------------------------------------------- R-AI-4 mode task


def task(insights: Insights | None, task_fields=None, lengths=None, s=None, overrides=None):
    s = s or settings()
    a = assess(overrides, s, insights)
    fields = None if task_fields is None else frozenset(task_fields)
    return build_task(a.call, a, TaskContext(JANE, None, {}, INTEGRATION, fields, lengths), s)


def test_R_AI_4_task_description_gets_the_ai_part_after_the_comments():
    comments = [{"id": 1, "content": "Called back", "posted_at": T0 + 200, "posted_by": {"name": "Alex"}}]
    d = task(FULL, overrides={"comments": comments})
    assert d.fields["Description"] == (
        "Alex added a new comment:\nCalled back\n\n"
        "AI insights:\nSummary: The customer asked for a refund.\nTopics: billing, refund\nSentiment: Positive\n"
        "Action items:\n- Issue the refund\n- Email the invoice")
    assert "Hello?" not in d.fields["Description"]  # never the transcription


@pytest.mark.parametrize(("insights", "description"), [
    (Insights(sentiment="Negative"), "AI insights:\nSentiment: Negative"),
    (Insights(transcription="Agent: Hi"), None),
    (Insights(), None),
    (None, None),
])
def test_R_AI_4_task_description_holds_what_is_known(insights, description):
    assert task(insights).fields.get("Description") == description


def test_R_AI_4_no_ai_part_while_ai_is_off():
    s = parse_settings({"aircall": AIRCALL, "salesforce": SF}, environ={})
    a = dataclasses.replace(assess(None, s), insights=FULL)  # even if some were attached
    d = build_task(a.call, a, TaskContext(JANE, None, {}, INTEGRATION, None), s)
    assert "Description" not in d.fields


def test_R_AI_4_optional_task_fields_cut_to_their_length():
    s = settings(task={"fields": {"ai_summary": "AI_Summary__c", "ai_sentiment": "AI_Mood__c",
                                  "ai_transcription": "AI_Transcript__c"}})
    long = Insights(summary="x" * 300, sentiment="Neutral", transcription="Agent: " + "é" * 40)
    org = {"Subject", "Description", "CallObject", "AI_Summary__c", "AI_Mood__c", "AI_Transcript__c", "OwnerId",
           "WhoId", "Type", "TaskSubtype", "Status", "ActivityDate", "CallType", "CallDurationInSeconds",
           "CallDisposition"}
    d = task(long, org, {"ai_summary__c": 255, "ai_mood__c": 40, "ai_transcript__c": 20}, s)
    assert d.fields["AI_Summary__c"] == "x" * 254 + "…" and sf_length(d.fields["AI_Summary__c"]) == 255
    assert d.fields["AI_Mood__c"] == "Neutral"
    assert d.fields["AI_Transcript__c"] == "Agent: " + "é" * 12 + "…"
    assert any("AI summary is cut with …" in w for w in d.warnings)
    # A configured field the org lacks: left out, with the setting that turns it off.
    d = task(long, org - {"AI_Mood__c"}, None, s)
    assert "AI_Mood__c" not in d.fields
    assert ('Task field AI_Mood__c is not in the org: the AI sentiment is left out; create it, or turn it off with '
            'salesforce.task.fields.ai_sentiment = ""') in d.warnings


# ---------------------------------------------------------------- R-AI-4 mode voice

AVO = frozenset({"Id", "Name", "aircall__Call_Id__c", "aircall__Comments__c", *AI_VOICE})


def voice(insights: Insights | None, object_fields=AVO, lengths=None, **sf: Any):
    s = settings(mode="voice", voice={"call_center_id": "04v000000000CCCAAA", **sf.pop("voice", {})}, **sf)
    a = assess(None, s, insights)
    ctx = VoiceContext(JANE, None, object_fields, lengths if lengths is not None else
                       {k.lower(): v for k, v in AI_VOICE.items()})
    return build_voice(a.call, a, ctx, s)


def test_R_AI_4_voice_fields_hold_each_insight():
    d = voice(FULL)
    assert {k: v for k, v in d.aircall_voice.items() if "AI_" in k} == {
        "aircall__AI_Summary__c": FULL.summary, "aircall__AI_Topics__c": FULL.topics,
        "aircall__AI_Sentiment__c": "Positive", "aircall__AI_Action_Items__c": FULL.action_items,
        "aircall__AI_Transcription__c": FULL.transcription}


def test_R_AI_4_voice_field_names_are_settings_and_empty_leaves_one_out():
    d = voice(FULL, AVO | {"My_Summary__c"}, voice={"fields": {"ai_summary": "My_Summary__c", "ai_transcription": ""}})
    assert d.aircall_voice["My_Summary__c"] == FULL.summary
    assert "aircall__AI_Summary__c" not in d.aircall_voice and "aircall__AI_Transcription__c" not in d.aircall_voice


def test_R_AI_4_voice_text_longer_than_its_field_is_cut_with_an_ellipsis():
    d = voice(Insights(topics=", ".join(f"topic {i}" for i in range(200)), transcription="Agent: " + "a" * 200),
              lengths={"aircall__ai_topics__c": 1000, "aircall__ai_transcription__c": 100})
    topics = d.aircall_voice["aircall__AI_Topics__c"]
    assert len(topics) == 1000 and topics.endswith("…")
    assert d.aircall_voice["aircall__AI_Transcription__c"] == "Agent: " + "a" * 92 + "…"
    assert "Aircall Voice field aircall__AI_Topics__c holds 1,000 characters: the AI topics is cut with …" in d.warnings


def test_R_AI_4_voice_fields_the_org_lacks_are_left_out_with_the_setting_named():
    d = voice(FULL, frozenset({"Id", "aircall__Call_Id__c"}))
    assert not any("AI_" in k for k in d.aircall_voice)
    assert ("Aircall Voice field aircall__AI_Summary__c is not in the org: the AI summary is left out; create it on "
            'aircall__Aircall_Voice__c, or turn it off with salesforce.voice.fields.ai_summary = ""') in d.warnings


def test_R_AI_4_voice_without_ai_writes_and_warns_nothing_about_it():
    s = parse_settings({"aircall": AIRCALL, "salesforce": {**SF, "mode": "voice",
                                                            "voice": {"call_center_id": "04v000000000CCCAAA"}}},
                       environ={})
    a = dataclasses.replace(assess(None, s), insights=FULL)
    d = build_voice(a.call, a, VoiceContext(JANE, None, frozenset({"Id", "aircall__Call_Id__c"})), s)
    assert not any("AI" in k for k in d.aircall_voice) and not any("AI" in w for w in d.warnings)


# ---------------------------------------------------------------- R-AI-4 Front


def test_R_AI_4_front_comment_starts_with_the_call_date_in_the_line_zone():
    s = settings()
    a = assess(None, s)  # builders' number: America/Chicago; 2026-09-28T13:44:10Z = 08:44 there
    assert front.ai_comment_body(a.call, "Refund started.", s) == (
        "AI summary of the call of 2026-09-28 08:44 (America/Chicago):\nRefund started.")


# ---------------------------------------------------------------- R-FLOW-3: fingerprints carry the insights


def test_R_FLOW_3_an_insight_changes_the_fingerprints_that_write_it():
    s = settings()
    c = assess(None, s).call
    base = sf_fingerprint(c, s, Insights())
    assert sf_fingerprint(c, s, Insights()) == base  # unchanged: costs nothing
    assert sf_fingerprint(c, s, Insights(summary="S")) != base
    # Mode task writes no transcription unless a Task field holds it: a transcription alone changes nothing.
    assert sf_fingerprint(c, s, Insights(transcription="Agent: hi")) == base
    withfield = settings(task={"fields": {"ai_transcription": "T__c"}})
    assert sf_fingerprint(c, withfield, Insights(transcription="Agent: hi")) != sf_fingerprint(c, withfield)
    # Front: the summary only (its comment).
    assert front.fingerprint(c, s, Insights(topics="x")) == front.fingerprint(c, s, None)
    assert front.fingerprint(c, s, Insights(summary="S")) != front.fingerprint(c, s, None)


def test_fingerprints_while_ai_is_off_are_what_they_were():
    """AI off: no AI term, so an upgrade re-plans nothing (the values below are those before RULES §8)."""
    s = parse_settings({"aircall": AIRCALL, "salesforce": SF}, environ={})
    c = assess(None, s).call
    assert sf_fingerprint(c, s, FULL) == sf_fingerprint(c, s)
    assert front.fingerprint(c, s, FULL) == front.fingerprint(c, s)


def test_R_AI_2_help_says_what_ai_costs_in_backfills():
    from typer.testing import CliRunner

    from aircall_sync.cli import app

    result = CliRunner().invoke(app, ["backfill", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "costs up to 5 more Aircall requests" in text and "--dry-run says how many and how long" in text
