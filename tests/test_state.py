"""Tests of the state store (DESIGN §2 State, §3 backfill/sync semantics, §6)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from aircall_sync import state as state_mod
from aircall_sync.errors import LockHeldError, StateError
from aircall_sync.locks import lock_path
from aircall_sync.state import (
    PENDING,
    WRITTEN,
    BackfillProgress,
    RecordState,
    State,
    acquire_lock,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state.sqlite3"


@pytest.fixture
def st(path: Path):
    with State.open(path) as s:
        yield s


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


# --------------------------------------------------------------------------- open


def test_new_file_is_0600_with_wal_and_full_sync(path: Path) -> None:
    old = os.umask(0o022)  # a typical umask would give 0644 to a file sqlite creates
    try:
        with State.open(path) as s:
            s.mark_pending([(1, "salesforce", "h")])  # forces the -wal file into being
            conn = s._connection()
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
            assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
            assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
            for side in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                assert side.exists(), side
                assert mode(side) == 0o600, side
    finally:
        os.umask(old)
    assert os.umask(0o022) == 0o022  # open() restored the process umask
    os.umask(old)


def test_mode_stays_0600_after_reopen(path: Path) -> None:
    State.open(path).close()
    with State.open(path) as s:
        s.set_watermark(datetime(2026, 1, 1, tzinfo=UTC))
        assert mode(path) == 0o600
    assert mode(path) == 0o600


def test_missing_directory_is_created(tmp_path: Path) -> None:
    p = tmp_path / "a" / "b" / "state.sqlite3"
    with State.open(p) as s:
        assert s.schema_version == len(state_mod.MIGRATIONS)
    assert mode(p) == 0o600


def test_usable_from_another_thread(st: State) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            st.mark_written([(7, "front", {"message": "msg_1"}, "h")])
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            errors.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert errors == []
    assert st.get_record(7, "front") is not None


def test_closed_state_refuses_use(path: Path) -> None:
    s = State.open(path)
    s.close()
    s.close()  # idempotent
    assert s.closed
    with pytest.raises(RuntimeError, match="closed"):
        s.get_watermark()


# --------------------------------------------------------------------------- corruption, foreign files


def test_garbage_file_gives_one_line_state_error(path: Path) -> None:
    path.write_bytes(b"this is not sqlite\n" + bytes(range(256)) * 16)
    with pytest.raises(StateError) as info:
        State.open(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(path) in msg
    assert "corrupted" in msg
    assert "move it aside" in msg
    assert "source of truth" in msg
    assert "Traceback" not in msg


def test_corruption_found_after_open_is_a_state_error(path: Path) -> None:
    with State.open(path) as s:
        s.mark_written([(i, "salesforce", {"Task": f"00T{i}"}, "h" * 40) for i in range(3000)])
    # Checkpoint and drop the WAL so the damage below is what the reader sees.
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    data = bytearray(path.read_bytes())
    page = 4096
    # Keep the header page (schema), smash every data page.
    data[page:] = b"\xa5" * (len(data) - page)
    path.write_bytes(bytes(data))
    with pytest.raises(StateError, match="corrupted") as info:
        with State.open(path) as s:
            s.get_records(range(3000), "salesforce")
    assert str(path) in str(info.value)


def test_foreign_sqlite_database_is_refused_and_left_alone(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StateError, match="not an aircall-sync state file"):
        State.open(path)
    assert path.read_bytes() == before


def test_unwritable_location_is_a_state_error(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(StateError, match="cannot create state file"):
            State.open(ro / "state.sqlite3")
    finally:
        ro.chmod(0o700)


def test_path_under_a_file_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StateError, match="cannot create state file .*file/state.sqlite3"):
        State.open(tmp_path / "file" / "state.sqlite3")


# --------------------------------------------------------------------------- migrations


def test_fresh_file_gets_every_migration(st: State) -> None:
    assert st.schema_version == len(state_mod.MIGRATIONS) >= 1
    conn = st._connection()
    assert conn.execute("PRAGMA application_id").fetchone()[0] == state_mod.APPLICATION_ID
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"records", "posted", "cache", "meta", "backfills", "backfill_windows", "runs", "failures"} <= tables


def test_empty_v0_file_is_initialised(path: Path) -> None:
    path.touch(mode=0o600)
    with State.open(path) as s:
        assert s.schema_version == len(state_mod.MIGRATIONS)


def test_upgrade_applies_only_the_new_migration_and_keeps_data(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = len(state_mod.MIGRATIONS)
    with State.open(path) as s:
        s.mark_written([(1, "salesforce", {"Task": "00T1"}, "h1")])
        assert s.schema_version == known

    calls: list[int] = []

    def migration_3(conn: sqlite3.Connection) -> None:
        calls.append(conn.execute("PRAGMA user_version").fetchone()[0])
        conn.execute("INSERT INTO extra (note) VALUES ('from 3')")

    monkeypatch.setattr(
        state_mod,
        "MIGRATIONS",
        [*state_mod.MIGRATIONS, "CREATE TABLE extra (note TEXT);\nALTER TABLE records ADD COLUMN x TEXT;", migration_3],
    )
    with State.open(path) as s:
        assert s.schema_version == known + 2
        assert calls == [known + 1]  # ran once, after the SQL one
        assert s.get_record(1, "salesforce").crm_ids == {"Task": "00T1"}
        assert s._connection().execute("SELECT note FROM extra").fetchall() == [("from 3",)]
    with State.open(path) as s:  # already current: nothing runs again
        assert calls == [known + 1]


def test_failed_migration_leaves_file_unchanged(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    State.open(path).close()

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x)")
        raise ValueError("boom")

    known = len(state_mod.MIGRATIONS)
    monkeypatch.setattr(state_mod, "MIGRATIONS", [*state_mod.MIGRATIONS, broken])
    with pytest.raises(StateError, match=rf"from schema {known} to {known + 1} failed \(boom\); the file was "
                                         "left unchanged"):
        State.open(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == known
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half_done'").fetchone()[0] == 0
    conn.close()


def test_newer_schema_is_refused(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_mod, "MIGRATIONS", [*state_mod.MIGRATIONS, "CREATE TABLE future (x);"])
    State.open(path).close()
    monkeypatch.undo()
    with pytest.raises(StateError) as info:
        State.open(path)
    known = len(state_mod.MIGRATIONS)
    assert str(info.value) == (
        f"state file {path} was written by a newer aircall-sync (schema {known + 1}, this version knows "
        f"{known}); upgrade aircall-sync"
    )


def test_a_schema_1_file_gains_the_live_inbox_and_keeps_its_records(path: Path, monkeypatch) -> None:
    """Issue 12: the inbox is a migration of the existing schema, not a new file."""
    monkeypatch.setattr(state_mod, "MIGRATIONS", state_mod.MIGRATIONS[:1])
    with State.open(path) as s:
        s.mark_written([(7, "salesforce", {"Task": "00T7"}, "h7")])
        s.set_watermark(datetime(2026, 1, 2, tzinfo=UTC))
    monkeypatch.undo()
    with State.open(path) as s:
        assert s.schema_version == len(state_mod.MIGRATIONS)
        assert s.get_record(7, "salesforce").crm_ids == {"Task": "00T7"}
        assert s.get_watermark() == datetime(2026, 1, 2, tzinfo=UTC)
        with s.sql(write=False) as conn:
            assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM live_objects").fetchone()[0] == 0


def test_a_schema_2_file_gains_the_message_table_and_keeps_its_data(path: Path, monkeypatch) -> None:
    """Issue 13 (R-MSG-1): schema 3 adds the message key -> message id table; records, failures and the
    inbox of a schema-2 file are kept."""
    from aircall_sync.aircall.messages import message_key

    monkeypatch.setattr(state_mod, "MIGRATIONS", state_mod.MIGRATIONS[:2])
    with State.open(path) as s:
        assert s.schema_version == 2
        s.mark_written([(7, "salesforce", {"Task": "00T7"}, "h7")])
        s.record_failure(8, "front", "message", "HTTP_400", "bad", None)
        with s.sql(write=True) as conn:
            conn.execute("INSERT INTO events (dedupe, event, kind, object_id, event_ms, received_at, body) "
                         "VALUES ('d', 'message.sent', 'message', 'SM1', 1, '2026-01-01T00:00:00.000000Z', '{}')")
    monkeypatch.undo()
    with State.open(path) as s:
        assert s.schema_version == len(state_mod.MIGRATIONS)
        assert s.get_record(7, "salesforce").crm_ids == {"Task": "00T7"}
        assert [(f.call_id, f.label) for f in s.failures()] == [(8, "call 8")]
        with s.sql(write=False) as conn:
            assert conn.execute("SELECT object_id FROM events").fetchall() == [("SM1",)]
        key = message_key("SM1")
        s.remember_messages([(key, "SM1", None)])
        s.record_failure(key, "salesforce", "Task", "FIELD_CUSTOM_VALIDATION_EXCEPTION", "no", None)
        assert s.message_ids([key, 7]) == {key: "SM1"}
        assert [f.label for f in s.failures()][0] == "message SM1"


def test_a_schema_3_file_gains_the_insights_table_and_keeps_its_data(path: Path, monkeypatch) -> None:
    """Issue 13 (RULES §8): schema 4 adds the AI insights of each call; records, posted extras, messages and
    the inbox of a schema-3 file are kept."""
    monkeypatch.setattr(state_mod, "MIGRATIONS", state_mod.MIGRATIONS[:3])
    with State.open(path) as s:
        assert s.schema_version == 3
        s.mark_written([(7, "front", {"contact": "crd_7"}, "h7")])
        s.mark_posted([(7, "front", "comment:1")])
        s.remember_messages([(-5, "SM5", None)])
        with s.sql(write=True) as conn:
            conn.execute("INSERT INTO events (dedupe, event, kind, object_id, event_ms, received_at, body) "
                         "VALUES ('d', 'summary.created', 'insight', '7', 1, '2026-01-01T00:00:00.000000Z', '{}')")
    monkeypatch.undo()
    with State.open(path) as s:
        assert s.schema_version == len(state_mod.MIGRATIONS) >= 4
        assert s.get_record(7, "front").crm_ids == {"contact": "crd_7"}
        assert s.posted_keys(7, "front") == {"comment:1"}
        assert s.message_ids([-5]) == {-5: "SM5"}
        with s.sql(write=False) as conn:
            assert conn.execute("SELECT event, object_id FROM events").fetchall() == [("summary.created", "7")]
        assert s.get_insights([7]) == {}
        assert s.put_insights([(7, "summary", "found", "A summary.")]) == {7}
        assert s.get_insights([7])[7]["summary"].text == "A summary."


def test_a_schema_4_file_gains_the_aircall_contacts_table_and_keeps_its_data(path: Path, monkeypatch) -> None:
    """Issue 14 (RULES §9): schema 5 adds the Salesforce records saved in Aircall (R-CONTACT-3's fingerprint per
    record); records, failures, messages, insights and the inbox of a schema-4 file are kept."""
    monkeypatch.setattr(state_mod, "MIGRATIONS", state_mod.MIGRATIONS[:4])
    with State.open(path) as s:
        assert s.schema_version == 4
        s.mark_written([(7, "salesforce", {"Task": "00T7", "Lead": "00Q7"}, "h7")])
        s.record_failure(8, "salesforce", "Task", "FIELD_CUSTOM_VALIDATION_EXCEPTION", "no", None)
        s.remember_messages([(-5, "SM5", None)])
        s.put_insights([(7, "summary", "found", "A summary.")])
        with s.sql(write=True) as conn:
            conn.execute("INSERT INTO events (dedupe, event, kind, object_id, event_ms, received_at, body) "
                         "VALUES ('d', 'call.ended', 'call', '7', 1, '2026-01-01T00:00:00.000000Z', '{}')")
    monkeypatch.undo()
    with State.open(path) as s:
        assert s.schema_version == 5 <= len(state_mod.MIGRATIONS)
        assert s.get_record(7, "salesforce").crm_ids == {"Task": "00T7", "Lead": "00Q7"}
        assert [(f.call_id, f.code) for f in s.failures()] == [(8, "FIELD_CUSTOM_VALIDATION_EXCEPTION")]
        assert s.message_ids([-5]) == {-5: "SM5"}
        assert s.get_insights([7])[7]["summary"].text == "A summary."
        with s.sql(write=False) as conn:
            assert conn.execute("SELECT event, object_id FROM events").fetchall() == [("call.ended", "7")]
        assert s.get_contacts(["00Q7"]) == {}
        s.queue_contacts([("00Q7", "Lead", "f1", {"desired": {"x": 1}})])
        s.contact_saved("00Q7", 42, True, "f1")
        known = s.get_contacts(["00Q7"])["00Q7"]
        assert (known.contact_id, known.ours, known.saved_hash, known.queued) == (42, True, "f1", None)


def test_R_CONTACT_3_contact_rows_queue_create_mark_save_and_fail(st: State) -> None:
    """The contact row's life: queued in the run's transaction, the create mark committed before the POST, saved
    with its fingerprint (the queue emptied), a failure kept queued only when it is to be tried again."""
    st.queue_contacts([("003A", "Contact", "h1", {"desired": {"a": 1}, "key": 5})])
    [row] = st.queued_contacts()
    assert (row.record_id, row.queued, row.queued_hash, row.contact_id, row.creating_at) == (
        "003A", {"desired": {"a": 1}, "key": 5}, "h1", None, None)
    st.contact_creating("003A")
    assert st.get_contacts(["003A"])["003A"].creating_at is not None
    assert st.contact_counts()["creating"] == 1
    st.contact_failed("003A", "UNCERTAIN", "no answer", again=True)
    row = st.get_contacts(["003A"])["003A"]
    assert (row.queued_hash, row.error_code, row.attempts) == ("h1", "UNCERTAIN", 1) and row.creating_at
    st.contact_found("003A", 99, True)  # the lost create, found again: the mark goes
    row = st.get_contacts(["003A"])["003A"]
    assert (row.contact_id, row.ours, row.creating_at) == (99, True, None)
    st.queue_contacts([("003A", "Contact", "h2", {"desired": {"a": 2}})])  # changed meanwhile
    st.contact_saved("003A", 99, True, "h1")  # what was saved is h1: h2 still waits
    row = st.get_contacts(["003A"])["003A"]
    assert (row.saved_hash, row.queued_hash, row.error, row.attempts) == ("h1", "h2", None, 0)
    st.contact_failed("003A", "400", "Bad Request", again=False)
    row = st.get_contacts(["003A"])["003A"]
    assert (row.queued, row.error_code, row.saved_hash) == (None, "400", "h1")
    assert [f.record_id for f in st.contact_failures()] == ["003A"]
    st.skip_contacts([("00QB", "Lead", "h3", "created by aircall-sync")])
    assert st.get_contacts(["00QB"])["00QB"].skip_hash == "h3"
    assert st.contact_counts() == {"saved": 1, "created": 1, "queued": 0, "failed": 1, "skipped": 1, "creating": 0}
    st.contact_found("003A", None, True)  # gone from Aircall: forgotten, and never "ours" without an id
    row = st.get_contacts(["003A"])["003A"]
    assert (row.contact_id, row.ours) == (None, False)


def test_insights_found_none_and_asked(st: State) -> None:
    state = st
    """RULES R-AI-1: found keeps its text and is never taken back; none is final; asked moves asked_at only.
    put_insights says which calls' found texts changed (an unchanged insight costs nothing downstream)."""
    t0 = datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert state.put_insights([(1, "summary", "asked", None), (1, "topics", "none", None),
                               (2, "sentiment", "found", "Positive")], at=t0) == {2}
    known = state.get_insights([1, 2, 3])
    assert set(known) == {1, 2}
    assert (known[1]["summary"].status, known[1]["summary"].final, known[1]["summary"].asked_at) == ("asked", False, t0)
    assert known[1]["topics"].final and not known[1]["topics"].found
    assert known[2]["sentiment"].found and known[2]["sentiment"].text == "Positive"
    t1 = t0 + timedelta(hours=1)
    # The same text again: not a change. A 404 after it was found: kept. "asked" after "none": stays none.
    assert state.put_insights([(2, "sentiment", "found", "Positive"), (2, "sentiment", "asked", None),
                               (1, "topics", "asked", None)], at=t1) == set()
    known = state.get_insights([1, 2])
    assert known[2]["sentiment"].text == "Positive" and known[2]["sentiment"].asked_at == t1
    assert known[1]["topics"].status == "none"
    assert state.put_insights([(1, "summary", "found", "Called about billing."),
                               (2, "sentiment", "found", "Negative")], at=t1) == {1, 2}
    with pytest.raises(ValueError):
        state.put_insights([(1, "summary", "found", None)])
    with pytest.raises(ValueError):
        state.put_insights([(1, "summary", "maybe", None)])


def test_message_keys_are_negative_stable_and_distinct() -> None:
    """R-MSG-1: a message's state key never collides with a call id (positive) and never changes."""
    from aircall_sync.aircall.messages import message_key

    keys = {message_key(f"SM{i}") for i in range(5000)}
    assert len(keys) == 5000 and all(-(2**63) <= k < 0 for k in keys)
    assert message_key("abcdSMc6Dc8ea2bc71ab19102c3de4f60ba18aa") == message_key("abcdSMc6Dc8ea2bc71ab19102c3de4f60ba18aa")
    assert message_key("1") != message_key("2")


def test_statement_splitter_keeps_semicolons_in_strings_and_triggers() -> None:
    script = """
        CREATE TABLE t (a TEXT);
        CREATE TRIGGER tr AFTER INSERT ON t BEGIN
            UPDATE t SET a = a || ';x' WHERE rowid = new.rowid;
        END;
        INSERT INTO t VALUES ('1;2');
    """
    stmts = list(state_mod._statements(script))
    assert len(stmts) == 3
    conn = sqlite3.connect(":memory:")
    for s in stmts:
        conn.execute(s)
    assert conn.execute("SELECT a FROM t").fetchone()[0] == "1;2;x"


# --------------------------------------------------------------------------- records


def test_record_lifecycle_pending_then_written(st: State) -> None:
    assert st.get_record(1, "salesforce") is None
    st.mark_pending([(1, "salesforce", "h1")])
    r = st.get_record(1, "salesforce")
    assert isinstance(r, RecordState)
    assert (r.status, r.crm_ids, r.hash, r.is_pending) == (PENDING, {}, "h1", True)
    assert r.updated_at.tzinfo is not None

    st.mark_written([(1, "salesforce", {"Task": "00T1", "Lead": "00Q1"}, "h1")])
    r = st.get_record(1, "salesforce")
    assert (r.status, r.crm_ids, r.is_written) == (WRITTEN, {"Task": "00T1", "Lead": "00Q1"}, True)

    # An update in flight keeps the ids we know.
    st.mark_pending([(1, "salesforce", "h2")])
    r = st.get_record(1, "salesforce")
    assert (r.status, r.hash, r.crm_ids) == (PENDING, "h2", {"Task": "00T1", "Lead": "00Q1"})

    # Ids merge; None removes one.
    st.mark_written([(1, "salesforce", {"Task": "00T9", "Lead": None}, "h2")])
    r = st.get_record(1, "salesforce")
    assert (r.status, r.hash, r.crm_ids) == (WRITTEN, "h2", {"Task": "00T9"})

    with pytest.raises(Exception):  # frozen
        r.hash = "x"  # type: ignore[misc]


def test_records_are_per_target_and_int64(st: State) -> None:
    big = 2**63 - 1
    st.mark_written([(big, "salesforce", {"VoiceCall": "0LQ1"}, "a"), (big, "front", {"message": "m"}, "b")])
    assert st.get_record(big, "salesforce").crm_ids == {"VoiceCall": "0LQ1"}
    assert st.get_record(big, "front").hash == "b"
    with pytest.raises(TypeError):
        st.get_record("12", "front")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        st.mark_pending([(2**63, "front", "h")])


def test_batches_larger_than_the_variable_limit(st: State) -> None:
    n = 2500  # several chunks, and above SQLite's old 999-variable limit
    st.mark_pending((i, "salesforce", f"h{i}") for i in range(n))
    st.mark_written((i, "salesforce", {"Task": f"00T{i}"}, f"h{i}") for i in range(0, n, 2))
    got = st.get_records(iter(range(-5, n + 5)), "salesforce")
    assert set(got) == set(range(n))
    assert got[10].status == WRITTEN and got[10].crm_ids == {"Task": "00T10"}
    assert got[11].status == PENDING and got[11].crm_ids == {}
    assert st.get_records([], "salesforce") == {}
    assert st.get_records(range(n), "front") == {}


def test_duplicate_items_in_one_batch_apply_in_order(st: State) -> None:
    st.mark_written([(5, "salesforce", {"Lead": "00Q"}, "h1"), (5, "salesforce", {"Task": "00T"}, "h2")])
    r = st.get_record(5, "salesforce")
    assert (r.crm_ids, r.hash) == ({"Lead": "00Q", "Task": "00T"}, "h2")


def test_a_bad_item_rolls_back_the_whole_batch(st: State) -> None:
    with pytest.raises(TypeError):
        st.mark_written([(1, "salesforce", {"Task": "00T1"}, "h"), (2, "salesforce", {"Task": 5}, "h")])
    assert st.get_records([1, 2], "salesforce") == {}


# --------------------------------------------------------------------------- transactions


def test_transaction_commits_everything_at_once(path: Path, st: State) -> None:
    st.start_backfill("k", [(0, 10), (10, 20)])
    with st.transaction():
        st.mark_written([(1, "salesforce", {"Task": "00T1"}, "h")])
        st.complete_window("k", (0, 10))
        # Another connection sees nothing before the commit.
        other = sqlite3.connect(path)
        assert other.execute("SELECT count(*) FROM records").fetchone()[0] == 0
        other.close()
    assert st.get_record(1, "salesforce") is not None
    assert st.pending_windows("k") == [(10, 20)]


def test_exception_in_transaction_rolls_back_everything(st: State) -> None:
    st.start_backfill("k", [(0, 10), (10, 20)])
    with pytest.raises(RuntimeError, match="killed mid-window"):
        with st.transaction():
            st.mark_pending([(1, "salesforce", "h")])
            st.mark_written([(1, "salesforce", {"Task": "00T1"}, "h")])
            st.mark_posted([(1, "front", "comment:1")])
            st.cache_put("sf:phone", {"+33612345678": {"Lead": "00Q1"}})
            st.record_failure(2, "salesforce", "Task", "X", "y", None)
            st.set_watermark(datetime(2026, 1, 1, tzinfo=UTC))
            st.complete_window("k", (0, 10))
            raise RuntimeError("killed mid-window")
    assert st.get_record(1, "salesforce") is None
    assert st.posted_keys(1, "front") == set()
    assert st.cache_get("sf:phone", ["+33612345678"]) == {}
    assert st.failures() == []
    assert st.get_watermark() is None
    assert st.pending_windows("k") == [(0, 10), (10, 20)]
    # And the state is usable afterwards.
    st.mark_pending([(3, "front", "h")])
    assert st.get_record(3, "front") is not None


def test_nested_transaction_is_a_savepoint(st: State) -> None:
    with st.transaction():
        st.mark_pending([(1, "front", "h")])
        with pytest.raises(KeyError):
            with st.transaction():
                st.mark_pending([(2, "front", "h")])
                raise KeyError("inner")
        # A nested read failing does not undo the outer block.
        with pytest.raises(TypeError):
            st.get_records(["x"], "front")  # type: ignore[list-item]
    assert set(st.get_records([1, 2], "front")) == {1}


def test_complete_window_error_undoes_records_of_that_step(st: State) -> None:
    st.start_backfill("k", [(0, 10)])
    with pytest.raises(ValueError, match="not part of an unfinished backfill"):
        with st.transaction():
            st.mark_written([(1, "salesforce", {"Task": "00T1"}, "h")])
            st.complete_window("k", (0, 11))
    assert st.get_record(1, "salesforce") is None


# --------------------------------------------------------------------------- posted extras


def test_posted_keys(st: State) -> None:
    assert not st.is_posted(1, "front", "comment:9")
    st.mark_posted([(1, "front", "comment:9"), (1, "front", "comment:10"), (2, "front", "comment:1")])
    st.mark_posted([(1, "front", "comment:9")])  # posting twice is recorded once
    assert st.is_posted(1, "front", "comment:9")
    assert not st.is_posted(1, "salesforce", "comment:9")
    assert st.posted_keys(1, "front") == {"comment:9", "comment:10"}
    assert st.get_posted([1, 2, 3], "front") == {1: {"comment:9", "comment:10"}, 2: {"comment:1"}}


# --------------------------------------------------------------------------- cache


def test_cache_round_trip_and_delete(st: State) -> None:
    assert st.cache_get("sf:phone", ["+1"]) == {}
    st.cache_put("sf:phone", {"+1": {"Lead": "00Q1"}, "+2": None, "+3": [1, "é"]})
    st.cache_put("other", {"+1": "x"})
    assert st.cache_get("sf:phone", ["+1", "+2", "+3", "+4"]) == {"+1": {"Lead": "00Q1"}, "+2": None, "+3": [1, "é"]}
    st.cache_put("sf:phone", {"+1": {"Contact": "003"}})
    assert st.cache_get("sf:phone", ["+1"]) == {"+1": {"Contact": "003"}}
    st.cache_delete("sf:phone", ["+1", "+9"])
    assert set(st.cache_get("sf:phone", ["+1", "+2", "+3"])) == {"+2", "+3"}
    assert st.cache_get("other", ["+1"]) == {"+1": "x"}
    keys = [f"+{i}" for i in range(1200)]
    st.cache_put("many", {k: i for i, k in enumerate(keys)})
    assert len(st.cache_get("many", keys)) == 1200


def test_cache_max_age(st: State, monkeypatch: pytest.MonkeyPatch) -> None:
    t0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    monkeypatch.setattr(state_mod, "_now", lambda: t0)
    st.cache_put("ns", {"old": 1})
    monkeypatch.setattr(state_mod, "_now", lambda: t0 + timedelta(days=2))
    st.cache_put("ns", {"new": 2})
    assert st.cache_get("ns", ["old", "new"], max_age=timedelta(days=1)) == {"new": 2}
    assert st.cache_get("ns", ["old", "new"]) == {"old": 1, "new": 2}


# --------------------------------------------------------------------------- watermark


def test_watermark_round_trip(path: Path) -> None:
    with State.open(path) as s:
        assert s.get_watermark() is None
        paris = timezone(timedelta(hours=1))
        s.set_watermark(datetime(2026, 11, 21, 11, 0, 0, 123456, tzinfo=paris))
    with State.open(path) as s:
        wm = s.get_watermark()
        assert wm == datetime(2026, 11, 21, 10, 0, 0, 123456, tzinfo=UTC)
        assert wm.utcoffset() == timedelta(0)
        s.set_watermark(datetime(2026, 11, 20, tzinfo=UTC))  # may move back
        assert s.get_watermark() == datetime(2026, 11, 20, tzinfo=UTC)
        with pytest.raises(ValueError, match="aware"):
            s.set_watermark(datetime(2026, 1, 1))


# --------------------------------------------------------------------------- backfill windows

KEY = "salesforce|2026-01-01T00:00:00Z|2026-02-01T00:00:00Z"
PLAN = [(0, 100), (100, 200), (200, 300), (300, 400)]


def test_backfill_resumes_at_first_unfinished_window(path: Path) -> None:
    with State.open(path) as s:
        assert s.unfinished_backfill(KEY) is None
        assert s.pending_windows(KEY) == []
        s.start_backfill(KEY, PLAN)
        assert s.pending_windows(KEY) == PLAN
        with s.transaction():
            s.mark_written([(1, "salesforce", {"Task": "00T1"}, "h")])
            s.complete_window(KEY, (0, 100))
        s.complete_window(KEY, [100, 200])  # type: ignore[arg-type]
        # killed here
    with State.open(path) as s:
        progress = s.unfinished_backfill(KEY)
        assert progress == BackfillProgress(
            range_key=KEY,
            started_at=progress.started_at,
            total_windows=4,
            done_windows=2,
            pending=((200, 300), (300, 400)),
        )
        assert s.pending_windows(KEY) == [(200, 300), (300, 400)]
        assert s.unfinished_backfill("front|other") is None
        assert [p.range_key for p in s.unfinished_backfills()] == [KEY]
        s.complete_window(KEY, (200, 300))
        s.complete_window(KEY, (200, 300))  # idempotent
        s.complete_window(KEY, (300, 400))
        # All windows done but not finished (killed just before): nothing left to do.
        assert s.unfinished_backfill(KEY).pending == ()
        s.finish_backfill(KEY)
        # After a completed run the same range starts over.
        assert s.unfinished_backfill(KEY) is None
        assert s.pending_windows(KEY) == []
        assert s.unfinished_backfills() == []
        with pytest.raises(ValueError):
            s.complete_window(KEY, (0, 100))
        s.start_backfill(KEY, PLAN)
        assert s.pending_windows(KEY) == PLAN


def test_start_backfill_replaces_an_earlier_plan(st: State) -> None:
    st.start_backfill(KEY, PLAN)
    st.complete_window(KEY, (0, 100))
    st.start_backfill(KEY, [(0, 50), (50, 400)])
    assert st.pending_windows(KEY) == [(0, 50), (50, 400)]


def test_backfill_input_checks(st: State) -> None:
    with pytest.raises(ValueError, match="twice"):
        st.start_backfill(KEY, [(0, 1), (0, 1)])
    with pytest.raises(ValueError, match="ends before"):
        st.start_backfill(KEY, [(5, 1)])
    with pytest.raises(ValueError, match="no backfill"):
        st.finish_backfill("never started")
    with pytest.raises(ValueError):
        st.complete_window("never started", (0, 1))


# --------------------------------------------------------------------------- runs


def test_runs_history(st: State) -> None:
    r1 = st.start_run("backfill", {"from": "2026-01-01", "to": "2026-01-31", "dry_run": False})
    st.finish_run(r1, "done", {"created": 10, "failed": 0})
    r2 = st.start_run("sync", {"api_token": "s3cret", "format": "json"})
    runs = st.last_runs()
    assert [r.id for r in runs] == [r2, r1]
    latest, first = runs
    assert (latest.command, latest.finished_at, latest.outcome, latest.pid) == ("sync", None, None, os.getpid())
    assert latest.args == {"api_token": "***", "format": "json"}
    assert "s3cret" not in Path(st.path).read_bytes().decode("latin-1")
    assert (first.outcome, first.counts) == ("done", {"created": 10, "failed": 0})
    assert first.finished_at >= first.started_at
    assert first.args["from"] == "2026-01-01"
    assert len(st.last_runs(1)) == 1
    with pytest.raises(ValueError):
        st.finish_run(9999, "done", {})


def test_run_of_a_dead_process_is_interrupted(st: State) -> None:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead_pid = int(proc.stdout)
    run_id = st.start_run("sync", {})
    st._connection().execute("UPDATE runs SET pid = ? WHERE id = ?", (dead_pid, run_id))
    assert st.last_runs(1)[0].outcome == "interrupted"
    assert st.last_runs(1)[0].finished_at is None


def test_run_history_is_pruned(st: State, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_mod, "RUN_HISTORY", 3)
    ids = [st.start_run("sync", {}) for _ in range(5)]
    assert [r.id for r in st.last_runs(10)] == ids[:-4:-1]


# --------------------------------------------------------------------------- failures


def test_failures(st: State, monkeypatch: pytest.MonkeyPatch) -> None:
    run = st.start_run("backfill", {})
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    monkeypatch.setattr(state_mod, "_now", lambda: t0)
    st.record_failure(10, "salesforce", "Task", "FIELD_CUSTOM_VALIDATION_EXCEPTION", "nope", run)
    st.record_failure(11, "front", "message", "bad_request", "x" * 10_000, run)
    monkeypatch.setattr(state_mod, "_now", lambda: t0 + timedelta(hours=1))
    st.record_failure(10, "salesforce", "Lead", "REQUIRED_FIELD_MISSING", "Company", None)

    all_ = st.failures()
    assert [(f.call_id, f.target) for f in all_] == [(10, "salesforce"), (11, "front")]
    f = st.failures("salesforce")[0]
    assert (f.object_name, f.code, f.message, f.run_id, f.attempts) == (
        "Lead", "REQUIRED_FIELD_MISSING", "Company", None, 2,
    )
    assert (f.first_failed_at, f.last_failed_at) == (t0, t0 + timedelta(hours=1))
    assert len(st.failures("front")[0].message) == state_mod._MAX_MESSAGE
    st.clear_failure(10, "salesforce")
    st.clear_failure(10, "salesforce")
    assert st.failures("salesforce") == []
    assert [f.call_id for f in st.failures()] == [11]


# --------------------------------------------------------------------------- run lock

HOLDER = """
import sys, time
from aircall_sync.state import acquire_lock
lock = acquire_lock(sys.argv[1], "sync")
print("locked", flush=True)
time.sleep(120)
"""


@contextmanager
def holder_process(path: Path) -> Iterator[subprocess.Popen[str]]:
    """A separate process that takes the run lock on ``path`` and keeps it."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True, env=env
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "locked"
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def test_lock_in_process(path: Path, st: State) -> None:
    with st.lock("backfill") as lock:
        lock_file = lock_path(path, "backfill")
        assert lock_file == path.with_name(f"{path.name}.backfill.lock")
        assert mode(lock_file) == 0o600
        content = json.loads(lock_file.read_text())
        assert content["pid"] == os.getpid() and content["command"] == "backfill"
        assert lock.info.pid == os.getpid()
        with pytest.raises(LockHeldError) as info:
            acquire_lock(path, "backfill")
        msg = str(info.value)
        assert msg.startswith(f"another aircall-sync run holds the lock on {path} (pid {os.getpid()}, started ")
        assert ' UTC, command "backfill"); wait for it to finish or stop it' in msg
        # DESIGN §10: runs of other kinds go side by side (writers take turns chunk by chunk).
        with acquire_lock(path, "sync"), acquire_lock(path, "serve"):
            pass
    assert not lock.held
    assert lock_file.exists()  # never deleted (see RunLock)
    with acquire_lock(path, "backfill"):
        pass
    lock.release()  # idempotent


def test_lock_held_by_another_live_process(path: Path) -> None:
    with holder_process(path) as proc:
        with pytest.raises(LockHeldError, match=rf"\(pid {proc.pid}, started .* UTC, command \"sync\"\)"):
            acquire_lock(path, "sync")


def test_lock_of_a_sigkilled_holder_is_taken_over(path: Path) -> None:
    with holder_process(path) as proc:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
    stale = json.loads(lock_path(path, "sync").read_text())
    assert stale["pid"] == proc.pid  # the dead run left its details behind
    with acquire_lock(path, "sync") as lock:
        assert json.loads(lock_path(path, "sync").read_text())["pid"] == os.getpid()
        assert lock.held
