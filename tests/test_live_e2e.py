"""The real `aircall-sync serve`, in a process of its own, fed over HTTP (DESIGN §10).

Deliveries are POSTed as Aircall sends them; what landed is read from the
emulated org. The test bound for "a record readable within a few seconds of
the delivery" is 10 s.
"""

from __future__ import annotations

import random
import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import write_settings
from live_helpers import TOKEN, ServeProcess, lifecycle, wait_for, webhook_form
from reliability_harness import cli_env
from typer.testing import CliRunner

from aircall_sync.cli import app
from aircall_sync.sandbox.server import Faults
from aircall_sync.sandbox.stack import Sandbox, SandboxOptions

END = datetime(2026, 10, 31, 12, tzinfo=UTC)
FROM, TO = "2026-10-29", "2026-10-31"
BOUND = 10.0  # seconds from a delivery to its record readable in the CRM (DESIGN §10's test bound)


def make_box(**options) -> Sandbox:
    return Sandbox(SandboxOptions(calls=120, seed=31, days=2, end=END, front=False, **options)).start()


def config_for(box: Sandbox, tmp: Path, **live) -> Path:
    settings = box.settings(tmp / "state.sqlite3")
    settings["aircall"]["requests_per_minute"] = 60000
    settings["live"] = {"webhook_token": "${AIRCALL_WEBHOOK_TOKEN}", **live}
    return write_settings(tmp / "settings.toml", settings)


def finished(box: Sandbox) -> list[dict]:
    calls = [c for c in box.aircall_store.iter_calls(0, 2**40) if c["status"] == "done" and c["ended_at"]]
    return sorted(calls, key=lambda c: (c["started_at"], c["id"]))


def task_ids(box: Sandbox) -> list[str]:
    return [t["CallObject"] for t in box.sf_store.records("Task")]


@pytest.fixture
def box():
    sandbox = make_box()
    yield sandbox
    sandbox.stop()


def events_for(box: Sandbox, calls: list[dict]) -> list[dict]:
    out = []
    for call in calls:
        for body in lifecycle(call):
            body["data"] = webhook_form(body["data"], box.aircall_url) if body["event"] != "call.created" else \
                body["data"]
            out.append(body)
    return out


def test_serve_logs_calls_within_seconds_and_stops_cleanly_on_sigterm(box, tmp_path):
    serve = ServeProcess(config_for(box, tmp_path))
    try:
        serve.wait_ready()
        calls = finished(box)[:25]
        rng = random.Random(3)
        bodies = events_for(box, calls)
        bodies += rng.sample(bodies, 20)  # Aircall delivers at least once
        for body in bodies:
            assert serve.post(body).status_code == 200
        wait_for(lambda: len(task_ids(box)) >= len(calls), BOUND, "every call logged")
        assert sorted(task_ids(box)) == sorted(str(c["id"]) for c in calls)  # once each
        # The records land before the worker marks their events done: wait for that before reading metrics.
        wait_for(lambda: serve.get("/readyz").json()["inbox_depth"] == 0, BOUND, "the inbox drained")
        metrics = serve.get("/metrics").text
        delivered = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                        if line.startswith("aircall_sync_deliveries_total{"))
        assert delivered == len(bodies)
        assert "aircall_sync_deliveries_duplicate_total 20.0" in metrics
        assert "aircall_sync_inbox_depth 0.0" in metrics
        assert "aircall_sync_delivery_to_record_seconds_count" in metrics
        assert serve.get("/healthz").status_code == 200
    finally:
        code = serve.stop(signal.SIGTERM)
    assert code == 0, serve.output
    assert "serve: stopped; 0 event(s) wait in the inbox" in serve.output
    assert TOKEN not in serve.output
    assert "Traceback" not in serve.output


def test_a_second_serve_on_the_same_state_exits_4(box, tmp_path):
    config = config_for(box, tmp_path)
    first = ServeProcess(config)
    try:
        first.wait_ready()
        second = ServeProcess(config)
        assert second.proc.wait(60) == 4
        second.stop()
        assert "another aircall-sync run holds the lock" in second.output
        assert 'command "serve"' in second.output
    finally:
        first.stop()


def test_serve_without_a_webhook_token_says_how_to_get_one(box, tmp_path):
    serve = ServeProcess(config_for(box, tmp_path), token="")
    assert serve.proc.wait(60) == 2
    serve.stop()
    assert "live.webhook_token: is required by serve" in serve.output
    assert "Traceback" not in serve.output


def test_a_port_in_use_is_one_line_and_exit_1(box, tmp_path):
    """Issue 12: a port in use is exit 1 naming the port (the machine's state, not a bad setting)."""
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["--config", str(config_for(box, tmp_path)), "serve", "--port",
                                          str(port)], env={"AIRCALL_WEBHOOK_TOKEN": TOKEN})
    finally:
        taken.close()
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: --port / live.port: cannot listen on 127.0.0.1:{port}: ")
    assert "another process listens there" in result.stderr


@pytest.mark.parametrize("round_", range(3))
def test_sigkill_at_any_moment_loses_no_acknowledged_event_and_writes_nothing_twice(tmp_path, round_):
    """Slow Salesforce answers keep batches in flight; serve is killed while they are, then started again."""
    box = make_box(salesforce_http_faults=Faults(seed=round_, p_slow=0.5, slow_ms=150,
                                                 path_prefix="/services/data"))
    config = config_for(box, tmp_path)
    calls = finished(box)[:60]
    bodies = events_for(box, calls)
    random.Random(round_).shuffle(bodies)
    acknowledged = 0
    try:
        serve = ServeProcess(config)
        serve.wait_ready()
        cut = len(bodies) // 2 + round_ * 7
        for body in bodies[:cut]:
            assert serve.post(body).status_code == 200
            acknowledged += 1
        # Some are written, some in flight: kill it now, without warning.
        wait_for(lambda: len(task_ids(box)) > 0, BOUND, "a first write")
        assert serve.kill() == -signal.SIGKILL
        serve = ServeProcess(config)
        serve.wait_ready()
        for body in bodies[cut:]:
            assert serve.post(body).status_code == 200
        logged = {str(c["id"]) for c in calls}
        wait_for(lambda: set(task_ids(box)) >= logged, 3 * BOUND, "every acknowledged call logged")
        wait_for(lambda: serve.get("/readyz").json()["inbox_depth"] == 0, BOUND, "the inbox drained")
        ids = task_ids(box)
        assert len(ids) == len(set(ids)) == len(calls)  # nothing twice, nothing lost
        assert serve.stop() == 0
    finally:
        box.stop()


def test_events_wait_while_salesforce_refuses_and_the_receiver_keeps_answering_200(box, tmp_path):
    serve = ServeProcess(config_for(box, tmp_path))
    try:
        serve.wait_ready()
        calls = finished(box)[:10]
        box.salesforce.app.faults.limit_exceeded_next(1)  # the next Salesforce request: REQUEST_LIMIT_EXCEEDED
        for body in events_for(box, calls):
            assert serve.post(body).status_code == 200
        wait_for(lambda: serve.get("/readyz").json()["failing"] > 0, BOUND, "a failed attempt")
        assert "salesforce stopped" in serve.output and "tried again at" in serve.output
        for body in events_for(box, finished(box)[10:12]):
            assert serve.post(body).status_code == 200  # receiving goes on
        wait_for(lambda: len(task_ids(box)) == 12, 70, "the calls logged once Salesforce accepts again")
    finally:
        assert serve.stop() == 0


def test_serve_and_a_backfill_side_by_side_write_nothing_twice(box, tmp_path):
    """DESIGN §10: writers take turns under the write lock; a backfill of the same calls creates nothing
    serve created, and the other way round."""
    import subprocess
    import sys

    from live_helpers import REPO

    config = config_for(box, tmp_path)
    serve = ServeProcess(config)
    try:
        serve.wait_ready()
        calls = finished(box)
        backfill = subprocess.Popen([sys.executable, "-m", "aircall_sync", "--config", str(config), "backfill",
                                     "--from", FROM, "--to", TO], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, env=cli_env(), cwd=str(REPO))
        for body in events_for(box, calls):
            assert serve.post(body).status_code == 200
        out, _ = backfill.communicate(timeout=300)
        assert backfill.returncode == 0, out
        wait_for(lambda: serve.get("/readyz").json()["inbox_depth"] == 0, 3 * BOUND, "the inbox drained")
        ids = task_ids(box)
        assert len(ids) == len(set(ids)) == len(calls)
        leads = [r["Phone"] for r in box.sf_store.records("Lead") if r.get("Company") == "Unknown company"]
        assert len(leads) == len(set(leads))  # one Lead per unknown number (R-SF-MATCH-5)
    finally:
        assert serve.stop() == 0


def test_the_webhook_token_appears_nowhere(box, tmp_path):
    """DESIGN §3: the webhook token is never logged, stored in the inbox, or echoed; a wrong one neither."""
    wrong = "FAKEwrongWEBHOOKtoken-Zq81"
    config = config_for(box, tmp_path)
    serve = ServeProcess(config, args=("--verbose", "--log-format", "json"))
    texts: dict[str, str] = {}
    try:
        serve.wait_ready()
        call = finished(box)[0]
        for body in events_for(box, [call]):
            assert serve.post(body).status_code == 200
        refused = serve.post(dict(events_for(box, [call])[1], token=wrong))
        assert refused.status_code == 401
        texts["refusal"] = refused.text
        wait_for(lambda: len(task_ids(box)) == 1, BOUND, "the call logged")
        texts["metrics"] = serve.get("/metrics").text
        texts["readyz"] = serve.get("/readyz").text
    finally:
        assert serve.stop() == 0
    texts["serve output"] = serve.output
    status = CliRunner().invoke(app, ["--config", str(config), "--verbose", "status"],
                                env={"AIRCALL_WEBHOOK_TOKEN": TOKEN})
    texts["status"] = status.output
    for file in tmp_path.glob("state.sqlite3*"):
        texts[file.name] = file.read_bytes().decode("latin-1")
    assert any('"message": "live: 1 call(s)' in line for line in serve.lines)  # JSON log lines
    for where, text in texts.items():
        for secret in (TOKEN, wrong):
            assert secret not in text, f"{secret} found in {where}"
