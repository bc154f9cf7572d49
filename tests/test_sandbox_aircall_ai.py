"""The emulated Aircall AI (Conversation Intelligence): the five endpoints, the *.created events, and the
Salesforce Aircall Voice object's AI fields.

Checked against the vendor reference, not the client:
``shared/reference/aircall-live.md`` §3 (cited as §3.N): the endpoints and
their envelopes (§3.1, §3.2: ``topic`` and ``sentiment`` singular), 404 when
there is no content (§3.4), 403 for a company without the AI package, data
produced asynchronously after the call and announced by events whose
``call_id`` is a string and whose ``content`` may be absent (§3.5).
RULES.md R-AI-4 names the Salesforce fields.

No sleeps: generated calls that ended long before the live clock's start
have their insights already; live calls are placed in the past, and the
"not produced yet" window is reached with ``live_clock.advance``. Dates are
compared with each other, never with the wall clock.
"""

from __future__ import annotations

import json
import re
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from aircall_sync.sandbox import DEFAULT_API_ID, DEFAULT_API_TOKEN, AircallApp, LoopbackServer, generate
from aircall_sync.sandbox.aircall_ai import INSIGHTS, AiInsights, AiOptions
from aircall_sync.sandbox.aircall_ai_content import SENTIMENTS
from aircall_sync.sandbox.aircall_webhooks import AI_EVENTS, CALL_EVENTS
from aircall_sync.sandbox.salesforce_api import OrgOptions, start_salesforce_sandbox
from aircall_sync.sandbox.stack import Sandbox, SandboxOptions
from webhook_receiver import Receiver

AUTH = (DEFAULT_API_ID, DEFAULT_API_TOKEN)
ISO_MILLIS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
FIXED_END = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)  # only compared with itself, never with the wall clock
ENVELOPE = {"transcription": "transcription", "summary": "summary", "topics": "topic", "sentiments": "sentiment",
            "action_items": "action_items"}
EVENT = {"transcription": "transcription.created", "summary": "summary.created", "topics": "topics.created",
         "sentiments": "sentiment.created", "action_items": "action_item.created"}
AI_FIELDS = {"aircall__AI_Summary__c", "aircall__AI_Topics__c", "aircall__AI_Sentiment__c",
             "aircall__AI_Action_Items__c", "aircall__AI_Transcription__c"}


def _box(**options: Any) -> Sandbox:
    base = dict(calls=200, seed=5, days=3, salesforce=False, front=False, live=True)
    return Sandbox(SandboxOptions(**{**base, **options})).start()


@pytest.fixture(scope="module")
def box():
    """Read-only use: generated calls and GETs; tests that place calls make their own sandbox."""
    b = _box()
    yield b
    b.stop()
    assert b.aircall_server.errors == [] and b.traffic.errors == []


@pytest.fixture
def live():
    b = _box(calls=40)
    yield b
    b.stop()
    assert b.aircall_server.errors == [] and b.traffic.errors == []


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def _api(box: Sandbox) -> httpx.Client:
    return httpx.Client(base_url=box.aircall_server.url, auth=AUTH, timeout=10)


def _hook(box: Sandbox, url: str, events: list[str] | None = None) -> None:
    with _api(box) as c:
        body = {"url": url, **({"events": events} if events is not None else {})}
        assert c.post("/v1/webhooks", json=body).status_code == 201


def _talk(call: dict) -> int:
    return call["ended_at"] - call["answered_at"] if call["answered_at"] and call["ended_at"] else 0


def _settled(box: Sandbox, min_age: int = 1800) -> list[dict]:
    """Generated calls that ended at least ``min_age`` s before the live clock's start."""
    now = box.live_clock.now()
    return [c for c in box.aircall_store.iter_calls() if c["ended_at"] and c["ended_at"] < now - min_age]


def external_phone(call: dict) -> str:
    """The external participant's number in AI content: '+digits' of raw_digits, or 'anonymous' for a hidden
    caller (the emulator's documented choice, AMBIGUITIES in sandbox/aircall_ai.py; which calls are anonymous
    depends on the day the sandbox is built)."""
    digits = re.sub(r"\D", "", call.get("raw_digits") or "")
    return "anonymous" if call.get("raw_digits") == "anonymous" or not digits else "+" + digits


def _eligible(box: Sandbox) -> list[dict]:
    return [c for c in _settled(box) if c["status"] == "done" and _talk(c) >= 60]


def _get(c: httpx.Client, call_id: int | str, kind: str, **params: str) -> httpx.Response:
    return c.get(f"/v1/calls/{call_id}/{kind}", params=params)


# --------------------------------------------------------------------------
# §3.1-3.2 the five endpoints on generated (historical) calls
# --------------------------------------------------------------------------


def test_the_five_endpoints_serve_an_eligible_call(box):
    calls = _eligible(box)
    assert len(calls) > 20
    with _api(box) as c:
        with_items = 0
        for call in calls[:12]:
            cid = call["id"]
            bodies = {}
            for kind in INSIGHTS:
                r = _get(c, cid, kind)
                assert r.status_code in ((200, 404) if kind == "action_items" else (200,)), (kind, r.text)
                if r.status_code == 200:
                    assert set(r.json()) == {ENVELOPE[kind]}
                    bodies[kind] = r.json()[ENVELOPE[kind]]
            tr = bodies["transcription"]
            assert {"id", "call_id", "call_created_at", "type", "content"} <= set(tr)
            assert tr["call_id"] == cid and tr["type"] == "call" and ISO_MILLIS.match(tr["call_created_at"])
            created = datetime.fromisoformat(tr["call_created_at"].replace("Z", "+00:00"))
            assert created.timestamp() == call["started_at"]
            content = tr["content"]
            assert content["language"] in ("en", "fr", "de") and len(content["utterances"]) >= 4
            starts = [u["start_time"] for u in content["utterances"]]
            assert starts == sorted(starts)
            # Seconds from the start of the call: the talk lies between the answer and the hang-up.
            assert starts[0] >= call["answered_at"] - call["started_at"]
            assert content["utterances"][-1]["end_time"] <= call["ended_at"] - call["started_at"]
            types = {u["participant_type"] for u in content["utterances"]}
            assert types == {"internal", "external"}
            for u in content["utterances"]:
                assert u["text"] and u["end_time"] > u["start_time"]
                if u["participant_type"] == "internal":
                    assert u["user_id"] == call["user"]["id"] and "phone_number" not in u
                else:
                    assert u["phone_number"] == external_phone(call) and "user_id" not in u
            summary = bodies["summary"]
            assert summary["call_id"] == cid and isinstance(summary["content"], str) and summary["content"]
            assert ISO_MILLIS.match(summary["created_at"])
            topic = bodies["topics"]
            assert topic["call_id"] == cid and topic["content"] and all(isinstance(t, str) for t in topic["content"])
            sentiment = bodies["sentiments"]
            assert sentiment["id"] == sentiment["call_id"] == cid
            (participant,) = sentiment["participants"]
            assert participant["type"] == "external" and participant["value"] in SENTIMENTS
            assert participant["phone_number"] == external_phone(call)
            if "action_items" in bodies:
                with_items += 1
                items = bodies["action_items"]
                assert 1 <= len(items) <= 3
                for item in items:  # UNCONFIRMED shape: Riprock's CI object fields
                    assert {"id", "call_id", "content", "created_at", "ai_generated"} <= set(item)
                    assert item["call_id"] == cid and item["content"] and item["ai_generated"] is True
            # Produced after the call: created_at after its end.
            for kind in ("summary", "topics"):
                produced = datetime.fromisoformat(bodies[kind]["created_at"].replace("Z", "+00:00")).timestamp()
                assert call["ended_at"] < produced < call["ended_at"] + 15 * 60
        assert with_items  # most eligible calls have action items, not all


def test_404_for_short_unanswered_unknown_and_in_progress_calls(box):
    settled = _settled(box)
    short = [c for c in settled if c["answered_at"] and 0 < _talk(c) < 60]
    unanswered = [c for c in settled if not c["answered_at"]]
    in_progress = [c for c in box.aircall_store.iter_calls() if c["ended_at"] is None]
    assert short and unanswered and in_progress
    with _api(box) as c:
        for call in (short[0], unanswered[0], *[x for x in unanswered if x["voicemail"]][:1], in_progress[0]):
            for kind in INSIGHTS:
                r = _get(c, call["id"], kind)
                assert r.status_code == 404, (call["id"], kind)
                assert r.json()["success"] is False and r.json()["message"] == "NOT_FOUND"
        for kind in INSIGHTS:
            assert _get(c, 1, kind).status_code == 404  # no such call
            assert _get(c, "abc", kind).status_code == 400  # §3.4: 400 for an invalid call_id
            assert c.post(f"/v1/calls/{short[0]['id']}/{kind}", json={}).status_code == 405


def test_every_eligible_call_has_insights_and_no_other(box):
    """Eligibility per the 60 s rule of thumb (§3.4, Attio), over a sample of settled calls."""
    settled = _settled(box)
    with _api(box) as c:
        for call in settled[::4]:
            expected = 200 if call["status"] == "done" and _talk(call) >= 60 else 404
            assert _get(c, call["id"], "summary").status_code == expected, (call["id"], _talk(call))


def test_transcription_mode(box):
    cid = _eligible(box)[0]["id"]
    with _api(box) as c:
        assert _get(c, cid, "transcription", mode="async").json() == _get(c, cid, "transcription").json()
        assert _get(c, cid, "transcription", mode="realtime").status_code == 403  # AI Assist Pro only (§3.3)
        assert _get(c, cid, "transcription", mode="later").status_code == 400


def test_requests_are_counted_in_the_server_log(box):
    """Each fetch is one request in the log: what request-budget tests count (R-AI-2, DESIGN §10)."""
    ids = [c["id"] for c in _eligible(box)[20:23]]
    server = box.aircall_server
    # The module's box is shared: other tests may have asked for some of these calls already (which calls are
    # eligible moves with the clock), so what this test adds is counted.
    before = {(cid, kind): server.count(path_prefix=f"/v1/calls/{cid}/{kind}", method="GET")
              for cid in ids for kind in INSIGHTS}
    totals = {cid: server.count(api="aircall", path_prefix=f"/v1/calls/{cid}/") for cid in ids}
    with _api(box) as c:
        for cid in ids:
            for kind in INSIGHTS:
                _get(c, cid, kind)
    for cid in ids:
        assert server.count(api="aircall", path_prefix=f"/v1/calls/{cid}/") - totals[cid] == 5
        for kind in INSIGHTS:
            assert server.count(path_prefix=f"/v1/calls/{cid}/{kind}", method="GET") - before[(cid, kind)] == 1


def test_generated_insights_are_deterministic_per_seed():
    def bodies(seed: int) -> list[Any]:
        store = generate(calls=120, seed=seed, start=FIXED_END.timestamp() - 3 * 86400, end=FIXED_END)
        ai = AiInsights(seed=seed, clock=lambda: FIXED_END.timestamp())
        calls = [c for c in store.iter_calls() if c["ended_at"] and _talk(c) >= 60][:10]
        return [ai.rest_body(c, kind) for c in calls for kind in INSIGHTS]

    first = bodies(3)
    assert any(first) and first == bodies(3)
    assert first != bodies(4)


def test_the_talk_threshold_is_configurable():
    store = generate(calls=300, seed=2, start=FIXED_END.timestamp() - 5 * 86400, end=FIXED_END)
    clock = FIXED_END.timestamp
    short = next(c for c in store.iter_calls() if c["ended_at"] and 30 <= _talk(c) < 60)
    assert AiInsights(seed=2, clock=clock).rest_body(short, "summary") is None
    assert AiInsights(seed=2, clock=clock, options=AiOptions(min_talk_s=30)).rest_body(short, "summary")
    app = AircallApp(store, ai=AiInsights(seed=2, clock=clock, options=AiOptions(min_talk_s=30)))
    with LoopbackServer(app, api="aircall") as server:
        r = httpx.get(f"{server.url}/v1/calls/{short['id']}/summary", auth=AUTH)
        assert r.status_code == 200 and r.json()["summary"]["content"]


# --------------------------------------------------------------------------
# §3.3-3.4: 403 without the AI package
# --------------------------------------------------------------------------


def test_403_without_the_ai_package(receiver):
    b = _box(calls=60, ai_package=False)
    try:
        _hook(b, receiver.url())
        eligible = _eligible(b)[0]["id"]
        with _api(b) as c:
            for cid in (eligible, 1):
                for kind in INSIGHTS:
                    r = _get(c, cid, kind)
                    assert r.status_code == 403, (cid, kind)
                    assert r.json()["success"] is False and r.json()["message"] == "FORBIDDEN"
            assert c.get(f"/v1/calls/{eligible}").status_code == 200  # only the AI endpoints
        cid = b.traffic.place("inbound_answered", at=b.live_clock.now() - 3600, talk_s=300)
        assert b.wait_idle(30)
        assert b.traffic.call(cid).ai_events == ()
        assert receiver.of_resource("conversation_intelligence") == []
        assert "call.ended" in receiver.events(call_id=cid)
    finally:
        b.stop()


# --------------------------------------------------------------------------
# §3.5: AI produced after live calls, and the *.created events
# --------------------------------------------------------------------------


def test_ai_events_follow_an_eligible_live_call(live, receiver):
    _hook(live, receiver.url())
    t = live.live_clock.now() - 3 * 3600
    ids = [live.traffic.place("inbound_answered", at=t + 60 * k, talk_s=180 + 120 * k, recording=False)
           for k in range(8)]
    assert live.wait_idle(30)
    with_content = without_content = 0
    with _api(live) as c:
        for cid in ids:
            placed = live.traffic.call(cid)
            bodies = receiver.ai_bodies(cid)
            assert sorted((b["timestamp"], b["event"]) for b in bodies) == sorted(placed.ai_events)
            events = [b["event"] for b in bodies]
            assert {e for e in events} >= set(AI_EVENTS) - {"action_item.created"}
            assert events.count("action_item.created") == len(c.get(f"/v1/calls/{cid}/action_items").json().get(
                "action_items", []))
            hungup = next(b for b in receiver.bodies(call_id=cid) if b["event"] == "call.hungup")
            ended_at = hungup["data"]["ended_at"]
            first = min(bodies, key=lambda b: b["timestamp"])
            assert first["event"] == "transcription.created"  # the others are derived from it
            call = c.get(f"/v1/calls/{cid}").json()["call"]
            for b in bodies:
                assert b["resource"] == "conversation_intelligence"
                assert ended_at < b["timestamp"] <= ended_at + 15 * 60  # seconds to minutes after the call
                d = b["data"]
                assert d["call_id"] == str(cid) and d["call_uuid"] == call["sid"]  # call_id typed String (§3.5)
                assert ISO_MILLIS.match(d["created_at"])
                kind = next(k for k, e in EVENT.items() if e == b["event"])
                rest = c.get(f"/v1/calls/{cid}/{kind}").json()[ENVELOPE[kind]]
                if kind == "sentiments":
                    assert d["id"] == cid  # §3.5: id == call_id
                    has = "participants" in d
                    if has:
                        assert d["participants"] == rest["participants"]
                elif kind == "action_items":
                    item = next(x for x in rest if x["id"] == d["id"])
                    has = "content" in d
                    if has:
                        assert d["content"] == item["content"]
                else:
                    assert d["id"] == rest["id"]
                    has = "content" in d
                    if has:
                        assert d["content"] == rest["content"]
                    if kind == "transcription":
                        assert d["number_id"] == call["number"]["id"] and d["type"] == "call"
                with_content += has
                without_content += not has
    # Whether events carry the content is UNCONFIRMED: some do, some don't, so a client must fetch.
    assert with_content and without_content


def test_no_ai_events_for_short_or_unanswered_live_calls(live, receiver):
    _hook(live, receiver.url())
    t = live.live_clock.now() - 3 * 3600
    ids = [live.traffic.place("inbound_answered", at=t, talk_s=45),
           live.traffic.place("outbound_answered", at=t, talk_s=59),
           live.traffic.place("missed", at=t),
           live.traffic.place("voicemail", at=t),
           live.traffic.place("outbound_unanswered", at=t)]
    long_one = live.traffic.place("outbound_answered", at=t, talk_s=60)
    assert live.wait_idle(30)
    for cid in ids:
        assert live.traffic.call(cid).ai_events == () and receiver.ai_bodies(cid) == []
    assert live.traffic.call(long_one).ai_events and receiver.ai_bodies(long_one)


def test_insights_are_404_until_produced_then_served(live, receiver):
    _hook(live, receiver.url(), list(AI_EVENTS))
    now = live.live_clock.now()
    # A 20-minute call that hung up about a minute ago: its lifecycle is over, its AI is minutes away.
    cid = live.traffic.place("outbound_answered", at=now - 1200 - 60, talk_s=1200, recording=False)
    assert live.wait_idle(30, finalize=False)  # does not wait for the AI
    placed = live.traffic.call(cid)
    times = dict((e, t) for t, e in reversed(placed.ai_events))  # first time of each event
    assert min(times.values()) > live.live_clock.now()
    with _api(live) as c:
        assert c.get(f"/v1/calls/{cid}").json()["call"]["status"] == "done"
        for kind in INSIGHTS:
            assert _get(c, cid, kind).status_code == 404, kind  # not produced yet
        # Just past the transcription: it is served and announced; the rest (5 s or more later) is not yet.
        live.live_clock.advance(times["transcription.created"] - live.live_clock.now() + 0.5)
        assert live.webhook_delivery.wait_for(lambda: receiver.ai_bodies(cid), 30)
        assert [b["event"] for b in receiver.ai_bodies(cid)] == ["transcription.created"]
        assert _get(c, cid, "transcription").status_code == 200
        for kind in ("summary", "topics", "sentiments"):
            assert _get(c, cid, kind).status_code == 404, kind
        live.live_clock.advance(21 * 60)  # past every insight and the REST rewrite that wait_idle waits for
        assert live.wait_idle(30)
        events = {b["event"] for b in receiver.ai_bodies(cid)}
        for kind in INSIGHTS:
            expected = 200 if EVENT[kind] in events else 404  # no action items, no event
            assert _get(c, cid, kind).status_code == expected, kind
        assert {"summary.created", "topics.created", "sentiment.created"} <= events


def test_event_content_share_is_an_option(receiver):
    def contents(p: float) -> set[bool]:
        b = _box(calls=40, ai=AiOptions(p_event_content=p))
        try:
            _hook(b, receiver.url(f"/p{p}"))
            t = b.live_clock.now() - 3 * 3600
            for k in range(3):
                b.traffic.place("inbound_answered", at=t + 60 * k, talk_s=200)
            assert b.wait_idle(30)
            bodies = receiver.of_resource("conversation_intelligence", f"/p{p}")
            assert bodies
            return {("content" in x["data"]) or ("participants" in x["data"]) for x in bodies}
        finally:
            b.stop()

    assert contents(1.0) == {True}
    assert contents(0.0) == {False}


def test_ai_events_are_deterministic():
    def run() -> list[str]:
        b = Sandbox(SandboxOptions(calls=40, seed=9, days=2, end=FIXED_END, salesforce=False, front=False,
                                   live=True)).start()
        rx = Receiver()
        try:
            _hook(b, rx.url(), list(AI_EVENTS))
            at = FIXED_END.timestamp() - 7200
            for k in range(3):
                b.traffic.place("inbound_answered", at=at + 100 * k, talk_s=150 + 50 * k)
            assert b.wait_idle(30)
            return sorted(json.dumps({**x, "token": None}, sort_keys=True) for x in rx.bodies())
        finally:
            b.stop()
            rx.stop()

    first = run()
    assert first and first == run()


def test_a_call_only_webhook_gets_no_ai_event(live, receiver):
    _hook(live, receiver.url(), list(CALL_EVENTS))
    cid = live.traffic.place("inbound_answered", at=live.live_clock.now() - 3600, talk_s=300)
    assert live.wait_idle(30)
    assert live.traffic.call(cid).ai_events
    assert receiver.of_resource("conversation_intelligence") == []


# --------------------------------------------------------------------------
# R-AI-4: the Salesforce Aircall Voice object's AI fields
# --------------------------------------------------------------------------


def _voice_fields(tmp_path: Path, options: OrgOptions | None = None) -> dict[str, dict]:
    sandbox = start_salesforce_sandbox(tmp_path, seed=3, external_numbers=["+16176105413"],
                                       users=[{"name": "Ada Agent", "email": "ada@example.com"}], options=options)
    try:
        with httpx.Client(base_url=sandbox.url, verify=ssl.create_default_context(cafile=sandbox.ca_path),
                          timeout=10, headers={"Authorization": f"Bearer {sandbox.app.issue_token()}"}) as c:
            r = c.get("/services/data/v63.0/sobjects/aircall__Aircall_Voice__c/describe")
            assert r.status_code == 200, r.text
            return {f["name"]: f for f in r.json()["fields"]}
    finally:
        sandbox.stop()


def test_the_voice_object_describes_the_ai_fields(tmp_path):
    fields = _voice_fields(tmp_path)
    assert AI_FIELDS <= fields.keys()
    for name in AI_FIELDS:
        f = fields[name]
        assert f["type"] == "textarea" and f["custom"] and f["createable"] and f["updateable"] and f["nillable"]
    lengths = {name: fields[name]["length"] for name in AI_FIELDS}
    assert lengths["aircall__AI_Transcription__c"] == 131072  # Salesforce's largest long text area
    assert lengths["aircall__AI_Summary__c"] >= 32000 and lengths["aircall__AI_Action_Items__c"] >= 32000
    assert 255 <= lengths["aircall__AI_Topics__c"] <= 32768 and lengths["aircall__AI_Sentiment__c"] >= 20
    assert not fields["aircall__AI_Transcription__c"]["filterable"]  # long text areas cannot be filtered
    assert fields["aircall__AI_Summary__c"]["label"] == "AI Summary"


def test_an_org_without_the_ai_fields(tmp_path):
    assert not AI_FIELDS & _voice_fields(tmp_path / "none", OrgOptions(voice_ai_fields=False)).keys()
    one = _voice_fields(tmp_path / "one", OrgOptions(
        missing_fields=frozenset({"aircall__Aircall_Voice__c.aircall__AI_Transcription__c"})))
    assert AI_FIELDS - one.keys() == {"aircall__AI_Transcription__c"}
