"""The locks beside the state file: one run of each kind, and one writer at a time (DESIGN §6, §10).

Two kinds of lock, both ``flock`` on small files next to the state file, which
the OS releases when their holder dies (a lock left by a killed run is simply
taken over; the files are never deleted, because deleting a file under
``flock`` lets two processes hold locks on two different files):

- the **run lock** of a command kind (``<state>.<kind>.lock``: ``sync``,
  ``backfill``, ``retry``, ``serve``), taken without waiting for the whole run.
  A second run of the same kind gives way at once (exit 4): two cron entries,
  or cron and a person. Runs of different kinds may go side by side.
- the **write lock** (``<state>.write.lock``), which every writer holds while it
  plans, writes and records a chunk, so that ``serve``, ``sync`` and
  ``backfill`` on one org never decide to create the same record twice. A
  writer that keeps it across chunks (a pipelined backfill) hands it over
  between chunks when another waits (:meth:`WriteLock.pass_if_wanted`).

``flock`` locks belong to an open file: two :class:`WriteLock` objects in one
process (``serve``'s worker and reconciler) exclude each other as two
processes do.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aircall_sync.dates import parse_utc_text, utc_text
from aircall_sync.errors import LockHeldError, StateError

__all__ = ["LockInfo", "RunLock", "WriteLock", "acquire_lock", "lock_path"]

log = logging.getLogger(__name__)


def lock_path(state_path: str | os.PathLike[str], kind: str) -> Path:
    """The file of a lock beside the state file: ``<state>.<kind>.lock``."""
    path = Path(os.fspath(state_path))
    return path.with_name(f"{path.name}.{kind}.lock")


def _open_lock_file(path: Path) -> int:
    try:
        if not path.parent.exists():
            path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StateError(
            f"cannot create lock file {path} ({exc.strerror or exc}); check that its "
            "directory is writable by this user, or set sync.state_path elsewhere"
        ) from exc


# --------------------------------------------------------------------------- run lock


@dataclass(frozen=True)
class LockInfo:
    """Who holds a run lock, as its holder wrote it into the lock file."""

    pid: int | None
    started_at: datetime | None
    command: str | None


class RunLock:
    """A run lock; release it (or leave the ``with`` block) when done."""

    def __init__(self, path: Path, fd: int, info: LockInfo):
        self.path = path
        self.info = info
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Release the lock. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # Empty the file first so that no one reads a finished run as holder.
            os.ftruncate(fd, 0)
        except OSError:
            log.debug("could not empty lock file %s", self.path, exc_info=True)
        finally:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _read_holder(fd: int) -> LockInfo:
    # The holder writes its details right after taking the lock; a reader can
    # land in between, so an empty file gets a few short retries.
    data = b""
    for attempt in range(5):
        try:
            data = os.pread(fd, 4096, 0)
        except OSError:
            data = b""
        if data.strip():
            break
        time.sleep(0.02 * (attempt + 1))
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return LockInfo(pid=None, started_at=None, command=None)
    if not isinstance(raw, dict):
        return LockInfo(pid=None, started_at=None, command=None)
    pid = raw.get("pid")
    command = raw.get("command")
    try:
        started = parse_utc_text(raw["started_at"]) if isinstance(raw.get("started_at"), str) else None
    except ValueError:
        started = None
    return LockInfo(
        pid=pid if isinstance(pid, int) else None,
        started_at=started,
        command=command if isinstance(command, str) else None,
    )


def _held_message(state_path: Path, holder: LockInfo) -> str:
    parts = [f"pid {holder.pid}" if holder.pid is not None else "pid unknown"]
    if holder.started_at is not None:
        parts.append(f"started {holder.started_at:%Y-%m-%d %H:%M:%S} UTC")
    if holder.command is not None:
        parts.append(f'command "{holder.command}"')
    return (
        f"another aircall-sync run holds the lock on {state_path} ({', '.join(parts)}); "
        "wait for it to finish or stop it"
    )


def acquire_lock(state_path: str | os.PathLike[str], command: str) -> RunLock:
    """Take the run lock of ``command``'s kind for the state file at ``state_path``, without waiting.

    Raises LockHeldError naming the holder when another run of that kind (in
    this or any other process) holds it.
    """
    path = Path(os.fspath(state_path))
    file = lock_path(path, command)
    fd = _open_lock_file(file)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        try:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StateError(f"cannot lock {file} ({exc.strerror or exc})") from exc
            raise LockHeldError(_held_message(path, _read_holder(fd))) from None
        finally:
            os.close(fd)
    info = LockInfo(pid=os.getpid(), started_at=datetime.now(UTC).replace(microsecond=0), command=command)
    try:
        body = json.dumps({"pid": info.pid, "started_at": utc_text(info.started_at), "command": command},
                          sort_keys=True, separators=(",", ":"))
        os.ftruncate(fd, 0)
        os.pwrite(fd, body.encode("utf-8"), 0)
    except OSError as exc:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        raise StateError(f"cannot write lock file {file} ({exc.strerror or exc})") from exc
    return RunLock(file, fd, info)


# --------------------------------------------------------------------------- write lock


class WriteLock:
    """The lock a writer holds while it plans, writes and records a chunk (DESIGN §10).

    Waiting is fair: a writer announces itself with a shared lock on
    ``<state>.write-wait.lock`` before it blocks on the write lock, and drops
    it once it holds the write lock. The holder sees the announcement
    (:meth:`wanted`) and, between chunks, hands over: it releases the write
    lock, waits until every announced writer holds it in turn (its exclusive
    lock on the wait file is granted only then), and queues again.
    """

    def __init__(self, state_path: str | os.PathLike[str]):
        self._write = _open_lock_file(lock_path(state_path, "write"))
        self._wait = _open_lock_file(lock_path(state_path, "write-wait"))
        self.held = False
        self.waited = 0.0  # seconds spent waiting for other writers, for the logs and tests

    def acquire(self) -> None:
        started = time.monotonic()
        fcntl.flock(self._wait, fcntl.LOCK_SH)
        try:
            fcntl.flock(self._write, fcntl.LOCK_EX)
        finally:
            fcntl.flock(self._wait, fcntl.LOCK_UN)
        self.held = True
        self.waited += time.monotonic() - started

    def release(self) -> None:
        if self.held:
            fcntl.flock(self._write, fcntl.LOCK_UN)
            self.held = False

    def wanted(self) -> bool:
        """Whether another writer waits for the lock."""
        try:
            fcntl.flock(self._wait, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self._wait, fcntl.LOCK_UN)
        return False

    def pass_if_wanted(self) -> bool:
        """Between chunks: let waiting writers go first, then take the lock again. True if it did."""
        if not self.held or not self.wanted():
            return False
        self.release()
        started = time.monotonic()
        fcntl.flock(self._wait, fcntl.LOCK_EX)  # granted once every waiter holds the write lock in turn
        fcntl.flock(self._wait, fcntl.LOCK_UN)
        self.waited += time.monotonic() - started
        self.acquire()
        return True

    def close(self) -> None:
        self.release()
        for fd in (self._write, self._wait):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> WriteLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
