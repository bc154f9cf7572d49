"""The inbox in the state store (DESIGN §10 "Events are at least once and unordered", "Kept events")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aircall_sync.live.inbox import Inbox
from aircall_sync.state import State

T0 = datetime(2026, 10, 31, 12, tzinfo=UTC)


@pytest.fixture
def inbox(tmp_path):
    state = State.open(tmp_path / "state.sqlite3")
    yield Inbox(state)
    state.close()


def event(name="call.ended", call_id=7, ts=1790603100, **data):
    return {"resource": "call", "event": name, "timestamp": ts,
            "data": {"id": call_id, "status": "done", "ended_at": 1790603090, **data}}


def test_a_token_is_never_stored(inbox):
    with pytest.raises(ValueError, match="the token must be removed"):
        inbox.put({**event(), "token": "x"})


def test_identical_deliveries_are_one_event_and_a_changed_body_is_another(inbox):
    assert inbox.put(event()) is True
    assert inbox.put(event()) is False
    assert inbox.put(event(tags=[{"name": "VIP"}])) is True  # same moment, other content
    assert inbox.stats().stored == 2


def test_due_takes_waiting_events_in_arrival_order_and_retry_delays_them(inbox):
    for call_id in (3, 1, 2):
        inbox.put(event(call_id=call_id), received_at=T0)
    due = inbox.due(now=T0)
    assert [e.object_id for e in due] == ["3", "1", "2"]
    inbox.retry([due[0].seq], "salesforce stopped: down", T0 + timedelta(seconds=30))
    assert [e.object_id for e in inbox.due(now=T0)] == ["1", "2"]
    assert [e.object_id for e in inbox.due(now=T0 + timedelta(seconds=30))] == ["3", "1", "2"]
    assert inbox.due(now=T0 + timedelta(seconds=30))[0].attempts == 1
    stats = inbox.stats()
    assert (stats.depth, stats.failing, stats.last_error) == (3, 1, "salesforce stopped: down")
    assert stats.oldest == T0


def test_done_events_leave_the_queue_and_are_pruned_after_keep_events(inbox):
    inbox.put(event(call_id=1))
    inbox.put(event(call_id=2))
    first, second = inbox.due()
    inbox.done([first.seq])
    assert [e.object_id for e in inbox.due()] == ["2"]
    assert inbox.prune(datetime.now(UTC) - timedelta(days=30)) == 0  # kept: processed just now
    assert inbox.prune(datetime.now(UTC) + timedelta(seconds=1)) == 1  # only the processed one goes
    assert inbox.stats().stored == 1 and inbox.stats().depth == 1


def test_the_applied_snapshot_never_moves_back(inbox):
    inbox.mark_applied("call", {"7": (2000, 5)})
    inbox.mark_applied("call", {"7": (1000, 9)})  # older timestamp, later arrival: ignored
    assert inbox.applied("call", ["7"]) == {"7": (2000, 5)}
    inbox.mark_applied("call", {"7": (2000, 6)})  # same timestamp, later arrival: newer
    assert inbox.applied("call", ["7", "8"]) == {"7": (2000, 6)}


def test_first_finished_snapshot_order(inbox):
    inbox.put(event(call_id=9, ts=10, status="initial", ended_at=None))
    inbox.put(event(call_id=8, ts=20))
    inbox.put(event(call_id=9, ts=30))
    order = inbox.first_finished(["8", "9"])
    assert order["8"] < order["9"]
