"""The webhook that feeds serve (DESIGN §10 "The webhook"), and the whole loop with the emulator delivering.

The Aircall emulator registers webhooks and delivers events as the vendor's
documentation says (at least once, out of order, retries, auto-disable); these
tests drive `webhooks install|list|check|remove`, `check`, serve's upkeep of
its webhook, and finally calls placed in the emulator, delivered to the real
`serve` over HTTPS and logged.
"""

from __future__ import annotations

import json
import re
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import write_settings
from live_helpers import ServeProcess, wait_for
from typer.testing import CliRunner

from aircall_sync.aircall.webhooks import AI_EVENTS, CALL_EVENTS, MESSAGE_EVENTS
from aircall_sync.cli import app
from aircall_sync.sandbox.stack import Sandbox, SandboxOptions
from aircall_sync.sandbox.tls import ensure_tls_files
from aircall_sync.sandbox.webhook_delivery import DeliveryOptions

END = datetime(2026, 10, 31, 12, tzinfo=UTC)
PUBLIC = "https://hooks.example.test/aircall/webhook"
runner = CliRunner()
#: What serve needs with the default settings: the call events, and the message events (RULES §7: a target
#: logs messages unless its [*.messages] log = "none").
NEEDED = CALL_EVENTS + MESSAGE_EVENTS


def config_for(box: Sandbox, tmp: Path, *, public_url: str = PUBLIC, token: str | None = "${AIRCALL_WEBHOOK_TOKEN}",
               lag: str = "30m", **live) -> Path:
    settings = box.settings(tmp / "state.sqlite3")
    settings["aircall"]["requests_per_minute"] = 60000
    settings["sync"]["lag"] = lag
    settings["live"] = {"public_url": public_url, **live}
    if token is not None:
        settings["live"]["webhook_token"] = token
    return write_settings(tmp / "settings.toml", settings)


def run(config: Path, *args: str, env: dict | None = None):
    return runner.invoke(app, ["--config", str(config), *args], env=env)


@pytest.fixture
def box():
    sandbox = Sandbox(SandboxOptions(calls=40, seed=8, days=2, end=END, front=False)).start()
    yield sandbox
    sandbox.stop()


def ours(box: Sandbox, url: str = PUBLIC) -> list:
    return [hook for hook in box.aircall_webhooks.all() if hook.url == url]


def test_install_subscribes_exactly_the_events_serve_needs_and_shows_the_token_once(box, tmp_path):
    config = config_for(box, tmp_path)
    result = run(config, "webhooks", "install", "--url", PUBLIC)
    assert result.exit_code == 0, result.output
    [hook] = ours(box)
    assert set(hook.events) == set(NEEDED) and len(hook.events) == len(NEEDED) == 15
    assert hook.active
    assert f"Created webhook {hook.webhook_id} for {PUBLIC} (15 events: " in result.stdout
    assert f"  export AIRCALL_WEBHOOK_TOKEN={hook.token}\n" in result.stdout
    assert result.stdout.count(hook.token) == 1
    again = run(config, "webhooks", "install", "--url", PUBLIC)
    assert again.exit_code == 2
    assert again.stderr == (f"error: a webhook already points at {PUBLIC} ({hook.webhook_id}); `aircall-sync webhooks "
                            "check` tells whether it is right, `aircall-sync webhooks remove` deletes it\n")
    assert len(ours(box)) == 1


def test_install_refuses_a_url_aircall_would_not_call(box, tmp_path):
    result = run(config_for(box, tmp_path), "webhooks", "install", "--url", "http://hooks.example.test/x")
    assert result.exit_code == 2
    assert result.stderr == ('error: --url / live.public_url: Aircall delivers only to https:// URLs with a valid '
                             'certificate, got "http://hooks.example.test/x"\n')
    assert box.aircall_webhooks.all() == []


def test_no_message_events_when_no_target_logs_messages(box, tmp_path):
    """DESIGN §10: the message events are subscribed only when a target logs messages (RULES §7, R-MSG-3)."""
    settings = box.settings(tmp_path / "state.sqlite3")
    settings["aircall"]["requests_per_minute"] = 60000
    settings["salesforce"]["messages"] = {"log": "none"}
    settings["live"] = {"public_url": PUBLIC, "webhook_token": "${AIRCALL_WEBHOOK_TOKEN}"}
    config = write_settings(tmp_path / "settings.toml", settings)
    result = run(config, "webhooks", "install", "--url", PUBLIC)
    assert result.exit_code == 0, result.output
    [hook] = ours(box)
    assert set(hook.events) == set(CALL_EVENTS) and len(hook.events) == 9


def test_R_AI_1_the_ai_events_are_subscribed_when_ai_is_on(box, tmp_path):
    """DESIGN §10: the five AI *.created events when aircall.ai.enabled: install subscribes them, check names them
    when missing, and serve's look at its webhook adds them back (with the full list)."""
    from aircall_sync.live.reconcile import Maintenance
    from aircall_sync.settings import load_settings

    config = config_for(box, tmp_path)
    assert run(config, "webhooks", "install", "--url", PUBLIC).exit_code == 0  # AI off: 15 events
    [hook] = ours(box)
    assert not set(AI_EVENTS) & set(hook.events)
    text = config.read_text().replace("[aircall]\n", "[aircall.ai]\nenabled = true\n\n[aircall]\n", 1)
    config.write_text(text)
    bad = run(config, "webhooks", "check")
    assert bad.exit_code == 2
    assert (f"the webhook {hook.webhook_id} is not subscribed to transcription.created, summary.created, "
            "topics.created, sentiment.created, action_item.created") in bad.stderr
    settings = load_settings(config, environ={"AIRCALL_WEBHOOK_TOKEN": "t"})
    from aircall_sync.runner import aircall_client
    from aircall_sync.state import State

    with State.open(tmp_path / "state.sqlite3") as state, aircall_client(settings) as client:
        result = Maintenance(settings, state, [], client).look_after_webhook()
    assert result is not None and not result.ok
    [hook] = ours(box)
    assert set(hook.events) == set(NEEDED) | set(AI_EVENTS) and len(hook.events) == 20
    ok = run(config, "webhooks", "check")
    assert ok.exit_code == 0, ok.output
    assert run(config, "webhooks", "remove").exit_code == 0
    fresh = run(config, "webhooks", "install", "--url", PUBLIC)
    assert fresh.exit_code == 0 and "(20 events: " in fresh.stdout
    [hook] = ours(box)
    assert set(AI_EVENTS) <= set(hook.events)


def test_list_shows_every_webhook_and_marks_ours_never_a_token(box, tmp_path):
    config = config_for(box, tmp_path)
    assert run(config, "webhooks", "install", "--url", PUBLIC).exit_code == 0
    box.aircall_webhooks.create({"url": "https://other.example.test/hook", "events": ["contact.created"]})
    result = run(config, "webhooks", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    [mine] = [line for line in lines if PUBLIC in line]
    assert mine.endswith("(ours: live.public_url)") and "active" in mine and "15 event(s)" in mine
    assert "ours" not in next(line for line in lines if "other.example.test" in line)
    for hook in box.aircall_webhooks.all():
        assert hook.token not in result.output


def test_check_names_what_is_wrong_with_the_webhook(box, tmp_path):
    config = config_for(box, tmp_path)
    missing = run(config, "webhooks", "check")
    assert missing.exit_code == 2
    assert f"no Aircall webhook points at {PUBLIC}: run `aircall-sync webhooks install --url {PUBLIC}`" in missing.stderr
    assert run(config, "webhooks", "install", "--url", PUBLIC).exit_code == 0
    [hook] = ours(box)
    ok = run(config, "webhooks", "check")
    assert ok.exit_code == 0 and f"Webhook {hook.webhook_id}: active, subscribed to every event serve needs" in ok.stdout
    box.aircall_webhooks.update(hook.webhook_id, {"active": False, "events": ["call.ended", "call.hungup"]})
    bad = run(config, "webhooks", "check")
    assert bad.exit_code == 2
    assert "error: 2 problem(s) with the webhook:" in bad.stderr
    assert f"the webhook {hook.webhook_id} is disabled" in bad.stderr
    assert "is not subscribed to call.tagged, call.untagged, call.commented" in bad.stderr


def test_check_includes_the_webhook_when_live_is_configured(box, tmp_path):
    config = config_for(box, tmp_path, token=None)
    assert run(config, "webhooks", "install", "--url", PUBLIC).exit_code == 0
    result = run(config, "check", env={"AIRCALL_WEBHOOK_TOKEN": ""})
    assert result.exit_code == 2
    assert "Webhook: " in result.stdout and "is active and subscribed to the 15 events serve needs" in result.stdout
    assert "live.webhook_token is not set: serve needs it" in result.stderr


def test_remove_ours_or_the_one_named(box, tmp_path):
    config = config_for(box, tmp_path)
    assert run(config, "webhooks", "install", "--url", PUBLIC).exit_code == 0
    other = box.aircall_webhooks.create({"url": "https://other.example.test/hook", "events": ["call.ended"]})
    [hook] = ours(box)
    result = run(config, "webhooks", "remove")
    assert result.exit_code == 0 and result.stdout == f"Removed webhook {hook.webhook_id}.\n"
    assert ours(box) == []
    named = run(config, "webhooks", "remove", other.webhook_id)
    assert named.exit_code == 0 and box.aircall_webhooks.all() == []
    unknown = run(config, "webhooks", "remove", "6b0a4f8e-0000-4000-8000-000000000000")
    assert unknown.exit_code == 2
    assert "Aircall has no webhook 6b0a4f8e-0000-4000-8000-000000000000" in unknown.stderr
    none = run(config, "webhooks", "remove")
    assert none.exit_code == 2 and f"no webhook points at {PUBLIC}" in none.stderr


def test_serve_enables_a_disabled_webhook_again_with_every_event(box, tmp_path):
    """A PUT without `events` would subscribe it to everything: the repair always sends the full list."""
    from aircall_sync.live.reconcile import Maintenance
    from aircall_sync.runner import aircall_client
    from aircall_sync.settings import load_settings
    from aircall_sync.state import State

    config = config_for(box, tmp_path)
    assert run(config, "webhooks", "install", "--url", PUBLIC).exit_code == 0
    [hook] = ours(box)
    box.aircall_webhooks.update(hook.webhook_id, {"active": False, "events": ["call.ended"]})
    settings = load_settings(config)
    with State.open(settings.sync.state_path) as state, aircall_client(settings) as client:
        upkeep = Maintenance(settings, state, [], client, reconcile_first=False)
        upkeep.look_after_webhook()
        upkeep.write_lock.close()
    [repaired] = ours(box)
    assert repaired.active and set(repaired.events) == set(NEEDED)
    [put] = [r for r in box.aircall_server.requests if r.method == "PUT"]
    assert put.path == f"/v1/webhooks/{hook.webhook_id}"
    status = run(config, "status")
    assert f"Webhook {hook.webhook_id} at {PUBLIC}: " in status.stdout and "(serve enabled it again)" in status.stdout


# ---------------------------------------------------------------- the whole loop


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


KINDS = [
    dict(kind="outbound_answered", tags=["VIP"], comments=["Call back on Monday"]),
    dict(kind="outbound_unanswered"),
    dict(kind="inbound_answered", tags=["Support"], transfer="user"),
    dict(kind="inbound_answered", conference=True),
    dict(kind="missed", missed_call_reason="agents_did_not_answer"),
    dict(kind="voicemail"),
    dict(kind="inbound_answered", external_number="+44 20 7946 0958"),  # a number no CRM record has, twice:
    dict(kind="missed", external_number="+44 20 7946 0958"),  # one Lead (R-SF-MATCH-5)
    dict(kind="missed", external_number="anonymous"),
    dict(kind="outbound_answered", recording=True, comments=["Sent the quote"]),
]


def test_calls_placed_in_aircall_are_logged_by_serve_as_a_backfill_would_log_them(tmp_path):
    """Aircall (emulated) delivers each call's events to serve over HTTPS, duplicated and out of order;
    serve logs them within the 10 s bound; a backfill then finds nothing to change (DESIGN §10)."""
    # A held-back event goes after the next one, or after 2 s when no other comes (60 s by default).
    delivery = DeliveryOptions(p_duplicate=0.3, p_reorder=0.3, reorder_hold_s=2.0, duplicate_delay_s=1.0)
    box = Sandbox(SandboxOptions(calls=30, seed=12, days=1, live=True, webhook_delivery=delivery,
                                 front=False)).start()
    try:
        tls = ensure_tls_files(box.ca_path.parent)
        port = _free_port()
        url = f"https://127.0.0.1:{port}/aircall/webhook"
        config = config_for(box, tmp_path, public_url=url, tls_cert_file=str(tls.server_cert),
                            tls_key_file=str(tls.server_key), port=port, lag="5m")
        installed = run(config, "webhooks", "install", "--url", url)
        assert installed.exit_code == 0, installed.output
        token = re.search(r"export AIRCALL_WEBHOOK_TOKEN=(\S+)", installed.stdout).group(1)
        serve = ServeProcess(config, token=token, port=port, verify=str(box.ca_path))
        try:
            serve.wait_ready()
            # Calls that started 15 emulated minutes ago: their whole lifecycle is due at once, and Aircall's
            # late rewrite of the REST record (20 minutes after each) is still ahead.
            start = datetime.now(UTC) - timedelta(minutes=15)
            placed = [box.traffic.place(at=start + timedelta(seconds=20 * i), talk_s=45, **spec)
                      for i, spec in enumerate(KINDS)]
            assert box.wait_idle(timeout=30, finalize=False), [
                (r.event, r.status, r.error) for r in box.webhook_delivery.log][-8:]
            delivered_at = datetime.now(UTC)
            wait_for(lambda: {str(c) for c in placed} <= {t["CallObject"] for t in box.sf_store.records("Task")},
                     10, "every placed call logged")
            assert (datetime.now(UTC) - delivered_at).total_seconds() < 10
            wait_for(lambda: serve.get("/readyz").json()["inbox_depth"] == 0, 10, "the inbox drained")
            log = box.webhook_delivery.log
            assert log and {r.status for r in log} == {200}  # every delivery acknowledged, at the first try
            # serve asked Aircall for none of these calls: the events carried them.
            assert not any(req for req in _aircall_paths(box) if re.fullmatch(r"/v1/calls/\d+", req))
        finally:
            assert serve.stop() == 0, serve.output
        tasks = [t["CallObject"] for t in box.sf_store.records("Task")]
        assert len(tasks) == len(set(tasks))
        assert len([r for r in box.sf_store.records("Lead") if r.get("Phone") == "+442079460958"]) == 1
        # What a backfill would do now, with the records serve wrote: nothing.
        day = start.date().isoformat()
        plan = run(config, "backfill", "--from", day, "--to", datetime.now(UTC).date().isoformat(), "--dry-run",
                   "--format", "json")
        assert plan.exit_code == 0, plan.output
        changes = [c for c in json.loads(plan.stdout)["changes"] if c["call_id"] in placed]
        assert changes and {c["action"] for c in changes} <= {"noop", "skip"}, [
            (c["call_id"], c["object"], c["action"], c.get("diff")) for c in changes if c["action"] not in ("noop",
                                                                                                         "skip")]
    finally:
        box.stop()


def _aircall_paths(box: Sandbox) -> list[str]:
    return [record.path for record in box.aircall_server.requests]


def test_after_an_outage_serve_enables_its_webhook_again_and_aircall_delivers_what_failed(tmp_path):
    """serve was down: Aircall's deliveries failed, it disabled the webhook after N consecutive failures and
    kept retrying the failed events (reference §1.5), while events that came up once it was disabled were
    never sent. serve starts: it enables the webhook again (full event list), the retries get through, and
    its first reconcile logs the calls whose events never came (DESIGN §10)."""
    # Retries every second at most, and never given up within the test (50 retries would be ~50 s: a loaded
    # machine can take longer than that to start serve).
    delivery = DeliveryOptions(max_consecutive_failures=3, backoff_base_s=0.2, backoff_cap_s=1.0, max_retries=10_000)
    box = Sandbox(SandboxOptions(calls=20, seed=14, days=1, live=True, webhook_delivery=delivery,
                                 front=False)).start()
    try:
        port = _free_port()
        receiver = box.register_receiver(port)
        settings = box.settings(tmp_path / "state.sqlite3", live=receiver)
        settings["sync"]["lag"] = "1m"  # the first reconcile reaches calls that ended minutes ago
        config = write_settings(tmp_path / "settings.toml", settings)
        start = datetime.now(UTC) - timedelta(minutes=15)
        placed = [box.traffic.place(at=start + timedelta(seconds=20 * i), talk_s=30, kind=kind)
                  for i, kind in enumerate(("inbound_answered", "outbound_answered", "missed"))]
        [hook] = box.aircall_webhooks.all()
        wait_for(lambda: not box.aircall_webhooks.find(hook.webhook_id).active, 30, "Aircall disabling the webhook")
        assert box.sf_store.records("Task") == []
        failed_before = len(box.webhook_delivery.log)
        serve = ServeProcess(config, port=port)
        try:
            serve.wait_ready()
            wait_for(lambda: {str(c) for c in placed} <= {t["CallObject"] for t in box.sf_store.records("Task")},
                     60, "every call logged")
            wait_for(lambda: any(r.status == 200 for r in box.webhook_delivery.log[failed_before:]), 60,
                     "a failed delivery retried successfully")
            again = box.aircall_webhooks.find(hook.webhook_id)
            assert again.active and set(again.events) == set(NEEDED)  # exactly what serve needs
            assert "enabled again" in serve.output
        finally:
            assert serve.stop() == 0
        tasks = [t["CallObject"] for t in box.sf_store.records("Task")]
        assert len(tasks) == len(set(tasks))
        status = run(config, "status")
        assert "(serve enabled it again)" in status.stdout
    finally:
        box.stop()

