"""Hostile input (issue #6): payloads, numbers, names and settings that must never crash the tool.

Property-based (hypothesis): the Call parser, the rules, the Task mapping and
the matching functions are fed arbitrary JSON-ish payloads (missing keys, wrong
types, huge comments, unicode, control characters, numbers like
``+1 (555) 0100; DROP``, names with quotes and braces). The only exception
allowed is ``CallParseError``, carrying the id when it was readable.

Queries built from user data are parsed back with the sandbox's own SOQL/SOSL
parser (``aircall_sync.sandbox.soql``): a quote, a backslash or a brace in the
data stays a value and never changes the query's structure.

Settings: any document gives ``Settings`` or ``SettingsError`` (with messages),
never another exception; through the CLI a broken settings file exits 2 with
one ``error:`` block and no traceback.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from aircall_sync import render, rules
from aircall_sync.aircall.models import Call, CallParseError
from aircall_sync.cli import app
from aircall_sync.errors import SettingsError
from aircall_sync.sandbox.salesforce_api import OrgOptions, build_schema
from aircall_sync.sandbox.soql import Cond, parse_soql, parse_sosl
from aircall_sync.settings import parse_settings
from aircall_sync.targets import salesforce_match as matching
from aircall_sync.targets.salesforce import soql_in, soql_quote, sosl_term
from aircall_sync.targets.salesforce_task import (
    DESCRIPTION_MAX,
    DISPOSITION_MAX,
    SUBJECT_MAX,
    Match,
    SfUser,
    TaskContext,
    build_task,
    sf_length,
)

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 1, tzinfo=UTC)
#: More examples: FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py; pytest --reliability uses 2,000.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES") or (2000 if "--reliability" in sys.argv else 120))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.data_too_large])

# ---------------------------------------------------------------- hostile values

HOSTILE_TEXT = [
    "+1 (555) 0100; DROP", "+1 (555) 0100'; DELETE FROM Task --", "' OR Id != null OR Name = '", "O'Brien",
    'Ann "Nancy" O\'Neil', "} IN ALL FIELDS RETURNING User(Id)", "{record_name}", "{0}", "{", "}", "%s%n",
    "\\", "\\'", "\x00", "\x1b[31mred\x1b[0m", "\r\n", "\t", "\u202eevil", "\ufeff", "🙂" * 200, "é" * 300,
    "anonymous", "", " ", "+", "00", "011", "+44 (0) 20 7946 0000", "1e308", "NaN", "-1",
    "9" * 40, "+" + "9" * 40, "tel:+33612345678", "+33 6 12 34 56 78 ext. 99", "(617) 610-5413",
    "Europe/Nowhere", "../../etc/passwd", "UTC\x00", "2026-13-45T25:61:00Z", "2026-10-31T10:00:00+25:00",
]

text = st.one_of(st.text(max_size=40), st.sampled_from(HOSTILE_TEXT),
                 st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x1F), max_size=10),
                 st.integers(20_000, 70_000).map(lambda n: "a" * n))  # huge (a comment, a name)
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), text)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)

epochs = st.one_of(st.integers(min_value=1_600_000_000, max_value=1_800_000_000),
                   st.integers(min_value=1_600_000_000_000, max_value=1_800_000_000_000),  # milliseconds
                   st.floats(min_value=1.6e9, max_value=1.8e9),
                   st.integers(min_value=1_600_000_000, max_value=1_800_000_000).map(str),
                   st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1),
                                timezones=st.just(UTC)).map(lambda d: d.isoformat()))
maybe = lambda strategy: st.one_of(strategy, json_values)  # noqa: E731  - plausible or anything at all

phones = st.one_of(st.sampled_from(HOSTILE_TEXT), st.from_regex(r"\+?[0-9 ().\-]{0,20}", fullmatch=True),
                   st.sampled_from(["+16176105413", "+33 1 76 11 11 11", "+44 20 7946 0000", "+4930901820",
                                    "+61 2 9374 4000", "anonymous", "+1 555 0100"]))
emails = st.one_of(st.emails(), st.sampled_from(["o'brien@example.com", "a{b}@x.io", "x'); DROP--@e.com",
                                                 "ADA@EXAMPLE.COM", "\\'@x", ""]), text)
users = st.fixed_dictionaries({}, optional={"id": maybe(st.integers(1, 10**12)), "name": maybe(text),
                                            "email": maybe(emails)})
numbers = st.fixed_dictionaries({}, optional={
    "name": maybe(text), "digits": maybe(phones), "e164_digits": maybe(phones),
    "country": maybe(st.sampled_from(["US", "FR", "GB", "DE", "AU", "ZZ", "fr", ""])),
    "time_zone": maybe(st.sampled_from(["Europe/Paris", "America/New_York", "Europe/Nowhere", "", "UTC\x00",
                                        "../../etc/passwd"]))})
comments = st.fixed_dictionaries({}, optional={"id": maybe(st.integers(1, 10**9)), "content": maybe(text),
                                               "posted_at": maybe(epochs), "posted_by": maybe(users)})
tags = st.fixed_dictionaries({}, optional={"id": maybe(st.integers(1, 10**6)), "name": maybe(text)})
contacts = st.fixed_dictionaries({}, optional={"first_name": maybe(text), "last_name": maybe(text),
                                               "company_name": maybe(text),
                                               "phone_numbers": maybe(st.lists(st.fixed_dictionaries(
                                                   {"value": phones}), max_size=2))})
call_payloads = st.fixed_dictionaries({}, optional={
    "id": st.one_of(st.integers(min_value=-5, max_value=2**63), st.sampled_from(["4100000042", " 7 ", "-3", "x"]),
                    json_values),
    "started_at": maybe(epochs), "answered_at": maybe(epochs), "ended_at": maybe(epochs),
    "direction": maybe(st.sampled_from(["inbound", "outbound", "INBOUND", "sideways", ""])),
    "status": maybe(st.sampled_from(["done", "initial", "answered", ""])),
    "raw_digits": maybe(phones), "missed_call_reason": maybe(text), "duration": maybe(st.integers(-10, 10**6)),
    "asset": maybe(text), "recording": maybe(text), "voicemail": maybe(text),
    "recording_short_url": maybe(text), "voicemail_short_url": maybe(text),
    "number": maybe(numbers), "user": maybe(users), "transferred_to": maybe(users), "transfered_to": maybe(users),
    "assigned_to": maybe(users), "contact": maybe(contacts),
    "tags": maybe(st.lists(tags, max_size=30)), "comments": maybe(st.lists(comments, max_size=5)),
    "participants": maybe(st.lists(st.fixed_dictionaries({"type": maybe(text)}), max_size=4)),
    "conference_participants": maybe(st.lists(json_values, max_size=4)),
    "archived": maybe(st.booleans()),
})


def readable_id(payload) -> int | None:
    """The id a user could read in the payload (independently of the parser): a positive integer."""
    if not isinstance(payload, dict):
        return None
    value = payload.get("id")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and value > 0:
        return int(value)
    if isinstance(value, str) and value.strip().isdigit() and int(value) > 0:
        return int(value)
    return None


# ---------------------------------------------------------------- settings used by the mappers

BASE_SETTINGS = {
    "aircall": {"api_id": "fuzz-id", "api_token": "fuzz-token"},
    "salesforce": {"enabled": True, "instance_url": "https://example.my.salesforce.com", "access_token": "t"},
}
SETTINGS = parse_settings(BASE_SETTINGS)
TASK_FIELDS = frozenset(build_schema(OrgOptions())["Task"].fields)
STATS = {"payloads": 0, "parsed": 0, "tasks": 0, "queries": 0, "settings": 0}


def _fields_are_json(fields: dict) -> None:
    text_ = json.dumps(fields, allow_nan=False)
    assert json.loads(text_) == fields


# ---------------------------------------------------------------- the Call parser and the mappers


@FUZZ
@given(payload=st.one_of(call_payloads, json_values))
@example(payload={"id": 4100000042, "started_at": "not a date"})
@example(payload={"id": "4100000042", "started_at": None})
@example(payload={"id": 7.0, "started_at": float("nan")})
@example(payload={"id": True, "started_at": 1_700_000_000})
def test_the_call_parser_accepts_anything_or_names_the_call(payload):
    STATS["payloads"] += 1
    try:
        call = Call.parse(payload)
    except CallParseError as exc:
        wanted = readable_id(payload)
        if wanted is not None:
            assert exc.call_id == wanted
            assert str(wanted) in str(exc)
        else:
            assert exc.call_id is None
        return
    STATS["parsed"] += 1
    assert call.id == readable_id(payload)
    assert call.started_at.tzinfo is not None


contexts = st.fixed_dictionaries({
    "match": st.one_of(st.none(), st.builds(
        Match, object=st.sampled_from(["Contact", "Lead", "Account", "PersonAccount"]),
        id=st.sampled_from(["0038d000000000AAAA", "00Q8d000000000AAAA", "0018d000000000AAAA"]),
        name=st.one_of(st.none(), text), owner_id=st.sampled_from([None, "0058d0000000001AAA", "00G8d000000001AAA"]),
        account_id=st.sampled_from([None, "0018d000000000AAAA"]), created=st.booleans())),
    "what_id": st.sampled_from([None, "5008d000000000AAAA"]),
    "emails": st.lists(emails, max_size=3),
    "task_fields": st.sampled_from([None, TASK_FIELDS, frozenset({"Subject", "Status", "CallObject"})]),
})


#: Payloads that parse (a usable id and start), everything else as hostile as above: feeds the mappers.
usable_payloads = st.tuples(st.integers(1, 2**62), epochs, call_payloads).map(
    lambda t: {**t[2], "id": t[0], "started_at": t[1]})


@FUZZ
@given(payload=st.one_of(usable_payloads, call_payloads), ctx=contexts)
def test_rules_and_the_task_mapping_never_crash_and_stay_within_salesforce_limits(payload, ctx):
    from aircall_sync.targets.salesforce_target import fingerprint

    try:
        call = Call.parse(payload)
    except CallParseError:
        return
    a = rules.assess(call, SETTINGS, NOW)
    assert a.talk_seconds >= 0 and a.wait_seconds >= 0
    assert a.external is None or a.external.e164.startswith("+")
    json.dumps(render.call_json(a))  # `calls --format jsonl`
    fingerprint(call, SETTINGS)
    if a.decisions["salesforce"].skipped:
        return
    users = {e.strip().lower(): SfUser("0058d0000000002AAA", e.strip().lower(), True, NOW - timedelta(days=400))
             for e in ctx["emails"] if isinstance(e, str)}
    draft = build_task(call, a, TaskContext(ctx["match"], ctx["what_id"], users, "0058d0000000001AAA",
                                            ctx["task_fields"]), SETTINGS)
    STATS["tasks"] += 1
    fields = draft.fields
    _fields_are_json(fields)
    assert fields["CallObject"] == str(call.id)
    if ctx["task_fields"] is TASK_FIELDS:
        assert sf_length(fields["Subject"]) <= SUBJECT_MAX
        assert "\n" not in fields["Subject"]
        assert sf_length(fields["CallDisposition"]) <= DISPOSITION_MAX
        assert sf_length(fields.get("Description") or "") <= DESCRIPTION_MAX


@FUZZ
@given(raw=phones, country=st.sampled_from([None, "US", "FR", "GB", "ZZ"]), records=st.lists(
    st.fixed_dictionaries({"attributes": st.fixed_dictionaries({"type": st.sampled_from(
        ["Contact", "Lead", "Account", "Case", ""])}), "Id": st.sampled_from(["0038d000000000AAAA", "x"])},
        optional={"Phone": maybe(phones), "MobilePhone": maybe(phones), "Name": maybe(text),
                  "IsPersonAccount": maybe(st.booleans()), "PersonMobilePhone": maybe(phones),
                  "LastModifiedDate": maybe(text), "OwnerId": maybe(text)}), max_size=5),
       contact=contacts, mode=st.sampled_from(["lead", "contact", "account", "nothing"]), company=text)
def test_matching_functions_take_any_number_and_record(raw, country, records, contact, mode, company):
    payload = {"id": 1, "started_at": 1_700_000_000, "raw_digits": raw, "number": {"country": country},
               "contact": contact}
    call = Call.parse(payload)
    number = rules.external_number(call)
    if number is None:
        return
    for sosl in matching.sosl_queries([number], person_accounts=True):
        parsed = parse_sosl(sosl)
        assert [r.sobject for r in parsed.returning] == ["Contact", "Lead", "Account"]
    for soql in matching.exact_queries([number], "Lead", person_accounts=False):
        assert parse_soql(soql).sobject == "Lead"
    for record in records:
        matching.holds_number(record, number)
    chosen = matching.choose(records, number)
    if chosen is not None:
        matching.to_match(chosen)
    spec = matching.new_record(number, call.contact, mode, company or "Unknown company")
    if spec is not None:
        _fields_are_json(spec.fields)
        name = spec.fields.get("LastName") or spec.fields.get("Name")
        assert isinstance(name, str) and name.strip()
        assert spec.fields["Phone"] == number.e164


def test_an_unknown_long_missed_call_reason_fits():
    call = Call.parse({"id": 1, "started_at": 1_790_000_000, "ended_at": 1_790_000_060, "status": "done",
                       "direction": "inbound", "missed_call_reason": "a_reason_aircall_added_later_" * 10})
    a = rules.assess(call, SETTINGS, NOW)
    draft = build_task(call, a, TaskContext(None, None, {}, "0058d0000000001AAA", TASK_FIELDS), SETTINGS)
    assert sf_length(draft.fields["CallDisposition"]) <= DISPOSITION_MAX


# ---------------------------------------------------------------- injection: data never becomes syntax


def _in_values(where) -> list:
    assert isinstance(where, Cond) and where.op == "IN", where
    return [token.value for token in where.value]


@FUZZ
@given(values=st.lists(st.one_of(text, st.text(alphabet="'\"\\{}()%_\n\r\t ,=", max_size=12)), min_size=1,
                       max_size=6))
@example(values=["x' OR Email != null OR Email = 'y"])
@example(values=["\\' OR Id != null --", "a\\"])
def test_a_quote_in_soql_data_cannot_change_the_query(values):
    STATS["queries"] += 1
    query = parse_soql(f"SELECT Id FROM User WHERE Email IN {soql_in(values)} ORDER BY Email LIMIT 5")
    assert query.sobject == "User" and [s.path for s in query.select] == ["Id"]
    assert query.where.path == "Email" and _in_values(query.where) == values
    assert query.limit == 5
    single = parse_soql(f"SELECT Id FROM Task WHERE Subject = {soql_quote(values[0])}")
    assert single.where.path == "Subject" and single.where.op == "=" and single.where.value.value == values[0]


@FUZZ
@given(terms=st.lists(st.one_of(text, st.text(alphabet='"\\{}()?&|!^~*:+-\' OR AND NOT', max_size=12)),
                      min_size=1, max_size=4))
@example(terms=["} IN ALL FIELDS RETURNING User(Id, Email) LIMIT 1 --"])
@example(terms=['" OR "1', "\\", "{}"])
def test_a_brace_or_quote_in_sosl_data_cannot_change_the_search(terms):
    STATS["queries"] += 1
    sosl = ("FIND {" + " OR ".join(sosl_term(t) for t in terms) + "} IN PHONE FIELDS RETURNING Lead(Id, Phone)")
    parsed = parse_sosl(sosl)
    assert parsed.scope == "PHONE"
    assert [(r.sobject, r.fields, r.where) for r in parsed.returning] == [("Lead", ("Id", "Phone"), None)]
    tree = parsed.terms
    leaves = tree[1] if tree[0] == "OR" else [tree]
    assert [leaf for leaf in leaves] == [("TERM", t, True) for t in terms]


class _RecordingOrg:
    user_id = "0058d0000000001AAA"

    def __init__(self):
        self.soql: list[str] = []

    def query(self, soql, **_):
        self.soql.append(soql)
        return []

    def queries(self, soqls, **_):
        return [self.query(q) for q in soqls]

    def searches(self, sosls, **_):
        self.soql.extend(sosls)
        return [[] for _ in sosls]


@FUZZ
@given(agent_emails=st.lists(emails, min_size=1, max_size=5))
@example(agent_emails=["o'brien@example.com", "x') OR (Email != null", "a\\'b@x.io"])
def test_the_queries_the_target_builds_from_aircall_data_keep_their_shape(agent_emails, tmp_path_factory):
    """The users' e-mails come from Aircall: whatever they hold, the User query stays one ``Email IN (…)``."""
    from aircall_sync.state import State
    from aircall_sync.targets.salesforce_target import CallPlan, SalesforceTaskTarget

    org = _RecordingOrg()
    with State.open(tmp_path_factory.mktemp("fuzz-state") / "s.sqlite3") as state:
        target = SalesforceTaskTarget(SETTINGS, org, state)
        plans = []
        for i, email in enumerate(agent_emails, start=1):
            call = Call.parse({"id": 4100000000 + i, "started_at": 1_790_000_000, "answered_at": 1_790_000_010,
                               "ended_at": 1_790_000_100, "status": "done", "direction": "inbound",
                               "user": {"id": i, "name": "Agent", "email": email}})
            plans.append(CallPlan(rules.assess(call, SETTINGS, NOW), "fp"))
        target._load_users(plans)
        soqls, read = target._existing_reads(plans)
        read(org.queries(soqls))
    wanted = {e for e in agent_emails if isinstance(e, str) and e}
    if wanted:
        user_query = parse_soql(org.soql[0])
        assert user_query.sobject == "User"
        assert set(_in_values(user_query.where)) == wanted | {e.lower() for e in wanted}
    task_query = parse_soql(org.soql[-1])
    assert task_query.sobject == "Task" and task_query.where.path == "CallObject"
    assert _in_values(task_query.where) == [str(p.assessment.call.id) for p in plans]


# ---------------------------------------------------------------- settings


toml_scalars = st.one_of(st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
                         st.floats(allow_nan=True, allow_infinity=True), text,
                         st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1)),
                         st.dates(), st.times())
toml_values = st.recursive(toml_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(min_size=1, max_size=10), inner, max_size=3), max_leaves=8)
KEY_PATHS = [
    "aircall.api_id", "aircall.api_token", "aircall.base_url", "aircall.requests_per_minute", "sync.timezone",
    "sync.lag", "sync.revisit", "sync.state_path", "sync.log_calls", "sync.business_hours.days",
    "sync.business_hours.start", "sync.business_hours.end", "salesforce.enabled", "salesforce.mode",
    "salesforce.instance_url", "salesforce.api_version", "salesforce.auth", "salesforce.access_token",
    "salesforce.username", "salesforce.consumer_key", "salesforce.private_key_file", "salesforce.consumer_secret",
    "salesforce.password", "salesforce.security_token", "salesforce.batch_size", "salesforce.bulk_threshold",
    "salesforce.ca_bundle", "salesforce.call_flow.missed", "salesforce.matching.unknown_number",
    "salesforce.matching.fallback_owner_id", "salesforce.matching.new_lead_company",
    "salesforce.task.subjects.missed", "salesforce.task.fields.country", "salesforce.task.record_type_id",
    "salesforce.recording.where", "front.enabled", "front.api_token", "front.inbox", "nowhere", "aircall.typo",
    "salesforce.task.subjects", "sync.business_hours",
]


def _with(base: dict, path: str, value) -> dict:
    import copy

    out = copy.deepcopy(base)
    target = out
    parts = path.split(".")
    for part in parts[:-1]:
        nxt = target.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            target[part] = nxt
        target = nxt
    target[parts[-1]] = value
    return out


settings_docs = st.one_of(
    st.lists(st.tuples(st.sampled_from(KEY_PATHS), toml_values), min_size=1, max_size=4).map(
        lambda edits: _apply(BASE_SETTINGS, edits)),
    st.dictionaries(st.text(max_size=10), toml_values, max_size=4),
    json_values,
)


def _apply(base, edits):
    doc = base
    for path, value in edits:
        doc = _with(doc, path, value)
    return doc


@FUZZ
@given(doc=settings_docs, secret=st.text(min_size=1, max_size=20))
def test_any_settings_document_gives_settings_or_every_problem(doc, secret, tmp_path_factory):
    STATS["settings"] += 1
    # A secret planted in its key, to check the messages never echo it.
    marked = f"SECRET-{secret}-MARK"
    if isinstance(doc, dict) and isinstance(doc.get("aircall"), dict) and isinstance(
            doc["aircall"].get("api_token"), str):
        doc = _with(doc, "aircall.api_token", marked) if "${" not in marked else doc
    try:
        parse_settings(doc, environ={}, base_dir=tmp_path_factory.getbasetemp())
    except SettingsError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        assert marked not in str(exc)


FILE_TEXTS = st.one_of(
    st.lists(st.tuples(st.sampled_from(KEY_PATHS), toml_values), min_size=1, max_size=3).map(
        lambda edits: _toml(_apply(BASE_SETTINGS, edits))),
    st.text(max_size=200),
    st.sampled_from(["[aircall\n", "aircall = 5\n", "[[aircall]]\napi_id = 1\n", "a.b.c.d = {x = [1, {y = 2}]}\n",
                     '[aircall]\napi_id = "x"\napi_token = "${UNSET_FUZZ_VAR}"\n', "\ufeff[aircall]\n",
                     '[sync]\ntimezone = "Europe/Nowhere"\nlag = "-5m"\n', "x = 1979-05-27T07:32:00Z\n"]),
)


def _toml(doc) -> str:
    try:
        return tomli_w.dumps(doc)
    except (TypeError, ValueError):
        return "not = [toml"


@settings(max_examples=max(EXAMPLES // 2, 10), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(content=FILE_TEXTS)
def test_a_broken_settings_file_exits_2_without_a_traceback(content, tmp_path):
    from aircall_sync.settings import load_settings

    path = tmp_path / "settings.toml"
    path.write_text(content, encoding="utf-8")
    try:
        load_settings(path, environ={})
        valid = True
    except SettingsError:
        valid = False
    assume(not valid)  # a fuzzed file that happens to be valid says nothing here
    result = CliRunner().invoke(app, ["--config", str(path), "status"], env={"UNSET_FUZZ_VAR": None})
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


DEEP = "x = " + "[" * 3000 + "]" * 3000 + "\n"


@pytest.mark.parametrize("content", [
    b"\xff\xfe\x00[",  # not UTF-8
    b"[aircall]\napi_id = \"x\"\napi_token = 5\n[salesforce]\nenabled = true\n",
    b"[sync]\nstate_path = \"\x00\"\n",
    b"key = \"\\uD800\"\n",  # a lone surrogate escape
], ids=["not-utf8", "wrong-types", "nul-in-path", "surrogate"])
def test_a_broken_settings_file_exits_2_in_a_real_process(tmp_path, content):
    path = tmp_path / "settings.toml"
    path.write_bytes(content)
    proc = subprocess.run([sys.executable, "-m", "aircall_sync", "--config", str(path), "check"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=60, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


@pytest.mark.parametrize("content", [DEEP, "x = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n"],
                         ids=["arrays", "inline-tables"])
def test_a_deeply_nested_settings_file_exits_2(tmp_path, content):
    path = tmp_path / "settings.toml"
    path.write_text(content, encoding="utf-8")
    result = CliRunner().invoke(app, ["--config", str(path), "status"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ")


def test_zz_report_fuzz_figures():
    """Not a check: prints how much was fuzzed (pytest -s), for the issue's figures."""
    print(f"\nfuzzed: {STATS}")
