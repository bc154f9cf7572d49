"""AI insights read tolerantly (R-AI-1) and the text of each (R-AI-3), as tables; the Task's part (R-AI-4).

Shapes from ``shared/reference/aircall-live.md`` §3.2 (the REST envelopes) and
§3.5 (the events), plus the twins R-AI-1 says to accept.
"""

from __future__ import annotations

import pytest

from aircall_sync.aircall.insights import (
    ENDPOINT_OF,
    EVENT_KIND,
    KINDS,
    Insights,
    description_part,
    event_text,
    response_text,
    text_of,
)

# §3.2's samples, verbatim.
TRANSCRIPTION = {"transcription": {"id": 68271, "call_id": 5237603, "call_created_at": "2024-07-26T13:30:54.000Z",
                                   "type": "call", "content": {"language": "en", "utterances": [
                                       {"start_time": 12.54, "end_time": 13.8, "text": "Okay,",
                                        "participant_type": "external", "phone_number": "+33679198915"},
                                       {"start_time": 238.08, "end_time": 239.48,
                                        "text": "Okay, I guess that's enough.", "participant_type": "internal",
                                        "user_id": 123}]}}}
SENTIMENT = {"sentiment": {"id": 5237603, "call_id": 5237603,
                           "participants": [{"phone_number": "+33679198915", "value": "POSITIVE", "type": "external"}]}}
TOPIC = {"topic": {"id": 786, "call_id": 123, "created_at": "2024-08-27T10:54:16.000Z",
                   "content": ["payment", "billing"]}}
SUMMARY = {"summary": {"id": 974, "call_id": 786, "created_at": "2024-08-27T10:54:16.000Z",
                       "content": "Short summary of the call"}}
ACTION_ITEMS = {"action_items": [
    {"id": 1, "call_id": 786, "content": "Send the invoice", "ai_generated": True},
    {"id": 2, "call_id": 786, "content": "Call back on\nFriday", "ai_generated": False}]}


def test_the_five_insights_and_their_endpoints_and_events():
    assert KINDS == ("summary", "topics", "sentiment", "action_items", "transcription")
    assert ENDPOINT_OF == {"summary": "summary", "topics": "topics", "sentiment": "sentiments",
                           "action_items": "action_items", "transcription": "transcription"}
    assert set(EVENT_KIND) == {"summary.created", "topics.created", "sentiment.created", "action_item.created",
                               "transcription.created"}
    assert set(EVENT_KIND.values()) == set(KINDS)


@pytest.mark.parametrize(("kind", "body", "text"), [
    # R-AI-1: the documented envelopes (reference §3.2) ...
    ("summary", SUMMARY, "Short summary of the call"),
    ("topics", TOPIC, "payment, billing"),
    ("sentiment", SENTIMENT, "Positive"),
    ("action_items", ACTION_ITEMS, "- Send the invoice\n- Call back on Friday"),
    ("transcription", TRANSCRIPTION, "Customer: Okay,\nAgent: Okay, I guess that's enough."),
    # ... and their twins: topic/topics, sentiment/sentiments, action_item(s)
    ("topics", {"topics": {"content": ["payment"]}}, "payment"),
    ("topics", {"topics": [{"name": "refund"}, {"name": "billing"}]}, "refund, billing"),
    ("topics", {"topic": {"content": [{"name": "a"}, {"label": "b"}, "a"]}}, "a, b"),
    ("sentiment", {"sentiments": [{"participants": [{"type": "external", "value": "negative"}]}]}, "Negative"),
    ("sentiment", {"sentiments": {"participants": [{"type": "internal", "value": "POSITIVE", "user_id": 1},
                                                   {"type": "external", "value": "NEUTRAL"}]}}, "Neutral"),
    ("sentiment", {"sentiment": {"value": "MIXED"}}, "Mixed"),  # an unknown value, in words as well
    ("action_items", {"action_item": {"content": "One thing"}}, "- One thing"),
    ("action_items", {"action_items": {"items": [{"text": "A"}, {"title": "B"}]}}, "- A\n- B"),
    ("action_items", {"action_items": ["plain text"]}, "- plain text"),
    ("summary", {"summary": [{"content": ""}, {"content": "second"}]}, "second"),
    ("summary", {"summaries": {"content": "plural"}}, "plural"),
    ("transcription", {"transcription": {"content": [{"text": "Hi", "user_id": 5}, {"text": "Hello"}]}},
     "Agent: Hi\nCustomer: Hello"),
    # absent keys and empty contents: nothing (the insight does not exist)
    ("summary", {"summary": {"id": 1}}, None),
    ("summary", {}, None),
    ("topics", {"topic": {"content": []}}, None),
    ("sentiment", {"sentiment": {"participants": [{"type": "internal", "value": "POSITIVE"}]}}, None),
    ("sentiment", {"sentiment": {"participants": []}}, None),
    ("action_items", {"action_items": []}, None),
    ("transcription", {"transcription": {"content": {"language": "en"}}}, None),
    ("transcription", {"transcription": None}, None),
    ("summary", "not json object", None),
])
def test_R_AI_1_responses_are_read_tolerantly(kind, body, text):
    assert response_text(kind, body) == text


@pytest.mark.parametrize(("kind", "obj", "text"), [
    # R-AI-3 summary = its content
    ("summary", {"content": "  The customer called about billing.\nRefund started.  "},
     "The customer called about billing.\nRefund started."),
    # R-AI-3 topics = names joined by ", "
    ("topics", {"content": ["billing", "refund", "invoice"]}, "billing, refund, invoice"),
    # R-AI-3 sentiment = the external participant's value in words
    ("sentiment", {"participants": [{"value": "POSITIVE", "type": "external"}]}, "Positive"),
    ("sentiment", {"participants": [{"value": "NEUTRAL", "type": "external"}]}, "Neutral"),
    ("sentiment", {"participants": [{"value": "NEGATIVE", "type": "external"}]}, "Negative"),
    ("sentiment", {"participants": [{"value": "POSITIVE", "phone_number": "+331"},
                                    {"value": "NEGATIVE", "user_id": 9}]}, "Positive"),
    # R-AI-3 action items = one "- {text}" line each
    ("action_items", [{"content": "Issue the refund"}, {"content": "Email the invoice"}],
     "- Issue the refund\n- Email the invoice"),
    # R-AI-3 transcription = "{Agent|Customer}: {text}" lines, oldest first
    ("transcription", {"content": {"utterances": [
        {"start_time": 9.0, "text": "Bye.", "participant_type": "internal", "user_id": 1},
        {"start_time": 1.5, "text": "Hello?", "participant_type": "external", "phone_number": "+1"},
        {"start_time": 4.0, "text": "Hi,  how can\nI help?", "participant_type": "internal", "user_id": 1},
        {"start_time": 4.0, "text": "  ", "participant_type": "external"}]}},
     "Customer: Hello?\nAgent: Hi, how can I help?\nAgent: Bye."),
])
def test_R_AI_3_text_of_each_insight(kind, obj, text):
    assert text_of(kind, obj) == text


@pytest.mark.parametrize(("event", "data", "text"), [
    # R-AI-1: the content when the event carries it (reference §3.5: call_id a string) ...
    ("summary.created", {"id": 1, "call_id": "42", "content": "A summary"}, "A summary"),
    ("topics.created", {"call_id": "42", "content": ["a", "b"]}, "a, b"),
    ("sentiment.created", {"id": 42, "call_id": "42", "participants": [{"type": "external", "value": "POSITIVE"}]},
     "Positive"),
    ("transcription.created", {"call_id": "42", "number_id": 7, "type": "call",
                               "content": {"language": "fr", "utterances": [
                                   {"start_time": 1, "text": "Bonjour", "participant_type": "internal"}]}},
     "Agent: Bonjour"),
    # ... an action_item.created is one item
    ("action_item.created", {"id": 5, "call_id": "42", "content": "Send the quote", "ai_generated": True},
     "- Send the quote"),
    # ... absent content: None, the worker fetches it
    ("summary.created", {"id": 1, "call_id": "42"}, None),
    ("topics.created", {"call_id": "42", "content": []}, None),
    ("sentiment.created", {"id": 42, "call_id": "42"}, None),
    ("transcription.created", {"call_id": "42", "number_id": 7}, None),
    ("action_item.created", {"id": 5, "call_id": "42", "ai_generated": True}, None),
    ("summary.created", None, None),
])
def test_R_AI_1_events_carry_the_content_or_not(event, data, text):
    assert event_text(EVENT_KIND[event], data) == text


@pytest.mark.parametrize(("insights", "part"), [
    # R-AI-4, mode task: each present insight on its own line, never the transcription
    (Insights(summary="Refund started.", topics="billing, refund", sentiment="Positive",
              action_items="- Issue the refund\n- Email the invoice", transcription="Agent: Hi"),
     "AI insights:\nSummary: Refund started.\nTopics: billing, refund\nSentiment: Positive\n"
     "Action items:\n- Issue the refund\n- Email the invoice"),
    (Insights(sentiment="Negative"), "AI insights:\nSentiment: Negative"),
    (Insights(topics="demo", action_items="- Book a demo"), "AI insights:\nTopics: demo\nAction items:\n- Book a demo"),
    (Insights(transcription="Agent: Hi"), None),
    (Insights(), None),
    (None, None),
])
def test_R_AI_4_the_task_description_part(insights, part):
    assert description_part(insights) == part


def test_insights_known_and_truth():
    ins = Insights.of({"summary": "S", "transcription": "Agent: x", "other": "ignored"})
    assert ins.known() == {"summary": "S", "transcription": "Agent: x"}
    assert ins and not Insights() and ins.get("topics") is None
