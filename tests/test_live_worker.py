"""The worker and the reconciler of live mode, in-process against the sandbox (DESIGN §10).

Events go into a real inbox; `Worker.run_once` processes what is due, through
the same runner, rules and targets as a backfill, over real HTTP(S) to the
emulators. What landed is read from the emulators' stores.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from live_helpers import LiveWorker, LocalBox, envelope, finished_calls, front_state, webhook_form, worker_config
from reliability_harness import diff_states, org_state
from typer.testing import CliRunner

from aircall_sync.cli import app
from aircall_sync.live.reconcile import Maintenance
from aircall_sync.live.worker import backoff
from aircall_sync.sandbox.stack import Sandbox, SandboxOptions

END = datetime(2026, 10, 31, 12, tzinfo=UTC)
FROM, TO = "2026-10-28", "2026-10-31"
DATA = {"calls": 160, "seed": 21, "days": 3}


def make_box() -> Sandbox:
    return Sandbox(SandboxOptions(end=END, **DATA)).start()


class Live(LiveWorker):
    def __init__(self, box: Sandbox, config: Path):
        super().__init__(config)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """What one backfill writes for the data: the live result must equal it, call by call."""
    box = make_box()
    try:
        config = worker_config(box, tmp_path_factory.mktemp("reference"))
        result = CliRunner().invoke(app, ["--config", str(config), "backfill", "--from", FROM, "--to", TO])
        assert result.exit_code == 0, result.output
        return org_state(LocalBox(box)), front_state(box)
    finally:
        box.stop()


BASE: list[str] = [""]  # the Aircall emulator's URL, for the links events carry


@pytest.fixture
def live(tmp_path):
    box = make_box()
    BASE[0] = box.aircall_url
    handle = Live(box, worker_config(box, tmp_path))
    yield box, handle
    handle.close()
    box.stop()


def bare(call: dict) -> dict:
    """The call as hungup/ended carry it before the agent tags and comments (they come later)."""
    return dict(webhook_form(call, BASE[0]), tags=[], comments=[])


def test_live_events_in_any_order_end_in_the_fields_one_backfill_writes(live, reference):
    """DESIGN §10 "same records as a batch run": duplicated, reordered deliveries; tags and comments later."""
    box, handle = live
    calls = finished_calls(box)
    rng = random.Random(5)
    # Batch 1: each call's first finished snapshot in the order the backfill reads calls; the rest shuffled,
    # some twice; stale "call.created" snapshots (older) arrive after the finished ones.
    handle.deliver(*(envelope("call.hungup", bare(c), c["ended_at"]) for c in calls))
    later = []
    for c in calls:
        later.append(envelope("call.ended", bare(c), c["ended_at"] + 30))
        later.append(envelope("call.created", dict(bare(c), status="initial", ended_at=None), c["started_at"]))
    later += rng.sample(later, len(later) // 3)  # duplicates
    rng.shuffle(later)
    handle.deliver(*later)
    first = handle.worker.run_once()
    assert first.calls == len(calls) and first.retried == 0
    assert len(box.sf_store.records("Task")) == len(calls)
    # Batch 2: tags and comments arrive after call.ended (reference §1.2), with older stale snapshots.
    tagged = [envelope("call.tagged", webhook_form(c, BASE[0]), c["ended_at"] + 90) for c in calls if c["tags"]]
    commented = [envelope("call.commented", webhook_form(c, BASE[0]), c["ended_at"] + 120) for c in calls if c["comments"]]
    stale = [envelope("call.hungup", bare(c), c["ended_at"]) for c in rng.sample(calls, 20)]
    mixed = tagged + commented + stale
    rng.shuffle(mixed)
    handle.deliver(*mixed)
    second = handle.worker.run_once()
    assert second.retried == 0
    clean_sf, clean_front = reference
    assert diff_states(clean_sf, org_state(LocalBox(box))) == []
    assert front_state(box) == clean_front


def test_an_older_snapshot_never_overwrites_a_newer_one(live):
    box, handle = live
    call = next(c for c in finished_calls(box) if c["tags"] and c["direction"] == "inbound" and c["answered_at"])
    handle.deliver(envelope("call.tagged", webhook_form(call, BASE[0]), call["ended_at"] + 90))
    handle.worker.run_once()
    task = box.sf_store.find_one("Task", CallObject=str(call["id"]))
    assert call["tags"][0]["name"] in task["CallDisposition"]
    writes = box.salesforce.server.count(method="POST") + box.salesforce.server.count(method="PATCH")
    # call.ended without the tags, built before the tags were added: older, so it changes nothing.
    handle.deliver(envelope("call.ended", bare(call), call["ended_at"] + 30))
    result = handle.worker.run_once()
    assert result.stale == 1 and result.calls == 0
    assert box.sf_store.find_one("Task", CallObject=str(call["id"])) == task
    assert box.salesforce.server.count(method="POST") + box.salesforce.server.count(method="PATCH") == writes


def test_ties_on_the_timestamp_go_to_the_later_arrival(live):
    box, handle = live
    call = next(c for c in finished_calls(box) if c["tags"])
    handle.deliver(envelope("call.ended", bare(call), call["ended_at"] + 30),
                   envelope("call.tagged", webhook_form(call, BASE[0]), call["ended_at"] + 30))
    handle.worker.run_once()
    task = box.sf_store.find_one("Task", CallObject=str(call["id"]))
    assert call["tags"][0]["name"] in task["CallDisposition"]


def test_a_call_the_events_describe_costs_no_aircall_request(live):
    box, handle = live
    calls = finished_calls(box)[:30]
    before = box.aircall_server.count()
    handle.deliver(*(envelope("call.ended", webhook_form(c, BASE[0]), c["ended_at"] + 30) for c in calls))
    handle.worker.run_once()
    assert len(box.sf_store.records("Task")) == 30
    assert box.aircall_server.count() == before


def test_unfinished_snapshots_write_nothing_and_a_finished_one_is_logged_at_once(live):
    """R-CALL-5 in live mode: no sync.lag; a call is logged as soon as a snapshot shows it finished."""
    box, handle = live
    call = finished_calls(box)[0]
    handle.deliver(envelope("call.created", dict(bare(call), status="initial", ended_at=None), call["started_at"]),
                   envelope("call.answered", dict(bare(call), status="answered", ended_at=None),
                            call["started_at"] + 5))
    result = handle.worker.run_once()
    assert result.events == 2 and box.sf_store.records("Task") == []
    # The webhook's clock may run a little ahead of ours: a call "ended" in our future is still finished.
    ahead = int((datetime.now(UTC) + timedelta(seconds=3)).timestamp())
    handle.deliver(envelope("call.hungup", dict(bare(call), ended_at=ahead), ahead))
    handle.worker.run_once()
    assert len(box.sf_store.records("Task")) == 1


def test_a_crm_that_refuses_makes_events_wait_and_retry_with_backoff(live):
    box, handle = live
    calls = finished_calls(box)[:10]
    handle.deliver(*(envelope("call.ended", webhook_form(c, BASE[0]), c["ended_at"] + 30) for c in calls))
    box.salesforce.app.faults.limit_exceeded_next(1)  # Salesforce's daily allowance is used up, for a moment
    now = datetime.now(UTC)
    result = handle.worker.run_once(now=now)
    assert result.retried == 10 and "REQUEST_LIMIT_EXCEEDED" in result.error
    assert box.sf_store.records("Task") == []
    stats = handle.inbox.stats()
    assert stats.depth == 10 and stats.failing == 10 and "salesforce stopped" in stats.last_error
    assert handle.inbox.due(now=now) == []  # not before the backoff
    status = CliRunner().invoke(app, ["--config", str(handle.settings.path), "status"])
    assert status.exit_code == 0, status.output
    assert "Live inbox: 10 event(s) waiting, the oldest for " in status.stdout
    assert "; 10 failed at least once, last error: salesforce stopped: Salesforce refused " in status.stdout
    # Front had nothing to fail: it logged them; tried again, Salesforce logs them and Front writes nothing.
    front_before = box.front_sandbox.server.count(method="POST")
    later = datetime.now(UTC) + timedelta(seconds=61)
    again = handle.worker.run_once(now=later)
    assert again.retried == 0 and again.calls == 10
    assert len(box.sf_store.records("Task")) == 10
    assert box.front_sandbox.server.count(method="POST") == front_before
    assert handle.inbox.stats().depth == 0


@pytest.mark.parametrize(("attempts", "low", "high"), [(1, 1, 2), (3, 4, 8), (6, 30, 60), (40, 30, 60)])
def test_backoff_doubles_and_is_capped_at_60_seconds(attempts, low, high):
    for seed in range(20):
        assert low <= backoff(attempts, random.Random(seed)) <= high


def test_the_reconciler_logs_calls_whose_events_never_came_and_leaves_the_watermark(live):
    box, handle = live
    maintenance = Maintenance(handle.settings, handle.state, handle.targets, handle.client, reconcile_first=False)
    try:
        summary = maintenance.reconcile(now=END + timedelta(minutes=30))
    finally:
        maintenance.write_lock.close()
    window = [c for c in finished_calls(box) if END - timedelta(hours=2) <= datetime.fromtimestamp(c["started_at"], UTC) < END]
    assert window and summary.calls == len(window)
    assert {t["CallObject"] for t in box.sf_store.records("Task")} == {str(c["id"]) for c in window}
    assert handle.state.get_watermark() is None
    last = handle.state.last_runs(1)[0]
    assert (last.command, last.outcome) == ("reconcile", "ok")
    status = CliRunner().invoke(app, ["--config", str(handle.settings.path), "status"])
    assert status.exit_code == 0, status.output
    assert "Live inbox: empty (0 event(s) kept for 30d)" in status.stdout
    assert (f"Last reconcile: {last.started_at:%Y-%m-%dT%H:%M:%SZ}, ok, {len(window)} call(s) "
            "(2026-10-31T10:00:00Z to 2026-10-31T12:00:00Z)") in status.stdout
    assert "Sync watermark: none yet" in status.stdout
