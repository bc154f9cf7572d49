"""AI insights in batch runs, against the sandbox over HTTP(S) (RULES §8).

Requests are counted on the emulated Aircall's log: a backfill asks at most 5
AI requests per eligible call (R-AI-1, R-AI-2) and none for an insight known
(found, or known not to exist); a 403 is warned about once and stops the
asking; a 404 before ``aircall.ai.settle`` is asked again by a later run, and
is final after. The emulator serves insights for answered calls with at least
60 s of talk (its default); the client asks from 30 s, so calls with 30-59 s
of talk get realistic 404s. What landed is read from the emulated org and
Front (R-AI-4).
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import write_settings
from typer.testing import CliRunner

from aircall_sync.aircall.insights import response_text
from aircall_sync.cli import app
from aircall_sync.runner import execute
from aircall_sync.sandbox.salesforce_api import OrgOptions
from aircall_sync.sandbox.stack import Sandbox, SandboxOptions
from aircall_sync.settings import load_settings

END = datetime(2026, 10, 31, 12, tzinfo=UTC)
FROM, TO = "2026-10-29", "2026-10-31"
AI_PATH = re.compile(r"^/v1/calls/(\d+)/(summary|topics|sentiments|action_items|transcription)$")
ENVELOPE = {"summary": "summary", "topics": "topics", "sentiment": "sentiments", "action_items": "action_items",
            "transcription": "transcription"}

runner = CliRunner()


def make_box(**options) -> Sandbox:
    base = dict(calls=90, seed=13, days=2, end=END)
    return Sandbox(SandboxOptions(**{**base, **options})).start()


@pytest.fixture
def box():
    sandbox = make_box()
    yield sandbox
    sandbox.stop()


def config_for(box: Sandbox, tmp: Path, *, mode: str = "task", targets=("salesforce",), ai: dict | None = None,
               **extra) -> Path:
    settings = box.settings(tmp / "state.sqlite3", mode=mode, targets=targets)
    settings["aircall"]["requests_per_minute"] = 60000
    if ai is not False:
        settings["aircall"]["ai"] = {"enabled": True, **(ai or {})}
    if "front" in settings:
        settings["front"]["requests_per_minute"] = 60000
    for section, values in extra.items():
        target = settings
        for part in section.split("."):
            target = target.setdefault(part, {})
        target.update(values)
    return write_settings(tmp / "settings.toml", settings)


def run(config: Path, *args: str):
    return runner.invoke(app, ["--config", str(config), *args])


def talk(call: dict) -> int:
    return call["ended_at"] - call["answered_at"] if call["answered_at"] and call["ended_at"] else 0


def in_range(box: Sandbox) -> list[dict]:
    lo, hi = datetime(2026, 10, 29, tzinfo=UTC).timestamp(), datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    return [c for c in box.aircall_store.iter_calls(0, 2**40) if lo <= c["started_at"] < hi]


def eligible(box: Sandbox, now: datetime, lag: int = 1800) -> list[dict]:
    """R-AI-1: settled (R-CALL-5), answered, talk >= 30 s (every call is logged with the default settings)."""
    return [c for c in in_range(box) if c["status"] == "done" and c["ended_at"]
            and c["ended_at"] <= now.timestamp() - lag and c["answered_at"] and talk(c) >= 30]


def ai_requests(box: Sandbox, since: int = 0) -> Counter:
    """Aircall AI requests per call id, from the emulator's log (entries after ``since``)."""
    out: Counter = Counter()
    for record in box.aircall_server.requests[since:]:
        match = AI_PATH.match(record.path)
        if match:
            out[int(match.group(1))] += 1
    return out


def expected_text(box: Sandbox, call: dict, kind: str) -> str | None:
    body = box.ai_insights.rest_body(call, ENVELOPE[kind])
    return None if body is None else response_text(kind, body)


def tasks_by_call(box: Sandbox) -> dict[str, dict]:
    return {str(t["CallObject"]): t for t in box.sf_store.records("Task")}


def execute_at(config: Path, now: datetime, *, dry_run: bool = False, fmt: str = "text") -> tuple[str, str]:
    settings = load_settings(config)
    out, err = io.StringIO(), io.StringIO()
    start, end = datetime(2026, 10, 29, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
    execute(settings, "backfill", out=out, err=err, dry_run=dry_run, fmt=fmt, start=start, end=end, quiet=True,
            now=now)
    return out.getvalue(), err.getvalue()


# ---------------------------------------------------------------- the budget (R-AI-1, R-AI-2)


def test_R_AI_1_a_backfill_asks_at_most_5_requests_per_eligible_call_and_none_on_a_rerun(box, tmp_path):
    config = config_for(box, tmp_path)
    now = datetime.now(UTC)
    calls = eligible(box, now)
    with_ai = [c for c in calls if talk(c) >= 60]
    short = [c for c in calls if talk(c) < 60]
    assert len(with_ai) >= 15 and short, "the data set must hold both"
    mark = len(box.aircall_server.requests)
    first = run(config, "backfill", "--from", FROM, "--to", TO)
    assert first.exit_code == 0, first.output
    asked = ai_requests(box, mark)
    # Exactly the eligible calls, each at most 5 times: one request per insight.
    assert set(asked) == {c["id"] for c in calls}
    assert max(asked.values()) == 5 and sum(asked.values()) == 5 * len(calls)
    not_eligible = [c for c in in_range(box) if c not in calls]
    assert not_eligible and not set(asked) & {c["id"] for c in not_eligible}
    line = next(x for x in first.stdout.splitlines() if x.startswith("AI insights:"))
    assert line.startswith(f"AI insights: {len(calls)} eligible call(s), {5 * len(calls)} Aircall request(s): ")
    # R-AI-4: the Task Description's part, with the emulator's insights in R-AI-3 text.
    tasks = tasks_by_call(box)
    for call in with_ai:
        description = tasks[str(call["id"])]["Description"]
        part = description[description.index("AI insights:"):]
        lines = ["AI insights:", f"Summary: {expected_text(box, call, 'summary')}",
                 f"Topics: {expected_text(box, call, 'topics')}", f"Sentiment: {expected_text(box, call, 'sentiment')}"]
        items = expected_text(box, call, "action_items")
        if items:
            lines.append("Action items:\n" + items)
        assert part == "\n".join(lines)
        assert "Agent: " not in description  # the transcription is not in the Description
    for call in short:  # 404: nothing known, nothing written
        assert "AI insights" not in (tasks[str(call["id"])].get("Description") or "")
    # A rerun: every insight is known (found, or a final 404: the calls ended long before `settle`).
    mark = len(box.aircall_server.requests)
    again = run(config, "backfill", "--from", FROM, "--to", TO)
    assert again.exit_code == 0, again.output
    assert ai_requests(box, mark) == Counter()
    assert f"AI insights: {len(calls)} eligible call(s), 0 Aircall request(s)" in again.stdout
    assert "salesforce: " in again.stdout and " created" not in again.stdout.split("salesforce:")[1].split(".")[0]


def test_explain_says_which_insights_are_known_and_fetches_none(box, tmp_path):
    config = config_for(box, tmp_path)
    call = next(c for c in eligible(box, datetime.now(UTC)) if talk(c) >= 60
                and expected_text(box, c, "action_items"))
    mark = len(box.aircall_server.requests)
    before = run(config, "explain", str(call["id"]))
    assert before.exit_code == 0, before.output
    assert ("  AI insights: none known yet; a run would ask Aircall for: summary, topics, sentiment, action_items, "
            "transcription") in before.stdout
    assert ai_requests(box, mark) == Counter()
    assert run(config, "backfill", "--from", FROM, "--to", TO).exit_code == 0
    after = run(config, "explain", str(call["id"]))
    assert ("  AI insights: known: summary, topics, sentiment, action_items, transcription; nothing left to ask "
            "Aircall") in after.stdout
    assert "Unchanged Task" in after.stdout


def test_R_AI_1_a_limited_backfill_asks_only_for_the_calls_it_logs(box, tmp_path):
    config = config_for(box, tmp_path)
    mark = len(box.aircall_server.requests)
    result = run(config, "backfill", "--from", FROM, "--to", TO, "--limit", "7")
    assert result.exit_code == 0, result.output
    logged = {int(k) for k in tasks_by_call(box)}
    assert len(logged) == 7
    asked = ai_requests(box, mark)
    assert asked and set(asked) <= logged


def test_R_AI_2_the_dry_run_fetches_nothing_and_says_what_ai_would_cost(box, tmp_path):
    config = config_for(box, tmp_path, **{"aircall": {"requests_per_minute": 60}})
    calls = eligible(box, datetime.now(UTC))
    mark = len(box.aircall_server.requests)
    preview = run(config, "backfill", "--from", FROM, "--to", TO, "--dry-run", "--format", "json")
    assert preview.exit_code == 0, preview.output
    assert ai_requests(box, mark) == Counter()  # R-AI-2: nothing fetched
    ai = json.loads(preview.stdout)["summary"]["ai"]
    assert ai == {"eligible_calls": len(calls), "requests": 5 * len(calls), "seconds": 5 * len(calls),
                  "requests_per_minute": 60}
    text = run(config, "backfill", "--from", FROM, "--to", TO, "--dry-run")
    assert text.exit_code == 0, text.output
    minutes = -(-5 * len(calls) // 60)
    assert (f"AI insights: {len(calls)} eligible call(s); a run would make {5 * len(calls)} more Aircall request(s) "
            f"for them (at most 5 per call, none for an insight known), about {minutes} min at "
            "aircall.requests_per_minute = 60. None was fetched now.") in text.stdout
    assert ai_requests(box, mark) == Counter()
    # After a real run, the preview counts only what is still unknown: nothing.
    config = config_for(box, tmp_path)
    assert run(config, "backfill", "--from", FROM, "--to", TO).exit_code == 0
    after = json.loads(run(config, "backfill", "--from", FROM, "--to", TO, "--dry-run", "--format",
                           "json").stdout)["summary"]["ai"]
    assert after["eligible_calls"] == len(calls) and after["requests"] == 0 and after["seconds"] == 0


def test_R_AI_1_without_the_ai_package_one_403_one_warning_and_no_more_asking(tmp_path):
    box = make_box(ai_package=False)
    try:
        config = config_for(box, tmp_path)
        assert eligible(box, datetime.now(UTC))
        mark = len(box.aircall_server.requests)
        result = run(config, "backfill", "--from", FROM, "--to", TO)
        assert result.exit_code == 0, result.output
        assert sum(ai_requests(box, mark).values()) == 1  # the first answer stops the asking
        assert result.stderr.count("Aircall answered 403") == 1
        assert ("AI insights: Aircall answered 403 (the company has no Aircall AI package, or this API key may not "
                "read it): none is asked for in the rest of this run") in result.stderr
        assert "; Aircall answered 403 (no Aircall AI package): nothing more was asked in this run." in result.stdout
        assert len(tasks_by_call(box)) == len([c for c in in_range(box) if c["status"] == "done"])  # calls logged
        # Nothing was recorded: a later run (once the package is bought) asks again, once.
        mark = len(box.aircall_server.requests)
        assert run(config, "backfill", "--from", FROM, "--to", TO).exit_code == 0
        assert sum(ai_requests(box, mark).values()) == 1
    finally:
        box.stop()


def test_R_AI_1_a_404_before_settle_is_asked_again_and_final_after(box, tmp_path):
    """aircall.ai.settle = 5d and the tool's clock just after the data's end: every call is logged (R-CALL-5), none
    has settled for AI, so a 404 (the 30-59 s calls) is asked again by a later run, and is final once settled."""
    config = config_for(box, tmp_path, ai={"settle": "5d"})
    now = END + timedelta(minutes=5)
    calls = eligible(box, now)
    short = {c["id"] for c in calls if talk(c) < 60}
    # Long calls with no action item: their action_items answer 404 as well (one request, like the short ones').
    no_items = {c["id"] for c in calls if talk(c) >= 60 and expected_text(box, c, "action_items") is None}
    unknown = {c["id"]: 5 if c["id"] in short else 1 for c in calls if c["id"] in short | no_items}
    young = {c["id"] for c in calls if c["ended_at"] > (now - timedelta(hours=36)).timestamp()}
    assert short & young and short - young and no_items, "the data set must hold short calls of both ages"
    mark = len(box.aircall_server.requests)
    execute_at(config, now)
    first = ai_requests(box, mark)
    assert sum(first.values()) == 5 * len(calls)
    # At once again: a 404 before settle is not asked before the call is twice as old (and 10 min later).
    mark = len(box.aircall_server.requests)
    execute_at(config, now + timedelta(minutes=1))
    assert ai_requests(box, mark) == Counter()
    # 36 h later, still before settle: the calls that were at most 36 h old are asked again (not final), the
    # others not yet; an insight found is never asked again.
    mark = len(box.aircall_server.requests)
    execute_at(config, now + timedelta(hours=36))
    again = ai_requests(box, mark)
    assert again == {c: n for c, n in unknown.items() if c in young}  # only the 404s: five or one each
    # Settled: each insight still unknown gets its last word, then is never asked again.
    mark = len(box.aircall_server.requests)
    execute_at(config, now + timedelta(days=5, hours=1))
    last = ai_requests(box, mark)
    assert last == unknown
    mark = len(box.aircall_server.requests)
    execute_at(config, now + timedelta(days=5, hours=2))
    assert ai_requests(box, mark) == Counter()


def test_R_AI_4_insights_land_in_the_aircall_voice_fields_and_once_in_front(tmp_path):
    box = make_box(calls=60)
    try:
        config = config_for(box, tmp_path, mode="voice", targets=("salesforce", "front"))
        result = run(config, "backfill", "--from", FROM, "--to", TO)
        assert result.exit_code == 0, result.output
        calls = [c for c in eligible(box, datetime.now(UTC)) if talk(c) >= 60]
        assert calls
        voice = {str(r["aircall__Call_Id__c"]): r for r in box.sf_store.records("aircall__Aircall_Voice__c")}
        fields = {"summary": "aircall__AI_Summary__c", "topics": "aircall__AI_Topics__c",
                  "sentiment": "aircall__AI_Sentiment__c", "action_items": "aircall__AI_Action_Items__c",
                  "transcription": "aircall__AI_Transcription__c"}
        for call in calls:
            record = voice[str(call["id"])]
            for kind, name in fields.items():
                assert record.get(name) == expected_text(box, call, kind), (call["id"], kind)
            assert record["aircall__AI_Transcription__c"].split("\n")[0].split(": ")[0] in ("Agent", "Customer")
        # Front: one comment per call with a summary, by the API user, starting with the R-AI-4 words.
        comments = [c for conv in box.front_store.conversations.values() for c in conv.comments
                    if c.body.startswith("AI summary of the call of ")]
        with_number = [c for c in calls if c["raw_digits"] != "anonymous"]
        assert len(comments) == len(with_number)
        for call in with_number:
            summary = expected_text(box, call, "summary")
            assert sum(1 for c in comments if c.body.endswith("\n" + summary)) >= 1
        assert all(c.author_id is None for c in comments)  # by the API user: no author_id sent
        again = run(config, "backfill", "--from", FROM, "--to", TO)
        assert again.exit_code == 0, again.output
        assert len([c for conv in box.front_store.conversations.values() for c in conv.comments
                    if c.body.startswith("AI summary of the call of ")]) == len(comments)  # posted once
    finally:
        box.stop()


def test_R_FLOW_3_insights_of_calls_logged_before_update_the_records_in_place(box, tmp_path):
    """Calls logged with AI off, then AI turned on: the same Tasks gain their AI part; none is created."""
    config = config_for(box, tmp_path, ai=False)
    assert run(config, "backfill", "--from", FROM, "--to", TO).exit_code == 0
    before = {k: t["Id"] for k, t in tasks_by_call(box).items()}
    assert not any("AI insights" in (t.get("Description") or "") for t in tasks_by_call(box).values())
    config = config_for(box, tmp_path)
    result = run(config, "backfill", "--from", FROM, "--to", TO)
    assert result.exit_code == 0, result.output
    after = tasks_by_call(box)
    assert {k: t["Id"] for k, t in after.items()} == before
    updated = [c for c in eligible(box, datetime.now(UTC)) if talk(c) >= 60]
    assert all("AI insights:\nSummary: " in after[str(c["id"])]["Description"] for c in updated)
    assert f"salesforce: {len(before) - len(updated)} unchanged, {len(updated)} updated" in result.stdout


def test_R_AI_4_check_names_the_ai_fields_the_org_lacks(tmp_path):
    box = make_box(calls=10, salesforce_options=OrgOptions(voice_ai_fields=False))
    try:
        off = run(config_for(box, tmp_path, mode="voice", ai=False), "check")
        assert off.exit_code == 0, off.output  # AI off: the fields are not needed
        result = run(config_for(box, tmp_path, mode="voice"), "check")
        assert result.exit_code == 2
        for key, name in (("ai_summary", "aircall__AI_Summary__c"), ("ai_topics", "aircall__AI_Topics__c"),
                          ("ai_sentiment", "aircall__AI_Sentiment__c"),
                          ("ai_action_items", "aircall__AI_Action_Items__c"),
                          ("ai_transcription", "aircall__AI_Transcription__c")):
            assert (f"aircall__Aircall_Voice__c.{name} (salesforce.voice.fields.{key}) does not exist or is hidden: "
                    f"the AI {key[3:].replace('_', ' ')} goes there (R-AI-4); create it, set "
                    f"salesforce.voice.fields.{key} to the org's field, or salesforce.voice.fields.{key} = \"\" to "
                    "leave it out") in result.stderr
        assert "5 problem(s) to fix before logging" in result.stderr
        # Mode task: the optional Task fields, when set.
        task = run(config_for(box, tmp_path, **{"salesforce.task.fields": {"ai_summary": "AI_Summary__c"}}), "check")
        assert task.exit_code == 2
        assert ('Task.AI_Summary__c (salesforce.task.fields.ai_summary) does not exist or is hidden: create it, or set '
                'salesforce.task.fields.ai_summary = "" to stop writing it (R-AI-4)') in task.stderr
    finally:
        box.stop()
