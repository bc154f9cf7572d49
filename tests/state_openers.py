"""Many processes opening one fresh state file at the same moment (issue 11, item 2).

Two cron entries (or cron and a person) starting together used to race on a
fresh state file: the loser could exit 1 saying the file was "not an
aircall-sync state file", or that it "stayed locked for more than 10 s". This
module drives that race with real processes, round after round, and counts
every opener that did not get what it should:

- a *run* (``sync``, ``backfill``) takes the run lock and then opens the state
  (as ``runner.execute`` does): it either holds the lock and opens the file, or
  gets ``LockHeldError`` (exit 4), never a ``StateError``;
- a *reader* (``status``, ``explain``, ``calls``) opens the state without the
  lock: it always opens it.

Used by ``tests/test_state_concurrency.py``, and runnable alone to measure a
failure rate over many rounds::

    python tests/state_openers.py --rounds 300 --processes 6
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROLES = ("run", "reader")


def _open_once(path: Path, role: str) -> str:
    from aircall_sync.errors import LockHeldError, StateError
    from aircall_sync.state import State, acquire_lock

    lock = None
    try:
        if role == "run":
            try:
                lock = acquire_lock(path, "sync")
            except LockHeldError:
                return "locked"
        with State.open(path) as state:
            if role == "run":
                state.finish_run(state.start_run("sync", {}), "ok", {})  # a write, as a run makes
            else:
                state.last_runs(5)  # a read, as status makes
        return "ok"
    except StateError as exc:
        return f"StateError: {exc}"
    except Exception as exc:  # noqa: BLE001 - counted, and shown, as a failure
        return f"{type(exc).__name__}: {exc}"
    finally:
        if lock is not None:
            lock.release()


def _worker(barrier, base: str, rounds: int, role: str, results) -> None:
    for n in range(rounds):
        path = Path(base) / f"round-{n}" / "state.sqlite3"
        try:
            barrier.wait(timeout=120)
        except Exception:  # noqa: BLE001 - a broken barrier ends the worker; the parent reports it
            results.put((n, role, "barrier broken"))
            return
        results.put((n, role, _open_once(path, role)))


def race(rounds: int, processes: int, base: Path) -> tuple[Counter, list[tuple[int, str, str]]]:
    """Run ``rounds`` rounds of ``processes`` openers (alternating roles) on fresh files under ``base``.

    Returns the outcome counts per role and the failures (round, role, message).
    """
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads or sockets
    barrier = ctx.Barrier(processes)
    results = ctx.Queue()
    for n in range(rounds):
        (base / f"round-{n}").mkdir(parents=True, exist_ok=True)
    roles = [ROLES[i % len(ROLES)] for i in range(processes)]
    workers = [ctx.Process(target=_worker, args=(barrier, str(base), rounds, role, results)) for role in roles]
    for w in workers:
        w.start()
    counts: Counter = Counter()
    failures: list[tuple[int, str, str]] = []
    try:
        for _ in range(rounds * processes):
            n, role, outcome = results.get(timeout=300)
            key = outcome if outcome in ("ok", "locked") else "failed"
            counts[(role, key)] += 1
            if key == "failed":
                failures.append((n, role, outcome))
    finally:
        for w in workers:
            w.join(timeout=60)
            if w.is_alive():
                w.kill()
    return counts, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--processes", type=int, default=6)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aircall-sync-openers-") as tmp:
        started = time.monotonic()
        counts, failures = race(args.rounds, args.processes, Path(tmp))
    openers = args.rounds * args.processes
    print(f"{args.rounds} rounds x {args.processes} processes = {openers} openers in "
          f"{time.monotonic() - started:.1f} s")
    for (role, outcome), n in sorted(counts.items()):
        print(f"  {role:6} {outcome:7} {n}")
    rounds_failed = len({n for n, _, _ in failures})
    print(f"failed openers: {len(failures)} ({len(failures) / openers:.2%}); rounds with a failure: "
          f"{rounds_failed} of {args.rounds} ({rounds_failed / args.rounds:.1%})")
    kinds = Counter(re.sub(r"\S*round-\d+\S*", "FILE", m).split(";")[0] for _, _, m in failures)
    for message, n in kinds.most_common(5):
        print(f"  {n} x {message}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.path.insert(0, os.fspath(Path(__file__).resolve().parent.parent))
    sys.exit(main())
