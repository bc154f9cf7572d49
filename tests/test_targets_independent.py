"""One target's run-stopping error does not stop the other (issue 11, item 6).

Salesforce's daily API limit must not stop Front logging, nor a revoked Front
token stop Salesforce: the stopped target ends for the run, the other finishes,
the run reports both and exits with the worse code, and the stopped target's
calls are not checkpointed, so the next run picks them up (and the target that
finished writes nothing twice).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import write_settings
from typer.testing import CliRunner

from aircall_sync.cli import app, exit_code_for
from aircall_sync.errors import (
    CredentialsError,
    OrgMismatchError,
    ServiceError,
    TargetsStoppedError,
)
from aircall_sync.sandbox.front_api import DEFAULT_API_TOKEN as FRONT_TOKEN
from aircall_sync.sandbox.stack import Sandbox, SandboxOptions
from aircall_sync.targets.front_client import FrontClient
from aircall_sync.targets.salesforce_target import SalesforceTaskTarget

END = datetime(2026, 10, 31, 12, tzinfo=UTC)
FROM, TO = "2026-10-26", "2026-10-31"
runner = CliRunner()


@pytest.fixture
def box():
    sandbox = Sandbox(SandboxOptions(calls=120, seed=12, days=5, end=END)).start()
    yield sandbox
    sandbox.stop()


def config_for(box: Sandbox, tmp_path: Path, **sections) -> Path:
    settings = box.settings(tmp_path / "state.sqlite3", targets=("salesforce", "front"))
    settings["aircall"]["requests_per_minute"] = 60000
    settings["front"]["requests_per_minute"] = 60000
    for section, values in sections.items():
        settings[section].update(values)
    return write_settings(tmp_path / "settings.toml", settings)


def run(config: Path, *args: str):
    return runner.invoke(app, ["--config", str(config), *args])


def logged_calls(box: Sandbox) -> set[int]:
    """Calls the tool logs in both targets: settled, with an external number (R-CALL-4, R-FRONT-1)."""
    return {int(t["CallObject"]) for t in box.sf_store.records("Task")}


def front_external_ids(box: Sandbox) -> Counter:
    return Counter(m.external_id for c in box.front_store.conversations.values() for m in c.messages)


def front_comments(box: Sandbox) -> Counter:
    return Counter((c.id, comment.body) for c in box.front_store.conversations.values() for comment in c.comments)


def report_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def clean_run(tmp_path: Path) -> tuple[set[int], Counter, Counter]:
    """What one clean run of both targets writes on the same data: the reference."""
    box = Sandbox(SandboxOptions(calls=120, seed=12, days=5, end=END)).start()
    try:
        result = run(config_for(box, tmp_path / "clean"), "backfill", "--from", FROM, "--to", TO)
        assert result.exit_code == 0, result.output
        return logged_calls(box), front_external_ids(box), front_comments(box)
    finally:
        box.stop()


def test_salesforce_daily_limit_does_not_stop_front(box, tmp_path, monkeypatch):
    (tmp_path / "clean").mkdir()
    calls, external_ids, comments = clean_run(tmp_path)
    config = config_for(box, tmp_path)
    plan = SalesforceTaskTarget.plan

    def limit_reached(self, *args, **kwargs):
        box.salesforce.app.faults.limit_exceeded_next(1)  # the org's allowance runs out after sign-in
        return plan(self, *args, **kwargs)

    report = tmp_path / "report.jsonl"
    with monkeypatch.context() as patch:
        patch.setattr(SalesforceTaskTarget, "plan", limit_reached)
        first = run(config, "backfill", "--from", FROM, "--to", TO, "--report", str(report))
    assert first.exit_code == 1, first.output  # the worse outcome: a service error (exit 1)
    errors = first.stderr.strip().splitlines()
    assert errors[-2].startswith("error: salesforce stopped: Salesforce refused GET ")
    assert "REQUEST_LIMIT_EXCEEDED" in errors[-2] and "used up" in errors[-2]
    assert errors[-1] == "front finished; the calls salesforce did not log are left for the next run"
    assert "Traceback" not in first.output
    assert "salesforce: stopped before the end" in first.stdout
    # Front logged every call, Salesforce none; the report says so per target.
    assert box.sf_store.records("Task") == []
    assert front_external_ids(box) == external_ids and front_comments(box) == comments
    lines = report_lines(report)
    assert {line["target"] for line in lines} == {"front"}
    status = run(config, "status")
    assert "Unfinished backfill salesforce+front|" in status.stdout  # not checkpointed: the next run redoes it
    # The allowance has room again: the next run logs Salesforce, and sends Front nothing again.
    again = run(config, "backfill", "--from", FROM, "--to", TO, "--report", str(report))
    assert again.exit_code == 0, again.output
    assert logged_calls(box) == calls
    assert front_external_ids(box) == external_ids and front_comments(box) == comments
    assert {line["outcome"] for line in report_lines(report) if line["target"] == "front"} <= {"unchanged",
                                                                                                "skipped"}


def test_a_front_token_revoked_mid_run_does_not_stop_salesforce(box, tmp_path, monkeypatch):
    (tmp_path / "clean").mkdir()
    calls, external_ids, comments = clean_run(tmp_path)
    config = config_for(box, tmp_path)
    imported = []
    original = FrontClient.import_message

    def revoke_after_30(self, inbox_id, message):
        imported.append(message["external_id"])
        if len(imported) == 30:
            box.front_sandbox.app.api_token = "revoked-by-an-admin"  # every request from now on: 401
        return original(self, inbox_id, message)

    with monkeypatch.context() as patch:
        patch.setattr(FrontClient, "import_message", revoke_after_30)
        first = run(config, "backfill", "--from", FROM, "--to", TO)
    assert first.exit_code == 5, first.output  # a service refused the credentials
    errors = first.stderr.strip().splitlines()
    assert errors[-2].startswith("error: front stopped: Front refused the API token (HTTP 401")
    assert errors[-1] == "salesforce finished; the calls front did not log are left for the next run"
    assert logged_calls(box) == calls  # Salesforce finished the whole range
    partial = front_external_ids(box)
    assert 0 < len(partial) < len(external_ids)
    # The token is renewed: the next run logs the rest to Front, each message and comment once.
    box.front_sandbox.app.api_token = FRONT_TOKEN
    again = run(config, "backfill", "--from", FROM, "--to", TO)
    assert again.exit_code == 0, again.output
    assert front_external_ids(box) == external_ids
    assert front_comments(box) == comments
    assert logged_calls(box) == calls and len(box.sf_store.records("Task")) == len(calls)


def test_a_front_token_refused_at_sign_in_does_not_stop_salesforce_and_sync_keeps_its_watermark(box, tmp_path):
    config = config_for(box, tmp_path, front={"api_token": "an-old-front-token"}, sync={"revisit": "3650d"})
    result = run(config, "sync")
    assert result.exit_code == 5, result.output
    assert result.stderr.strip().splitlines()[-2].startswith("error: front stopped: Front refused the API token")
    assert "an-old-front-token" not in result.output
    assert len(box.sf_store.records("Task")) > 50  # Salesforce logged the window
    status = run(config, "status")
    assert "Sync watermark: none yet" in status.stdout  # Front's calls are read again by the next sync


@pytest.mark.parametrize(
    ("errors", "records_failed", "code"),
    [
        ({"salesforce": ServiceError("limit")}, 0, 1),
        ({"front": CredentialsError("revoked")}, 0, 5),
        ({"front": CredentialsError("revoked")}, 3, 5),
        ({"salesforce": OrgMismatchError("no Task")}, 0, 2),
        ({"salesforce": OrgMismatchError("no Task")}, 2, 2),
        ({"salesforce": ServiceError("down"), "front": CredentialsError("revoked")}, 0, 1),
        ({"salesforce": KeyError("bug")}, 0, 1),
    ],
)
def test_the_exit_code_is_the_worse_outcome(errors, records_failed, code):
    exc = TargetsStoppedError(errors, finished=[], records_failed=records_failed)
    assert exit_code_for(exc) == code


def test_a_bug_in_one_target_is_named_as_a_bug_without_a_traceback():
    exc = TargetsStoppedError({"front": KeyError("x")}, finished=["salesforce"])
    assert str(exc).splitlines() == [
        "front stopped: unexpected KeyError; this is a bug in aircall-sync (run again with --verbose for the "
        "traceback and report it)",
        "salesforce finished; the calls front did not log are left for the next run",
    ]
