"""The inbox: Aircall's webhook events, kept in the state store until processed (DESIGN §10).

An event the receiver accepted is committed here, without its token, before
Aircall gets its 200: a process killed a moment later loses nothing. The
worker takes what is due, keeps per call (or message) only the newest
snapshot, and marks events done or to be retried with backoff; nothing is
dropped. Processed events stay ``live.keep_events`` (messages exist nowhere
else), then are pruned.

Deliveries are at least once, unordered, and carry no event id (reference
§1.5), so an event is identified by what it says: its name, its object's id,
its timestamp and the hash of its body. A repeated delivery adds nothing.
Per object, the newest snapshot is the one with the latest envelope
``timestamp`` (milliseconds when ≥ 10¹², else seconds), ties broken by arrival.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aircall_sync.aircall.models import parse_timestamp
from aircall_sync.dates import parse_utc_text, utc_text
from aircall_sync.state import State

__all__ = ["Event", "Inbox", "InboxStats", "classify", "event_ms"]

# What the worker does with each family of events (reference §1.2). Anything
# else is stored and acknowledged (never refused: Aircall disables a webhook
# that keeps failing), then marked done.
_CALL = re.compile(r"call\.[a-z_]+")
_MESSAGE = re.compile(r"(group_)?message\.[a-z_]+")
_INSIGHT = frozenset({"summary.created", "topics.created", "sentiment.created", "action_item.created",
                      "transcription.created"})

_MAX_ERROR = 2000


def event_ms(timestamp: Any, fallback_ms: int) -> int:
    """The envelope ``timestamp`` in milliseconds (DESIGN §10: ≥ 10¹² is already milliseconds)."""
    if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float, str)):
        return fallback_ms
    try:
        value = float(timestamp)
    except ValueError:
        moment = parse_timestamp(timestamp)
        return int(moment.timestamp() * 1000) if moment else fallback_ms
    if value != value or value <= 0:  # NaN, or nonsense
        return fallback_ms
    return int(value) if value >= 1e12 else int(value * 1000)


def classify(envelope: Mapping[str, Any]) -> tuple[str, str | None, bool, int | None]:
    """``(kind, object id, finished, started_at)`` of an envelope.

    kind: ``call`` (a call snapshot: its id is a 64-bit integer), ``message``,
    ``insight`` (an AI event, keyed by its call), or ``other``.
    """
    name = str(envelope.get("event") or "")
    data = envelope.get("data")
    data = data if isinstance(data, Mapping) else {}
    if _CALL.fullmatch(name):
        call_id = _int_id(data.get("id"))
        if call_id is not None:
            started = parse_timestamp(data.get("started_at"))
            finished = data.get("status") == "done" and bool(data.get("ended_at"))
            return "call", str(call_id), finished, int(started.timestamp()) if started else None
    elif _MESSAGE.fullmatch(name):
        message_id = data.get("id")
        if isinstance(message_id, (str, int)) and not isinstance(message_id, bool) and str(message_id).strip():
            created = parse_timestamp(data.get("created_at"))
            return "message", str(message_id).strip(), False, int(created.timestamp()) if created else None
    elif name in _INSIGHT:
        call_id = _int_id(data.get("call_id"))
        if call_id is not None:
            return "insight", str(call_id), False, None
    return "other", None, False, None


def _int_id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 < value < 2**63 else None
    if isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
        return number if 0 < number < 2**63 else None
    return None


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Event:
    """One stored delivery."""

    seq: int
    event: str
    kind: str
    object_id: str | None
    event_ms: int
    finished: bool
    received_at: datetime
    body: dict[str, Any]
    attempts: int

    @property
    def order(self) -> tuple[int, int]:
        """Newest snapshot first when sorted in reverse: timestamp, then arrival."""
        return (self.event_ms, self.seq)


@dataclass(frozen=True)
class InboxStats:
    depth: int  # events waiting to be processed
    oldest: datetime | None  # when the oldest of them arrived
    failing: int  # waiting events that failed at least once
    last_error: str | None
    stored: int  # every event kept, processed or not


class Inbox:
    """The events table of a state file."""

    def __init__(self, state: State):
        self.state = state

    # ------------------------------------------------------------ receiving

    def put(self, envelope: Mapping[str, Any], *, received_at: datetime | None = None) -> bool:
        """Store an accepted event (its token already removed); False when it was stored before."""
        if "token" in envelope:
            raise ValueError("the token must be removed before an event is stored")
        received = received_at or _now()
        body = json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        kind, object_id, finished, started = classify(envelope)
        name = str(envelope.get("event") or "")
        ms = event_ms(envelope.get("timestamp"), int(received.timestamp() * 1000))
        digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
        dedupe = hashlib.sha256(f"{name}|{object_id}|{ms}|{digest}".encode()).hexdigest()
        with self.state.sql(write=True) as conn:
            cursor = conn.execute(
                "INSERT INTO events (dedupe, event, kind, object_id, event_ms, finished, started_at, received_at, "
                "body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe) DO NOTHING",
                (dedupe, name, kind, object_id, ms, int(finished), started, utc_text(received), body),
            )
            return cursor.rowcount == 1

    # ------------------------------------------------------------ processing

    def due(self, *, now: datetime | None = None, limit: int = 5000) -> list[Event]:
        """Waiting events whose time has come, in arrival order."""
        moment = utc_text(now or _now())
        with self.state.sql(write=False) as conn:
            rows = conn.execute(
                "SELECT seq, event, kind, object_id, event_ms, finished, received_at, body, attempts FROM events "
                "WHERE status = 'pending' AND (next_try_at IS NULL OR next_try_at <= ?) ORDER BY seq LIMIT ?",
                (moment, limit),
            ).fetchall()
        return [_event(row) for row in rows]

    def next_due(self) -> datetime | None:
        """When the next waiting event is due (None: nothing waits)."""
        with self.state.sql(write=False) as conn:
            row = conn.execute(
                "SELECT min(coalesce(next_try_at, '')) FROM events WHERE status = 'pending'").fetchone()
        if row is None or row[0] is None:
            return None
        return _now() if row[0] == "" else parse_utc_text(row[0])

    def applied(self, kind: str, object_ids: Iterable[str]) -> dict[str, tuple[int, int]]:
        """Per object, ``(event_ms, seq)`` of the newest snapshot applied so far."""
        ids = sorted(set(object_ids))
        out: dict[str, tuple[int, int]] = {}
        with self.state.sql(write=False) as conn:
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                rows = conn.execute(
                    f"SELECT object_id, applied_ms, applied_seq FROM live_objects WHERE kind = ? AND object_id IN "
                    f"({','.join('?' * len(chunk))})", [kind, *chunk])
                out.update({object_id: (ms, seq) for object_id, ms, seq in rows})
        return out

    def first_finished(self, object_ids: Iterable[str]) -> dict[str, int]:
        """Per call, the arrival order (seq) of its first finished snapshot: live mode logs calls in that
        order (DESIGN §10, "same records as a batch run")."""
        ids = sorted(set(object_ids))
        out: dict[str, int] = {}
        with self.state.sql(write=False) as conn:
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                rows = conn.execute(
                    "SELECT object_id, min(seq) FROM events WHERE kind = 'call' AND finished = 1 AND object_id IN "
                    f"({','.join('?' * len(chunk))}) GROUP BY object_id", chunk)
                out.update(dict(rows))
        return out

    def mark_applied(self, kind: str, snapshots: Mapping[str, tuple[int, int]]) -> None:
        """Remember the newest snapshot applied per object (never moves back)."""
        now = utc_text(_now())
        with self.state.sql(write=True) as conn:
            conn.executemany(
                "INSERT INTO live_objects (kind, object_id, applied_ms, applied_seq, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, object_id) DO UPDATE SET "
                "applied_ms = excluded.applied_ms, applied_seq = excluded.applied_seq, updated_at = excluded.updated_at "
                "WHERE (excluded.applied_ms, excluded.applied_seq) > (live_objects.applied_ms, live_objects.applied_seq)",
                [(kind, object_id, ms, seq, now) for object_id, (ms, seq) in snapshots.items()],
            )

    def done(self, seqs: Iterable[int], *, error: str | None = None) -> None:
        """Processed (``error``: processed, but what it carried could not be used; kept for `status`)."""
        rows = [(utc_text(_now()), error[:_MAX_ERROR] if error else None, seq) for seq in seqs]
        with self.state.sql(write=True) as conn:
            conn.executemany("UPDATE events SET status = 'done', done_at = ?, last_error = coalesce(?, last_error) "
                             "WHERE seq = ?", rows)

    def retry(self, seqs: Iterable[int], error: str, at: datetime) -> None:
        """Not processed this time: tried again at ``at``."""
        rows = [(error[:_MAX_ERROR], utc_text(at), seq) for seq in seqs]
        with self.state.sql(write=True) as conn:
            conn.executemany("UPDATE events SET attempts = attempts + 1, last_error = ?, next_try_at = ? "
                             "WHERE seq = ? AND status = 'pending'", rows)

    def prune(self, before: datetime) -> int:
        """Forget processed events older than ``before`` (``live.keep_events``)."""
        with self.state.sql(write=True) as conn:
            return conn.execute("DELETE FROM events WHERE status = 'done' AND done_at < ?", (utc_text(before),)).rowcount

    # ------------------------------------------------------------ reading

    def stats(self) -> InboxStats:
        with self.state.sql(write=False) as conn:
            depth, oldest, failing = conn.execute(
                "SELECT count(*), min(received_at), sum(attempts > 0) FROM events WHERE status = 'pending'").fetchone()
            last = conn.execute("SELECT last_error FROM events WHERE status = 'pending' AND last_error IS NOT NULL "
                                "ORDER BY seq DESC LIMIT 1").fetchone()
            stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        return InboxStats(depth=depth, oldest=parse_utc_text(oldest) if oldest else None, failing=failing or 0,
                          last_error=last[0] if last else None, stored=stored)

    def objects_in(self, kind: str, start: datetime, end: datetime) -> list[tuple[str, int]]:
        """``(object id, arrival of its first event)`` of the calls that started (or messages created) in
        ``[start, end)`` with stored events, first arrived first (``replay``). A message with no time of
        its own is placed by its envelope timestamp."""
        lo, hi = int(start.timestamp()), int(end.timestamp())
        with self.state.sql(write=False) as conn:
            rows = conn.execute(
                "SELECT object_id, min(seq) FROM events WHERE kind = ? AND object_id IS NOT NULL "
                "AND coalesce(started_at, event_ms / 1000) >= ? AND coalesce(started_at, event_ms / 1000) < ? "
                "GROUP BY object_id ORDER BY min(seq)", (kind, lo, hi)).fetchall()
        return [(object_id, seq) for object_id, seq in rows]

    def events_of(self, kind: str, object_id: str) -> list[Event]:
        with self.state.sql(write=False) as conn:
            rows = conn.execute(
                "SELECT seq, event, kind, object_id, event_ms, finished, received_at, body, attempts FROM events "
                "WHERE kind = ? AND object_id = ? ORDER BY seq", (kind, object_id)).fetchall()
        return [_event(row) for row in rows]


def _event(row: tuple) -> Event:
    seq, event, kind, object_id, ms, finished, received_at, body, attempts = row
    return Event(seq=seq, event=event, kind=kind, object_id=object_id, event_ms=ms, finished=bool(finished),
                 received_at=parse_utc_text(received_at), body=json.loads(body), attempts=attempts)
