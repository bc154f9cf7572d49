"""Messages through the real `aircall-sync serve` (RULES §7, DESIGN §10): delivered once, logged once.

Aircall lists no messages (reference aircall-live.md §2.2): a message whose only
event was acknowledged must be logged, exactly once in each target, even when
``serve`` is killed (SIGKILL) while Salesforce is slow and batches are in flight.
"""

from __future__ import annotations

import random
import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import write_settings
from live_helpers import TOKEN, ServeProcess, wait_for
from message_helpers import ALEX, T0_MS, event, message

from aircall_sync.sandbox.server import Faults
from aircall_sync.sandbox.stack import Sandbox, SandboxOptions

END = datetime(2026, 10, 31, 12, tzinfo=UTC)
BOUND = 10.0


def config_for(box: Sandbox, tmp: Path) -> Path:
    settings = box.settings(tmp / "state.sqlite3", targets=("salesforce", "front"))
    settings["aircall"]["requests_per_minute"] = 60000
    settings["front"]["requests_per_minute"] = 60000
    settings["live"] = {"webhook_token": "${AIRCALL_WEBHOOK_TOKEN}"}
    return write_settings(tmp / "settings.toml", settings)


def message_tasks(box: Sandbox) -> list[str]:
    return [t["CallObject"] for t in box.sf_store.records("Task") if str(t["CallObject"]).startswith("message:")]


def front_imports(box: Sandbox) -> list[str]:
    return [m.external_id for c in box.front_store.conversations.values() for m in c.messages
            if (m.external_id or "").startswith("aircall-message-")]


def one_event_each(n: int, seed: int) -> tuple[list[str], list[dict]]:
    """n messages, each delivered by a single event (sent, received, or a status update whose sent never came)."""
    rng = random.Random(seed)
    externals = ["+33 6 12 34 56 78", "+44 7700 900123", "+1 617-610-5413", "+49 151 23456789"]
    ids, bodies = [], []
    for i in range(n):
        mid = f"SMe2e{seed}x{i:03d}"
        outbound = i % 2 == 1
        data = message(mid, direction="outbound" if outbound else "inbound", external=externals[i % 4],
                       created_ms=T0_MS + i * 1000, user=ALEX if outbound else None, body=f"text {i}",
                       channel="whatsapp" if i % 5 == 0 else None)
        name = "message.received" if not outbound else rng.choice(["message.sent", "message.status_updated"])
        ids.append(mid)
        bodies.append(event(name, data, T0_MS // 1000 + i))
    rng.shuffle(bodies)
    return ids, bodies


@pytest.mark.parametrize("round_", range(2))
def test_R_MSG_1_a_message_delivered_once_is_logged_once_and_survives_sigkill(tmp_path, round_):
    box = Sandbox(SandboxOptions(calls=20, seed=31, days=2, end=END,
                                 salesforce_http_faults=Faults(seed=round_, p_slow=0.5, slow_ms=150,
                                                               path_prefix="/services/data"))).start()
    config = config_for(box, tmp_path)
    ids, bodies = one_event_each(40, round_)
    try:
        serve = ServeProcess(config)
        serve.wait_ready()
        cut = len(bodies) // 2 + round_ * 5
        for body in bodies[:cut]:
            assert serve.post(body).status_code == 200  # acknowledged: it must be logged
        wait_for(lambda: len(message_tasks(box)) > 0, BOUND, "a first message logged")
        assert serve.kill() == -signal.SIGKILL  # batches in flight, without warning
        serve = ServeProcess(config)
        serve.wait_ready()
        for body in bodies[cut:]:
            assert serve.post(body).status_code == 200
        wanted = {f"message:{i}" for i in ids}
        wait_for(lambda: set(message_tasks(box)) >= wanted, 3 * BOUND, "every acknowledged message in Salesforce")
        wait_for(lambda: {f"aircall-message-{i}" for i in ids} <= set(front_imports(box)), 3 * BOUND,
                 "every acknowledged message in Front")
        wait_for(lambda: serve.get("/readyz").json()["inbox_depth"] == 0, BOUND, "the inbox drained")
        tasks = message_tasks(box)
        assert len(tasks) == len(set(tasks)) == len(ids)  # once each, none lost
        imports = front_imports(box)
        assert len(imports) == len(set(imports)) == len(ids)
        assert serve.stop() == 0
        assert "Traceback" not in serve.output
        # DESIGN §3: the webhook token is a secret: in no log line and no byte of the state file.
        assert TOKEN not in serve.output
        for file in tmp_path.glob("state.sqlite3*"):
            assert TOKEN.encode() not in file.read_bytes()
    finally:
        box.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_messages_sent_in_the_emulated_aircall_are_logged_by_serve_once_each(tmp_path):
    """The Aircall emulator sends and receives messages (SMS, MMS, WhatsApp, a group, failures) and delivers
    their events to the real serve, duplicated and out of order; each message lands once per target, field
    by field as RULES §7 says, and each line's name is read once (R-MSG-4)."""
    from aircall_sync.aircall.webhooks import CALL_EVENTS, MESSAGE_EVENTS
    from aircall_sync.sandbox.webhook_delivery import DeliveryOptions

    delivery = DeliveryOptions(p_duplicate=0.4, p_reorder=0.4, reorder_hold_s=2.0, duplicate_delay_s=1.0)
    box = Sandbox(SandboxOptions(calls=30, seed=12, days=1, live=True, webhook_delivery=delivery)).start()
    try:
        port = _free_port()
        receiver = box.register_receiver(port, events=CALL_EVENTS + MESSAGE_EVENTS)
        settings = box.settings(tmp_path / "state.sqlite3", targets=("salesforce", "front"), live=receiver)
        settings["aircall"]["requests_per_minute"] = 60000
        settings["front"]["requests_per_minute"] = 60000
        config = write_settings(tmp_path / "settings.toml", settings)
        serve = ServeProcess(config, token=receiver["webhook_token"], port=port)
        try:
            serve.wait_ready()
            t = box.live_clock.now() - 3600  # every event of each message is due at once
            traffic = box.traffic
            sent = {
                "inbound": traffic.message("inbound", at=t, external_number="pool", body="Can you call me back?"),
                "outbound": traffic.message("outbound", at=t + 1, names_user=True, user=2, body="Shipped!"),
                "anonymous_agent": traffic.message("outbound", at=t + 2, names_user=False, body="See you"),
                "failed": traffic.message("outbound", at=t + 3, fail="undelivered", body="Reminder"),
                "whatsapp": traffic.message("inbound", channel="whatsapp", at=t + 4, body="Menu please"),
                "mms": traffic.message("inbound", at=t + 5, media=["photo.jpg", "scan.png"], body=""),
                "group": traffic.message("outbound", at=t + 6, group=True, body="Team update"),
                "unknown": traffic.message("inbound", at=t + 7, external_number="unknown", body="Hello?"),
            }
            assert box.wait_idle(timeout=30, finalize=False)
            wanted = {f"message:{mid}" for mid in sent.values()}
            wait_for(lambda: wanted <= set(message_tasks(box)), BOUND, "every message in Salesforce")
            wait_for(lambda: {f"aircall-message-{m}" for m in sent.values()} <= set(front_imports(box)), BOUND,
                     "every message in Front")
            wait_for(lambda: serve.get("/readyz").json()["inbox_depth"] == 0, BOUND, "the inbox drained")
        finally:
            assert serve.stop() == 0, serve.output
        tasks = message_tasks(box)
        assert len(tasks) == len(set(tasks)) == len(sent)  # once each, whatever the deliveries
        assert len(front_imports(box)) == len(sent)
        by_key = {t["CallObject"]: t for t in box.sf_store.records("Task")}
        world = box.aircall_store.world
        lines = {line.id: line.name for line in world.lines}
        for name, mid in sent.items():
            placed = traffic.placed_message(mid)
            task = by_key[f"message:{mid}"]
            line = lines[placed.number_id]
            assert task["TaskSubtype"] == "Task" and task["Status"] == "Completed" and task["Type"] is None
            assert line in task["Subject"], (name, task["Subject"])  # the line's name, even from bare events
            assert task["CallType"] is None and task["CallDurationInSeconds"] is None
            if name == "failed":
                assert task["Subject"].startswith("Failed: SMS sent "), task["Subject"]
            elif name == "whatsapp":
                assert task["Subject"].startswith("WhatsApp received from "), task["Subject"]
            elif name == "outbound":
                agent = world.agents[2].name
                assert task["Subject"].startswith(f"SMS sent from {agent} via {line} to "), task["Subject"]
            elif name == "anonymous_agent":
                assert task["Subject"].startswith(f"SMS sent via {line} to "), task["Subject"]
            elif name == "mms":
                lines_ = task["Description"].splitlines()
                assert len(lines_) == 2 and all(x.startswith("Attachment: http") and "photo.jpg" in lines_[0] for x in lines_)
            else:
                assert task["Description"] == {"inbound": "Can you call me back?", "group": "Team update",
                                               "unknown": "Hello?"}[name]
        # The unknown number got a Lead (R-SF-MATCH-4), once.
        unknown = traffic.placed_message(sent["unknown"])
        assert by_key[f"message:{sent['unknown']}"]["WhoId"].startswith("00Q")
        number_reads = [r.path for r in box.aircall_server.requests if r.path.startswith("/v1/numbers/")]
        assert len(number_reads) == len(set(number_reads))  # once per line and process (R-MSG-4)
        assert unknown.raw_digits
    finally:
        box.stop()
