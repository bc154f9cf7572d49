"""Front logging end to end (RULES §6): the real CLI against the emulated Front, then its store.

Every request the tool sent in these tests is also checked against Front's
official OpenAPI document (contract test, issue #4).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from conftest import write_settings
from typer.testing import CliRunner

from aircall_sync.cli import app
from aircall_sync.sandbox.front_api import DEFAULT_API_TOKEN as FRONT_TOKEN
from aircall_sync.sandbox.front_api import validate_request
from aircall_sync.sandbox.stack import Sandbox, SandboxOptions
from aircall_sync.state import State

END = datetime(2026, 10, 31, 12, tzinfo=UTC)
FROM, TO = "2026-10-26", "2026-10-31"
SPEC = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "front" / "core-api.json"
runner = CliRunner()


def make_box(**kwargs) -> Sandbox:
    options = SandboxOptions(calls=kwargs.pop("calls", 300), seed=kwargs.pop("seed", 6), days=5, end=END,
                             salesforce=False, **kwargs)
    return Sandbox(options).start()


def settings_for(box: Sandbox, tmp_path: Path, **front) -> Path:
    settings = box.settings(tmp_path / "state.sqlite3", targets=("front",))
    settings["aircall"]["requests_per_minute"] = 60000
    settings["front"]["requests_per_minute"] = 60000
    settings["front"].update(front)
    return write_settings(tmp_path / "settings.toml", settings)


def run(config: Path, *args: str):
    return runner.invoke(app, ["--config", str(config), *args])


def backfill(config: Path, *extra: str):
    result = run(config, "backfill", "--from", FROM, "--to", TO, *extra)
    assert result.exit_code == 0, result.output
    return result


def settled_calls(box: Sandbox) -> list[dict]:
    return [c for c in box.aircall_store.iter_calls(0, 2**40) if c["status"] == "done" and c["ended_at"]]


def messages_of(box: Sandbox) -> dict[str, tuple]:
    """external_id -> (conversation, message)."""
    out = {}
    for conversation in box.front_store.conversations.values():
        for message in conversation.messages:
            out[message.external_id] = (conversation, message)
    return out


def assert_contract(box: Sandbox) -> None:
    spec = json.loads(SPEC.read_text()) if SPEC.exists() else None
    problems = []
    for request in box.front_store.received:
        for problem in validate_request(request.method, request.path, request.body, spec=spec):
            problems.append(f"{request.method} {request.path}: {problem}")
    assert problems == []


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One separate-activities backfill, shared by the read-only tests below."""
    box = make_box()
    tmp = tmp_path_factory.mktemp("front")
    config = settings_for(box, tmp)
    first = backfill(config, "--report", str(tmp / "r.jsonl"))
    yield box, config, first, tmp
    box.stop()


def test_R_FRONT_1_one_contact_per_number_and_no_number_is_skipped(logged):
    box, _, _, tmp = logged
    numbers = {}
    for call in settled_calls(box):
        digits = call["raw_digits"]
        if digits and digits != "anonymous":
            numbers.setdefault(digits, []).append(call["id"])
    contacts = box.front_store.contacts.values()
    handles = Counter(h["handle"] for c in contacts for h in c.handles if h["source"] == "phone")
    assert max(handles.values()) == 1  # never two contacts for one number
    lines = [json.loads(line) for line in (tmp / "r.jsonl").read_text().splitlines()]
    skipped = [line for line in lines if line["outcome"] == "skipped"]
    assert skipped and all(line["reason"] == "no external number" for line in skipped)
    anonymous = {c["id"] for c in settled_calls(box) if c["raw_digits"] == "anonymous"}
    assert anonymous <= {line["call_id"] for line in skipped}


def test_R_FRONT_2_every_call_of_a_contact_goes_into_one_open_conversation(logged):
    box, _, _, _ = logged
    by_conversation: dict[str, set[str]] = {}
    for conversation in box.front_store.conversations.values():
        handles = {h for m in conversation.messages for h in m.external_handles}
        by_conversation[conversation.id] = handles
        assert conversation.status == "open"  # R-FRONT-6: open
    # A phone handle appears in exactly one conversation.
    seen = Counter(h for handles in by_conversation.values() for h in handles)
    assert seen and max(seen.values()) == 1


def test_R_FRONT_3_subjects(logged):
    box, _, _, _ = logged
    msgs = messages_of(box)
    calls = {c["id"]: c for c in settled_calls(box)}
    for external_id, (conversation, message) in msgs.items():
        call = calls[int(external_id.split("-")[1])]
        first = min(conversation.messages, key=lambda m: (m.created_at, m.seq))
        assert conversation.subject == first.subject  # fixed by the call that opened it
    voicemail_openers = [c for c in box.front_store.conversations.values()
                         if min(c.messages, key=lambda m: (m.created_at, m.seq)).subject == "Voicemail"]
    assert voicemail_openers, "the data set has a conversation opened by a voicemail"
    assert all(c.subject == "Voicemail" for c in voicemail_openers)
    assert any(c.subject.endswith(" - Support US") for c in box.front_store.conversations.values())


def test_R_FRONT_4_separate_activities_with_stable_external_ids(logged):
    box, _, _, _ = logged
    msgs = messages_of(box)
    for call in settled_calls(box):
        if call["raw_digits"] == "anonymous" or f"aircall-{call['id']}-summary" not in msgs:
            continue
        assert f"aircall-{call['id']}-duration" in msgs
        _, duration = msgs[f"aircall-{call['id']}-duration"]
        talk = call["ended_at"] - call["answered_at"] if call["answered_at"] else 0
        assert duration.body == f"Duration: {talk // 60}m {talk % 60}s"
        _, summary = msgs[f"aircall-{call['id']}-summary"]
        assert summary.is_inbound == (call["direction"] == "inbound")
        assert summary.created_at == call["started_at"]
        assert summary.is_archived is False and summary.should_skip_rules is False
        has_media = call["asset"] or call["recording"] or call["voicemail"]
        assert (f"aircall-{call['id']}-media" in msgs) == bool(call["asset"] or (has_media and call["asset"]))


def test_R_FRONT_7_voicemail_link_in_the_same_run(logged):
    box, _, _, _ = logged
    msgs = messages_of(box)
    voicemails = [c for c in settled_calls(box) if c["voicemail"] and not c["answered_at"]
                  and c["direction"] == "inbound" and c["raw_digits"] != "anonymous"]
    assert voicemails
    for call in voicemails:
        _, media = msgs[f"aircall-{call['id']}-media"]
        assert media.body.startswith("Voicemail: ") and str(call["id"]) in media.body


def test_R_FRONT_5_comments_by_the_agent_once(logged):
    box, config, _, _ = logged
    store = box.front_store
    msgs = messages_of(box)
    expected: dict[str, Counter] = {}
    for call in settled_calls(box):
        key = f"aircall-{call['id']}-summary"
        if key not in msgs or not call["comments"]:
            continue
        conversation, _ = msgs[key]
        for comment in call["comments"]:
            author = comment.get("posted_by")
            mate = store.teammate_by_email(author["email"]) if author else None
            expected.setdefault(conversation.id, Counter())[(comment["content"], mate.id if mate else None)] += 1
    assert expected
    posted = {cid: Counter((c.body, c.author_id) for c in store.conversations[cid].comments) for cid in expected}
    assert posted == expected  # each comment once, authored by the agent's teammate (else the API user)
    again = backfill(config)
    assert "unchanged" in again.stdout
    assert {cid: Counter((c.body, c.author_id) for c in store.conversations[cid].comments)
            for cid in expected} == expected


def test_R_FRONT_6_answered_calls_assign_the_conversation_to_their_agent(logged):
    box, _, _, _ = logged
    store = box.front_store
    msgs = messages_of(box)
    last_answered: dict[str, dict] = {}
    for call in sorted(settled_calls(box), key=lambda c: c["started_at"]):
        key = f"aircall-{call['id']}-summary"
        if key not in msgs:
            continue
        conversation, _ = msgs[key]
        if call["answered_at"]:
            agent = call["transferred_to"] or call["user"]
            mate = store.teammate_by_email(agent["email"]) if agent else None
            if mate:
                last_answered[conversation.id] = mate.id
    assert last_answered
    for conversation_id, mate_id in last_answered.items():
        assert store.conversations[conversation_id].assignee_id == mate_id


def test_the_requests_follow_fronts_openapi_document(logged):
    assert_contract(logged[0])


# ---------------------------------------------------------------- archive, move, unrelated threads


def test_R_FRONT_2_archived_opens_a_new_conversation_moved_keeps_receiving(tmp_path):
    box = make_box(calls=120, seed=8)
    try:
        store = box.front_store
        config = settings_for(box, tmp_path)
        frequent = Counter(c["raw_digits"] for c in settled_calls(box) if c["raw_digits"] != "anonymous")
        (a, _), (b, _) = frequent.most_common(2)
        e164 = {n: "+" + "".join(ch for ch in n if ch.isdigit()) for n in (a, b)}
        # An unrelated open e-mail thread of the second contact, in another inbox: never used.
        unrelated = store.seed_conversation("Support", e164[b], subject="Re: invoice")
        backfill(config)
        first_a = {c.id for c in store.conversations_of(e164[a])} - {unrelated.id}
        first_b = {c.id for c in store.conversations_of(e164[b])} - {unrelated.id}
        assert len(first_a) == len(first_b) == 1
        assert len(store.conversations[unrelated.id].messages) == 1
        store.archive(next(iter(first_a)))
        store.move(next(iter(first_b)), "Support")
        now = int(END.timestamp()) - 3600
        box.aircall_store.add_calls([
            {"started_at": now, "answered_at": now + 5, "ended_at": now + 65, "raw_digits": a},
            {"started_at": now + 100, "answered_at": None, "ended_at": now + 130, "raw_digits": b},
        ])
        backfill(config)
        after_a = {c.id for c in store.conversations_of(e164[a])} - {unrelated.id}
        after_b = {c.id for c in store.conversations_of(e164[b])} - {unrelated.id}
        assert len(after_a) == 2  # archived: the next call opened a new conversation
        assert after_b == first_b  # moved by an agent: still the one that receives the calls
        assert store.conversations[next(iter(first_b))].inbox_id == store.inbox("Support").id
        assert len(store.conversations[unrelated.id].messages) == 1
        assert_contract(box)
    finally:
        box.stop()


def agent_sets_status(box: Sandbox, conversation_id: str, status: str) -> None:
    """What a Front user does to a conversation, through Front's own API (PATCH, [spec] update-conversation)."""
    with httpx.Client(base_url=box.front_sandbox.url, headers={"Authorization": f"Bearer {FRONT_TOKEN}"}) as http:
        assert http.patch(f"/conversations/{conversation_id}", json={"status": status}).status_code == 204


@pytest.mark.parametrize("status", ["archived", "deleted"])
def test_R_FRONT_2_3_a_conversation_closed_before_its_id_was_known_is_not_reused(tmp_path, status):
    """Run 1 opens a conversation and never learns its id (no comment to post, so the
    thread_ref import is never resolved); an agent archives or deletes it; run 2's call
    of the same contact opens a new conversation (R-FRONT-2) whose subject is the new
    call's (R-FRONT-3), and the closed one receives nothing and stays closed."""
    box = make_box(calls=0)
    try:
        store, server = box.front_store, box.front_sandbox.server
        config = settings_for(box, tmp_path)
        digits = "+1 646-555-3890"  # calls=0: the two calls below are the only ones
        e164 = "+16465553890"
        at = int(END.timestamp()) - 3 * 3600
        box.aircall_store.add_calls([{"started_at": at, "answered_at": None, "ended_at": at + 30,
                                      "raw_digits": digits}])  # missed, no comments
        backfill(config)
        (first,) = store.conversations_of(e164)
        assert first.subject.startswith("Missed call - ")
        with State.open(tmp_path / "state.sqlite3") as state:
            remembered = state.cache_get("front.conversation", [e164])[e164]
        # The case of the defect: the state knows the thread, not the conversation's id.
        assert remembered.get("uid") and remembered.get("thread_ref") and not remembered.get("conversation_id")
        agent_sets_status(box, first.id, status)
        messages_before = len(first.messages)

        box.aircall_store.add_calls([{"started_at": at + 3600, "answered_at": at + 3605, "ended_at": at + 3700,
                                      "raw_digits": digits}])  # answered inbound: another subject
        # The dry run reads no status (it sends no request for a remembered contact) and so
        # does not promise that the remembered conversation receives the call.
        sent = len(store.received)
        preview = run(config, "backfill", "--from", FROM, "--to", TO, "--dry-run", "--format", "json")
        assert preview.exit_code == 0, preview.output
        (conversation,) = [c for c in json.loads(preview.stdout)["changes"] if c["object"] == "conversation"]
        assert conversation["action"] == "noop" and "archived or deleted" in conversation["note"]
        assert {r.path for r in store.received[sent:]} == {"/inboxes", "/teammates"}
        backfill(config)

        assert store.conversation(first.id).status == status  # not reopened
        assert len(store.conversation(first.id).messages) == messages_before  # received nothing
        (second,) = store.conversations_of(e164, statuses=["assigned", "unassigned"])
        assert second.id != first.id
        assert second.subject.startswith("Inbound call - ")  # the new call's, not the remembered "Missed call"
        assert {m.subject for m in second.messages} == {second.subject}
        # One status read for the remembered conversation, on top of resolving its id.
        assert server.count(path_prefix=f"/conversations/{first.id}", method="GET") == 1
        assert_contract(box)
    finally:
        box.stop()


@pytest.mark.parametrize("target_status", ["open", "archived"])
def test_R_FRONT_2_3_a_merged_conversation_is_followed_while_open(tmp_path, target_status):
    """The remembered conversation id (known: run 1 posted a comment) was merged by an agent:
    Front answers 301 to the conversation it now lives in ([spec], reference §7). Open, it
    receives the next call under its own subject; archived, the next call opens a new
    conversation with the new call's subject (R-FRONT-2, R-FRONT-3). One status read."""
    box = make_box(calls=0)
    try:
        store, server = box.front_store, box.front_sandbox.server
        config = settings_for(box, tmp_path)
        digits, e164 = "+1 646-555-3891", "+16465553891"
        at = int(END.timestamp()) - 3 * 3600
        box.aircall_store.add_calls([{"started_at": at, "answered_at": None, "ended_at": at + 30, "raw_digits": digits,
                                      "comments": [{"id": 1, "content": "Call back tomorrow", "posted_at": at + 60,
                                                    "posted_by": None}]}])
        backfill(config)
        (first,) = store.conversations_of(e164)
        with State.open(tmp_path / "state.sqlite3") as state:
            assert state.cache_get("front.conversation", [e164])[e164]["conversation_id"] == first.id
        into = store.seed_conversation("Aircall Phone", e164, subject="Callback request", body="Please call back")
        store.merge(first.id, into.id)
        if target_status == "archived":
            agent_sets_status(box, into.id, "archived")
        held = len(into.messages)

        box.aircall_store.add_calls([{"started_at": at + 3600, "answered_at": at + 3605, "ended_at": at + 3700,
                                      "raw_digits": digits}])
        backfill(config)

        assert server.count(path_prefix=f"/conversations/{first.id}", method="GET", status=301) == 1
        assert server.count(path_prefix=f"/conversations/{into.id}", method="GET") == 1
        if target_status == "open":
            assert len(store.conversation(into.id).messages) > held  # the call went where the thread lives
            assert store.conversations_of(e164, statuses=["assigned", "unassigned"]) == [into]
            assert into.subject == "Callback request"
        else:
            assert store.conversation(into.id).status == "archived"
            assert len(store.conversation(into.id).messages) == held
            (new,) = store.conversations_of(e164, statuses=["assigned", "unassigned"])
            assert new.subject.startswith("Inbound call - ")
        assert_contract(box)
    finally:
        box.stop()


# ---------------------------------------------------------------- budget, bursts


@pytest.mark.slow
def test_budget_combined_500_calls_over_150_contacts(tmp_path):
    """Issue #4: at most 1.6 Front requests per call, comments and assignments included; a re-run
    sends no imports and no comments."""
    box = make_box(calls=500, seed=4, pool_size=260, front_known_share=0.0)
    try:
        config = settings_for(box, tmp_path, activities="combined")
        numbers = {c["raw_digits"] for c in settled_calls(box) if c["raw_digits"] != "anonymous"}
        assert len(numbers) >= 150
        server = box.front_sandbox.server
        before = server.count()
        first = backfill(config)
        used = server.count() - before
        calls = len(settled_calls(box))
        assert used <= 1.6 * calls, f"{used} Front requests for {calls} calls"
        assert "front: " in first.stdout
        imports = server.count(path_prefix="/inboxes/", method="POST")
        comments = sum(len(c.comments) for c in box.front_store.conversations.values())
        backfill(config)
        assert server.count(path_prefix="/inboxes/", method="POST") == imports
        assert sum(len(c.comments) for c in box.front_store.conversations.values()) == comments
        assert_contract(box)
    finally:
        box.stop()


def test_R_FRONT_2_status_reads_one_per_remembered_conversation_per_run(tmp_path):
    """Request economy of R-FRONT-2's archive check. Run 1 (two chunks, so ids are resolved in a
    later chunk than the import that opened them) reads no status: this run opened those
    conversations. Run 2 reads each remembered conversation's status once, however many of the
    contact's calls it logs."""
    box = make_box(calls=1200, seed=4, pool_size=300, front_known_share=0.0)
    try:
        store = box.front_store
        config = settings_for(box, tmp_path, activities="combined")

        def status_reads(since: int) -> Counter:
            return Counter(r.path for r in store.received[since:]
                           if r.method == "GET" and re.fullmatch(r"/conversations/[^/]+", r.path))

        backfill(config)
        assert status_reads(0) == Counter()
        frequent = Counter(c["raw_digits"] for c in settled_calls(box) if c["raw_digits"] != "anonymous")
        numbers = [n for n, _ in frequent.most_common(3)]
        at = int(END.timestamp()) - 3600
        box.aircall_store.add_calls([{"started_at": at + 60 * i, "answered_at": None, "ended_at": at + 60 * i + 20,
                                      "raw_digits": n} for i, n in enumerate(numbers * 2)])
        sent = len(store.received)
        backfill(config)
        reads = status_reads(sent)
        assert len(reads) == 3 and set(reads.values()) == {1}
    finally:
        box.stop()


def test_contacts_that_already_exist_cost_one_more_request_each(tmp_path):
    """Reported rather than hidden: a pre-existing contact costs a 409 and a read of its conversations."""
    box = make_box(calls=500, seed=4, pool_size=260, front_known_share=0.2)
    try:
        config = settings_for(box, tmp_path, activities="combined")
        server = box.front_sandbox.server
        before = server.count()
        backfill(config)
        used = server.count() - before
        assert used <= 1.7 * len(settled_calls(box))
        assert server.count(path_prefix="/contacts", status=409) > 0
        assert max(Counter(h["handle"] for c in box.front_store.contacts.values() for h in c.handles).values()) == 1
    finally:
        box.stop()


def test_burst_429s_are_waited_out(tmp_path):
    box = make_box(calls=150, seed=9, front_burst_limit_per_second=25)
    try:
        config = settings_for(box, tmp_path)
        result = backfill(config)
        assert box.front_store.count("burst-limited") > 0
        assert "retries: " in result.stdout
        assert len(messages_of(box)) > 150
        assert_contract(box)
    finally:
        box.stop()


def test_dry_run_writes_nothing_to_front(tmp_path):
    box = make_box(calls=100, seed=10)
    try:
        config = settings_for(box, tmp_path)
        result = run(config, "backfill", "--from", FROM, "--to", TO, "--dry-run", "--format", "json")
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        objects = {c["object"] for c in doc["changes"] if c["action"] == "create"}
        assert {"contact", "conversation", "message"} <= objects
        assert box.front_store.conversations == {}
        assert all(r.method == "GET" for r in box.front_store.received)
    finally:
        box.stop()


def test_check_finds_the_inbox_or_says_how_to_fix_it(tmp_path):
    box = make_box(calls=10, seed=11)
    try:
        ok = run(settings_for(box, tmp_path), "check")
        assert ok.exit_code == 0, ok.output
        assert "Front: token accepted" in ok.stdout
        bad = run(settings_for(box, tmp_path, inbox="Phone Calls"), "check")
        assert bad.exit_code == 2
        assert ('Front has no inbox "Phone Calls" that this token can see; create it, or set front.inbox to an '
                "existing inbox's name or inb_ id") in bad.stderr
        refused = run(settings_for(box, tmp_path, api_token="wrong-front-token"), "check")
        assert refused.exit_code == 5
        assert "wrong-front-token" not in refused.output
    finally:
        box.stop()


def test_both_targets_in_one_run_record_each_outcome_separately(tmp_path):
    """Issue #4: a call logged to Salesforce and Front has one report line per target."""
    options = SandboxOptions(calls=120, seed=12, days=5, end=END)
    box = Sandbox(options).start()
    try:
        settings = box.settings(tmp_path / "state.sqlite3", targets=("salesforce", "front"))
        settings["aircall"]["requests_per_minute"] = 60000
        settings["front"]["requests_per_minute"] = 60000
        config = write_settings(tmp_path / "settings.toml", settings)
        report = tmp_path / "r.jsonl"
        backfill(config, "--report", str(report))
        lines = [json.loads(line) for line in report.read_text().splitlines()]
        per_call = Counter(line["call_id"] for line in lines)
        assert set(per_call.values()) == {2}
        assert {line["target"] for line in lines} == {"salesforce", "front"}
        assert len(box.sf_store.records("Task")) == len(per_call)
        status = run(config, "status")
        assert "Failed records: none." in status.stdout
    finally:
        box.stop()
