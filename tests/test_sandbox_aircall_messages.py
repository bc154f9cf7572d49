"""The emulated Aircall messages (SMS, MMS, WhatsApp) in live traffic, and GET /v1/numbers/:id, over HTTP.

Checked against the vendor reference, not the client:
``shared/reference/aircall-live.md`` §2 (messages: no list endpoint, the
message object, the samples; cited as §2.N) and §1.3 (the envelope). Messages
reach a receiver started here only as webhook deliveries; nothing sleeps to
synchronise (``wait_idle`` / ``wait_placed``), messages are sent in the past
so that every event is due at once, and no date is compared with the wall
clock.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx
import phonenumbers
import pytest

from aircall_sync.sandbox import DEFAULT_API_ID, DEFAULT_API_TOKEN
from aircall_sync.sandbox.aircall_webhooks import CALL_EVENTS, MESSAGE_EVENTS
from aircall_sync.sandbox.live_messages import FAIL_STATUSES, MAX_BODY, MessageSpec
from aircall_sync.sandbox.stack import Sandbox, SandboxOptions
from aircall_sync.sandbox.webhook_delivery import DeliveryOptions
from webhook_receiver import Receiver

AUTH = (DEFAULT_API_ID, DEFAULT_API_TOKEN)
MESSAGE_ID = re.compile(r"^[a-z]{4}SM[0-9a-f]{32}$")  # §2.4: "abcdSMc6Dc8e…"
ISO_MILLIS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
# §2.3, Riprock's Message model: the keys every message event carries.
MESSAGE_KEYS = {"id", "direct_link", "direction", "external_number", "body", "status", "raw_digits",
                "media_details", "media_url", "created_at", "updated_at", "sent_at", "channel", "number"}
WHATSAPP_KEYS = {"type", "template_content", "metadata", "parent_id", "whatsapp_message_category",
                 "whatsapp_message_type", "recipient_country"}
FIXED_END = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)  # only compared with itself, never with the wall clock


def _box(**options: Any) -> Sandbox:
    delivery = options.pop("delivery", {})
    return Sandbox(SandboxOptions(calls=40, seed=5, days=2, salesforce=False, front=False, live=True,
                                  webhook_delivery=DeliveryOptions(**delivery), **options)).start()


@pytest.fixture
def box():
    b = _box()
    yield b
    b.stop()
    assert b.aircall_server.errors == [] and b.traffic.errors == []


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def _hook(box: Sandbox, url: str, events: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"url": url}
    if events is not None:
        body["events"] = events
    with _api(box) as c:
        r = c.post("/v1/webhooks", json=body)
    assert r.status_code == 201, r.text
    return r.json()["webhook"]


def _api(box: Sandbox) -> httpx.Client:
    return httpx.Client(base_url=box.aircall_server.url, auth=AUTH, timeout=10)


def _past(box: Sandbox, seconds: int = 3600) -> float:
    """A time far enough back that every event of a message is already due (the read receipt: 10 min)."""
    return box.live_clock.now() - seconds


def _seconds(value: int | str) -> float:
    """A message timestamp, epoch milliseconds or ISO 8601 (§2.3: "parse both"), as UNIX seconds."""
    if isinstance(value, int):
        assert value > 10**12, value  # milliseconds, not seconds
        return value / 1000
    assert ISO_MILLIS.match(value), value
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _envelope_seconds(ts: int) -> float:
    return ts / 1000 if ts >= 10**12 else ts


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


def _display(raw: str) -> str:
    return phonenumbers.format_number(phonenumbers.parse(raw, None), phonenumbers.PhoneNumberFormat.INTERNATIONAL)


# --------------------------------------------------------------------------
# The message object, both directions (§2.3, §2.4)
# --------------------------------------------------------------------------


def test_an_inbound_sms_is_one_message_received_with_the_documented_object(box, receiver):
    hook = _hook(box, receiver.url())
    mid = box.traffic.message("inbound", at=_past(box), external_number="pool", body="Can you call me back?")
    assert box.wait_idle(30)
    (body,) = receiver.message_bodies(mid)
    assert set(body) == {"resource", "event", "timestamp", "token", "data"}
    assert body["resource"] == "message" and body["event"] == "message.received" and body["token"] == hook["token"]
    data = body["data"]
    assert MESSAGE_KEYS <= set(data) and not WHATSAPP_KEYS & set(data)
    assert isinstance(data["id"], str) and MESSAGE_ID.match(data["id"]) and data["id"] == mid
    assert data["direction"] == "inbound" and data["status"] == "received" and data["channel"] is None
    assert data["body"] == "Can you call me back?"
    assert data["media_details"] == [] and data["media_url"] == []
    # external_number in display format (webhooks), raw_digits the same number's digits (both §2.4 samples).
    assert data["external_number"] == _display(data["external_number"]) and " " in data["external_number"]
    assert data["raw_digits"] == _digits(data["external_number"]) and data["raw_digits"].isdigit()
    placed = box.traffic.placed_message(mid)
    assert placed.in_pool and "+" + data["raw_digits"] in box.aircall_store.external_numbers()
    assert data["number"]["id"] == placed.number_id
    assert data["direct_link"] == f"{box.aircall_server.url}/v1/numbers/{placed.number_id}/messages/{mid}"
    assert "user" not in data  # inbound messages have no agent
    created = _seconds(data["created_at"])
    assert _seconds(data["sent_at"]) == created == _seconds(data["updated_at"])
    assert abs(_envelope_seconds(body["timestamp"]) - created) < 1


def test_an_outbound_sms_is_sent_then_delivered(box, receiver):
    _hook(box, receiver.url())
    mid = box.traffic.message("outbound", at=_past(box), body="Your order has shipped!", names_user=True, user=2)
    assert box.wait_idle(30)
    bodies = receiver.message_bodies(mid)
    assert [b["event"] for b in bodies] == ["message.sent", "message.status_updated"]
    sent, updated = (b["data"] for b in bodies)
    assert [sent["status"], updated["status"]] == ["sent", "delivered"]
    assert sent["id"] == updated["id"] == mid and sent["direction"] == "outbound"
    # The same message, as of each event: created_at never moves, updated_at does.
    assert _seconds(sent["created_at"]) == _seconds(updated["created_at"])
    assert _seconds(sent["created_at"]) < _seconds(sent["sent_at"]) == _seconds(sent["updated_at"])
    assert _seconds(updated["updated_at"]) > _seconds(sent["updated_at"])
    assert _seconds(updated["sent_at"]) == _seconds(sent["sent_at"])
    assert _envelope_seconds(bodies[0]["timestamp"]) <= _envelope_seconds(bodies[1]["timestamp"])
    # The agent, named here on purpose (whether events name one is UNCONFIRMED, §2.3).
    agent = box.aircall_store.world.agents[2]
    for d in (sent, updated):
        assert d["user"]["id"] == agent.id and d["user"]["name"] == agent.name and d["user"]["email"]
    assert box.traffic.placed_message(mid).status == "delivered"


@pytest.mark.parametrize("fail", [True, "failed", "undelivered"])
def test_a_failed_outbound_message_ends_failed_or_undelivered(box, receiver, fail):
    _hook(box, receiver.url())
    mid = box.traffic.message("outbound", at=_past(box), fail=fail)
    assert box.wait_idle(30)
    bodies = receiver.message_bodies(mid)
    assert [b["event"] for b in bodies] == ["message.sent", "message.status_updated"]
    final = bodies[-1]["data"]["status"]
    assert final in FAIL_STATUSES and (fail is True or final == fail)
    assert box.traffic.placed_message(mid).status == final


def test_whatsapp_messages_in_both_directions(box, receiver):
    _hook(box, receiver.url())
    t = _past(box)
    out_id = box.traffic.message("outbound", channel="whatsapp", at=t)
    in_id = box.traffic.message("inbound", channel="whatsapp", at=t + 1, media=["menu.pdf"])
    sms_id = box.traffic.message("inbound", at=t + 2)
    assert box.wait_idle(30)
    out = receiver.message_bodies(out_id)
    assert [b["event"] for b in out][:2] == ["message.sent", "message.status_updated"]
    # A delivered WhatsApp message may be read later: a second status update.
    assert [b["data"]["status"] for b in out] in (["sent", "delivered"], ["sent", "delivered", "read"])
    for b in out:
        d = b["data"]
        assert d["channel"] == "whatsapp" and WHATSAPP_KEYS <= set(d)
        assert d["whatsapp_message_category"] in ("utility", "marketing") and d["type"] == "text"
        assert d["recipient_country"] == phonenumbers.region_code_for_number(
            phonenumbers.parse("+" + d["raw_digits"]))
    (inbound,) = receiver.message_bodies(in_id)
    d = inbound["data"]
    assert inbound["event"] == "message.received" and d["channel"] == "whatsapp"
    assert d["whatsapp_message_category"] is None and d["type"] == "document"
    assert [m["file_type"] for m in d["media_details"]] == ["application/pdf"]
    (sms,) = receiver.message_bodies(sms_id)
    assert sms["data"]["channel"] is None and not WHATSAPP_KEYS & set(sms["data"])


def test_mms_media_details_inbound_and_media_url_outbound(box, receiver):
    _hook(box, receiver.url())
    t = _past(box)
    in_id = box.traffic.message("inbound", at=t, media=["photo.jpg", "scan.png"], body="")
    out_id = box.traffic.message("outbound", at=t + 1, media=["brochure.pdf"])
    assert box.wait_idle(30)
    (inbound,) = receiver.message_bodies(in_id)
    d = inbound["data"]
    assert d["body"] == "" and d["media_url"] == []
    assert [(m["file_name"], m["file_type"]) for m in d["media_details"]] == [
        ("photo.jpg", "image/jpeg"), ("scan.png", "image/png")]
    for m in d["media_details"]:
        assert set(m) == {"file_name", "file_type", "presigned_url"}
        # A presigned link that expires, like the recordings' (wire-formats.md Aircall §5).
        assert m["presigned_url"].startswith("http") and "X-Amz-Expires=600" in m["presigned_url"]
        assert "X-Amz-Signature=" in m["presigned_url"] and m["file_name"] in m["presigned_url"]
    for b in receiver.message_bodies(out_id):
        d = b["data"]
        assert d["media_details"] == [] and len(d["media_url"]) == 1
        assert d["media_url"][0].endswith("/brochure.pdf")


def test_group_messages_are_group_message_events_with_participants(box, receiver):
    _hook(box, receiver.url())
    t = _past(box)
    in_id = box.traffic.message("inbound", at=t, group=True)
    out_id = box.traffic.message("outbound", at=t + 1, group=4)
    one_id = box.traffic.message("inbound", at=t + 2)
    assert box.wait_idle(30)
    (inbound,) = receiver.message_bodies(in_id)
    out = receiver.message_bodies(out_id)
    assert inbound["event"] == "group_message.received" and inbound["resource"] == "message"
    assert [b["event"] for b in out] == ["group_message.sent", "group_message.status_updated"]
    for bodies, count in (([inbound], 3), (out, 4)):
        for b in bodies:
            d = b["data"]
            assert MESSAGE_KEYS <= set(d) and isinstance(d["group_conversation_id"], str)
            parts = d["participants"]
            assert len(parts) == len(set(parts)) == count and parts[0] == d["external_number"]
            assert all(p == _display(p) for p in parts)
    assert len({b["data"]["group_conversation_id"] for b in out}) == 1
    (one,) = receiver.message_bodies(one_id)
    assert one["event"] == "message.received" and "participants" not in one["data"]
    assert "group_conversation_id" not in one["data"]


def test_unknown_and_explicit_numbers(box, receiver):
    _hook(box, receiver.url())
    t = _past(box)
    unknown = box.traffic.message("inbound", at=t, external_number="unknown")
    explicit = box.traffic.message("outbound", at=t + 1, external_number="+33612345678")
    assert box.wait_idle(30)
    pool = set(box.aircall_store.external_numbers())
    (u,) = receiver.message_bodies(unknown)
    assert "+" + u["data"]["raw_digits"] not in pool and box.traffic.placed_message(unknown).caller == "unknown"
    assert not box.traffic.placed_message(unknown).in_pool
    for b in receiver.message_bodies(explicit):
        assert b["data"]["external_number"] == "+33 6 12 34 56 78" and b["data"]["raw_digits"] == "33612345678"
    assert box.traffic.placed_message(explicit).caller == "explicit"


# --------------------------------------------------------------------------
# What varies between events: timestamps, number, user (§1.3, §2.3)
# --------------------------------------------------------------------------


def _mix(box: Sandbox, receiver: Receiver, count: int = 40) -> list[str]:
    _hook(box, receiver.url())
    t = _past(box, 7200)
    ids = [box.traffic.message("outbound" if k % 2 else "inbound", at=t + 30 * k) for k in range(count)]
    assert box.wait_idle(30)
    return ids


def test_timestamps_come_in_mixed_formats_that_agree(box, receiver):
    ids = _mix(box, receiver)
    bodies = receiver.of_resource("message")
    created = [b["data"]["created_at"] for b in bodies]
    # §2.3: epoch milliseconds in some events, ISO strings in others.
    assert any(isinstance(v, int) for v in created) and any(isinstance(v, str) for v in created)
    for b in bodies:
        d = b["data"]
        kinds = {type(d[k]) for k in ("created_at", "updated_at", "sent_at") if d[k] is not None}
        assert len(kinds) == 1  # one format per event
    # A share of envelopes carry a millisecond timestamp, like the message.received sample (§1.3).
    stamps = [b["timestamp"] for b in bodies]
    assert any(ts >= 10**12 for ts in stamps) and any(ts < 10**11 for ts in stamps)
    for mid in ids:
        mine = receiver.message_bodies(mid)
        # Whatever the format, every event of a message says the same creation instant.
        assert len({_seconds(b["data"]["created_at"]) for b in mine}) == 1
        for b in mine:
            assert abs(_envelope_seconds(b["timestamp"]) - _seconds(b["data"]["updated_at"])) < 1


def test_number_sometimes_lacks_its_name_and_get_number_gives_it(box, receiver):
    _mix(box, receiver)
    numbers = [b["data"]["number"] for b in receiver.of_resource("message")]
    named = {n["id"]: n["name"] for n in numbers if "name" in n}
    bare = [n for n in numbers if "name" not in n]
    assert named and bare  # R-MSG-4: the tool must read the name itself for some events
    assert all(set(n) in ({"id", "digits"}, {"id", "direct_link"}) for n in bare)  # the two §2.4 samples
    with _api(box) as c:
        for n in bare:
            r = c.get(f"/v1/numbers/{n['id']}")
            assert r.status_code == 200
            number = r.json()["number"]
            assert named.get(n["id"], number["name"]) == number["name"]
            if "digits" in n:
                assert n["digits"] == number["digits"]


def test_only_some_outbound_messages_name_their_agent(box, receiver):
    ids = _mix(box, receiver)
    per_message = {}
    for mid in ids:
        bodies = receiver.message_bodies(mid)
        has_user = {"user" in b["data"] for b in bodies}
        assert len(has_user) == 1  # every event of a message alike
        per_message[mid] = (bodies[0]["data"]["direction"], has_user.pop())
    assert not any(named for direction, named in per_message.values() if direction == "inbound")
    outbound = [named for direction, named in per_message.values() if direction == "outbound"]
    assert any(outbound) and not all(outbound)
    for b in receiver.of_resource("message"):
        if "user" in b["data"]:
            assert {"id", "name", "email"} <= set(b["data"]["user"])


# --------------------------------------------------------------------------
# GET /v1/numbers/:id and the absence of any message endpoint (§2.2)
# --------------------------------------------------------------------------


def test_get_number(box):
    world = box.aircall_store.world
    line = world.lines[2]
    with _api(box) as c:
        r = c.get(f"/v1/numbers/{line.id}")
        assert r.status_code == 200 and set(r.json()) == {"number"}
        number = r.json()["number"]
        # The Number object of aircall-api.md §6, as a call nests it, plus users.
        assert {"id", "direct_link", "name", "digits", "country", "time_zone", "created_at", "open",
                "availability_status", "live_recording_activated", "priority", "messages", "users"} <= set(number)
        assert (number["id"], number["name"], number["country"], number["time_zone"]) == (
            line.id, line.name, line.country, line.time_zone)
        assert number["digits"] == line.digits and number["direct_link"].endswith(f"/v1/numbers/{line.id}")
        assert "e164_digits" not in number  # webhook events only
        assert [u["id"] for u in number["users"]] == [world.agents[u].id for u in line.users]
        calls = c.get("/v1/calls", params={"per_page": 50}).json()["calls"]
        nested = next(x["number"] for x in calls if x["number"]["id"] == line.id)
        assert {k: v for k, v in number.items() if k != "users"} == nested
        for missing in ("1", "999999999", "abc"):
            r = c.get(f"/v1/numbers/{missing}")
            assert r.status_code == 404 and r.json()["success"] is False
        assert c.post(f"/v1/numbers/{line.id}", json={}).status_code == 405
        assert httpx.get(box.aircall_url + f"/numbers/{line.id}").status_code == 401


def test_messages_are_never_served_by_the_rest_api(box, receiver):
    _hook(box, receiver.url())
    mid = box.traffic.message("inbound", at=_past(box))
    assert box.wait_idle(30)
    (body,) = receiver.message_bodies(mid)
    calls_before = len(box.aircall_store)
    with _api(box) as c:
        nid = body["data"]["number"]["id"]
        for path in ("/v1/messages", f"/v1/messages/{mid}", f"/v1/numbers/{nid}/messages",
                     f"/v1/numbers/{nid}/messages/{mid}", "/v1/numbers"):
            assert c.get(path).status_code == 404, path
        assert c.get(body["data"]["direct_link"]).status_code == 404  # UNCONFIRMED whether it works: no
    assert len(box.aircall_store) == calls_before


def test_a_webhook_subscribed_to_calls_only_gets_no_message(box, receiver):
    _hook(box, receiver.url("/calls"), list(CALL_EVENTS))
    _hook(box, receiver.url("/messages"), list(MESSAGE_EVENTS))
    t = _past(box)
    box.traffic.message("inbound", at=t)
    box.traffic.message("outbound", at=t, group=True)
    cid = box.traffic.place("outbound_unanswered", at=t)
    assert box.wait_idle(30)
    assert receiver.of_resource("message", "/calls") == []
    assert receiver.events("/messages", call_id=cid) == []
    assert {b["event"] for b in receiver.bodies("/messages")} == {
        "message.received", "group_message.sent", "group_message.status_updated"}


# --------------------------------------------------------------------------
# Delivery faults, determinism, background traffic
# --------------------------------------------------------------------------


def test_duplicates_through_the_delivery_engine(receiver):
    b = _box(time_scale=0.001, delivery={"p_duplicate": 1.0})
    try:
        _hook(b, receiver.url())
        t = _past(b)
        ids = [b.traffic.message("inbound", at=t), b.traffic.message("outbound", at=t + 1)]
        assert b.wait_idle(30)
        for mid in ids:
            bodies = receiver.message_bodies(mid)
            planned = Counter(e for _, e in b.traffic.placed_message(mid).events)
            assert Counter(x["event"] for x in bodies) == Counter({e: 2 * n for e, n in planned.items()})
            # The copy is the same delivery: same body, timestamp included.
            for event in planned:
                copies = {json.dumps(x, sort_keys=True) for x in bodies if x["event"] == event}
                assert len(copies) == 1
        assert b.traffic.errors == []
    finally:
        b.stop()


def test_messages_are_deterministic():
    def run() -> list[Any]:
        b = Sandbox(SandboxOptions(calls=40, seed=9, days=2, end=FIXED_END, salesforce=False, front=False,
                                   live=True)).start()
        rx = Receiver()
        try:
            _hook(b, rx.url())
            at = FIXED_END.timestamp() - 7200  # the live clock starts at the data set's end
            for k, spec in enumerate((dict(direction="inbound", media=["a.jpg"]), dict(direction="outbound"),
                                      dict(direction="outbound", channel="whatsapp"), dict(direction="inbound",
                                                                                           group=True))):
                b.traffic.message(at=at + 17 * k, **spec)
            assert b.wait_idle(30)
            base = b.aircall_server.url
            bodies = sorted(json.dumps({**x, "token": None}, sort_keys=True).replace(base, "BASE")
                            for x in rx.of_resource("message"))
            return [bodies, [(m.id, m.external_number, m.events) for m in b.traffic.messages]]
        finally:
            b.stop()
            rx.stop()

    assert run() == run()


def test_background_messages_cover_the_cases_and_are_seeded(receiver):
    def run() -> list[tuple[str, str | None, bool, str, str]]:
        b = _box(time_scale=0.001, live_messages_per_hour=720)
        try:
            _hook(b, receiver.url())
            assert b.traffic.wait_placed(0, 30, messages=12)
            b.traffic.stop_background()
            assert b.wait_idle(60)
            assert b.traffic.placed == []  # no call rate: messages only
            return [(m.direction, m.spec.channel, bool(m.spec.group), m.status, m.caller)
                    for m in b.traffic.messages[:12]]
        finally:
            b.stop()

    first = run()
    assert {d for d, *_ in first} == {"inbound", "outbound"}
    assert {c for _, c, *_ in first} == {None, "whatsapp"}
    assert any(g for _, _, g, *_ in first)
    assert {s for *_, s, _ in first} >= {"received", "delivered"} and {s for *_, s, _ in first} & set(FAIL_STATUSES)
    assert {c for *_, c in first} == {"pool", "unknown"}
    assert first == run()


def test_background_calls_bring_messages_by_default(receiver):
    b = _box(time_scale=0.001, live_calls_per_hour=360)  # live_messages_per_hour None: a third of that
    try:
        _hook(b, receiver.url())
        # The background started with the box: what it sent before the hook existed reached nobody, so
        # wait for two messages placed after it (on a loaded machine the hook can come late).
        after = len(b.traffic.messages)
        assert b.traffic.wait_placed(6, 30, messages=after + 2)
        b.traffic.stop_background()
        assert b.wait_idle(60)
        assert receiver.of_resource("message") and b.traffic.errors == []
    finally:
        b.stop()
    quiet = _box(time_scale=0.001, live_calls_per_hour=360, live_messages_per_hour=0)
    try:
        assert quiet.traffic.wait_placed(3, 30)
        assert quiet.traffic.messages == []
    finally:
        quiet.stop()


def test_spec_refusals():
    for kwargs in (dict(direction="sideways"), dict(channel="sms"), dict(external_number="anonymous"),
                   dict(body="x" * (MAX_BODY + 1)), dict(direction="inbound", fail=True),
                   dict(direction="outbound", fail="lost"), dict(direction="outbound", channel="whatsapp", group=True),
                   dict(group=1), dict(media="photo.jpg"), dict(direction="inbound", user=1)):
        with pytest.raises(ValueError):
            MessageSpec(**kwargs)
    assert MessageSpec(body="x" * MAX_BODY).body


def test_bad_line_or_user_is_refused_before_anything_is_sent(box):
    with pytest.raises(ValueError):
        box.traffic.message("outbound", line=99)
    with pytest.raises(ValueError):
        box.traffic.message("outbound", user=99)
    assert box.traffic.messages == []
