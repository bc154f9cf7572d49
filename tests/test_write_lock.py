"""The write lock writers take turns with, chunk by chunk (DESIGN §10), tested with processes."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from aircall_sync.errors import LockHeldError
from aircall_sync.locks import WriteLock, acquire_lock

CTX = multiprocessing.get_context("spawn")


def _increment(state: str, counter: str, times: int, start) -> None:
    start.wait(60)
    lock = WriteLock(state)
    for _ in range(times):
        with lock:
            # Read, then write: without mutual exclusion two writers lose each other's increments.
            value = int(Path(counter).read_text() or "0")
            time.sleep(0)  # let another process run here if it could
            Path(counter).write_text(str(value + 1))
    lock.close()


@pytest.mark.parametrize("round_", range(3))
def test_writers_of_several_processes_exclude_each_other(tmp_path, round_):
    state, counter = tmp_path / "state.sqlite3", tmp_path / "counter"
    counter.write_text("0")
    start = CTX.Event()
    procs = [CTX.Process(target=_increment, args=(str(state), str(counter), 60, start)) for _ in range(4)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert counter.read_text() == "240"


def _holder(state: str, log: str, holding, go_on) -> None:
    lock = WriteLock(state)
    lock.acquire()
    with open(log, "a") as f:
        f.write("A1\n")
    holding.set()
    deadline = time.monotonic() + 60
    while not lock.wanted():  # the other writer announces itself before it blocks
        assert time.monotonic() < deadline
        time.sleep(0.005)
    go_on.wait(60)
    assert lock.pass_if_wanted()
    with open(log, "a") as f:
        f.write("A2\n")
    lock.close()


def _waiter(state: str, log: str) -> None:
    lock = WriteLock(state)
    with lock:
        with open(log, "a") as f:
            f.write("B\n")
    lock.close()


@pytest.mark.parametrize("round_", range(5))
def test_a_holder_hands_over_between_chunks_to_a_waiting_writer(tmp_path, round_):
    state, log = tmp_path / "state.sqlite3", tmp_path / "log"
    holding, go_on = CTX.Event(), CTX.Event()
    a = CTX.Process(target=_holder, args=(str(state), str(log), holding, go_on))
    a.start()
    assert holding.wait(60)
    b = CTX.Process(target=_waiter, args=(str(state), str(log)))
    b.start()
    go_on.set()
    for p in (a, b):
        p.join(60)
        assert p.exitcode == 0
    assert log.read_text().split() == ["A1", "B", "A2"]


def test_nobody_waiting_means_not_wanted(tmp_path):
    lock = WriteLock(tmp_path / "state.sqlite3")
    with lock:
        assert not lock.wanted()
        assert not lock.pass_if_wanted()
        assert lock.held
    assert not lock.held
    lock.close()


def test_run_locks_of_different_kinds_do_not_exclude_each_other(tmp_path):
    path = tmp_path / "state.sqlite3"
    with acquire_lock(path, "serve"), acquire_lock(path, "sync"), acquire_lock(path, "backfill"):
        for kind in ("serve", "sync", "backfill"):
            with pytest.raises(LockHeldError):
                acquire_lock(path, kind)
