"""`replay`: stored webhook events processed again through the same plan (DESIGN §3, §10; issue 13).

Events are put into a real inbox and logged by the live worker with one set of
settings; `replay` (the CLI, in-process, against the sandbox over HTTP(S)) then
runs with others: Front enabled later, or a dry run, or one kind, or a range.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from live_helpers import envelope, finished_calls, webhook_form, worker_config
from message_helpers import lifecycle as message_lifecycle
from message_helpers import message
from typer.testing import CliRunner

from aircall_sync.cli import app
from aircall_sync.live.inbox import Inbox
from aircall_sync.live.worker import Worker
from aircall_sync.runner import aircall_client, connect_targets
from aircall_sync.sandbox.stack import Sandbox, SandboxOptions
from aircall_sync.settings import load_settings
from aircall_sync.state import State

END = datetime(2026, 10, 31, 12, tzinfo=UTC)
FROM, TO = "2026-10-29", "2026-10-31"
runner = CliRunner()
MESSAGES = [
    message("SMreplay01", created_ms=1793433600000),  # 2026-10-31 08:00 UTC
    message("SMreplay02", direction="outbound", body="Your order ships today", created_ms=1793437200000,
            external="+44 7700 900123"),
    message("SMreplay03", channel="whatsapp", body="Thanks!", created_ms=1793440800000),
]
OLD_MESSAGE = message("SMreplay00", created_ms=1793088000000)  # 2026-10-27: outside --from/--to


@pytest.fixture
def box():
    sandbox = Sandbox(SandboxOptions(calls=60, seed=23, days=3, end=END)).start()
    yield sandbox
    sandbox.stop()


def log_live(box: Sandbox, config: Path, calls: list[dict], messages: list[dict]) -> None:
    """What serve did: the events stored in the inbox, processed by the worker (Salesforce only)."""
    settings = load_settings(config)
    with State.open(settings.sync.state_path) as state, aircall_client(settings) as client:
        inbox = Inbox(state)
        for call in calls:
            body = envelope("call.ended", webhook_form(call, box.aircall_url), call["ended_at"] + 30)
            body.pop("token")
            inbox.put(body)
        for data in messages:
            for body in message_lifecycle(data):
                body.pop("token")
                inbox.put(body)
        worker = Worker(settings, state, connect_targets(settings, settings.enabled_targets(), state), client)
        assert worker.run_once().retried == 0
        worker.write_lock.close()


def front_external_ids(box: Sandbox) -> list[str]:
    return sorted(m.external_id for c in box.front_store.conversations.values() for m in c.messages)


def run(config: Path, *args: str):
    return runner.invoke(app, ["--config", str(config), *args])


def test_replay_after_enabling_front_writes_every_stored_message_and_call_to_front_once(box, tmp_path):
    calls = [c for c in finished_calls(box) if c["started_at"] >= datetime(2026, 10, 29, tzinfo=UTC).timestamp()][:12]
    log_live(box, worker_config(box, tmp_path, ("salesforce",)), calls, [*MESSAGES, OLD_MESSAGE])
    tasks = len(box.sf_store.records("Task"))
    assert front_external_ids(box) == []
    both = worker_config(box, tmp_path, ("salesforce", "front"))  # Front enabled later
    first = run(both, "replay", "--from", FROM, "--to", TO, "--report", str(tmp_path / "r.jsonl"))
    assert first.exit_code == 0, first.output
    ids = front_external_ids(box)
    for data in MESSAGES:
        assert ids.count(f"aircall-message-{data['id']}") == 1  # R-MSG-5, once each
    assert f"aircall-message-{OLD_MESSAGE['id']}" not in ids  # created before --from
    logged = {c["id"] for c in calls if c["raw_digits"] and c["raw_digits"] != "anonymous"}
    assert {int(i.split("-")[1]) for i in ids if not i.startswith("aircall-message-")} <= logged
    assert len(box.sf_store.records("Task")) == tasks  # Salesforce had them all: nothing written there
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert {line["message_id"] for line in lines if "message_id" in line} == {m["id"] for m in MESSAGES}
    assert {(line["target"], line["outcome"]) for line in lines if line["target"] == "salesforce"} <= {
        ("salesforce", "unchanged"), ("salesforce", "skipped")}
    # Again: everything is as it should be, nothing is sent.
    imports = box.front_sandbox.server.count(path_prefix="/inboxes/", method="POST")
    again = run(both, "replay", "--from", FROM, "--to", TO)
    assert again.exit_code == 0, again.output
    assert box.front_sandbox.server.count(path_prefix="/inboxes/", method="POST") == imports
    assert front_external_ids(box) == ids


def test_replay_dry_run_shows_the_plan_and_writes_nothing(box, tmp_path):
    log_live(box, worker_config(box, tmp_path, ("salesforce",)), [], MESSAGES)
    both = worker_config(box, tmp_path, ("salesforce", "front"))
    state = tmp_path / "state.sqlite3"
    before = state.read_bytes()
    plan = run(both, "replay", "--from", FROM, "--to", TO, "--dry-run", "--format", "json")
    assert plan.exit_code == 0, plan.output
    changes = json.loads(plan.stdout)["changes"]
    front = [c for c in changes if c["target"] == "front" and c["object"] == "message"]
    assert {c["message_id"] for c in front} == {m["id"] for m in MESSAGES}
    assert all("call_id" not in c for c in front)
    assert front_external_ids(box) == []
    assert state.read_bytes() == before


def test_replay_of_one_kind_and_bad_input(box, tmp_path):
    calls = [c for c in finished_calls(box) if c["started_at"] >= datetime(2026, 10, 29, tzinfo=UTC).timestamp()][:5]
    log_live(box, worker_config(box, tmp_path, ("salesforce",)), calls, MESSAGES)
    both = worker_config(box, tmp_path, ("salesforce", "front"))
    only_calls = run(both, "replay", "--from", FROM, "--to", TO, "--kind", "calls")
    assert only_calls.exit_code == 0, only_calls.output
    assert not [i for i in front_external_ids(box) if i.startswith("aircall-message-")]
    assert front_external_ids(box)
    bad = run(both, "replay", "--from", FROM, "--to", TO, "--kind", "sms")
    assert bad.exit_code == 2 and bad.stderr == 'error: --kind: expected one of calls, messages, all, got "sms"\n'


def test_replay_without_a_state_file_says_where_it_looked(box, tmp_path):
    config = worker_config(box, tmp_path, ("salesforce",))
    result = run(config, "replay", "--from", FROM, "--to", TO)
    assert result.exit_code == 2
    assert result.stderr == (f"error: no state file at {tmp_path / 'state.sqlite3'}: replay reads the webhook "
                             "events serve kept there, and none was kept with these settings\n")


def test_replay_of_an_empty_range_writes_nothing(box, tmp_path):
    log_live(box, worker_config(box, tmp_path, ("salesforce",)), [], MESSAGES)
    result = run(worker_config(box, tmp_path, ("salesforce", "front")), "-v", "replay", "--from", "2026-01-01",
                 "--to", "2026-01-02")
    assert result.exit_code == 0, result.output
    assert "no stored webhook events in this range" in result.output
    assert front_external_ids(box) == []
