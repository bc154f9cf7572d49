"""Local state: what was written where, checkpoints, run history (DESIGN §2, §6).

One SQLite file (stdlib ``sqlite3``) per installation, opened with
:meth:`State.open`. It holds, keyed by the Aircall call id (RULES R-CALL-7) and a
target name (``"salesforce"``, ``"front"``):

- the CRM ids written for a call and a hash of what was written, with a
  write-ahead ``pending`` mark set before a write whose outcome may be uncertain;
- keys of extras already posted once (Front comments, R-FRONT-5);
- a lookup cache (phone number -> CRM record) that outlives a run;
- the ``sync`` watermark;
- the window plan of each backfill range and which windows are done;
- run history and the records that failed.

The CRM stays the source of truth: a state file that is lost or moved aside is
safe to start afresh, because every write is first reconciled by its key in the
CRM. The state only saves requests and carries checkpoints.

Durability: WAL journal with ``synchronous=FULL`` so that a commit that returned
survives a power cut, not only a killed process. Several operations can be made
one commit with :meth:`State.transaction`; a backfill window is completed in the
same transaction as the records written for it (DESIGN §6).

Overlapping runs of one kind are stopped by :func:`acquire_lock` /
:meth:`State.lock`, and writers take turns chunk by chunk: both locks live in
:mod:`aircall_sync.locks`, beside the state file.

Timestamps are stored as fixed-width ISO-8601 UTC text
(``2026-11-21T10:00:00.000000Z``), so they read well in the ``sqlite3`` shell and
compare correctly as strings. Nothing secret is stored.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

from aircall_sync import __version__
from aircall_sync.dates import parse_utc_text, utc_text
from aircall_sync.errors import StateError
from aircall_sync.locks import LockInfo, RunLock, acquire_lock

__all__ = [
    "MIGRATIONS",
    "PENDING",
    "WRITTEN",
    "BackfillProgress",
    "ContactState",
    "Failure",
    "InsightState",
    "LockInfo",
    "Migration",
    "RecordState",
    "RunInfo",
    "RunLock",
    "State",
    "Window",
    "acquire_lock",
]

log = logging.getLogger(__name__)

PENDING: Literal["pending"] = "pending"
WRITTEN: Literal["written"] = "written"
RecordStatus = Literal["pending", "written"]

Window = tuple[int, int]
"""A backfill window: (start, end) in UNIX seconds, as the Aircall API takes them."""

# Marks the file as ours in the SQLite header ("ACLS"), so that pointing
# ``sync.state_path`` at some other database is refused instead of altered.
APPLICATION_ID = 0x41434C53

# How long a statement waits for another connection's write lock. Runs are
# serialised by the run lock, so this only covers short overlaps (``status``
# reading while a run commits, a WAL checkpoint).
BUSY_TIMEOUT_SECONDS = 10.0

# SQLite before 3.32 allows 999 bound variables per statement.
_CHUNK = 500

# Run history is pruned to this many rows: a cron job every five minutes would
# otherwise add 100,000 rows a year that nobody reads.
RUN_HISTORY = 1000

# Failure messages come from CRM APIs; a pathological one should not bloat the file.
_MAX_MESSAGE = 4000

_MIN_SQLITE = (3, 24, 0)  # UPSERT (INSERT ... ON CONFLICT DO UPDATE)

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

# os.umask is process-wide: serialise the few lines that change it.
_UMASK_LOCK = threading.Lock()

_SECRET_WORDS = ("token", "secret", "password", "authorization", "private_key")


# --------------------------------------------------------------------------- schema

Migration = str | Callable[[sqlite3.Connection], None]
"""A migration: an SQL script, or a function given the connection.

Either runs inside the migration transaction; a function must not commit.
"""

_SCHEMA_1 = f"""
PRAGMA application_id = {APPLICATION_ID};

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE records (
    call_id    INTEGER NOT NULL CHECK (typeof(call_id) = 'integer'),
    target     TEXT    NOT NULL CHECK (target <> ''),
    status     TEXT    NOT NULL CHECK (status IN ('pending', 'written')),
    crm_ids    TEXT    NOT NULL DEFAULT '{{}}',
    hash       TEXT    NOT NULL,
    updated_at TEXT    NOT NULL,
    PRIMARY KEY (call_id, target)
) WITHOUT ROWID;

CREATE TABLE posted (
    call_id   INTEGER NOT NULL CHECK (typeof(call_id) = 'integer'),
    target    TEXT    NOT NULL,
    key       TEXT    NOT NULL,
    posted_at TEXT    NOT NULL,
    PRIMARY KEY (call_id, target, key)
) WITHOUT ROWID;

CREATE TABLE cache (
    namespace  TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;

CREATE TABLE backfills (
    range_key   TEXT PRIMARY KEY,
    started_at  TEXT NOT NULL,
    finished_at TEXT
) WITHOUT ROWID;

CREATE TABLE backfill_windows (
    range_key    TEXT    NOT NULL REFERENCES backfills (range_key) ON DELETE CASCADE,
    seq          INTEGER NOT NULL,
    window_start INTEGER NOT NULL,
    window_end   INTEGER NOT NULL,
    completed_at TEXT,
    PRIMARY KEY (range_key, seq),
    UNIQUE (range_key, window_start, window_end)
) WITHOUT ROWID;

CREATE TABLE runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    command     TEXT    NOT NULL,
    args        TEXT    NOT NULL DEFAULT '{{}}',
    pid         INTEGER NOT NULL,
    version     TEXT    NOT NULL,
    started_at  TEXT    NOT NULL,
    finished_at TEXT,
    outcome     TEXT,
    counts      TEXT
);

CREATE TABLE failures (
    call_id         INTEGER NOT NULL CHECK (typeof(call_id) = 'integer'),
    target          TEXT    NOT NULL,
    object_name     TEXT    NOT NULL,
    code            TEXT    NOT NULL,
    message         TEXT    NOT NULL,
    run_id          INTEGER REFERENCES runs (id) ON DELETE SET NULL,
    first_failed_at TEXT    NOT NULL,
    last_failed_at  TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (call_id, target)
) WITHOUT ROWID;

CREATE INDEX failures_run ON failures (run_id);
"""

# Live mode (DESIGN §10): the inbox of webhook events, and per call (or message)
# the newest snapshot applied, so that an older one never overwrites it. Owned
# by aircall_sync.live.inbox.
_SCHEMA_2 = """
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe      TEXT    NOT NULL UNIQUE,
    event       TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    object_id   TEXT,
    event_ms    INTEGER NOT NULL,
    finished    INTEGER NOT NULL DEFAULT 0,
    started_at  INTEGER,
    received_at TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    next_try_at TEXT,
    done_at     TEXT
);

CREATE INDEX events_pending ON events (status, seq);
CREATE INDEX events_object ON events (kind, object_id, finished);
CREATE INDEX events_started ON events (kind, started_at);
CREATE INDEX events_done ON events (status, done_at);

CREATE TABLE live_objects (
    kind        TEXT    NOT NULL,
    object_id   TEXT    NOT NULL,
    applied_ms  INTEGER NOT NULL,
    applied_seq INTEGER NOT NULL,
    updated_at  TEXT    NOT NULL,
    PRIMARY KEY (kind, object_id)
) WITHOUT ROWID;
"""

# Messages (RULES §7): the tables above are keyed by an integer call id; a message is
# keyed there by a negative integer derived from its id (aircall.messages.message_key).
# This table maps that key back to the message id, so that status, reports and failures
# name "message <id>".
_SCHEMA_3 = """
CREATE TABLE messages (
    key        INTEGER PRIMARY KEY CHECK (typeof(key) = 'integer' AND key < 0),
    message_id TEXT    NOT NULL UNIQUE,
    created_at TEXT,
    seen_at    TEXT    NOT NULL
);
"""

# AI insights (RULES §8): per call and insight, what Aircall said. ``found`` keeps the insight's text
# (R-AI-3), so that re-writing a call (a tag added later) needs no request and an unchanged insight costs
# nothing; ``none`` is final (a 404 once the call settled, R-AI-1): the insight is never asked for again;
# ``asked`` is a 404 before that, asked again by a later run. ``asked_at`` is the last time Aircall was
# asked (or an event carried it).
_SCHEMA_4 = """
CREATE TABLE insights (
    call_id    INTEGER NOT NULL CHECK (typeof(call_id) = 'integer' AND call_id > 0),
    kind       TEXT    NOT NULL CHECK (kind IN ('summary', 'topics', 'sentiment', 'action_items',
                                                'transcription')),
    status     TEXT    NOT NULL CHECK (status IN ('found', 'none', 'asked')),
    text       TEXT    CHECK ((status = 'found') = (text IS NOT NULL)),
    asked_at   TEXT    NOT NULL,
    updated_at TEXT    NOT NULL,
    PRIMARY KEY (call_id, kind)
) WITHOUT ROWID;
"""

# Saving CRM records in the Aircall phone (RULES §9): one row per Salesforce record. ``saved_hash`` is the
# fingerprint of what was last saved (R-CONTACT-3: the same fingerprint costs no request); ``contact_id`` the
# Aircall contact it went to, ``ours`` whether aircall-sync created that contact (R-CONTACT-2). ``queued`` is
# the work still to do (the record as a contact, and the call that brought it), written in the same transaction
# as the call's outcomes, so a run killed before saving it leaves it for the next run. ``creating_at`` is set
# and committed before ``POST /v1/contacts`` and cleared with the answer: found set, the create may have landed,
# and Aircall is searched before any second create (Aircall has no upsert). ``skip_hash``: the record's
# fingerprint while it is not to be saved (created by aircall-sync for an unknown number, or with no number
# Aircall takes).
_SCHEMA_5 = """
CREATE TABLE aircall_contacts (
    record_id   TEXT    NOT NULL PRIMARY KEY CHECK (record_id <> ''),
    object      TEXT    NOT NULL,
    contact_id  INTEGER CHECK (contact_id IS NULL OR typeof(contact_id) = 'integer'),
    ours        INTEGER NOT NULL DEFAULT 0 CHECK (ours IN (0, 1)),
    saved_hash  TEXT,
    saved_at    TEXT,
    skip_hash   TEXT,
    skip_reason TEXT,
    queued      TEXT,
    queued_hash TEXT    CHECK ((queued IS NULL) = (queued_hash IS NULL)),
    creating_at TEXT,
    error_code  TEXT,
    error       TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    updated_at  TEXT    NOT NULL
) WITHOUT ROWID;

CREATE INDEX aircall_contacts_queued ON aircall_contacts (updated_at) WHERE queued IS NOT NULL;
"""

MIGRATIONS: list[Migration] = [
    _SCHEMA_1,
    _SCHEMA_2,
    _SCHEMA_3,
    _SCHEMA_4,
    _SCHEMA_5,
]
"""Schema migrations; entry ``n`` takes ``PRAGMA user_version`` from ``n`` to ``n+1``.

Append only: a released entry is never edited, because files in the field were
built from it.
"""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class RecordState:
    """What the state knows about one call in one target."""

    call_id: int
    target: str
    status: RecordStatus
    crm_ids: dict[str, str]
    """Object name -> CRM id, e.g. ``{"Task": "00T...", "Lead": "00Q..."}``."""
    hash: str
    """For ``written``: hash of what was written. For ``pending``: hash of what
    was being written when the mark was set (its outcome is unknown)."""
    updated_at: datetime

    @property
    def is_written(self) -> bool:
        return self.status == WRITTEN

    @property
    def is_pending(self) -> bool:
        return self.status == PENDING


@dataclass(frozen=True)
class BackfillProgress:
    """An unfinished backfill plan and what is left of it."""

    range_key: str
    started_at: datetime
    total_windows: int
    done_windows: int
    pending: tuple[Window, ...]


@dataclass(frozen=True)
class RunInfo:
    """One row of run history.

    ``outcome`` is ``None`` while the run's process is alive and has not
    finished, and ``"interrupted"`` when it died without finishing. Liveness
    is judged by pid on this host; a reused pid can only make a dead run look
    running, never a running one look interrupted.
    """

    id: int
    command: str
    args: dict[str, Any]
    pid: int
    version: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    counts: dict[str, Any]


@dataclass(frozen=True)
class Failure:
    """A record whose last write failed (shown by ``status``, pushed by ``retry``)."""

    call_id: int
    target: str
    object_name: str
    code: str
    message: str
    run_id: int | None
    first_failed_at: datetime
    last_failed_at: datetime
    attempts: int
    #: Set for a message (``call_id`` is then its negative key, RULES §7).
    message_id: str | None = None

    @property
    def label(self) -> str:
        """``call <id>`` or ``message <id>``, as status and reports name it."""
        if self.call_id < 0:
            return f"message {self.message_id or '(unknown id)'}"
        return f"call {self.call_id}"


@dataclass(frozen=True)
class InsightState:
    """What the state knows of one AI insight of one call (schema 4, RULES §8)."""

    kind: str
    status: Literal["found", "none", "asked"]
    text: str | None  # found: the insight's text (R-AI-3)
    asked_at: datetime

    @property
    def found(self) -> bool:
        return self.status == "found"

    @property
    def final(self) -> bool:
        """Nothing more to ask Aircall for: found, or known not to exist."""
        return self.status in ("found", "none")


@dataclass(frozen=True)
class ContactState:
    """What the state knows of one Salesforce record saved (or to save) in Aircall (schema 5, RULES §9)."""

    record_id: str
    object: str
    contact_id: int | None
    ours: bool  # aircall-sync created the Aircall contact
    saved_hash: str | None
    saved_at: datetime | None
    skip_hash: str | None
    skip_reason: str | None
    queued: dict[str, Any] | None  # what is still to save, with the call that brought it
    queued_hash: str | None
    creating_at: datetime | None  # a create was sent and its answer not recorded
    error_code: str | None
    error: str | None
    attempts: int
    updated_at: datetime


# --------------------------------------------------------------------------- helpers


def _now() -> datetime:
    return datetime.now(UTC)


_ts = utc_text
_parse_ts = parse_utc_text


def _opt_ts(text: str | None) -> datetime | None:
    return None if text is None else _parse_ts(text)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _chunks(items: list[Any], size: int = _CHUNK) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _call_id(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"call id must be an int, not {type(value).__name__}: {value!r}")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"call id {value} does not fit in 64 bits")
    return value


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, not {value!r}")
    return value


def _crm_ids(value: Any) -> dict[str, str | None]:
    if not isinstance(value, Mapping):
        raise TypeError(f"crm_ids must be a mapping of object name to id, not {value!r}")
    out: dict[str, str | None] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not (v is None or isinstance(v, str)):
            raise TypeError(f"crm_ids must map str to str (or None to remove), got {k!r}: {v!r}")
        out[k] = v
    return out


def _window(value: Any) -> Window:
    try:
        start, end = value
    except (TypeError, ValueError):
        raise ValueError(f"a window is a (start, end) pair, not {value!r}") from None
    for v in (start, end):
        if not isinstance(v, int) or isinstance(v, bool):
            raise TypeError(f"window bounds must be ints (UNIX seconds), not {value!r}")
    if start > end:
        raise ValueError(f"window {value!r} ends before it starts")
    return (start, end)


def _redact(args: Mapping[str, Any]) -> dict[str, Any]:
    # Run arguments are shown by `status`; keep a credential passed by mistake
    # out of the file rather than trust every caller.
    out: dict[str, Any] = {}
    for k, v in args.items():
        key = str(k)
        secret = any(word in key.lower() for word in _SECRET_WORDS)
        out[key] = "***" if secret and v not in (None, "") else v
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return True  # cannot tell; do not call a live run interrupted
    return True


def _sqlite_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    # Extended result codes carry the primary code in the low byte.
    return None if code is None else code & 0xFF


def _move_aside_hint(path: Path) -> str:
    return (
        f"move it aside with its {path.name}-wal and {path.name}-shm files "
        f"(e.g. mv {path} {path}.broken) and run again: the CRM is the source of truth, "
        "so a fresh state is safe and records already written are found again by their "
        "Aircall call id"
    )


def _translate(path: Path, exc: sqlite3.Error) -> StateError | None:
    """A one-line StateError for an sqlite3 error the user can act on, else None.

    Errors that mean a bug in this program (a constraint, a bad statement) are
    not translated: hiding them behind a friendly message would hide the bug.
    """
    code = _sqlite_code(exc)
    detail = str(exc)
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or (
        code is None and ("not a database" in detail or "malformed" in detail)
    ):
        return StateError(
            f"state file {path} is corrupted or not an aircall-sync state file ({detail}); "
            + _move_aside_hint(path)
        )
    if code == sqlite3.SQLITE_FULL:
        return StateError(f"no space left to write state file {path}; free some disk space and run again")
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StateError(
            f"state file {path} stayed locked by another process for more than "
            f"{BUSY_TIMEOUT_SECONDS:g} s ({detail}); run again when it is done"
        )
    if code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH):
        return StateError(
            f"cannot open state file {path} for writing ({detail}); check that it and its "
            "directory are writable by this user, or set sync.state_path elsewhere"
        )
    if code == sqlite3.SQLITE_IOERR:
        return StateError(f"I/O error on state file {path} ({detail}); check the disk and run again")
    return None


P = ParamSpec("P")
R = TypeVar("R")


def _db(method: Callable[P, R]) -> Callable[P, R]:
    """Serialise access to the connection and turn sqlite errors into StateError."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        self = args[0]
        assert isinstance(self, State)
        with self._mutex:
            self._connection()
            try:
                return method(*args, **kwargs)
            except sqlite3.Error as exc:
                err = _translate(self.path, exc)
                if err is None:
                    raise
                raise err from exc

    return wrapper


def _statements(script: str) -> Iterator[str]:
    # Connection.executescript() commits first, which would split a migration
    # into several transactions; so a script is run one statement at a time.
    buf = ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \t\r\n;"):
                yield buf
            buf = ""
    if buf.rstrip(";").strip():
        raise ValueError(f"migration script ends with an incomplete statement: {buf.strip()[:80]!r}")


# --------------------------------------------------------------------------- open


def _precreate(path: Path) -> None:
    # sqlite3 would create a missing file with the umask's mode (often 0644);
    # create it ourselves first so that it is 0600 from the first byte.
    try:
        if not path.parent.exists():
            path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.close(fd)
    except OSError as exc:
        raise StateError(
            f"cannot create state file {path} ({exc.strerror or exc}); check that its "
            "directory is writable by this user, or set sync.state_path elsewhere"
        ) from exc


def _user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _newer_error(path: Path, found: int, known: int) -> StateError:
    return StateError(
        f"state file {path} was written by a newer aircall-sync "
        f"(schema {found}, this version knows {known}); upgrade aircall-sync"
    )


def _check_ours(conn: sqlite3.Connection, path: Path, known: int) -> int:
    """Refuse a file that is not ours or is newer; the caller holds a transaction.

    The three reads must see one snapshot: read one by one, they could see
    another process's migration half before and half after its commit (no
    application id yet, but a schema version), and call a fresh file foreign.
    """
    app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    version = _user_version(conn)
    has_tables = conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite!_%' ESCAPE '!'"
    ).fetchone()[0]
    foreign = app_id not in (0, APPLICATION_ID) or (app_id == 0 and (version != 0 or has_tables))
    if foreign:
        raise StateError(
            f"{path} is an SQLite database but not an aircall-sync state file; "
            "set sync.state_path to a new file name (it is created on first run)"
        )
    if version > known:
        raise _newer_error(path, version, known)
    return version


def _migrate(conn: sqlite3.Connection, path: Path, migrations: list[Migration]) -> int:
    known = len(migrations)
    if _user_version(conn) == known:
        return known
    # IMMEDIATE takes the write lock before reading the version, so two
    # processes opening a fresh file at once cannot both migrate it; the file
    # is checked again under that lock, as it is now, before it is changed.
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = _check_ours(conn, path, known)
        for number in range(current, known):
            step = migrations[number]
            try:
                if isinstance(step, str):
                    for statement in _statements(step):
                        conn.execute(statement)
                else:
                    step(conn)
                # user_version lives in the header page and is part of the transaction.
                conn.execute(f"PRAGMA user_version = {number + 1}")
            except StateError:
                raise
            except Exception as exc:
                if isinstance(exc, sqlite3.Error) and _translate(path, exc) is not None:
                    raise
                raise StateError(
                    f"upgrading state file {path} from schema {number} to {number + 1} "
                    f"failed ({exc}); the file was left unchanged, report this as a bug"
                ) from exc
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return known


def _journal_wal(conn: sqlite3.Connection) -> str:
    """Switch the file to WAL (a no-op once it is), waiting for other openers.

    Changing the journal mode needs the file to itself, and SQLite answers
    SQLITE_BUSY at once instead of calling the busy handler when another
    connection reads or migrates it at that moment: two runs opening a fresh
    file together would see a false "stayed locked". So it is retried here,
    for as long as any other statement waits for a lock.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    pause = 0.005
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if _sqlite_code(exc) not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(
        str(path),
        timeout=BUSY_TIMEOUT_SECONDS,
        isolation_level=None,  # we issue BEGIN/COMMIT ourselves
        check_same_thread=False,  # guarded by State._mutex
    )
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        known = len(MIGRATIONS)
        # Checked before anything writes, so a foreign or newer file is not altered.
        conn.execute("BEGIN")
        try:
            _check_ours(conn, path, known)
        finally:
            if conn.in_transaction:  # SQLite may have ended it on an error (not a database, I/O)
                conn.execute("COMMIT")
        mode = _journal_wal(conn)
        if str(mode).lower() != "wal":
            # Happens on file systems without shared memory (NFS, some FUSE);
            # the rollback journal with synchronous=FULL is as safe, only slower.
            log.warning("state file %s: WAL journal not available, using %s", path, mode)
        conn.execute("PRAGMA synchronous = FULL")
        _migrate(conn, path, list(MIGRATIONS))
    except BaseException:
        conn.close()
        raise
    return conn


# --------------------------------------------------------------------------- state


class State:
    """An open state file. Use :meth:`open`; close it (or use ``with``) when done.

    One thread at a time may use it, not necessarily the one that opened it.
    Every write method is one transaction, or joins the enclosing
    :meth:`transaction`.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self._conn: sqlite3.Connection | None = conn
        self._mutex = threading.RLock()
        self._depth = 0

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> State:
        """Open (creating and migrating as needed) the state file at ``path``.

        Raises StateError for a file that is corrupted, not ours, from a newer
        version, or cannot be written.
        """
        p = Path(os.fspath(path))
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise StateError(
                f"aircall-sync needs SQLite {'.'.join(map(str, _MIN_SQLITE))} or newer, "
                f"this Python has {sqlite3.sqlite_version}; use a newer Python build"
            )
        with _UMASK_LOCK:
            # The -wal and -shm files are created by SQLite while we migrate;
            # SQLite copies the main file's mode, and the umask makes sure of it.
            old = os.umask(0o077)
            try:
                _precreate(p)
                try:
                    conn = _connect(p)
                except sqlite3.Error as exc:
                    err = _translate(p, exc)
                    if err is None:
                        raise
                    raise err from exc
            finally:
                os.umask(old)
        return cls(p, conn)

    def close(self) -> None:
        """Close the file; an open transaction is rolled back. Idempotent."""
        with self._mutex:
            if self._conn is None:
                return
            conn, self._conn = self._conn, None
            self._depth = 0
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            finally:
                conn.close()

    def __enter__(self) -> State:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._conn is None

    @property
    def schema_version(self) -> int:
        with self._mutex:
            return _user_version(self._connection())

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"state file {self.path} is closed")
        return self._conn

    def lock(self, command: str) -> RunLock:
        """Take the exclusive run lock beside this file (see :func:`acquire_lock`)."""
        return acquire_lock(self.path, command)

    # ---------------------------------------------------------------- transactions

    @contextmanager
    def transaction(self) -> Iterator[State]:
        """Make everything done inside one commit; any exception rolls it all back.

        Nests: an inner ``transaction()`` is a savepoint, so an exception caught
        inside the outer block undoes only the inner part. The thread that
        enters holds the state until the block ends.
        """
        with self._txn(write=True):
            yield self

    @contextmanager
    def _txn(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        with self._mutex:
            conn = self._connection()
            depth = self._depth
            savepoint = f"sp{depth}"
            try:
                if depth == 0:
                    # IMMEDIATE takes the write lock up front: a deferred
                    # transaction that later writes can fail with SQLITE_BUSY
                    # without waiting for the busy timeout.
                    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                elif write:
                    conn.execute(f"SAVEPOINT {savepoint}")
            except sqlite3.Error as exc:
                err = _translate(self.path, exc)
                if err is None:
                    raise
                raise err from exc
            # A nested read has nothing of its own to undo: the outer block decides.
            owns = depth == 0 or write
            undo = None if depth == 0 else savepoint
            self._depth = depth + 1
            try:
                yield conn
            except BaseException:
                self._depth = depth
                if owns:
                    self._rollback(conn, undo)
                raise
            self._depth = depth
            try:
                if depth == 0:
                    conn.execute("COMMIT")
                elif write:
                    conn.execute(f"RELEASE {savepoint}")
            except sqlite3.Error as exc:
                if owns:
                    self._rollback(conn, undo)
                err = _translate(self.path, exc)
                if err is None:
                    raise
                raise err from exc

    def _rollback(self, conn: sqlite3.Connection, savepoint: str | None) -> None:
        # Some errors (disk full, I/O) make SQLite roll back on its own; a
        # second ROLLBACK would then fail and mask the original exception.
        if self._conn is None or not conn.in_transaction:
            return
        try:
            if savepoint is None:
                conn.execute("ROLLBACK")
            else:
                conn.execute(f"ROLLBACK TO {savepoint}")
                conn.execute(f"RELEASE {savepoint}")
        except sqlite3.Error:
            log.debug("rollback of state file %s failed", self.path, exc_info=True)

    # ---------------------------------------------------------------- records

    @_db
    def get_record(self, call_id: int, target: str) -> RecordState | None:
        """What was written for ``call_id`` in ``target``, or None if nothing is known."""
        return self.get_records([call_id], target).get(call_id)

    @_db
    def get_records(self, call_ids: Iterable[int], target: str) -> dict[int, RecordState]:
        """Known records among ``call_ids`` in ``target`` (unknown ids are absent)."""
        _name(target, "target")
        ids = sorted({_call_id(c) for c in call_ids})
        out: dict[int, RecordState] = {}
        if not ids:
            return out
        with self._txn(write=False) as conn:
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    "SELECT call_id, status, crm_ids, hash, updated_at FROM records "
                    f"WHERE target = ? AND call_id IN ({marks})",
                    [target, *chunk],
                )
                for call_id, status, crm_ids, hash_, updated_at in rows:
                    out[call_id] = RecordState(
                        call_id=call_id,
                        target=target,
                        status=status,
                        crm_ids=json.loads(crm_ids),
                        hash=hash_,
                        updated_at=_parse_ts(updated_at),
                    )
        return out

    @_db
    def mark_pending(self, items: Iterable[tuple[int, str, str]]) -> None:
        """Write-ahead marks ``(call_id, target, hash)`` set before writing to the CRM.

        A record found ``pending`` later means a write whose outcome is unknown:
        the caller must look the record up in the CRM by its key. CRM ids
        already known for the record are kept.
        """
        now = _ts(_now())
        rows = [(_call_id(c), _name(t, "target"), _name(h, "hash"), now) for c, t, h in items]
        if not rows:
            return
        with self._txn(write=True) as conn:
            conn.executemany(
                "INSERT INTO records (call_id, target, status, crm_ids, hash, updated_at) "
                "VALUES (?, ?, 'pending', '{}', ?, ?) "
                "ON CONFLICT (call_id, target) DO UPDATE SET "
                "status = 'pending', hash = excluded.hash, updated_at = excluded.updated_at",
                rows,
            )

    @_db
    def mark_written(self, items: Iterable[tuple[int, str, Mapping[str, str | None], str]]) -> None:
        """Record ``(call_id, target, crm_ids, hash)`` as written.

        ``crm_ids`` is merged into the ids already stored (a key mapped to None
        is removed), so that writing only the Task of a call does not forget the
        Lead created for it in an earlier run.
        """
        now = _ts(_now())
        batch = [
            (_call_id(c), _name(t, "target"), _crm_ids(ids), _name(h, "hash")) for c, t, ids, h in items
        ]
        if not batch:
            return
        with self._txn(write=True) as conn:
            current: dict[tuple[int, str], dict[str, str]] = {}
            for target in {t for _, t, _, _ in batch}:
                ids = sorted({c for c, t, _, _ in batch if t == target})
                for chunk in _chunks(ids):
                    marks = ",".join("?" * len(chunk))
                    for call_id, crm_ids in conn.execute(
                        f"SELECT call_id, crm_ids FROM records WHERE target = ? AND call_id IN ({marks})",
                        [target, *chunk],
                    ):
                        current[(call_id, target)] = json.loads(crm_ids)
            rows = []
            for call_id, target, new_ids, hash_ in batch:
                merged = dict(current.get((call_id, target), {}))
                for k, v in new_ids.items():
                    if v is None:
                        merged.pop(k, None)
                    else:
                        merged[k] = v
                current[(call_id, target)] = merged
                rows.append((call_id, target, _dumps(merged), hash_, now))
            conn.executemany(
                "INSERT INTO records (call_id, target, status, crm_ids, hash, updated_at) "
                "VALUES (?, ?, 'written', ?, ?, ?) "
                "ON CONFLICT (call_id, target) DO UPDATE SET status = 'written', "
                "crm_ids = excluded.crm_ids, hash = excluded.hash, updated_at = excluded.updated_at",
                rows,
            )

    # ---------------------------------------------------------------- messages

    @_db
    def remember_messages(self, items: Iterable[tuple[int, str, datetime | None]]) -> None:
        """Map ``(key, message id, created_at)``: a message's integer key back to its id (schema 3)."""
        now = _ts(_now())
        rows = []
        for key, message_id, created in items:
            if _call_id(key) >= 0:
                raise ValueError(f"a message key is negative, got {key}")
            rows.append((key, _name(message_id, "message id"), _ts(created) if created else None, now))
        if not rows:
            return
        with self._txn(write=True) as conn:
            conn.executemany(
                "INSERT INTO messages (key, message_id, created_at, seen_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET seen_at = excluded.seen_at, "
                "created_at = coalesce(excluded.created_at, messages.created_at)",
                rows,
            )

    @_db
    def message_ids(self, keys: Iterable[int]) -> dict[int, str]:
        """Message key -> message id, for the keys known (calls' keys are never there)."""
        wanted = sorted({_call_id(k) for k in keys if isinstance(k, int) and k < 0})
        out: dict[int, str] = {}
        with self._txn(write=False) as conn:
            for chunk in _chunks(wanted):
                marks = ",".join("?" * len(chunk))
                out.update(conn.execute(f"SELECT key, message_id FROM messages WHERE key IN ({marks})", chunk))
        return out

    # ---------------------------------------------------------------- AI insights (RULES §8)

    @_db
    def get_insights(self, call_ids: Iterable[int]) -> dict[int, dict[str, InsightState]]:
        """Call id -> insight kind -> what is known (calls with nothing known are absent)."""
        ids = sorted({_call_id(c) for c in call_ids if isinstance(c, int) and c > 0})
        out: dict[int, dict[str, InsightState]] = {}
        with self._txn(write=False) as conn:
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                for call_id, kind, status, text, asked_at in conn.execute(
                    f"SELECT call_id, kind, status, text, asked_at FROM insights WHERE call_id IN ({marks})", chunk,
                ):
                    out.setdefault(call_id, {})[kind] = InsightState(kind, status, text, _parse_ts(asked_at))
        return out

    @_db
    def put_insights(self, items: Iterable[tuple[int, str, str, str | None]],
                     at: datetime | None = None) -> set[int]:
        """Record ``(call_id, kind, status, text)``: ``found`` with its text, ``none``, or ``asked``.

        An insight found is never taken back by a later ``none`` or ``asked`` (Aircall does not delete
        them; a 404 then is a glitch), and ``asked`` never undoes a final ``none``. Returns the calls whose
        found text is new or changed: the only ones whose records must be written again.
        """
        when = _ts(at or _now())
        rows = []
        for call_id, kind, status, text in items:
            if status not in ("found", "none", "asked"):
                raise ValueError(f"unknown insight status {status!r}")
            if (status == "found") != (text is not None):
                raise ValueError("an insight found has a text, and only then")
            rows.append((_call_id(call_id), _name(kind, "insight kind"), status, text))
        if not rows:
            return set()
        changed: set[int] = set()
        with self._txn(write=True) as conn:
            for call_id, kind, status, text in rows:
                row = conn.execute("SELECT status, text FROM insights WHERE call_id = ? AND kind = ?",
                                   (call_id, kind)).fetchone()
                if row is not None and row[0] == "found" and status != "found":
                    status, text = "found", row[1]  # kept; only asked_at moves
                elif row is not None and row[0] == "none" and status == "asked":
                    status = "none"
                if status == "found" and (row is None or row[1] != text):
                    changed.add(call_id)
                conn.execute(
                    "INSERT INTO insights (call_id, kind, status, text, asked_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (call_id, kind) DO UPDATE SET status = excluded.status, text = excluded.text, "
                    "asked_at = excluded.asked_at, updated_at = CASE WHEN insights.status = excluded.status AND "
                    "insights.text IS excluded.text THEN insights.updated_at ELSE excluded.updated_at END",
                    (call_id, kind, status, text, when, when),
                )
        return changed

    # ---------------------------------------------------------------- Aircall contacts (RULES §9)

    _CONTACT_COLUMNS = ("record_id, object, contact_id, ours, saved_hash, saved_at, skip_hash, skip_reason, queued, "
                        "queued_hash, creating_at, error_code, error, attempts, updated_at")

    @staticmethod
    def _contact(row: tuple) -> ContactState:
        (record_id, obj, contact_id, ours, saved_hash, saved_at, skip_hash, skip_reason, queued, queued_hash,
         creating_at, error_code, error, attempts, updated_at) = row
        return ContactState(record_id, obj, contact_id, bool(ours), saved_hash, _opt_ts(saved_at), skip_hash,
                            skip_reason, json.loads(queued) if queued else None, queued_hash, _opt_ts(creating_at),
                            error_code, error, attempts, _parse_ts(updated_at))

    @_db
    def get_contacts(self, record_ids: Iterable[str]) -> dict[str, ContactState]:
        """Salesforce record id -> what is known of it as an Aircall contact (unknown records are absent)."""
        ids = sorted({_name(r, "record id") for r in record_ids})
        out: dict[str, ContactState] = {}
        with self._txn(write=False) as conn:
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                for row in conn.execute(f"SELECT {self._CONTACT_COLUMNS} FROM aircall_contacts "
                                        f"WHERE record_id IN ({marks})", chunk):
                    out[row[0]] = self._contact(row)
        return out

    @_db
    def queued_contacts(self) -> list[ContactState]:
        """The records waiting to be saved, oldest first."""
        with self._txn(write=False) as conn:
            return [self._contact(row) for row in conn.execute(
                f"SELECT {self._CONTACT_COLUMNS} FROM aircall_contacts WHERE queued IS NOT NULL "
                "ORDER BY updated_at, record_id")]

    @_db
    def queue_contacts(self, items: Iterable[tuple[str, str, str, Mapping[str, Any]]]) -> None:
        """Queue ``(record_id, object, hash, payload)``: the record to save, replacing what waited for it."""
        now = _ts(_now())
        rows = [(_name(r, "record id"), _name(o, "object"), _dumps(dict(p)), _name(h, "hash"), now)
                for r, o, h, p in items]
        if not rows:
            return
        with self._txn(write=True) as conn:
            conn.executemany(
                "INSERT INTO aircall_contacts (record_id, object, queued, queued_hash, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (record_id) DO UPDATE SET object = excluded.object, "
                "queued = excluded.queued, queued_hash = excluded.queued_hash, updated_at = excluded.updated_at",
                rows,
            )

    @_db
    def skip_contacts(self, items: Iterable[tuple[str, str, str, str]]) -> None:
        """Record ``(record_id, object, hash, reason)``: not to be saved while the record hashes to ``hash``."""
        now = _ts(_now())
        rows = [(_name(r, "record id"), _name(o, "object"), _name(h, "hash"), reason, now) for r, o, h, reason in items]
        if not rows:
            return
        with self._txn(write=True) as conn:
            conn.executemany(
                "INSERT INTO aircall_contacts (record_id, object, skip_hash, skip_reason, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (record_id) DO UPDATE SET skip_hash = excluded.skip_hash, "
                "skip_reason = excluded.skip_reason, queued = NULL, queued_hash = NULL, error_code = NULL, "
                "error = NULL, attempts = 0, updated_at = excluded.updated_at",
                rows,
            )

    @_db
    def contact_creating(self, record_id: str, at: datetime | None = None) -> None:
        """The write-ahead mark, committed before ``POST /v1/contacts`` (its answer may be lost)."""
        with self._txn(write=True) as conn:
            conn.execute("UPDATE aircall_contacts SET creating_at = ?, updated_at = ? WHERE record_id = ?",
                         (_ts(at or _now()), _ts(_now()), _name(record_id, "record id")))

    @_db
    def contact_found(self, record_id: str, contact_id: int | None, ours: bool) -> None:
        """The Aircall contact of a record, known before it is written to (or forgotten: ``contact_id`` None,
        when Aircall no longer has it). A contact found clears the create mark: it is the one to update."""
        with self._txn(write=True) as conn:
            conn.execute(
                "UPDATE aircall_contacts SET contact_id = ?, ours = ?, creating_at = CASE WHEN ? IS NULL THEN "
                "creating_at ELSE NULL END, updated_at = ? WHERE record_id = ?",
                (contact_id, int(bool(ours) and contact_id is not None), contact_id, _ts(_now()),
                 _name(record_id, "record id")))

    @_db
    def contact_saved(self, record_id: str, contact_id: int, ours: bool, hash_: str) -> None:
        """The record is in Aircall as it hashes to ``hash_``: nothing waits for it any more."""
        now = _ts(_now())
        with self._txn(write=True) as conn:
            conn.execute(
                "UPDATE aircall_contacts SET contact_id = ?, ours = ?, saved_hash = ?, saved_at = ?, "
                "queued = CASE WHEN queued_hash = ? THEN NULL ELSE queued END, "
                "queued_hash = CASE WHEN queued_hash = ? THEN NULL ELSE queued_hash END, "
                "creating_at = NULL, skip_hash = NULL, skip_reason = NULL, error_code = NULL, error = NULL, "
                "attempts = 0, updated_at = ? WHERE record_id = ?",
                (int(contact_id), int(bool(ours)), _name(hash_, "hash"), now, hash_, hash_, now,
                 _name(record_id, "record id")))

    @_db
    def contact_failed(self, record_id: str, code: str, message: str, *, again: bool,
                       clear_creating: bool = False) -> None:
        """A save that failed. ``again``: it stays queued for the next run (a transient failure, or a create
        whose outcome is unknown); otherwise it waits until the record changes or is logged again.
        ``clear_creating``: the create was refused, so nothing was created (the mark goes)."""
        with self._txn(write=True) as conn:
            conn.execute(
                "UPDATE aircall_contacts SET error_code = ?, error = ?, attempts = attempts + 1, "
                "queued = CASE WHEN ? THEN queued ELSE NULL END, "
                "queued_hash = CASE WHEN ? THEN queued_hash ELSE NULL END, "
                "creating_at = CASE WHEN ? THEN NULL ELSE creating_at END, updated_at = ? WHERE record_id = ?",
                (_name(code, "code"), str(message)[:_MAX_MESSAGE], int(again), int(again), int(clear_creating),
                 _ts(_now()), _name(record_id, "record id")))

    @_db
    def contact_counts(self) -> dict[str, int]:
        """For ``status``: records saved, contacts aircall-sync created, waiting, failed, not saved on purpose."""
        with self._txn(write=False) as conn:
            row = conn.execute(
                "SELECT count(saved_hash), coalesce(sum(ours AND contact_id IS NOT NULL), 0), count(queued), "
                "count(error), count(skip_hash), count(creating_at) FROM aircall_contacts").fetchone()
        return dict(zip(("saved", "created", "queued", "failed", "skipped", "creating"), row, strict=True))

    @_db
    def contact_failures(self, limit: int = 50) -> list[ContactState]:
        """The records whose last save failed, newest first."""
        with self._txn(write=False) as conn:
            return [self._contact(row) for row in conn.execute(
                f"SELECT {self._CONTACT_COLUMNS} FROM aircall_contacts WHERE error IS NOT NULL "
                "ORDER BY updated_at DESC, record_id LIMIT ?", (limit,))]

    # ---------------------------------------------------------------- posted extras

    @_db
    def is_posted(self, call_id: int, target: str, key: str) -> bool:
        row = self._connection().execute(
            "SELECT 1 FROM posted WHERE call_id = ? AND target = ? AND key = ?",
            (_call_id(call_id), target, key),
        ).fetchone()
        return row is not None

    @_db
    def posted_keys(self, call_id: int, target: str) -> set[str]:
        rows = self._connection().execute(
            "SELECT key FROM posted WHERE call_id = ? AND target = ?", (_call_id(call_id), target)
        )
        return {key for (key,) in rows}

    @_db
    def get_posted(self, call_ids: Iterable[int], target: str) -> dict[int, set[str]]:
        """Batched :meth:`posted_keys`: call id -> keys (ids with none are absent)."""
        ids = sorted({_call_id(c) for c in call_ids})
        out: dict[int, set[str]] = {}
        with self._txn(write=False) as conn:
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                for call_id, key in conn.execute(
                    f"SELECT call_id, key FROM posted WHERE target = ? AND call_id IN ({marks})",
                    [target, *chunk],
                ):
                    out.setdefault(call_id, set()).add(key)
        return out

    @_db
    def mark_posted(self, items: Iterable[tuple[int, str, str]]) -> None:
        """Remember ``(call_id, target, key)`` extras as posted; repeats are ignored."""
        now = _ts(_now())
        rows = [(_call_id(c), _name(t, "target"), _name(k, "key"), now) for c, t, k in items]
        if not rows:
            return
        with self._txn(write=True) as conn:
            conn.executemany(
                "INSERT INTO posted (call_id, target, key, posted_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                rows,
            )

    # ---------------------------------------------------------------- lookup cache

    @_db
    def cache_get(
        self, namespace: str, keys: Iterable[str], *, max_age: timedelta | None = None
    ) -> dict[str, Any]:
        """Cached JSON values for those of ``keys`` present (and younger than ``max_age``)."""
        wanted = sorted(set(keys))
        out: dict[str, Any] = {}
        cutoff = _ts(_now() - max_age) if max_age is not None else None
        with self._txn(write=False) as conn:
            for chunk in _chunks(wanted):
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT key, value FROM cache WHERE namespace = ? AND key IN ({marks})"
                params: list[Any] = [namespace, *chunk]
                if cutoff is not None:
                    sql += " AND updated_at >= ?"
                    params.append(cutoff)
                for key, value in conn.execute(sql, params):
                    out[key] = json.loads(value)
        return out

    @_db
    def cache_put(self, namespace: str, mapping: Mapping[str, Any]) -> None:
        """Store (or replace) JSON-serialisable values under ``namespace``."""
        _name(namespace, "namespace")
        now = _ts(_now())
        rows = [(namespace, _name(k, "cache key"), _dumps(v), now) for k, v in mapping.items()]
        if not rows:
            return
        with self._txn(write=True) as conn:
            conn.executemany(
                "INSERT INTO cache (namespace, key, value, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (namespace, key) DO UPDATE SET "
                "value = excluded.value, updated_at = excluded.updated_at",
                rows,
            )

    @_db
    def cache_delete(self, namespace: str, keys: Iterable[str]) -> None:
        rows = [(namespace, k) for k in set(keys)]
        if not rows:
            return
        with self._txn(write=True) as conn:
            conn.executemany("DELETE FROM cache WHERE namespace = ? AND key = ?", rows)

    # ---------------------------------------------------------------- tables owned elsewhere

    @contextmanager
    def sql(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        """The connection, inside a transaction (joining an enclosing one), for the modules that own
        tables of this file (the live inbox); errors become StateError as everywhere here."""
        with self._mutex:
            self._connection()
            try:
                with self._txn(write=write) as conn:
                    yield conn
            except sqlite3.Error as exc:
                err = _translate(self.path, exc)
                if err is None:
                    raise
                raise err from exc

    @_db
    def get_meta(self, key: str) -> Any:
        """A JSON value kept under ``key`` in the meta table (None when absent)."""
        row = self._connection().execute("SELECT value FROM meta WHERE key = ?", (_name(key, "key"),)).fetchone()
        return None if row is None else json.loads(row[0])

    @_db
    def set_meta(self, key: str, value: Any) -> None:
        with self._txn(write=True) as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                         "value = excluded.value", (_name(key, "key"), _dumps(value)))

    # ---------------------------------------------------------------- watermark

    @_db
    def get_watermark(self) -> datetime | None:
        """The end of the last ``sync`` range (UTC), or None before the first sync."""
        row = self._connection().execute("SELECT value FROM meta WHERE key = 'sync.watermark'").fetchone()
        return None if row is None else _parse_ts(row[0])

    @_db
    def set_watermark(self, dt: datetime) -> None:
        """Move the watermark to ``dt`` (aware). It may move back: that only re-reads calls."""
        if dt.tzinfo is None or dt.utcoffset() is None:
            raise ValueError("the watermark must be a time-zone aware datetime")
        with self._txn(write=True) as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('sync.watermark', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (_ts(dt),),
            )

    # ---------------------------------------------------------------- backfill checkpoints

    @_db
    def start_backfill(self, range_key: str, windows: Iterable[Window]) -> None:
        """Record a new window plan for ``range_key``, replacing any earlier one.

        Call it when :meth:`unfinished_backfill` returned None (a first or a
        completed range starts over); otherwise resume with its windows.
        """
        _name(range_key, "range key")
        plan = [_window(w) for w in windows]
        if len(set(plan)) != len(plan):
            raise ValueError(f"backfill plan for {range_key!r} lists a window twice")
        with self._txn(write=True) as conn:
            conn.execute(
                "INSERT INTO backfills (range_key, started_at, finished_at) VALUES (?, ?, NULL) "
                "ON CONFLICT (range_key) DO UPDATE SET "
                "started_at = excluded.started_at, finished_at = NULL",
                (range_key, _ts(_now())),
            )
            conn.execute("DELETE FROM backfill_windows WHERE range_key = ?", (range_key,))
            conn.executemany(
                "INSERT INTO backfill_windows (range_key, seq, window_start, window_end) "
                "VALUES (?, ?, ?, ?)",
                [(range_key, seq, start, end) for seq, (start, end) in enumerate(plan)],
            )

    @_db
    def unfinished_backfill(self, range_key: str) -> BackfillProgress | None:
        """The plan of ``range_key`` if a run started it and did not finish it, else None.

        The plan may have no pending window left (a run killed between its last
        window and :meth:`finish_backfill`); the caller then only finishes it.
        """
        with self._txn(write=False) as conn:
            row = conn.execute(
                "SELECT started_at FROM backfills WHERE range_key = ? AND finished_at IS NULL",
                (range_key,),
            ).fetchone()
            if row is None:
                return None
            return self._progress(conn, range_key, row[0])

    @_db
    def unfinished_backfills(self) -> list[BackfillProgress]:
        """Every unfinished backfill plan, oldest first (for ``status``)."""
        with self._txn(write=False) as conn:
            rows = conn.execute(
                "SELECT range_key, started_at FROM backfills WHERE finished_at IS NULL "
                "ORDER BY started_at, range_key"
            ).fetchall()
            return [self._progress(conn, key, started) for key, started in rows]

    @staticmethod
    def _progress(conn: sqlite3.Connection, range_key: str, started_at: str) -> BackfillProgress:
        rows = conn.execute(
            "SELECT window_start, window_end, completed_at FROM backfill_windows "
            "WHERE range_key = ? ORDER BY seq",
            (range_key,),
        ).fetchall()
        pending = tuple((s, e) for s, e, done in rows if done is None)
        return BackfillProgress(
            range_key=range_key,
            started_at=_parse_ts(started_at),
            total_windows=len(rows),
            done_windows=len(rows) - len(pending),
            pending=pending,
        )

    @_db
    def pending_windows(self, range_key: str) -> list[Window]:
        """Windows of the unfinished plan not completed yet, in plan order ([] if none).

        Windows are completed in order, so this is the first unfinished window
        and every window after it.
        """
        progress = self.unfinished_backfill(range_key)
        return [] if progress is None else list(progress.pending)

    @_db
    def complete_window(self, range_key: str, window: Window) -> None:
        """Mark ``window`` of the unfinished plan done.

        Call it inside the :meth:`transaction` that records what was written
        for the window, so both are committed together or not at all.
        """
        start, end = _window(window)
        with self._txn(write=True) as conn:
            cur = conn.execute(
                "UPDATE backfill_windows SET completed_at = coalesce(completed_at, ?) "
                "WHERE range_key = ? AND window_start = ? AND window_end = ? AND range_key IN "
                "(SELECT range_key FROM backfills WHERE range_key = ? AND finished_at IS NULL)",
                (_ts(_now()), range_key, start, end, range_key),
            )
            if cur.rowcount != 1:
                raise ValueError(f"window {(start, end)} is not part of an unfinished backfill of {range_key!r}")

    @_db
    def finish_backfill(self, range_key: str) -> None:
        """Mark the plan complete: running the same range again starts over."""
        with self._txn(write=True) as conn:
            cur = conn.execute(
                "UPDATE backfills SET finished_at = coalesce(finished_at, ?) WHERE range_key = ?",
                (_ts(_now()), range_key),
            )
            if cur.rowcount != 1:
                raise ValueError(f"no backfill of {range_key!r} was started")
            # The windows served only to resume; the finished row stays for history.
            conn.execute("DELETE FROM backfill_windows WHERE range_key = ?", (range_key,))

    # ---------------------------------------------------------------- runs

    @_db
    def start_run(self, command: str, args: Mapping[str, Any]) -> int:
        """Record the start of a run by this process; returns its id."""
        _name(command, "command")
        with self._txn(write=True) as conn:
            cur = conn.execute(
                "INSERT INTO runs (command, args, pid, version, started_at) VALUES (?, ?, ?, ?, ?)",
                (command, _dumps(_redact(args)), os.getpid(), __version__, _ts(_now())),
            )
            run_id = cur.lastrowid
            assert run_id is not None
            conn.execute("DELETE FROM runs WHERE id <= ?", (run_id - RUN_HISTORY,))
        return run_id

    @_db
    def finish_run(self, run_id: int, outcome: str, counts: Mapping[str, Any]) -> None:
        _name(outcome, "outcome")
        with self._txn(write=True) as conn:
            cur = conn.execute(
                "UPDATE runs SET finished_at = ?, outcome = ?, counts = ? WHERE id = ?",
                (_ts(_now()), outcome, _dumps(dict(counts)), run_id),
            )
            if cur.rowcount != 1:
                raise ValueError(f"no run with id {run_id}")

    @_db
    def last_runs(self, n: int = 10, *, command: str | None = None, exclude: tuple[str, ...] = ()) -> list[RunInfo]:
        """The ``n`` most recent runs, newest first (only of ``command``, or not of ``exclude``)."""
        where, params = [], []
        if command is not None:
            where.append("command = ?")
            params.append(command)
        if exclude:
            where.append(f"command NOT IN ({','.join('?' * len(exclude))})")
            params.extend(exclude)
        rows = self._connection().execute(
            "SELECT id, command, args, pid, version, started_at, finished_at, outcome, counts FROM runs "
            + (f"WHERE {' AND '.join(where)} " if where else "") + "ORDER BY id DESC LIMIT ?",
            (*params, n),
        ).fetchall()
        out = []
        for run_id, command, args, pid, version, started, finished, outcome, counts in rows:
            if finished is None and outcome is None and not _pid_alive(pid):
                outcome = "interrupted"
            out.append(
                RunInfo(
                    id=run_id,
                    command=command,
                    args=json.loads(args),
                    pid=pid,
                    version=version,
                    started_at=_parse_ts(started),
                    finished_at=_opt_ts(finished),
                    outcome=outcome,
                    counts=json.loads(counts) if counts else {},
                )
            )
        return out

    # ---------------------------------------------------------------- failures

    @_db
    def record_failure(
        self,
        call_id: int,
        target: str,
        object_name: str,
        code: str,
        message: str,
        run_id: int | None,
    ) -> None:
        """Remember that writing ``call_id`` to ``target`` failed (counts attempts)."""
        now = _ts(_now())
        with self._txn(write=True) as conn:
            conn.execute(
                "INSERT INTO failures (call_id, target, object_name, code, message, run_id, "
                "first_failed_at, last_failed_at, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1) "
                "ON CONFLICT (call_id, target) DO UPDATE SET object_name = excluded.object_name, "
                "code = excluded.code, message = excluded.message, run_id = excluded.run_id, "
                "last_failed_at = excluded.last_failed_at, attempts = failures.attempts + 1",
                (
                    _call_id(call_id),
                    _name(target, "target"),
                    object_name,
                    code,
                    message[:_MAX_MESSAGE],
                    run_id,
                    now,
                    now,
                ),
            )

    @_db
    def clear_failure(self, call_id: int, target: str) -> None:
        self.clear_failures([call_id], target)

    @_db
    def clear_failures(self, call_ids: Iterable[int], target: str) -> None:
        """Forget the failures of calls now written (one statement for a whole batch)."""
        with self._txn(write=True) as conn:
            conn.executemany(
                "DELETE FROM failures WHERE call_id = ? AND target = ?", [(_call_id(c), target) for c in call_ids]
            )

    @_db
    def failures(self, target: str | None = None) -> list[Failure]:
        """Failed records (of one target, or all), by call id."""
        sql = (
            "SELECT call_id, target, object_name, code, message, run_id, first_failed_at, "
            "last_failed_at, attempts FROM failures"
        )
        params: tuple[Any, ...] = ()
        if target is not None:
            sql += " WHERE target = ?"
            params = (target,)
        rows = self._connection().execute(sql + " ORDER BY call_id, target", params).fetchall()
        ids = self.message_ids([r[0] for r in rows])
        return [
            Failure(
                call_id=c,
                target=t,
                object_name=o,
                code=code,
                message=m,
                run_id=r,
                first_failed_at=_parse_ts(first),
                last_failed_at=_parse_ts(last),
                attempts=a,
                message_id=ids.get(c),
            )
            for c, t, o, code, m, r, first, last, a in rows
        ]
