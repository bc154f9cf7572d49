"""Runs against the sandbox over HTTP(S): budgets, dry runs, reports, failures, retries, sessions.

Request budgets are counted on the emulated Salesforce server (issue #3): a
1,000-call backfill over 300+ numbers uses at most 25 requests, and running it
again at most 5, writing nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import write_settings
from typer.testing import CliRunner

from aircall_sync.cli import app
from aircall_sync.sandbox.salesforce_api import OrgOptions, SalesforceFaults
from aircall_sync.sandbox.stack import Sandbox, SandboxOptions

END = datetime(2026, 10, 31, 12, tzinfo=UTC)
FROM, TO = "2026-10-26", "2026-10-31"
WRITES = ("/composite/sobjects", "/jobs/ingest")

runner = CliRunner()


def make_box(**kwargs) -> Sandbox:
    options = SandboxOptions(calls=kwargs.pop("calls", 300), seed=kwargs.pop("seed", 4), days=5,
                             end=kwargs.pop("end", END), **kwargs)
    return Sandbox(options).start()


@pytest.fixture
def box() -> Iterator[Sandbox]:
    sandbox = make_box()
    yield sandbox
    sandbox.stop()


def settings_for(box: Sandbox, tmp_path: Path, **sections) -> Path:
    settings = box.settings(tmp_path / "state.sqlite3")
    settings["aircall"]["requests_per_minute"] = 60000
    for section, values in sections.items():
        target = settings
        for part in section.split("."):
            target = target.setdefault(part, {})
        target.update(values)
    return write_settings(tmp_path / "settings.toml", settings)


def run(config: Path, *args: str):
    return runner.invoke(app, ["--config", str(config), *args])


def sf_requests(box: Sandbox, **filters) -> int:
    return box.salesforce.server.count(**filters)


def sf_writes(box: Sandbox) -> int:
    return sum(sf_requests(box, path_prefix=prefix, method=m) for prefix in WRITES for m in ("POST", "PATCH", "PUT"))


def tasks(box: Sandbox) -> list[dict]:
    return box.sf_store.records("Task")


def wait_for_bulk_jobs(box: Sandbox, seconds: float = 30) -> None:
    """Until the emulated org has ended every Bulk job (they run after the close answers)."""
    deadline = time.monotonic() + seconds
    while any(job.visible_state() not in ("JobComplete", "Failed") for job in box.salesforce.app._jobs.values()):
        assert time.monotonic() < deadline, "a Bulk job did not end"
        time.sleep(0.05)


# ---------------------------------------------------------------- budgets (counted on the sandbox)


@pytest.mark.slow
def test_budget_1000_calls_over_300_numbers(tmp_path):
    box = make_box(calls=1000, seed=9, pool_size=700)
    try:
        config = settings_for(box, tmp_path)
        numbers = {c["raw_digits"] for c in box.aircall_store.iter_calls(0, 2**40) if c["raw_digits"] != "anonymous"}
        assert len(numbers) >= 300
        before = sf_requests(box)
        first = run(config, "backfill", "--from", FROM, "--to", TO)
        assert first.exit_code == 0, first.output
        used = sf_requests(box) - before
        logged = len(tasks(box))
        assert logged >= 990
        assert used <= 25, f"{used} Salesforce requests for {logged} calls"

        before, writes_before = sf_requests(box), sf_writes(box)
        again = run(config, "backfill", "--from", FROM, "--to", TO)
        assert again.exit_code == 0, again.output
        assert sf_requests(box) - before <= 5
        assert sf_writes(box) == writes_before
        assert len(tasks(box)) == logged
        assert f"{logged} unchanged" in again.stdout
    finally:
        box.stop()


def test_a_lost_state_file_never_leads_to_duplicates(box, tmp_path):
    """DESIGN §6: the CRM is the source of truth; Tasks are found by CallObject."""
    config = settings_for(box, tmp_path)
    assert run(config, "backfill", "--from", FROM, "--to", TO).exit_code == 0
    logged = {t["CallObject"]: t["Id"] for t in tasks(box)}
    leads = len(box.sf_store.records("Lead"))
    (tmp_path / "state.sqlite3").unlink()
    again = run(config, "backfill", "--from", FROM, "--to", TO)
    assert again.exit_code == 0, again.output
    assert {t["CallObject"]: t["Id"] for t in tasks(box)} == logged
    assert len(box.sf_store.records("Lead")) == leads  # R-SF-MATCH-5: created Leads are found again
    assert "created" not in again.stdout.split("salesforce:")[1].split(".")[0]


# ---------------------------------------------------------------- dry run


def test_dry_run_writes_nothing_anywhere(box, tmp_path):
    config = settings_for(box, tmp_path)
    result = run(config, "backfill", "--from", FROM, "--to", TO, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Would create Task for call" in result.stdout
    assert "Nothing was written." in result.stdout
    assert tasks(box) == []
    assert sf_writes(box) == 0
    assert not (tmp_path / "state.sqlite3").exists()


def test_dry_run_json_is_one_document_with_the_contract_keys(box, tmp_path):
    config = settings_for(box, tmp_path, **{"salesforce.call_flow": {"missed": "skip"}})
    result = run(config, "backfill", "--from", FROM, "--to", TO, "--dry-run", "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {"changes", "summary"}
    actions = {c["action"] for c in doc["changes"]}
    assert {"create", "skip"} <= actions
    for change in doc["changes"]:
        assert {"call_id", "target", "object", "action", "fields"} <= set(change)
        assert isinstance(change["call_id"], int) and change["target"] == "salesforce"
        if change["action"] == "skip":
            assert change["reason"] == "call flow"
    task_creates = [c for c in doc["changes"] if c["object"] == "Task" and c["action"] == "create"]
    assert doc["summary"]["changes"]["salesforce"]["Task"]["create"] == len(task_creates)
    assert tasks(box) == []


def test_dry_run_after_a_run_shows_updates_with_old_and_new(box, tmp_path):
    config = settings_for(box, tmp_path)
    assert run(config, "backfill", "--from", FROM, "--to", TO).exit_code == 0
    call = next(c for c in box.aircall_store.iter_calls(0, 2**40)
                if c["status"] == "done" and c["raw_digits"] != "anonymous" and not c["comments"])
    box.aircall_store.add_comment(call["id"], "Customer asked for a callback")
    result = run(config, "backfill", "--from", FROM, "--to", TO, "--dry-run", "--format", "json")
    doc = json.loads(result.stdout)
    updates = [c for c in doc["changes"] if c["action"] == "update" and c["object"] == "Task"]
    assert [u["call_id"] for u in updates] == [call["id"]]
    old, new = updates[0]["diff"]["Description"]
    assert "Customer asked for a callback" in new and (old is None or "callback" not in old)
    assert "TaskSubtype" not in updates[0]["fields"]


# ---------------------------------------------------------------- changed calls, reports


def test_a_changed_call_updates_its_task_in_place(box, tmp_path):
    """R-FLOW-3: tags and comments added after the call update the same Task."""
    config = settings_for(box, tmp_path)
    assert run(config, "backfill", "--from", FROM, "--to", TO).exit_code == 0
    call = next(c for c in box.aircall_store.iter_calls(0, 2**40) if c["status"] == "done")
    task = box.sf_store.find_one("Task", CallObject=str(call["id"]))
    box.aircall_store.add_tags(call["id"], [box.aircall_store.world.tags[0].name])
    box.aircall_store.add_comment(call["id"], "Follow-up booked")
    report = tmp_path / "report.jsonl"
    result = run(config, "backfill", "--from", FROM, "--to", TO, "--report", str(report))
    assert result.exit_code == 0, result.output
    same = box.sf_store.find("Task", CallObject=str(call["id"]))
    assert [t["Id"] for t in same] == [task["Id"]]
    assert "Follow-up booked" in same[0]["Description"]
    assert box.aircall_store.world.tags[0].name in same[0]["CallDisposition"]
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    mine = [line for line in lines if line["call_id"] == call["id"]]
    assert mine == [{"call_id": call["id"], "target": "salesforce", "outcome": "updated",
                     "records": mine[0]["records"]}]
    assert mine[0]["records"]["Task"] == task["Id"]
    assert all(line["outcome"] == "unchanged" for line in lines if line["call_id"] != call["id"])


def test_report_has_one_line_per_call_and_target(box, tmp_path):
    config = settings_for(box, tmp_path, **{"salesforce.call_flow": {"voicemail": "skip"}})
    report = tmp_path / "r.jsonl"
    result = run(config, "backfill", "--from", FROM, "--to", TO, "--report", str(report))
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert len({line["call_id"] for line in lines}) == len(lines)
    outcomes = {line["outcome"] for line in lines}
    assert outcomes == {"created", "skipped"}
    for line in lines:
        if line["outcome"] == "skipped":
            assert line["reason"] == "call flow" and line["records"] == {}
        else:
            assert line["records"]["Task"].startswith("00T")


# ---------------------------------------------------------------- failures, status, retry


def test_failed_records_fail_alone_then_retry_lands_them(box, tmp_path):
    """A fallback owner who is inactive: the calls that fall to it fail, the rest land (exit 3)."""
    inactive = next(u["id"] for u in box.salesforce.summary.users if u.get("case") == "inactive")
    config = settings_for(box, tmp_path, **{"salesforce.matching": {"fallback_owner_id": inactive}})
    result = run(config, "backfill", "--from", FROM, "--to", TO)
    assert result.exit_code == 3, result.output
    assert "record(s) failed" in result.stderr
    assert "INACTIVE_OWNER_OR_USER" in result.stdout
    landed = len(tasks(box))
    assert landed > 0

    status = run(config, "status")
    assert status.exit_code == 0
    assert "Failed records" in status.stdout and "INACTIVE_OWNER_OR_USER" in status.stdout

    fixed = settings_for(box, tmp_path, **{"salesforce.matching": {"fallback_owner_id": ""}})
    retried = run(fixed, "retry")
    assert retried.exit_code == 0, retried.output
    assert len(tasks(box)) > landed
    assert "Failed records: none." in run(fixed, "status").stdout
    # Nothing was written twice along the way.
    ids = [t["CallObject"] for t in tasks(box)]
    assert len(ids) == len(set(ids))


def test_record_locks_are_retried_within_the_run(tmp_path):
    box = make_box(salesforce_faults=SalesforceFaults(seed=3, lock_probability=0.1))
    try:
        config = settings_for(box, tmp_path)
        result = run(config, "backfill", "--from", FROM, "--to", TO)
        assert result.exit_code == 0, result.output
        assert box.salesforce.app.faults.locks_injected > 0
        ids = [t["CallObject"] for t in tasks(box)]
        assert len(ids) == len(set(ids)) > 250
    finally:
        box.stop()


# ---------------------------------------------------------------- sessions


def test_an_expired_token_stops_with_exit_5(box, tmp_path):
    config = settings_for(box, tmp_path)
    box.salesforce.app.expire_sessions()
    result = run(config, "backfill", "--from", FROM, "--to", TO)
    assert result.exit_code == 5
    assert result.stderr.splitlines()[-1].startswith(
        "error: the Salesforce access token expired or was revoked (INVALID_SESSION_ID); get a new one")
    assert box.salesforce.app.auth.fixed_token not in result.output


def test_client_credentials_sign_in_again_when_the_session_expires(tmp_path):
    box = make_box(salesforce_faults=SalesforceFaults(expire_after_requests=4))
    try:
        config = settings_for(box, tmp_path, salesforce={
            "auth": "client_credentials", "access_token": "", "consumer_key": "sandbox-consumer-key",
            "consumer_secret": "sandbox-consumer-secret"})
        result = run(config, "backfill", "--from", FROM, "--to", TO)
        assert result.exit_code == 0, result.output
        assert sf_requests(box, path_prefix="/services/oauth2/token") >= 2
        ids = [t["CallObject"] for t in tasks(box)]
        assert len(ids) == len(set(ids)) > 250
        assert "sandbox-consumer-secret" not in result.output
    finally:
        box.stop()


def test_jwt_bearer_sign_in(tmp_path):
    from aircall_sync.sandbox.salesforce_api import AuthConfig
    from aircall_sync.sandbox.tls import generate_jwt_keypair

    key, cert = generate_jwt_keypair(tmp_path)
    box = make_box(salesforce_auth=AuthConfig(jwt_certificate=cert.read_bytes()),
                   salesforce_faults=SalesforceFaults(expire_after_requests=5))
    try:
        config = settings_for(box, tmp_path, salesforce={
            "auth": "jwt", "access_token": "", "consumer_key": "sandbox-consumer-key",
            "username": "integration@aircall-sync.sandbox", "private_key_file": str(key)})
        result = run(config, "backfill", "--from", FROM, "--to", TO)
        assert result.exit_code == 0, result.output
        assert sf_requests(box, path_prefix="/services/oauth2/token") >= 2  # signed in again after expiry
        assert len(tasks(box)) > 250
    finally:
        box.stop()


def test_password_sign_in(box, tmp_path):
    config = settings_for(box, tmp_path, salesforce={
        "auth": "password", "access_token": "", "username": "integration@aircall-sync.sandbox",
        "password": "sandbox-password", "security_token": "SANDBOXTOKEN",
        "consumer_key": "sandbox-consumer-key", "consumer_secret": "sandbox-consumer-secret"})
    result = run(config, "check")
    assert result.exit_code == 0, result.output
    assert "(password)" in result.stdout
    assert "sandbox-password" not in result.output and "SANDBOXTOKEN" not in result.output


def test_refused_client_credentials_exit_5(box, tmp_path):
    config = settings_for(box, tmp_path, salesforce={
        "auth": "client_credentials", "access_token": "", "consumer_key": "sandbox-consumer-key",
        "consumer_secret": "not-the-secret"})
    result = run(config, "check")
    assert result.exit_code == 5
    assert result.stderr.startswith("error: Salesforce refused the client_credentials login: ")
    assert "not-the-secret" not in result.output


# ---------------------------------------------------------------- bulk, lock, sync, explain, check


def test_bulk_api_above_the_threshold(box, tmp_path):
    config = settings_for(box, tmp_path, salesforce={"bulk_threshold": 50})
    result = run(config, "backfill", "--from", FROM, "--to", TO)
    assert result.exit_code == 0, result.output
    assert sf_requests(box, path_prefix="/services/data/v63.0/jobs/ingest", method="PUT") >= 1
    ids = [t["CallObject"] for t in tasks(box)]
    assert len(ids) == len(set(ids)) > 250


def test_a_bulk_job_left_processing_by_a_dead_run_is_waited_for_not_written_again(box, tmp_path, monkeypatch):
    """DESIGN §6: Salesforce goes on processing a closed job after the run that sent it died."""
    from aircall_sync.targets.salesforce import SalesforceOrg

    config = settings_for(box, tmp_path, salesforce={"bulk_threshold": 50})
    box.salesforce.app.bulk_queue_delay = 1.0  # the job waits in the queue: no Task is visible for a second

    def dies(self, job_id):
        raise KeyboardInterrupt  # the run stops right after closing its job, as a killed one does

    with monkeypatch.context() as patch:
        patch.setattr(SalesforceOrg, "bulk_wait", dies)
        first = run(config, "backfill", "--from", FROM, "--to", TO)
    assert first.exit_code != 0
    assert tasks(box) == []  # still queued
    second = run(config, "-v", "backfill", "--from", FROM, "--to", TO)
    assert second.exit_code == 0, second.output
    assert "left processing by an earlier run" in second.output
    wait_for_bulk_jobs(box)  # every job ended: a duplicate would be visible now
    call_objects = [t["CallObject"] for t in tasks(box)]
    assert len(call_objects) == len(set(call_objects)) > 250


def test_a_bulk_job_that_never_ends_stops_the_run_with_one_line(box, tmp_path, monkeypatch):
    from aircall_sync.targets import salesforce

    config = settings_for(box, tmp_path, salesforce={"bulk_threshold": 50})
    box.salesforce.app.bulk_queue_delay = 2.0
    monkeypatch.setattr(salesforce, "BULK_WAIT_LIMIT", 0.5)
    result = run(config, "backfill", "--from", FROM, "--to", TO)
    assert result.exit_code == 1
    assert result.output.splitlines()[-1].startswith("error: Salesforce Bulk job ")
    assert "minutes; run again later" in result.output and "Traceback" not in result.output
    wait_for_bulk_jobs(box)  # the job still lands: the next run waits for it (test above)


def test_a_second_run_while_the_lock_is_held_exits_4(box, tmp_path):
    from aircall_sync.state import acquire_lock

    config = settings_for(box, tmp_path)
    with acquire_lock(tmp_path / "state.sqlite3", "sync"):
        result = run(config, "sync")
    assert result.exit_code == 4
    assert "another aircall-sync run holds the lock" in result.stderr


def test_sync_starts_at_now_minus_revisit_and_moves_the_watermark(tmp_path):
    # sync reads up to the wall clock, so its calls are built relative to now, not at the fixed END:
    # a box at END held no call in the window once END was more than `revisit` ago (issue 11).
    box = make_box(end=datetime.now(UTC).replace(microsecond=0))
    try:
        config = settings_for(box, tmp_path, sync={"revisit": "30d"})
        result = run(config, "sync")
        assert result.exit_code == 0, result.output
        assert len(tasks(box)) > 250
        status = run(config, "status")
        assert "Sync watermark: 20" in status.stdout
        again = run(config, "sync")
        assert again.exit_code == 0
        assert "created" not in again.stdout.split("salesforce:")[1].split(".")[0]
    finally:
        box.stop()


def test_explain_shows_the_match_and_the_exact_task(box, tmp_path):
    config = settings_for(box, tmp_path)
    call = next(c for c in box.aircall_store.iter_calls(0, 2**40)
                if c["status"] == "done" and c["raw_digits"] == "+1 617-610-5413")
    result = run(config, "explain", str(call["id"]))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Call {call['id']}: ")
    assert "external number: +16176105413" in result.stdout
    assert "+16176105413 matches" in result.stdout
    assert f'CallObject = "{call["id"]}"' in result.stdout
    assert tasks(box) == []  # explain writes nothing


def test_explain_an_unknown_call(box, tmp_path):
    result = run(settings_for(box, tmp_path), "explain", "999")
    assert result.exit_code == 2
    assert result.stderr == "error: Aircall has no call 999 (or this API key cannot see it)\n"


def test_check_names_each_missing_field_and_the_setting_that_disables_it(tmp_path):
    box = make_box(salesforce_options=OrgOptions(task_type_visible=False,
                                                 missing_fields=frozenset({"Task.aircall__Country__c"})))
    try:
        result = run(settings_for(box, tmp_path), "check")
        assert result.exit_code == 2
        assert "Task.Type is not visible to the API user (R-SF-TASK-6)" in result.stderr
        assert ('Task.aircall__Country__c (salesforce.task.fields.country) does not exist or is hidden: create it, '
                'or set salesforce.task.fields.country = "" to stop writing it') in result.stderr
    finally:
        box.stop()


def test_values_removed_in_aircall_are_cleared_on_the_task(box, tmp_path):
    """R-FLOW-3: a comment deleted in Aircall leaves no stale Description; a checkbox is never nulled."""
    config = settings_for(box, tmp_path)
    assert run(config, "backfill", "--from", FROM, "--to", TO).exit_code == 0
    call = next(c for c in box.aircall_store.iter_calls(0, 2**40)
                if c["status"] == "done" and c["comments"] and not c["asset"] and not c["voicemail"])
    task = box.sf_store.find_one("Task", CallObject=str(call["id"]))
    assert task["Description"]
    box.aircall_store.update_call(call["id"], comments=[])
    result = run(config, "backfill", "--from", FROM, "--to", TO)
    assert result.exit_code == 0, result.output
    after = box.sf_store.find_one("Task", CallObject=str(call["id"]))
    assert after["Id"] == task["Id"]
    assert not after.get("Description")
    assert "1 updated" in result.stdout
