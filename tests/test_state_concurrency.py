"""Runs and readers started at the same moment on one state file (issue 11, item 2).

Processes, not threads, many rounds over: the race is between SQLite
connections of different processes opening a file that one of them is creating.
Before the fix, 47 of 500 rounds of 6 openers had one failing (9.4%).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from state_openers import race
from typer.testing import CliRunner

from aircall_sync.cli import app
from aircall_sync.errors import StateError
from aircall_sync.state import State, acquire_lock


def _assert_no_failure(rounds: int, processes: int, base: Path) -> None:
    counts, failures = race(rounds, processes, base)
    assert failures == [], failures[:5]
    runs = processes // 2 + processes % 2
    # Every round: each reader opened the file; among the runs, one or more held the lock in turn, the
    # others gave way (exit 4), and nothing else happened.
    assert counts[("reader", "ok")] == rounds * (processes // 2)
    assert counts[("run", "ok")] + counts[("run", "locked")] == rounds * runs
    assert counts[("run", "ok")] >= rounds
    for n in range(rounds):
        with State.open(base / f"round-{n}" / "state.sqlite3") as state:
            assert state.schema_version >= 1


def test_many_openers_of_one_fresh_file_all_get_what_they_should(tmp_path):
    _assert_no_failure(rounds=200, processes=6, base=tmp_path)


@pytest.mark.reliability_full
def test_many_openers_of_one_fresh_file_a_thousand_rounds(tmp_path):
    _assert_no_failure(rounds=1000, processes=6, base=tmp_path)


def test_a_run_that_gives_way_does_not_touch_the_state_file(tmp_path):
    """The run lock is taken before the state file is created or opened."""
    state_path = tmp_path / "state.sqlite3"
    settings = tmp_path / "settings.toml"
    settings.write_text(
        '[aircall]\napi_id = "id"\napi_token = "token"\nbase_url = "http://127.0.0.1:9/v1"\n'
        f'[sync]\nstate_path = "{state_path}"\n'
        '[front]\nenabled = true\napi_token = "front-token"\nbase_url = "http://127.0.0.1:9"\n',
        encoding="utf-8",
    )
    with acquire_lock(state_path, "sync"):
        result = CliRunner().invoke(app, ["--config", str(settings), "sync"])
    assert result.exit_code == 4, result.output
    assert result.stderr.startswith(f"error: another aircall-sync run holds the lock on {state_path} (pid ")
    assert not state_path.exists()


def test_a_reader_opens_the_file_while_a_run_holds_its_write_lock(tmp_path):
    path = tmp_path / "state.sqlite3"
    with State.open(path) as run, run.transaction():
        run.start_run("sync", {})
        with State.open(path) as reader:  # status, explain, calls: never wait for a run
            assert reader.last_runs(5) == []


def test_a_foreign_database_is_still_refused_after_the_race_fix(tmp_path):
    path = tmp_path / "other.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StateError, match="is an SQLite database but not an aircall-sync state file"):
        State.open(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # left as it was
    conn.close()
