"""The receiver of `serve` (DESIGN §10 "Receive"): each check, in order, and what is stored.

The app runs in-process (Starlette's TestClient) over a real state file; the
worker is a stand-in that counts wake-ups. The real `serve`, end to end, is in
test_live_e2e.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from starlette.testclient import TestClient

from aircall_sync.errors import StateError
from aircall_sync.live.app import Components, create_app
from aircall_sync.live.inbox import Inbox, classify, event_ms
from aircall_sync.live.metrics import Metrics
from aircall_sync.state import State

TOKEN = "the-webhook-token-9c1e"
PATH = "/aircall/webhook"
LIMIT = 4096


class StubWorker:
    def __init__(self):
        self.notified = 0
        self.alive = False

    def notify(self):
        self.notified += 1

    def start(self):
        self.alive = True

    def stop(self, drain_seconds):
        self.alive = False
        return True


@pytest.fixture
def receiver(tmp_path):
    state = State.open(tmp_path / "state.sqlite3")
    inbox = Inbox(state)
    worker = StubWorker()
    metrics = Metrics(inbox=inbox.stats, requests=lambda: {"aircall": 0}, clock=lambda: datetime.now(UTC))
    parts = Components(inbox=inbox, worker=worker, metrics=metrics, token=TOKEN.encode(), path=PATH,
                       max_body_bytes=LIMIT, background=[])
    with TestClient(create_app(parts)) as client:
        yield client, inbox, worker, parts
    state.close()


def call_event(event="call.ended", call_id=4186780376, timestamp=1790603100, token=TOKEN, **data):
    body = {"resource": "call", "event": event, "timestamp": timestamp,
            "data": {"id": call_id, "status": "done", "started_at": 1790603050, "ended_at": 1790603090, **data}}
    if token is not None:
        body["token"] = token
    return body


def stored(inbox: Inbox) -> list:
    with inbox.state.sql(write=False) as conn:
        return conn.execute("SELECT event, kind, object_id, event_ms, finished, body FROM events ORDER BY seq").fetchall()


def test_an_accepted_event_is_stored_without_its_token_then_answered_200(receiver):
    client, inbox, worker, _ = receiver
    response = client.post(PATH, json=call_event())
    assert response.status_code == 200
    rows = stored(inbox)
    assert len(rows) == 1
    event, kind, object_id, ms, finished, body = rows[0]
    assert (event, kind, object_id, ms, finished) == ("call.ended", "call", "4186780376", 1790603100000, 1)
    assert TOKEN not in body and "token" not in json.loads(body)
    assert worker.notified == 1


@pytest.mark.parametrize(
    ("make", "status", "reason"),
    [
        # DESIGN §10's order: size, then JSON, then token, then envelope.
        (lambda: b"{" + b" " * LIMIT + b"}", 413, "too_large"),
        (lambda: b"not json", 400, "not_json"),
        (lambda: json.dumps(call_event(token=None)).encode(), 401, "token"),
        (lambda: json.dumps(call_event(token="wrong")).encode(), 401, "token"),
        (lambda: json.dumps(call_event(token=TOKEN[:-1])).encode(), 401, "token"),
        (lambda: json.dumps([call_event()]).encode(), 401, "token"),
        (lambda: json.dumps({"token": TOKEN, "event": "call.ended"}).encode(), 400, "not_envelope"),
        (lambda: json.dumps({"token": TOKEN, "event": 3, "data": {}}).encode(), 400, "not_envelope"),
        (lambda: json.dumps({"token": TOKEN, "event": "call.ended", "data": []}).encode(), 400, "not_envelope"),
        # A body over the limit is refused before its token is even read: no oracle for the token.
        (lambda: json.dumps(call_event(token="wrong", pad="x" * LIMIT)).encode(), 413, "too_large"),
    ],
)
def test_refused_bodies_store_nothing(receiver, make, status, reason):
    client, inbox, worker, parts = receiver
    response = client.post(PATH, content=make(), headers={"content-type": "application/json"})
    assert response.status_code == status
    assert stored(inbox) == [] and worker.notified == 0
    assert parts.metrics.refused.labels(reason)._value.get() == 1
    assert TOKEN not in response.text


def test_a_body_without_content_length_is_still_limited(receiver):
    client, inbox, _, _ = receiver

    def chunks():
        for _ in range(LIMIT // 100 + 2):
            yield b" " * 100

    response = client.post(PATH, content=chunks())
    assert response.status_code == 413 and stored(inbox) == []


def test_a_repeated_delivery_is_stored_once_and_acknowledged(receiver):
    client, inbox, worker, parts = receiver
    for _ in range(3):
        assert client.post(PATH, json=call_event()).status_code == 200
    assert len(stored(inbox)) == 1
    assert worker.notified == 1
    assert parts.metrics.duplicates._value.get() == 2
    # The same call at another moment is another snapshot.
    assert client.post(PATH, json=call_event(timestamp=1790603200)).status_code == 200
    assert len(stored(inbox)) == 2


def test_unknown_events_are_stored_and_acknowledged_never_refused(receiver):
    client, inbox, _, _ = receiver
    for name in ("user.connected", "number.opened", "call.some_future_event", "brand_new.thing"):
        body = {"resource": "whatever", "event": name, "timestamp": 1, "token": TOKEN, "data": {"id": 1}}
        assert client.post(PATH, json=body).status_code == 200
    kinds = [(row[0], row[1]) for row in stored(inbox)]
    assert kinds == [("user.connected", "other"), ("number.opened", "other"), ("call.some_future_event", "call"),
                     ("brand_new.thing", "other")]


def test_a_store_that_cannot_be_written_answers_503(receiver, monkeypatch):
    client, inbox, worker, parts = receiver

    def broken(envelope):
        raise StateError("no space left to write state file x; free some disk space and run again")

    monkeypatch.setattr(inbox, "put", broken)
    response = client.post(PATH, json=call_event())
    assert response.status_code == 503
    assert parts.metrics.refused.labels("store")._value.get() == 1
    assert worker.notified == 0


def test_wrong_method_and_path(receiver):
    client, _, _, _ = receiver
    assert client.get(PATH).status_code == 405
    assert client.post("/other", json=call_event()).status_code == 404


def test_health_readiness_and_metrics(receiver):
    client, inbox, worker, _ = receiver
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"state_writable": True, "worker_alive": True, "inbox_depth": 0,
                            "oldest_pending_seconds": 0.0, "failing": 0}
    client.post(PATH, json=call_event())
    assert client.get("/readyz").json()["inbox_depth"] == 1
    worker.alive = False
    assert client.get("/readyz").status_code == 503
    text = client.get("/metrics").text
    assert 'aircall_sync_deliveries_total{event="call.ended"} 1.0' in text
    assert "aircall_sync_inbox_depth 1.0" in text
    assert 'aircall_sync_requests_total{service="aircall"} 0.0' in text
    assert TOKEN not in text


@pytest.mark.parametrize(
    ("timestamp", "ms"),
    [(1790603100, 1790603100000), (1790603100123, 1790603100123), ("1790603100", 1790603100000),
     (1790603100.5, 1790603100500), (None, 42), ("soon", 42), (True, 42), (-5, 42),
     ("2026-09-28T13:45:00Z", 1790603100000)],
)
def test_event_timestamps_in_seconds_or_milliseconds(timestamp, ms):
    """DESIGN §10: read as milliseconds when >= 10^12, else seconds; anything else: when it arrived."""
    assert event_ms(timestamp, fallback_ms=42) == ms


@pytest.mark.parametrize(
    ("envelope", "expected"),
    [
        ({"event": "call.ended", "data": {"id": 5, "status": "done", "ended_at": 9, "started_at": 3}},
         ("call", "5", True, 3)),
        ({"event": "call.created", "data": {"id": "5", "status": "initial"}}, ("call", "5", False, None)),
        ({"event": "call.ended", "data": {"id": "abc"}}, ("other", None, False, None)),
        ({"event": "message.received", "data": {"id": "SMab12", "created_at": "2026-09-28T13:45:00Z"}},
         ("message", "SMab12", False, 1790603100)),
        ({"event": "summary.created", "data": {"call_id": "77"}}, ("insight", "77", False, None)),
        ({"event": "user.created", "data": {"id": 1}}, ("other", None, False, None)),
    ],
)
def test_events_are_classified_by_what_they_describe(envelope, expected):
    assert classify(envelope) == expected
