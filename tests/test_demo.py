"""`demo`, `demo --live` and `sandbox --live`: the commands a new user tries first, run end to end."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest
from live_helpers import REPO, ServeProcess, wait_for
from typer.testing import CliRunner

from aircall_sync.cli import app
from aircall_sync.settings import load_settings

runner = CliRunner()


def test_demo_previews_logs_and_writes_nothing_twice():
    result = runner.invoke(app, ["demo", "--calls", "60"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "1. Preview: aircall-sync backfill --dry-run (nothing is written)" in out
    tasks = int(re.search(r"3\. What landed in the sandbox org: (\d+) Tasks", out).group(1))
    assert tasks > 40
    assert f"The org still holds {tasks} Tasks." in out


def test_demo_contacts_shows_matched_records_saved_in_the_aircall_phone_once():
    """Issue 14 (RULES §9): `demo --contacts` saves the matched records in the sandbox's Aircall phone, shows a
    few, and the second backfill sends no contact request."""
    result = runner.invoke(app, ["demo", "--calls", "80", "--contacts"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert re.search(r"Aircall contacts: \d+ matched record\(s\): \d+ would be created", out)
    saved = re.search(r"Aircall phone: (\d+) contacts carry a Salesforce record \((\d+) created, (\d+) existing", out)
    assert saved and int(saved.group(1)) > 5 and int(saved.group(1)) == int(saved.group(2)) + int(saved.group(3))
    assert len(re.findall(r"^   \d+  .+  \+\d+.*  \[Salesforce (Contact|Lead|Account) \w{18}\]$", out, re.M)) >= 2
    second = out.split("4. The same backfill again")[1]
    assert "Aircall contacts: 0 created, 0 updated" in second and "; 0 Aircall request(s)." in second


def test_demo_live_logs_each_placed_call_within_seconds_and_stops_serve_cleanly():
    result = runner.invoke(app, ["demo", "--live"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    delays = [float(d) for d in re.findall(r", ([\d.]+) s after Aircall delivered its end", out)]
    assert len(delays) == 6 and max(delays) < 10  # DESIGN §10's test bound
    assert "not logged" not in out
    assert "The org holds one Task per placed call" in out
    # RULES §7: messages, only seen through webhooks, land too.
    assert len(re.findall(r"  message \w+ \(inbound SMS\): Task 00T\w+ \"SMS received from .+\", [\d.]+ s after", out)) == 1
    assert len(re.findall(r"  message \w+ \(outbound WhatsApp\): Task 00T\w+ \"WhatsApp sent .+\"", out)) == 1
    # RULES §8: the first call's AI summary lands in its Task, after its summary.created event.
    [ai] = re.findall(r"  call (\d+): Task (00T\w+) now holds the AI summary \"(.+)\", ([\d.]+) s after Aircall "
                      r"delivered summary.created", out)
    assert float(ai[3]) < 10 and len(ai[2]) > 20
    assert "no AI summary" not in out
    assert "serve stopped on SIGTERM (exit 0)." in out


def test_sandbox_live_feeds_a_serve_started_with_its_settings(tmp_path):
    """`sandbox --live` registers a webhook for serve's port and writes the settings; serve then logs the
    calls the sandbox places."""
    settings_file = tmp_path / "sandbox.toml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRCALL_SYNC_")}
    env["PYTHONPATH"] = str(REPO)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sandbox = subprocess.Popen([sys.executable, "-m", "aircall_sync", "sandbox", "--calls", "20", "--live",
                                "--calls-per-hour", "600", "--time-scale", "0.02", "--serve-port", str(port), "--write-settings",
                                str(settings_file)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=env, cwd=str(tmp_path), start_new_session=True)
    serve = None
    try:
        wait_for(lambda: settings_file.exists() and settings_file.stat().st_size > 0 or sandbox.poll() is not None,
                 60, "the sandbox's settings")
        assert sandbox.poll() is None, sandbox.stderr.read()
        settings = load_settings(settings_file)
        assert settings.live.public_url == f"http://127.0.0.1:{port}/aircall/webhook"
        assert settings.live.webhook_token and settings.live.port == port
        serve = ServeProcess(settings_file, token="unused", port=port)
        serve.wait_ready()
        wait_for(lambda: "salesforce created" in serve.output, 60, "a placed call logged by serve")
    finally:
        if serve is not None:
            assert serve.stop() == 0
        os.killpg(sandbox.pid, signal.SIGINT)
        try:
            sandbox.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(sandbox.pid, signal.SIGKILL)
            sandbox.wait()
        sandbox.stderr.close()


@pytest.mark.parametrize(("args", "message"), [
    (["--live", "--calls-per-hour", "0"], "error: --calls-per-hour: expected more than 0 and at most 36000, got 0\n"),
    (["--live", "--serve-port", "70000"], "error: --serve-port: expected 1 to 65535, got 70000\n"),
    (["--live", "--time-scale", "0"], "error: --time-scale: expected 0.001 to 10, got 0\n"),
])
def test_sandbox_live_options_are_checked(args, message):
    result = runner.invoke(app, ["sandbox", *args])
    assert result.exit_code == 2 and result.stderr == message


