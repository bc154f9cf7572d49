"""AI insights in live mode (RULES §8, DESIGN §10): the five *.created events, through the real inbox and worker,
in-process against the sandbox over HTTP(S). What landed is read from the emulators' stores; requests are counted
on their logs.

The event bodies are the emulator's (``AiInsights.event_data``: ``call_id`` a string, the content present or not,
reference aircall-live.md §3.5), its REST bodies what a fetch gets.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import write_settings
from live_helpers import LiveWorker, envelope, webhook_form

from aircall_sync.aircall.insights import response_text
from aircall_sync.sandbox.aircall_ai import EVENT_OF
from aircall_sync.sandbox.stack import Sandbox, SandboxOptions

END = datetime(2026, 10, 31, 12, tzinfo=UTC)
ENDPOINT = {"summary": "summary", "topics": "topics", "sentiment": "sentiments", "action_items": "action_items",
            "transcription": "transcription"}
AI_PATH = re.compile(r"^/v1/calls/\d+/(summary|topics|sentiments|action_items|transcription)$")


def config_for(box: Sandbox, tmp: Path, mode: str = "task", targets=("salesforce", "front"), **ai) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    settings = box.settings(tmp / "state.sqlite3", mode=mode, targets=targets)
    settings["aircall"]["requests_per_minute"] = 60000
    settings["aircall"]["ai"] = {"enabled": True, **ai}
    if "front" in settings:
        settings["front"]["requests_per_minute"] = 60000
    settings["live"] = {"webhook_token": "t", "batch_window": "0s"}
    return write_settings(tmp / "settings.toml", settings)


Live = LiveWorker


@pytest.fixture
def box():
    sandbox = Sandbox(SandboxOptions(calls=60, seed=17, days=2, end=END)).start()
    yield sandbox
    sandbox.stop()


@pytest.fixture
def live(box, tmp_path):
    handle = Live(config_for(box, tmp_path))
    yield handle
    handle.close()


def rich_call(box: Sandbox, *, with_items: bool = True) -> dict:
    """A finished call with every insight (and action items or not), a customer number, no comment."""
    for call in box.aircall_store.iter_calls(0, 2**40):
        if (call["status"] == "done" and call["answered_at"] and call["ended_at"] - call["answered_at"] >= 60
                and call["raw_digits"] != "anonymous" and not call["comments"]
                and box.ai_insights.schedule(call)
                and ("action_items" in box.ai_insights.schedule(call)) is with_items):
            return call
    raise AssertionError("no such call in the data set")


def ai_event(box: Sandbox, call: dict, kind: str, *, content: bool, index: int = 0, at: int | None = None) -> dict:
    """The emulator's event for an insight, with or without its content."""
    data = dict(box.ai_insights.event_data(call, ENDPOINT[kind])[index])
    if not content:
        data.pop("content", None)
        data.pop("participants", None)
    else:
        assert "content" in data or "participants" in data or _fill(box, call, kind, data)
    return {"resource": "conversation_intelligence", "event": EVENT_OF[ENDPOINT[kind]],
            "timestamp": at or call["ended_at"] + 120 + index, "data": data}


def _fill(box: Sandbox, call: dict, kind: str, data: dict) -> bool:
    """Give an event its content (the emulator leaves it out of some: seeded)."""
    body = box.ai_insights.rest_body(call, ENDPOINT[kind])
    inner = next(iter(body.values()))
    if kind == "sentiment":
        data["participants"] = inner["participants"]
    elif kind == "action_items":
        data["content"] = inner[0]["content"]
    else:
        data["content"] = inner["content"]
    return True


def text(box: Sandbox, call: dict, kind: str) -> str | None:
    body = box.ai_insights.rest_body(call, ENDPOINT[kind])
    return None if body is None else response_text(kind, body)


def ai_requests(box: Sandbox) -> int:
    return sum(1 for r in box.aircall_server.requests if AI_PATH.match(r.path))


def sf_requests(box: Sandbox) -> int:
    return box.salesforce.server.count()


def task_of(box: Sandbox, call: dict) -> dict:
    return box.sf_store.find_one("Task", CallObject=str(call["id"]))


def ai_comments(box: Sandbox) -> list:
    return [c for conv in box.front_store.conversations.values() for c in conv.comments
            if c.body.startswith("AI summary of the call of ")]


def test_R_AI_4_insights_arriving_after_the_call_update_its_records_in_place(box, live):
    call = rich_call(box)
    live.deliver(envelope("call.ended", webhook_form(call, box.aircall_url), call["ended_at"] + 30))
    live.worker.run_once()
    task = task_of(box, call)
    assert "AI insights" not in (task.get("Description") or "")
    assert ai_comments(box) == []
    # The summary, carried by its event: no Aircall request; the same Task updated, one Front comment.
    before = ai_requests(box), box.aircall_server.count()
    live.deliver(ai_event(box, call, "summary", content=True))
    result = live.worker.run_once()
    assert result.insights == 1 and result.insight_requests == 0 and result.retried == 0
    assert box.aircall_server.count() == before[1]  # nothing from Aircall: the call's snapshot is in the inbox
    updated = task_of(box, call)
    assert updated["Id"] == task["Id"] and len(box.sf_store.records("Task")) == len({task["Id"]})
    assert updated["Description"].endswith(f"AI insights:\nSummary: {text(box, call, 'summary')}")
    [comment] = ai_comments(box)
    assert comment.body.endswith("\n" + text(box, call, "summary")) and comment.author_id is None
    # The same insight again (a redelivery with another timestamp): nothing fetched, nothing written.
    sf_before, aircall_before = sf_requests(box), box.aircall_server.count()
    front_before = box.front_sandbox.server.count()
    live.deliver(ai_event(box, call, "summary", content=True, at=call["ended_at"] + 500))
    live.worker.run_once()
    assert (sf_requests(box), box.aircall_server.count(), box.front_sandbox.server.count()) == (
        sf_before, aircall_before, front_before)
    # Topics without content: fetched (one request), written in place; Front's comment is not posted again.
    live.deliver(ai_event(box, call, "topics", content=False))
    result = live.worker.run_once()
    assert result.insight_requests == 1
    assert f"Topics: {text(box, call, 'topics')}" in task_of(box, call)["Description"]
    assert len(ai_comments(box)) == 1
    # Action items: each event one item; the list is read once from the endpoint for the batch.
    items = box.ai_insights.event_data(call, "action_items")
    before = ai_requests(box)
    live.deliver(*(ai_event(box, call, "action_items", content=False, index=i) for i in range(len(items))))
    live.worker.run_once()
    assert ai_requests(box) - before == 1
    assert "Action items:\n" + text(box, call, "action_items") in task_of(box, call)["Description"]
    assert live.inbox.stats().depth == 0


def test_R_AI_4_live_insights_land_in_the_aircall_voice_fields(box, tmp_path):
    handle = Live(config_for(box, tmp_path, mode="voice", targets=("salesforce",)))
    try:
        call = rich_call(box)
        handle.deliver(envelope("call.hungup", webhook_form(call, box.aircall_url), call["ended_at"]),
                       *(ai_event(box, call, kind, content=kind != "transcription")
                         for kind in ("summary", "sentiment", "transcription")))
        result = handle.worker.run_once()  # the call and its insights in one batch
        assert result.calls == 1 and result.insight_requests == 1  # the transcription's event had no content
        record = box.sf_store.find_one("aircall__Aircall_Voice__c", aircall__Call_Id__c=str(call["id"]))
        assert record["aircall__AI_Summary__c"] == text(box, call, "summary")
        assert record["aircall__AI_Sentiment__c"] in ("Positive", "Neutral", "Negative")
        assert record["aircall__AI_Transcription__c"] == text(box, call, "transcription")
        assert record["aircall__AI_Transcription__c"].startswith(("Agent: ", "Customer: "))
        assert record.get("aircall__AI_Topics__c") in (None, "")
        assert len(box.sf_store.records("aircall__Aircall_Voice__c")) == 1 and len(box.sf_store.records("VoiceCall")) == 1
    finally:
        handle.close()


def test_R_AI_1_an_insight_for_a_call_whose_events_are_gone_reads_the_call_once(box, live, caplog):
    """The call was logged by a backfill (or its events pruned after live.keep_events): GET /v1/calls/:id once."""
    call = rich_call(box)
    live.deliver(envelope("call.ended", webhook_form(call, box.aircall_url), call["ended_at"] + 30))
    live.worker.run_once()
    with live.state.sql(write=True) as conn:  # as live.keep_events would have
        conn.execute("DELETE FROM events WHERE kind = 'call'")
    task = task_of(box, call)
    before = box.aircall_server.count(path_prefix=f"/v1/calls/{call['id']}", method="GET")
    with caplog.at_level("INFO", logger="aircall_sync.live"):
        live.deliver(ai_event(box, call, "sentiment", content=True))
        live.worker.run_once()
    assert box.aircall_server.count(path_prefix=f"/v1/calls/{call['id']}", method="GET") - before == 1
    assert (f"call {call['id']}: an AI insight arrived and no stored event describes the call (pruned after "
            f"live.keep_events, or none came): read once from Aircall (GET /v1/calls/{call['id']})") in caplog.text
    updated = task_of(box, call)
    assert updated["Id"] == task["Id"]
    assert f"Sentiment: {text(box, call, 'sentiment')}" in updated["Description"]


def test_R_AI_1_a_404_after_the_event_is_tried_again_with_backoff_until_settle(box, live):
    # A call too short for the emulator's AI (45 s): any fetch is a 404, as for an insight not produced yet.
    call = next(c for c in box.aircall_store.iter_calls(0, 2**40) if c["status"] == "done" and c["answered_at"]
                and 30 <= c["ended_at"] - c["answered_at"] < 60 and c["raw_digits"] != "anonymous")
    live.deliver(envelope("call.ended", webhook_form(call, box.aircall_url), call["ended_at"] + 30))
    live.worker.run_once()
    body = {"resource": "conversation_intelligence", "event": "summary.created", "timestamp": call["ended_at"] + 90,
            "data": {"id": 1, "call_id": str(call["id"]), "created_at": "2026-10-30T10:00:00.000Z"}}
    now = datetime.now(UTC)
    live.deliver(body)
    before = ai_requests(box)
    result = live.worker.run_once(now=now)
    assert ai_requests(box) - before == 1 and result.insights == 1
    stats = live.inbox.stats()
    assert stats.depth == 1 and "AI summary: Aircall answered 404 after the event; tried again" in stats.last_error
    due = live.inbox.next_due()
    assert now + timedelta(seconds=7) <= due <= now + timedelta(seconds=31)  # backoff, not at once
    assert live.worker.run_once(now=now).events == 0  # not due yet
    live.worker.run_once(now=due + timedelta(seconds=1))
    assert ai_requests(box) - before == 2 and live.inbox.stats().depth == 1
    # Past aircall.ai.settle after the event: given up, nothing written.
    live.worker.run_once(now=datetime.now(UTC) + timedelta(hours=2, minutes=1))
    assert ai_requests(box) - before == 3 and live.inbox.stats().depth == 0
    assert "AI insights" not in (task_of(box, call).get("Description") or "")


def test_ai_events_do_nothing_while_ai_is_off(box, tmp_path):
    settings_file = config_for(box, tmp_path)
    settings_file.write_text(settings_file.read_text().replace("enabled = true\n", "enabled = false\n", 1))
    handle = Live(settings_file)
    try:
        assert not handle.settings.aircall.ai.enabled
        call = rich_call(box)
        handle.deliver(envelope("call.ended", webhook_form(call, box.aircall_url), call["ended_at"] + 30))
        handle.worker.run_once()
        before = box.aircall_server.count(), sf_requests(box)
        handle.deliver(ai_event(box, call, "summary", content=False))
        result = handle.worker.run_once()
        assert result.events == 1 and result.insights == 0
        assert (box.aircall_server.count(), sf_requests(box)) == before
        assert handle.inbox.stats().depth == 0
    finally:
        handle.close()


def _unordered(state: dict) -> dict:
    return {k: [dict(c, comments=sorted(c["comments"])) for c in conversations] for k, conversations in state.items()}


def test_live_insights_end_in_the_fields_one_backfill_writes(tmp_path):
    """DESIGN §10 "same records as a batch run", with AI on: the calls' events, then their AI events (content or
    not, duplicated, in any order, over several batches) end in the Tasks and Front comments a backfill writes."""
    import random

    from live_helpers import LocalBox, front_state
    from reliability_harness import diff_states, org_state
    from typer.testing import CliRunner

    from aircall_sync.cli import app

    def calls_of(box: Sandbox) -> list[dict]:
        return sorted((c for c in box.aircall_store.iter_calls(0, 2**40) if c["status"] == "done" and c["ended_at"]),
                      key=lambda c: (c["started_at"], c["id"]))

    reference = Sandbox(SandboxOptions(calls=60, seed=17, days=2, end=END)).start()
    try:
        config = config_for(reference, tmp_path / "ref")
        result = CliRunner().invoke(app, ["--config", str(config), "backfill", "--from", "2026-10-29", "--to",
                                          "2026-10-31"])
        assert result.exit_code == 0, result.output
        want_sf, want_front = org_state(LocalBox(reference)), front_state(reference)
    finally:
        reference.stop()
    box = Sandbox(SandboxOptions(calls=60, seed=17, days=2, end=END)).start()
    handle = Live(config_for(box, tmp_path / "live"))
    try:
        calls = calls_of(box)
        handle.deliver(*(envelope("call.ended", webhook_form(c, box.aircall_url), c["ended_at"] + 30) for c in calls))
        handle.worker.run_once()
        rng = random.Random(4)
        events = []
        for call in calls:
            for kind in ("summary", "topics", "sentiment", "action_items", "transcription"):
                for i, _data in enumerate(box.ai_insights.event_data(call, ENDPOINT[kind])):
                    events.append(ai_event(box, call, kind, content=rng.random() < 0.5, index=i))
        assert len(events) > 40
        events += rng.sample(events, len(events) // 4)  # at least once
        rng.shuffle(events)
        third = len(events) // 3
        for part in (events[:third], events[third:2 * third], events[2 * third:]):
            handle.deliver(*part)
            assert handle.worker.run_once().retried == 0
        assert handle.inbox.stats().depth == 0
        assert diff_states(want_sf, org_state(LocalBox(box))) == []
        # Per conversation the same messages and comments; an AI summary is posted when it arrives, so the comments
        # of a conversation shared by several calls are compared as a set (their order follows the arrivals).
        assert _unordered(front_state(box)) == _unordered(want_front)
        assert sum(1 for c in ai_comments(box)) == sum(1 for c in calls if box.ai_insights.schedule(c)
                                                      and c["raw_digits"] != "anonymous")
    finally:
        handle.close()
        box.stop()
