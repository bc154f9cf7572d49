"""End to end, Salesforce mode ``voice``: the real CLI logs the sandbox's calls as Service Cloud Voice records.

Every test runs ``aircall-sync backfill`` (or ``check``) in-process against the
sandbox (Aircall over HTTP, Salesforce over HTTPS, both on loopback), then
reads the emulated org's store and compares every ``VoiceCall`` and Aircall
Voice record, field by field, with RULES.md §5 (R-SFV-1…8) and what it reuses
(§1 reading a call, §2 call flow, §3 matching). Expectations are computed
*here* from the Aircall payloads (as the emulator serves them) and the seeded
org (the seed summary and the store): nothing from ``aircall_sync.targets`` or
``aircall_sync.rules`` is imported, so a mapping bug cannot hide behind itself.

Module-scoped orgs, one configuration each:

- ``main``: the defaults (400 generated calls plus hand-made R-SFV-4 cases);
  re-run with the same state, then with the state lost (R-CALL-7);
- ``flow``: ``missed = "skip"``, business hours, unknown number ⇒ Contact;
- ``edge``: calls changed in Aircall (and one re-matched in Salesforce) after
  they were logged (R-SFV-8 / R-FLOW-3), a huge comment;
- small one-off orgs: another Aircall Voice object and link field, unknown
  number ⇒ nothing, VoiceCall not createable (R-SFV-7), the issue's budget
  (1,000 calls over 300+ numbers).

The sandbox's ``SalesforceStore.prepare`` (its validation entry point) is
wrapped to record every payload the tool sends, so what is *sent* on update
(only updateable VoiceCall fields, R-SFV-8) is checked as well as what is
stored. A failing comparison reports ``call id: field expected … got …``.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers
import pytest
from conftest import write_settings
from typer.testing import CliRunner

from aircall_sync.cli import app
from aircall_sync.sandbox.salesforce_api import OrgOptions
from aircall_sync.sandbox.stack import Sandbox, SandboxOptions

END = datetime(2026, 10, 31, 12, 0, tzinfo=UTC)
DAYS = 5
FROM, TO = "2026-10-26", "2026-10-31"
SEED = 2
LAG = timedelta(minutes=30)  # sync.lag default (R-CALL-5)
KINDS = ("outbound_answered", "outbound_unanswered", "inbound_answered", "missed", "voicemail")

VOICE_OBJECT = "aircall__Aircall_Voice__c"  # R-SFV-1 default object
LINK = "aircall__Aircall_Voice__c"  # R-SFV-1 default voice_call_link_field
AV = {  # R-SFV-3 default API names
    "call_id": "aircall__Call_Id__c",
    "call_type": "aircall__Call_Type__c",
    "detailed_type": "aircall__Detailed_Type__c",
    "started_at": "aircall__Started_At__c",
    "answered_at": "aircall__Answered_At__c",
    "ended_at": "aircall__Ended_At__c",
    "duration": "aircall__Duration__c",
    "aircall_number": "aircall__Aircall_Number__c",
    "contact": "aircall__Contact__c",
    "lead": "aircall__Lead__c",
    "account": "aircall__Account__c",
    "media_link": "aircall__Recording__c",
    "tags": "aircall__Tags__c",
    "comments": "aircall__Comments__c",
    "assigned_to": "aircall__Assigned_To__c",
    "answered_by": "aircall__Answered_By__c",
}
DETAILED = {  # R-SFV-3 detailed_type
    "inbound_answered": "Inbound answered",
    "missed": "Missed call",
    "voicemail": "Voicemail",
    "outbound_answered": "Outbound answered",
    "outbound_unanswered": "Outbound unanswered",
}
LOOKUP_KEY = {"Contact": "contact", "Lead": "lead", "Account": "account", "PersonAccount": "account"}
VC_FIELDS = ("CallType", "VendorType", "CallCenterId", "CallStartDateTime", "CallEndDateTime", "FromPhoneNumber",
             "ToPhoneNumber", "CallDurationInSeconds", "VendorCallKey", "RelatedRecordId")
DATETIMES = {"CallStartDateTime", "CallEndDateTime", AV["started_at"], AV["answered_at"], AV["ended_at"]}
PHONE_FIELDS = {
    "Lead": ("Phone", "MobilePhone"),
    "Contact": ("Phone", "MobilePhone", "HomePhone", "OtherPhone", "AssistantPhone"),
    "Account": ("Phone",),
}
SCENARIOS = ("contact", "two_contacts", "contact_and_lead", "lead", "lead_and_account", "account",
             "person_account", "converted_lead", "converted_and_open_lead", "unknown")
OBJECTS = ("VoiceCall", VOICE_OBJECT, "Task", "Lead", "Contact", "Account", "Case", "Opportunity")


# ====================================================================== reading a call (RULES §1)


def ext_number(call: dict) -> phonenumbers.PhoneNumber | None:
    """R-CALL-4: the external number, or None (anonymous, empty, unparseable, impossible)."""
    raw = (call.get("raw_digits") or "").strip()
    if not raw or raw.lower() == "anonymous":
        return None
    try:
        n = phonenumbers.parse(raw, (call.get("number") or {}).get("country"))
    except phonenumbers.NumberParseException:
        return None
    return n if phonenumbers.is_possible_number(n) else None


def e164(n: phonenumbers.PhoneNumber | None) -> str | None:
    return phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164) if n is not None else None


def intl(n: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def digits(s: Any) -> str:
    return "".join(c for c in str(s or "") if c.isdigit())


def utc(ts: int | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


@dataclass
class Facts:
    """What RULES §1 reads from one Aircall call."""

    call: dict
    id: int
    kind: str
    inbound: bool
    answered: bool
    ext: phonenumbers.PhoneNumber | None
    e164: str | None
    valid: bool
    talk: int
    agent: dict | None  # R-CALL-9
    settled: bool
    line: str  # the Aircall number, E.164 with "+"

    @classmethod
    def of(cls, call: dict, now: datetime) -> Facts:
        inbound = call["direction"] == "inbound"
        answered = call.get("answered_at") is not None  # R-CALL-1
        if not inbound:
            kind = "outbound_answered" if answered else "outbound_unanswered"
        elif answered:
            kind = "inbound_answered"
        else:
            has_vm = bool(call.get("voicemail") or call.get("voicemail_short_url")
                          or "voicemail" in (call.get("asset") or ""))
            kind = "voicemail" if has_vm else "missed"
        n = ext_number(call)
        ended = call.get("ended_at")
        settled = (call.get("status") == "done" and ended is not None
                   and utc(ended) <= now - LAG)  # R-CALL-5
        talk = (ended - call["answered_at"]) if answered and ended is not None else 0  # R-CALL-6
        agent = (call.get("transferred_to") or call.get("user")) if answered else None  # R-CALL-9
        line = phonenumbers.parse(call["number"]["digits"], call["number"].get("country"))
        return cls(call=call, id=int(call["id"]), kind=kind, inbound=inbound, answered=answered, ext=n,
                   e164=e164(n), valid=bool(n is not None and phonenumbers.is_valid_number(n)), talk=talk,
                   agent=agent, settled=settled, line=e164(line))

    @property
    def voice_only(self) -> bool:
        """R-SFV-4: never answered, and no external number or an invalid one."""
        return not self.answered and (self.ext is None or not self.valid)


# ====================================================================== running the CLI


def deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def start_box(seed: int = SEED, calls: int = 400, org: OrgOptions | None = None,
              pool_size: int | None = None) -> Sandbox:
    box = Sandbox(SandboxOptions(calls=calls, seed=seed, days=DAYS, end=END, salesforce_options=org,
                                 pool_size=pool_size, front=False)).start()
    # Record every payload the tool sends to Salesforce (the sandbox's validation entry point).
    store = box.sf_store
    real_prepare = store.prepare
    store.sent = []

    def prepare(obj, payload, **kwargs):
        store.sent.append((obj, "update" if kwargs.get("existing") is not None else "create", dict(payload)))
        return real_prepare(obj, payload, **kwargs)

    store.prepare = prepare
    return box


def snapshot(box: Sandbox, objects: tuple[str, ...] = OBJECTS) -> dict[str, dict[str, dict]]:
    return {obj: {r["Id"]: r for r in box.sf_store.records(obj)} for obj in objects}


@dataclass
class Run:
    box: Sandbox
    settings: dict
    config: Path
    state: Path
    output: str
    exit_code: int
    now: datetime
    before: dict[str, dict[str, dict]]
    after: dict[str, dict[str, dict]]
    sent: list = field(default_factory=list)
    requests: int = 0

    @property
    def summary(self):
        return self.box.salesforce.summary

    @property
    def store(self):
        return self.box.sf_store

    @property
    def voice_object(self) -> str:
        return self.settings["salesforce"].get("voice", {}).get("aircall_voice_object", VOICE_OBJECT)

    def created(self, obj: str) -> list[dict]:
        return [r for rid, r in self.after[obj].items() if rid not in self.before[obj]]

    def changed(self, obj: str) -> set[str]:
        return {rid for rid, r in self.after[obj].items() if rid in self.before[obj] and r != self.before[obj][rid]}


def voice_settings(box: Sandbox, state: Path, extra: dict | None = None) -> dict:
    settings = box.settings(state, mode="voice")
    settings["aircall"]["requests_per_minute"] = 60000
    return deep_merge(settings, extra or {})


def backfill(box: Sandbox, tmp: Path, extra: dict | None = None, *, state: Path | None = None,
             from_: str = FROM, to: str = TO, objects: tuple[str, ...] = OBJECTS) -> Run:
    tmp.mkdir(parents=True, exist_ok=True)
    state = state or tmp / "state.sqlite3"
    settings = voice_settings(box, state, extra)
    assert settings["salesforce"]["mode"] == "voice"
    config = write_settings(tmp / "settings.toml", settings)
    before = snapshot(box, objects)
    sent_from = len(box.sf_store.sent)
    requests_from = box.salesforce.server.count()
    now = datetime.now(UTC)
    result = CliRunner().invoke(app, ["--config", str(config), "backfill", "--from", from_, "--to", to])
    output = result.stdout + "\n" + result.stderr
    return Run(box, settings, config, state, output, result.exit_code, now, before, snapshot(box, objects),
               box.sf_store.sent[sent_from:], box.salesforce.server.count() - requests_from)


def check(box: Sandbox, tmp: Path, extra: dict | None = None):
    tmp.mkdir(parents=True, exist_ok=True)
    config = write_settings(tmp / "check.toml", voice_settings(box, tmp / "check.sqlite3", extra))
    result = CliRunner().invoke(app, ["--config", str(config), "check"])
    return result.exit_code, result.stdout + "\n" + result.stderr


def base(box: Sandbox) -> str:
    return box.aircall_server.url


def all_facts(run: Run, now: datetime | None = None) -> list[Facts]:
    return [Facts.of(c, now or run.now) for c in run.box.aircall_store.iter_calls(base=base(run.box))]


def facts_of(run: Run, call_id: int) -> Facts:
    return Facts.of(run.box.aircall_store.get(call_id, base=base(run.box)), run.now)


def voice_calls_by_call(run: Run) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for r in run.after["VoiceCall"].values():
        out[r["VendorCallKey"]].append(r)
    return out


def avs_by_call(run: Run) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for r in run.after[run.voice_object].values():
        out[r[AV["call_id"]]].append(r)
    return out


def vc_of(run: Run, call_id: int) -> dict:
    hits = voice_calls_by_call(run).get(str(call_id), [])
    assert len(hits) == 1, f"call {call_id}: {len(hits)} VoiceCalls"
    return hits[0]


def av_of(run: Run, call_id: int) -> dict | None:
    hits = avs_by_call(run).get(str(call_id), [])
    assert len(hits) <= 1, f"call {call_id}: {len(hits)} Aircall Voice records"
    return hits[0] if hits else None


def sf_time(s: str | None) -> datetime | None:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%f%z").astimezone(UTC) if s else None


def empty(v: Any) -> Any:
    return None if v in ("", None) else v


def same(name: str, want: Any, got: Any) -> bool:
    if name in DATETIMES:
        return (sf_time(got) if isinstance(got, str) else got) == want
    if name in ("CallDurationInSeconds", AV["duration"]):
        return got is not None and float(got) == float(want)
    return empty(got) == empty(want)


def mismatches(rows: list[tuple[int, str, Any, Any]], limit: int = 8) -> str:
    return "\n".join(f"call {cid}: {name} expected {exp!r}, got {got!r}" for cid, name, exp, got in rows[:limit]) + (
        f"\n… and {len(rows) - limit} more" if len(rows) > limit else "")


# ====================================================================== what RULES says the records hold


def tool_made(run: Run, obj: str) -> list[dict]:
    """Records of ``obj`` the tool created, in this run or an earlier one (the seed knows its own)."""
    summary = run.summary
    seeded = set({"Lead": summary.leads, "Contact": summary.contacts,
                  "Account": summary.accounts + summary.person_accounts}[obj])
    return [r for rid, r in run.after[obj].items() if rid not in seeded and not r.get("IsPersonAccount")]


@dataclass
class Org:
    """Who the seeded org (and the records the tool created) say each number belongs to (R-SF-MATCH)."""

    run: Run
    created_by_number: dict[str, list[dict]] = field(default_factory=dict)
    extra: dict[str, dict] = field(default_factory=dict)  # number -> {"object", "id"}: added by a test

    def __post_init__(self) -> None:
        for obj in ("Lead", "Contact", "Account"):
            for rec in tool_made(self.run, obj):
                for d in {digits(rec.get(f)) for f in PHONE_FIELDS[obj] if rec.get(f)}:
                    self.created_by_number.setdefault("+" + d, []).append(rec)

    def match(self, f: Facts) -> dict | None:
        """{"object", "id", "created"} of the record the call is logged against, or None."""
        if f.e164 is None:
            return None
        if f.e164 in self.extra:
            return self.extra[f.e164]
        m = self.run.summary.expected_match.get(f.e164)
        if m is not None:
            return {"object": m["object"], "id": m["id"], "created": False}
        created = self.created_by_number.get(f.e164) or []
        if len(created) != 1:
            return None
        rid = created[0]["Id"]
        return {"object": self.run.store.type_of(rid), "id": rid, "created": True}


def expected_voice_call(f: Facts, m: dict | None, call_center_id: str) -> dict[str, Any]:
    """R-SFV-2."""
    customer = f.e164 or "anonymous"
    c = f.call
    return {
        "CallType": "Inbound" if f.inbound else "Outbound",
        "VendorType": "ContactCenter",
        "CallCenterId": call_center_id,
        "CallStartDateTime": utc(c["started_at"]),
        "CallEndDateTime": utc(c["ended_at"]),
        "FromPhoneNumber": customer if f.inbound else f.line,
        "ToPhoneNumber": f.line if f.inbound else customer,
        "CallDurationInSeconds": f.talk,
        "VendorCallKey": str(f.id),
        "RelatedRecordId": m["id"] if m else None,
    }


def comment_parts(f: Facts) -> list[str]:
    """R-SF-DESC comment parts, oldest first; an API comment (no author) is labelled API."""
    comments = sorted(f.call.get("comments") or (), key=lambda c: (c["posted_at"], c["id"]))
    return [f"{(c.get('posted_by') or {}).get('name') or 'API'} added a new comment:\n{c['content']}"
            for c in comments]


def media_link(f: Facts, link: str = "asset") -> str | None:
    """R-CALL-8: the permanent ``asset`` of the voicemail, else of the recording; or its short URL when
    ``*.link = "short_url"``."""
    c = f.call
    if f.kind == "voicemail":
        return c.get("voicemail_short_url") if link == "short_url" else c.get("asset")
    if c.get("recording"):
        return c.get("recording_short_url") if link == "short_url" else c.get("asset")
    return None


def expected_aircall_voice(f: Facts, m: dict | None, link: str = "asset") -> dict[str, Any]:
    """R-SFV-3, by default API name."""
    c = f.call
    comments = "\n\n".join(comment_parts(f)) or None
    lookups = {"contact": None, "lead": None, "account": None}
    if m is not None:
        lookups[LOOKUP_KEY[m["object"]]] = m["id"]
    values = {
        "call_id": str(f.id),
        "call_type": "Inbound" if f.inbound else "Outbound",
        "detailed_type": DETAILED[f.kind],
        "started_at": utc(c["started_at"]),
        "answered_at": utc(c.get("answered_at")),
        "ended_at": utc(c["ended_at"]),
        "duration": f.talk,
        "aircall_number": f.line.lstrip("+"),
        **lookups,
        "media_link": media_link(f, link),
        "tags": ", ".join(t["name"] for t in c.get("tags") or ()) or None,
        "comments": comments[:31_999] + "…" if comments and len(comments) > 32_000 else comments,
        "assigned_to": (c.get("assigned_to") or {}).get("name"),
        "answered_by": f.agent["name"] if f.agent else None,
    }
    return {AV[k]: v for k, v in values.items()}


def compare(run: Run, rows_of: dict[int, tuple[dict[str, Any], dict | None]]) -> list[tuple]:
    rows = []
    for cid, (want, got) in rows_of.items():
        if got is None:
            rows.append((cid, "record", "present", None))
            continue
        for name, value in want.items():
            if not same(name, value, got.get(name)):
                rows.append((cid, name, value, got.get(name)))
    return rows


def outside_hours(f: Facts) -> bool:
    """R-FLOW-2 with the default [sync.business_hours]: mon-fri, 09:00-18:00 local to the line."""
    local = utc(f.call["started_at"]).astimezone(ZoneInfo(f.call["number"]["time_zone"]))
    return (local.weekday() >= 5 or not (time(9, 0) <= local.time() < time(18, 0))
            or f.call.get("missed_call_reason") == "out_of_opening_hours")


# ====================================================================== the main org: defaults


INVALID_OUT = "+1 123-456-7890"  # parses, possible, not valid (R-CALL-4 "invalid number")
INVALID_OUT_2 = "+1 999-555-0199"
IMPOSSIBLE = "+33 1 23 45"


@dataclass
class Main:
    run: Run
    facts: list[Facts]
    logged: list[Facts]
    org: Org
    vc: dict[int, dict]
    av: dict[int, dict]
    hand: dict[str, int]


@pytest.fixture(scope="module")
def main_run(tmp_path_factory) -> Iterator[tuple[Run, dict[str, int], Path]]:
    box = start_box()
    try:
        store = box.aircall_store
        t0 = int((END - timedelta(days=2)).timestamp())
        for raw in (INVALID_OUT, INVALID_OUT_2):
            n = phonenumbers.parse(raw)
            assert phonenumbers.is_possible_number(n) and not phonenumbers.is_valid_number(n)
        # Hand-made R-SFV-4 cases the generator may not produce (it does produce missed/voicemail
        # from anonymous, a missed call from an invalid number and an outbound call to an impossible one).
        hand = dict(zip(("out_unanswered_invalid", "out_answered_invalid", "missed_empty", "voicemail_invalid",
                         "answered_impossible"), store.add_calls([
            {"started_at": t0, "direction": "outbound", "answered_at": None, "ended_at": t0 + 25,
             "raw_digits": INVALID_OUT},
            {"started_at": t0 + 100, "direction": "outbound", "answered_at": t0 + 110, "ended_at": t0 + 170,
             "raw_digits": INVALID_OUT_2},
            {"started_at": t0 + 200, "answered_at": None, "ended_at": t0 + 230, "raw_digits": "",
             "missed_call_reason": "agents_did_not_answer"},
            {"started_at": t0 + 300, "answered_at": None, "ended_at": t0 + 350, "raw_digits": INVALID_OUT,
             "missed_call_reason": "no_available_agent", "voicemail": "https://example.invalid/vm.mp3"},
            {"started_at": t0 + 400, "answered_at": t0 + 404, "ended_at": t0 + 444, "raw_digits": IMPOSSIBLE},
        ]), strict=True))
        tmp = tmp_path_factory.mktemp("main")
        run = backfill(box, tmp / "first")
        assert run.exit_code == 0, run.output
        yield run, hand, tmp
    finally:
        box.stop()


@pytest.fixture(scope="module")
def m(main_run) -> Main:
    run, hand, _ = main_run
    facts = all_facts(run)
    logged = [f for f in facts if f.settled]
    org = Org(run)
    cc = run.summary.call_center_id
    vc = {f.id: expected_voice_call(f, org.match(f), cc) for f in logged}
    av = {f.id: expected_aircall_voice(f, org.match(f)) for f in logged if not f.voice_only}
    return Main(run, facts, logged, org, vc, av, hand)


def test_the_voice_run_covers_every_case_the_rules_name(m: Main):
    """The representative calls exist in this data set (otherwise the tests below prove less than they say)."""
    seen: set[str] = set()
    scen = m.run.summary.scenarios
    for f in m.logged:
        c = f.call
        seen.add(f.kind)
        seen.add(f"{'answered' if f.answered else 'unanswered'} "
                 f"{'no number' if f.ext is None else 'valid' if f.valid else 'invalid'}")
        if c.get("transferred_to"):
            seen.add("transfer")
        if c.get("assigned_to"):
            seen.add("assigned")
        if len(c.get("tags") or ()) > 1:
            seen.add("several tags")
        if len(c.get("comments") or ()) > 1:
            seen.add("several comments")
        if any(cm.get("posted_by") is None for cm in c.get("comments") or ()):
            seen.add("API comment")
        if c.get("recording"):
            seen.add("recording")
        if f.answered and not c.get("recording"):
            seen.add("answered without recording")
        if f.e164 is not None:
            seen.add(scen.get(f.e164, "unknown"))
    wanted = {*KINDS, "answered no number", "answered valid", "answered invalid", "unanswered no number",
              "unanswered valid", "unanswered invalid", "transfer", "assigned", "several tags", "several comments",
              "API comment", "recording", "answered without recording", *SCENARIOS}
    assert wanted <= seen, sorted(wanted - seen)
    assert [f.id for f in m.facts if not f.settled], "the data set has calls still in progress"


def test_R_SFV_1_one_voice_call_and_at_most_one_aircall_voice_record_per_logged_call_linked_no_task(m: Main):
    run = m.run
    vcs, avs = voice_calls_by_call(run), avs_by_call(run)
    # R-CALL-5: calls in progress (or ended within the lag) get nothing.
    assert not [f.id for f in m.facts if not f.settled and (str(f.id) in vcs or str(f.id) in avs)]
    assert {int(k) for k in vcs} == {f.id for f in m.logged}
    assert [k for k, v in vcs.items() if len(v) != 1] == []
    assert [k for k, v in avs.items() if len(v) != 1] == []
    assert {int(k) for k in avs} == {f.id for f in m.logged if not f.voice_only}
    assert len(run.created("VoiceCall")) == len(m.logged)
    assert len(run.created(VOICE_OBJECT)) == len(m.av)
    # The VoiceCall points at its own Aircall Voice record through the lookup; every record is pointed at once.
    rows = []
    for f in m.logged:
        vc, av = vcs[str(f.id)][0], av_of(run, f.id)
        want = av["Id"] if av else None
        if vc[LINK] != want:
            rows.append((f.id, f"VoiceCall.{LINK}", want, vc[LINK]))
    assert not rows, mismatches(rows)
    linked = [vc[LINK] for vc in run.after["VoiceCall"].values() if vc[LINK]]
    assert sorted(linked) == sorted(run.after[VOICE_OBJECT])
    # Voice mode writes no Task.
    assert run.created("Task") == [] and not [p for obj, _, p in run.sent if obj == "Task"]


def test_R_SFV_2_voice_call_fields(m: Main):
    rows = compare(m.run, {cid: (want, vc_of(m.run, cid)) for cid, want in m.vc.items()})
    assert not rows, mismatches(rows)
    assert m.run.summary.call_center_id == m.run.settings["salesforce"]["voice"]["call_center_id"]


def test_R_SFV_2_customer_side_anonymous_aircall_side_e164_and_no_duration_when_unanswered(m: Main):
    run = m.run
    rows = []
    for f in m.logged:
        vc = vc_of(run, f.id)
        customer, line = ((vc["FromPhoneNumber"], vc["ToPhoneNumber"]) if f.inbound
                          else (vc["ToPhoneNumber"], vc["FromPhoneNumber"]))
        if f.ext is None and customer != "anonymous":
            rows.append((f.id, "customer side (no external number)", "anonymous", customer))
        if f.ext is not None and customer != f.e164:  # an invalid number is still the external number
            rows.append((f.id, "customer side", f.e164, customer))
        if line != f.line or not line.startswith("+"):
            rows.append((f.id, "Aircall side", f.line, line))
        if not f.answered and vc["CallDurationInSeconds"] != 0:
            rows.append((f.id, "CallDurationInSeconds (unanswered)", 0, vc["CallDurationInSeconds"]))
    assert not rows, mismatches(rows)
    # The native integration's "inaccurate duration" (start-to-end on unanswered outbound calls) is fixed.
    out_unanswered = [f for f in m.logged if f.kind == "outbound_unanswered"]
    assert out_unanswered and all(f.call["duration"] > 0 for f in out_unanswered)


def test_R_SFV_3_aircall_voice_record_fields(m: Main):
    rows = compare(m.run, {cid: (want, av_of(m.run, cid)) for cid, want in m.av.items()})
    assert not rows, mismatches(rows)


def test_R_SFV_3_tags_comments_assignment_and_answering_agent_are_written(m: Main):
    """What the native integration drops (seed 000/002 "Limitations connues"): we don't."""
    run = m.run
    tagged = [f for f in m.logged if len(f.call["tags"]) > 1 and not f.voice_only]
    f = tagged[0]
    assert av_of(run, f.id)[AV["tags"]] == ", ".join(t["name"] for t in f.call["tags"])
    commented = [f for f in m.logged if len(f.call["comments"]) > 1 and not f.voice_only]
    f = commented[0]
    first, second = sorted(f.call["comments"], key=lambda c: (c["posted_at"], c["id"]))
    assert av_of(run, f.id)[AV["comments"]] == (
        f"{(first['posted_by'] or {}).get('name') or 'API'} added a new comment:\n{first['content']}\n\n"
        f"{(second['posted_by'] or {}).get('name') or 'API'} added a new comment:\n{second['content']}")
    api = [f for f in m.logged if any(c["posted_by"] is None for c in f.call["comments"]) and not f.voice_only]
    assert api and all("API added a new comment:\n" in av_of(run, f.id)[AV["comments"]] for f in api)
    assigned = [f for f in m.logged if f.call.get("assigned_to") and not f.voice_only]
    assert assigned and all(av_of(run, f.id)[AV["assigned_to"]] == f.call["assigned_to"]["name"] for f in assigned)
    transferred = [f for f in m.logged if f.answered and f.call.get("transferred_to")]
    assert transferred
    for f in transferred:  # R-CALL-9: the user it was transferred to, not the one who picked up first
        assert av_of(run, f.id)[AV["answered_by"]] == f.call["transferred_to"]["name"] != f.call["user"]["name"]
    unanswered = [f for f in m.logged if not f.answered and not f.voice_only]
    assert unanswered and all(av_of(run, f.id)[AV["answered_by"]] is None for f in unanswered)
    assert any(f.call.get("user") for f in unanswered)  # a missed call that rang an agent: still nobody answered


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_R_SFV_2_R_SFV_3_R_SFV_5_logged_against_the_matched_record_in_the_lookup_of_its_type(m: Main, scenario):
    """Contact > Lead > Account > Person Account, newest of a type, converted Leads ignored (R-SF-MATCH-1…3);
    unknown ⇒ the Lead created for the number. RelatedRecordId and exactly one lookup hold it."""
    run = m.run
    summary = run.summary
    calls = [f for f in m.logged if f.e164 and summary.scenarios.get(f.e164, "unknown") == scenario]
    assert calls
    rows = []
    for f in calls:
        want = summary.expected_match.get(f.e164)
        if scenario in ("unknown", "converted_lead"):
            assert want is None
            created = m.org.created_by_number.get(f.e164) or []
            assert len(created) == 1 and run.store.type_of(created[0]["Id"]) == "Lead", (f.id, f.e164, created)
            want = {"object": "Lead", "id": created[0]["Id"]}
        rid = want["id"]
        lookups = {"contact": None, "lead": None, "account": None}
        lookups[LOOKUP_KEY[want["object"]]] = rid
        got_vc = vc_of(run, f.id)["RelatedRecordId"]
        if got_vc != rid:
            rows.append((f.id, f"RelatedRecordId ({scenario}, {want['object']})", rid, got_vc))
        av = av_of(run, f.id)
        if av is None:
            assert f.voice_only
            continue
        got = {k: av[AV[k]] for k in lookups}
        if got != lookups:
            rows.append((f.id, f"Aircall Voice lookups ({scenario})", lookups, got))
    assert not rows, mismatches(rows)


def test_R_SFV_4_never_answered_without_or_with_an_invalid_number_gets_a_voice_call_only(m: Main):
    run = m.run
    voice_only = [f for f in m.logged if f.voice_only]
    seen = {(f.inbound, "none" if f.ext is None else "invalid") for f in voice_only}
    assert {(True, "none"), (True, "invalid"), (False, "none"), (False, "invalid")} <= seen
    rows = []
    for f in voice_only:
        vc = vc_of(run, f.id)
        if av_of(run, f.id) is not None:
            rows.append((f.id, "Aircall Voice record", None, av_of(run, f.id)["Id"]))
        if vc[LINK] is not None:
            rows.append((f.id, f"VoiceCall.{LINK}", None, vc[LINK]))
    assert not rows, mismatches(rows)
    # The same numbers, answered, get both records (an answered call is "connected").
    for key in ("out_answered_invalid", "answered_impossible"):
        f = facts_of(run, m.hand[key])
        assert f.answered and not f.voice_only
        assert av_of(run, f.id) is not None and vc_of(run, f.id)[LINK] == av_of(run, f.id)["Id"], key
    # A never-answered call with a *valid* number gets both records too.
    valid_unanswered = [f for f in m.logged if not f.answered and f.valid]
    assert valid_unanswered and all(av_of(run, f.id) is not None for f in valid_unanswered)
    # An invalid number is still an external number (R-CALL-4): looked up, a Lead created when unknown.
    f = facts_of(run, m.hand["out_unanswered_invalid"])
    lead = vc_of(run, f.id)["RelatedRecordId"]
    assert lead and run.store.type_of(lead) == "Lead"
    assert vc_of(run, f.id)["ToPhoneNumber"] == e164(phonenumbers.parse(INVALID_OUT))
    assert vc_of(run, m.hand["voicemail_invalid"])["RelatedRecordId"] == lead  # R-SF-MATCH-5: the same Lead
    f = facts_of(run, m.hand["missed_empty"])
    assert vc_of(run, f.id)["FromPhoneNumber"] == "anonymous" and vc_of(run, f.id)["RelatedRecordId"] is None


def test_R_SFV_5_R_SF_MATCH_4_5_one_new_lead_per_unknown_number(m: Main):
    run = m.run
    first_call: dict[str, Facts] = {}
    for f in sorted(m.logged, key=lambda f: (f.call["started_at"], f.id)):
        if f.e164 and f.e164 not in run.summary.expected_match:
            first_call.setdefault(f.e164, f)
    leads = run.created("Lead")
    numbers = [{"+" + digits(ld[k]) for k in PHONE_FIELDS["Lead"] if ld.get(k)} for ld in leads]
    assert all(len(n) == 1 for n in numbers)
    assert sorted(next(iter(n)) for n in numbers) == sorted(first_call)  # one each, none twice
    assert not run.created("Contact") and not run.created("Account")
    rows = []
    for lead, nums in zip(leads, numbers, strict=True):
        f = first_call[next(iter(nums))]
        contact = f.call.get("contact")
        name = (" ".join(p for p in (contact.get("first_name"), contact.get("last_name")) if p) if contact
                else intl(f.ext))
        company = (contact or {}).get("company_name") or "Unknown company"
        for fname, want in (("Name", name), ("Company", company), ("OwnerId", run.summary.integration_user_id)):
            if lead[fname] != want:
                rows.append((f.id, f"Lead.{fname}", want, lead[fname]))
    assert not rows, mismatches(rows)
    assert any(f.call.get("contact") for f in first_call.values())
    assert any(not f.call.get("contact") for f in first_call.values())


# ---------------------------------------------------------------------- R-CALL-7: the same backfill again


@pytest.fixture(scope="module")
def again(main_run) -> Run:
    first, _, tmp = main_run
    run = backfill(first.box, tmp / "again", state=first.state)
    assert run.exit_code == 0, run.output
    return run


@pytest.fixture(scope="module")
def lost(main_run, again) -> Run:
    """The same backfill once more, with a new, empty state file (state lost, or another machine)."""
    first, _, tmp = main_run
    run = backfill(first.box, tmp / "fresh")
    assert run.exit_code == 0, run.output
    return run


def test_R_CALL_7_R_SFV_1_the_same_backfill_again_creates_and_changes_nothing(main_run, again):
    first, _, _ = main_run
    assert again.after == first.after
    assert [(obj, op) for obj, op, _ in again.sent] == []


def test_R_CALL_7_R_SFV_1_with_the_state_lost_both_records_are_found_by_call_id_nothing_duplicated(
        main_run, again, lost):
    first, _, _ = main_run
    assert [(obj, op) for obj, op, _ in lost.sent if op == "create"] == []
    for obj in OBJECTS:
        assert set(lost.after[obj]) == set(first.after[obj]), obj
    assert [(obj, op, payload) for obj, op, payload in lost.sent if op == "update"] == []
    assert lost.after == first.after
    print(f"\nmain org ({len(first.after['VoiceCall'])} calls): first run {first.requests} Salesforce requests, "
          f"same state {again.requests}, state lost {lost.requests}")


# ====================================================================== call flow, business hours, unknown ⇒ Contact


FLOW = {"sync": {"log_calls": "business_hours"},
        "salesforce": {"call_flow": {"missed": "skip"}, "matching": {"unknown_number": "contact"},
                       "recording": {"link": "short_url"}, "voicemail": {"link": "short_url"}}}


@pytest.fixture(scope="module")
def flow(tmp_path_factory) -> Iterator[Run]:
    box = start_box(seed=3, calls=250)
    try:
        run = backfill(box, tmp_path_factory.mktemp("flow"), FLOW)
        assert run.exit_code == 0, run.output
        yield run
    finally:
        box.stop()


def test_R_SFV_5_R_FLOW_1_R_FLOW_2_skipped_calls_write_nothing_not_even_a_record_for_their_number(flow: Run):
    facts = [f for f in all_facts(flow) if f.settled]
    skipped_flow = [f for f in facts if f.kind == "missed"]
    skipped_hours = [f for f in facts if f.kind != "missed" and outside_hours(f)]
    kept = [f for f in facts if f.kind != "missed" and not outside_hours(f)]
    assert skipped_flow and skipped_hours and kept
    assert sorted(int(k) for k in voice_calls_by_call(flow)) == sorted(f.id for f in kept)
    assert {int(k) for k in avs_by_call(flow)} == {f.id for f in kept if not f.voice_only}
    # Only the numbers of logged calls get a record created for them.
    unknown_kept = {f.e164 for f in kept if f.e164 and f.e164 not in flow.summary.expected_match}
    unknown_skipped = {f.e164 for f in skipped_flow + skipped_hours
                       if f.e164 and f.e164 not in flow.summary.expected_match} - unknown_kept
    assert unknown_skipped
    contacts = flow.created("Contact")
    numbers = sorted("+" + digits(next(c[k] for k in PHONE_FIELDS["Contact"] if c.get(k))) for c in contacts)
    assert numbers == sorted(unknown_kept)


def test_R_SFV_5_R_SF_MATCH_4_R_SFV_3_unknown_number_contact_is_the_related_record_and_short_url_links(
        flow: Run):
    org = Org(flow)
    assert not flow.created("Lead") and not flow.created("Account")
    rows = []
    checked = 0
    for f in all_facts(flow):
        if not f.settled or f.kind == "missed" or outside_hours(f):
            continue
        mt = org.match(f)
        want_vc = expected_voice_call(f, mt, flow.summary.call_center_id)
        rows += compare(flow, {f.id: (want_vc, vc_of(flow, f.id))})
        if not f.voice_only:
            rows += compare(flow, {f.id: (expected_aircall_voice(f, mt, "short_url"), av_of(flow, f.id))})
        if mt and mt["created"]:
            checked += 1
            assert flow.store.type_of(mt["id"]) == "Contact"
    assert checked
    assert not rows, mismatches(rows)
    links = [av[AV["media_link"]] for av in flow.after[VOICE_OBJECT].values() if av[AV["media_link"]]]
    assert links and all("/short-urls/" in x for x in links)


# ====================================================================== small one-off orgs


def test_R_SFV_1_the_voice_object_and_the_link_field_are_configurable(tmp_path):
    obj, link = "Call_Log__c", "Call_Log_Record__c"
    box = start_box(seed=4, calls=60, org=OrgOptions(voice_object=obj, voice_call_link_field=link))
    try:
        extra = {"salesforce": {"voice": {"aircall_voice_object": obj, "voice_call_link_field": link}}}
        code, out = check(box, tmp_path, extra)
        assert code == 0, out
        objects = ("VoiceCall", obj, "Task", "Lead", "Contact", "Account")
        run = backfill(box, tmp_path / "run", extra, objects=objects)
        assert run.exit_code == 0, run.output
        logged = [f for f in all_facts(run) if f.settled]
        vcs = voice_calls_by_call(run)
        assert {int(k) for k in vcs} == {f.id for f in logged}
        avs = {r[AV["call_id"]]: r for r in run.after[obj].values()}
        assert set(avs) == {str(f.id) for f in logged if not f.voice_only}
        for f in logged:
            vc = vcs[str(f.id)][0]
            assert vc[link] == (avs[str(f.id)]["Id"] if str(f.id) in avs else None), f.id
        assert not run.created("Task")
    finally:
        box.stop()


def test_R_SFV_5_R_SF_MATCH_4_nothing_logs_the_voice_call_without_related_record(tmp_path):
    box = start_box(seed=6, calls=80)
    try:
        run = backfill(box, tmp_path, {"salesforce": {"matching": {"unknown_number": "nothing"}}})
        assert run.exit_code == 0, run.output
        assert not run.created("Lead") and not run.created("Contact") and not run.created("Account")
        logged = [f for f in all_facts(run) if f.settled]
        unknown = [f for f in logged if f.e164 and f.e164 not in run.summary.expected_match]
        assert unknown
        rows = []
        for f in unknown:
            vc = vc_of(run, f.id)
            if vc["RelatedRecordId"] is not None:
                rows.append((f.id, "RelatedRecordId", None, vc["RelatedRecordId"]))
            av = av_of(run, f.id)
            if not f.voice_only and (av is None or any(av[AV[k]] for k in ("contact", "lead", "account"))):
                rows.append((f.id, "Aircall Voice lookups", "all empty", av and {k: av[AV[k]] for k in LOOKUP_KEY}))
        assert not rows, mismatches(rows)
    finally:
        box.stop()


def test_R_SFV_7_check_fails_naming_the_permission_when_voicecall_is_not_createable_and_a_run_writes_nothing(
        tmp_path):
    box = start_box(seed=5, calls=40, org=OrgOptions(voicecall_createable=False))
    try:
        code, out = check(box, tmp_path)
        assert code == 2, out
        assert "VoiceCall" in out and "63.0" in out
        assert "Contact Center" in out and "permission set" in out  # the missing permission, by name
        run = backfill(box, tmp_path / "run")
        assert run.exit_code != 0, run.output
        assert "VoiceCall" in run.output and "permission set" in run.output
        # Nothing half-done: no Aircall Voice record, Lead or anything else without its VoiceCall.
        assert [(obj, op) for obj, op, _ in run.sent] == []
        assert run.after == run.before
    finally:
        box.stop()


def test_R_SFV_7_an_api_version_below_63_is_refused_in_voice_mode(tmp_path):
    box = start_box(seed=5, calls=20)
    try:
        code, out = check(box, tmp_path, {"salesforce": {"api_version": "59.0"}})
        assert code == 2, out
        # The why (VoiceCall through the API from 63.0) and the fix, on the problem's own line.
        assert ('  salesforce.api_version: "59.0" is too old for salesforce.mode = "voice": Salesforce creates '
                "VoiceCall records through the API only from version 63.0 (R-SFV-7); "
                'set api_version = "63.0" or remove the line') in out.splitlines()
    finally:
        box.stop()


def test_R_SFV_6_check_says_omni_channel_presence_mapping_is_out_of_reach(tmp_path):
    box = start_box(seed=5, calls=20)
    try:
        code, out = check(box, tmp_path)
        assert code == 0, out
        line = next((x for x in out.splitlines() if "Omni-Channel" in x), None)
        assert line is not None, out
        assert "presence" in line.lower() and ("cannot" in line or "can't" in line or "out of reach" in line)
        assert "VoiceCall: createable" in out
    finally:
        box.stop()


# ====================================================================== R-SFV-8: calls that changed


UNKNOWN_REMATCH = "+33 1 84 88 12 34"  # unknown at first (a Lead is created); a Contact is added later
HUGE = 40_000


@dataclass
class Edge:
    first: Run
    tmp: Path
    ids: dict[str, int]


@pytest.fixture(scope="module")
def edge(tmp_path_factory) -> Iterator[Edge]:
    box = start_box(seed=5, calls=150)
    try:
        store = box.aircall_store
        assert e164(phonenumbers.parse(UNKNOWN_REMATCH)) not in box.salesforce.summary.numbers
        t0 = int((END - timedelta(days=2)).timestamp())
        rematch, huge = store.add_calls([
            {"started_at": t0, "answered_at": t0 + 6, "ended_at": t0 + 70, "raw_digits": UNKNOWN_REMATCH},
            {"started_at": t0 + 200, "answered_at": t0 + 206, "ended_at": t0 + 300},
        ])
        store.add_comment(huge, "x" * HUGE, posted_at=t0 + 400, posted_by=None)
        tmp = tmp_path_factory.mktemp("edge")
        first = backfill(box, tmp / "first")
        assert first.exit_code == 0, first.output
        yield Edge(first, tmp, {"rematch": rematch, "huge": huge})
    finally:
        box.stop()


def test_R_SFV_3_R_SF_DESC_comments_over_32000_characters_are_cut_with_an_ellipsis(edge: Edge):
    av = av_of(edge.first, edge.ids["huge"])
    full = "API added a new comment:\n" + "x" * HUGE
    assert av[AV["comments"]] == full[:31_999] + "…"


@dataclass
class Changed:
    second: Run
    ids: dict[str, int]
    before_av: dict[int, dict]
    before_vc: dict[int, dict]
    contact_id: str
    lead_id: str


@pytest.fixture(scope="module")
def changed(edge: Edge) -> Changed:
    first = edge.first
    box = first.box
    store = box.aircall_store
    summary = first.summary
    facts = {f.id: f for f in all_facts(first) if f.settled and store.truth(f.id) is not None}
    users = [f.call["user"] for f in facts.values() if f.call.get("user")]
    # A call matched to a seeded Contact gets a comment (through the API) and two tags.
    tagged = next(f for f in facts.values() if f.kind == "inbound_answered" and not f.call["tags"]
                  and (summary.expected_match.get(f.e164) or {}).get("object") == "Contact")
    # A missed call (valid number: it has an Aircall Voice record) is assigned afterwards.
    assigned = next(f for f in facts.values() if f.kind == "missed" and f.valid and not f.call.get("assigned_to"))
    # An answered inbound call is transferred afterwards to another user.
    moved = next(f for f in facts.values() if f.kind == "inbound_answered" and not f.call.get("transferred_to")
                 and f.id != tagged.id)
    target = next(u for u in users if u["id"] != moved.call["user"]["id"])
    # A never-answered anonymous call gets a comment: still a VoiceCall only (R-SFV-4).
    anonymous = next(f for f in facts.values() if f.voice_only and f.ext is None)
    ids = {"tagged": tagged.id, "assigned": assigned.id, "moved": moved.id, "anonymous": anonymous.id,
           "rematch": edge.ids["rematch"]}
    before_av = {cid: av_of(first, cid) for cid in ids.values()}
    before_vc = {cid: vc_of(first, cid) for cid in ids.values()}
    assert before_av[anonymous.id] is None
    lead_id = before_vc[ids["rematch"]]["RelatedRecordId"]
    assert lead_id and box.sf_store.type_of(lead_id) == "Lead"

    store.add_comment(tagged.id, "Called back, all sorted.", posted_at=tagged.call["ended_at"] + 4000)
    store.add_tags(tagged.id, ["VIP", "Demo booked"])
    store.update_call(assigned.id, assigned_to=target)
    store.update_call(moved.id, transferred_by=moved.call["user"], transferred_to=target)
    store.add_comment(anonymous.id, "Nobody there.", posted_at=anonymous.call["ended_at"] + 60)
    # The unknown caller turns out to be a Contact an agent enters in Salesforce (stored unlike E.164);
    # the call is then tagged in Aircall, so it is looked at again.
    contact_id = box.sf_store.insert("Contact", FirstName="Rita", LastName="Rematch", Phone="01 84 88 12 34")
    store.add_tags(edge.ids["rematch"], ["VIP"])

    second = backfill(box, edge.tmp / "second", state=first.state)
    assert second.exit_code == 0, second.output
    return Changed(second, ids, before_av, before_vc, contact_id, lead_id)


def test_R_SFV_8_a_changed_call_updates_its_aircall_voice_record_in_place_nothing_duplicated(changed: Changed):
    run = changed.second
    # Nothing created: no second VoiceCall, Aircall Voice record, Lead or Contact.
    for obj in OBJECTS:
        assert run.created(obj) == [], obj
    assert not [(obj, op) for obj, op, _ in run.sent if op == "create"]
    org = Org(run)
    org.extra[e164(phonenumbers.parse(UNKNOWN_REMATCH))] = {"object": "Contact", "id": changed.contact_id}
    rows = []
    for key in ("tagged", "assigned", "moved", "rematch"):
        cid = changed.ids[key]
        av = av_of(run, cid)
        assert av is not None and av["Id"] == changed.before_av[cid]["Id"], key
        f = facts_of(run, cid)
        want = expected_aircall_voice(f, org.match(f))
        if key == "rematch":  # the lookup of the previous match: see the test below
            want.pop(AV["lead"])
        rows += compare(run, {cid: (want, av)})
    assert not rows, mismatches(rows)
    av = av_of(run, changed.ids["tagged"])
    assert av[AV["tags"]].endswith("VIP, Demo booked")
    assert av[AV["comments"]].endswith("API added a new comment:\nCalled back, all sorted.")
    assert av_of(run, changed.ids["rematch"])[AV["contact"]] == changed.contact_id
    # R-SFV-4 still holds for the changed anonymous call.
    assert av_of(run, changed.ids["anonymous"]) is None
    assert vc_of(run, changed.ids["anonymous"])[LINK] is None
    # Exactly the changed calls' Aircall Voice records were rewritten.
    assert run.changed(VOICE_OBJECT) == {changed.before_av[changed.ids[k]]["Id"]
                                         for k in ("tagged", "assigned", "moved", "rematch")}


def test_R_SFV_8_only_updateable_voice_call_fields_are_sent_and_the_related_record_follows_the_match(
        changed: Changed):
    run = changed.second
    schema = run.store.schema["VoiceCall"]
    updates = [p for obj, op, p in run.sent if obj == "VoiceCall" and op == "update"]
    sent_fields = {k for p in updates for k in p if k not in ("attributes", "Id", "id")}
    assert not [k for k in sent_fields if not schema.fields[k].updateable], sent_fields
    # Create-only fields stay as created (the call's times, numbers, key…).
    cid = changed.ids["rematch"]
    vc = vc_of(run, cid)
    assert vc["Id"] == changed.before_vc[cid]["Id"]
    assert vc["RelatedRecordId"] == changed.contact_id  # R-SF-MATCH-2: a Contact before a Lead
    for name in VC_FIELDS[:-1]:
        assert vc[name] == changed.before_vc[cid][name], name
    # Only the VoiceCall whose matched record changed is written; the others had nothing updateable to change.
    assert run.changed("VoiceCall") == {changed.before_vc[cid]["Id"]}
    assert len(updates) == 1 and updates[0].get("RelatedRecordId") == changed.contact_id


def test_R_SFV_8_R_SFV_3_a_rematched_call_keeps_no_lookup_to_its_previous_record(changed: Changed):
    """R-SFV-3: the matched record in the lookup *of its type*; after R-SFV-8 re-matches the call to a
    Contact, the Lead lookup no longer holds the matched record."""
    av = av_of(changed.second, changed.ids["rematch"])
    assert (av[AV["contact"]], av[AV["lead"]], av[AV["account"]]) == (changed.contact_id, None, None)


@pytest.fixture(scope="module")
def cleared(changed: Changed, edge: Edge) -> tuple[Run, dict[str, int]]:
    """Third run: tags removed and the call unassigned in Aircall (R-FLOW-3 "tags … assignment")."""
    run2 = changed.second
    box = run2.box
    store = box.aircall_store
    facts = [f for f in all_facts(run2) if f.settled and not f.voice_only]
    both = next(f for f in facts if f.call.get("assigned_to") and f.call.get("tags"))
    assert av_of(run2, both.id)[AV["tags"]] and av_of(run2, both.id)[AV["assigned_to"]]
    store.update_call(both.id, tags=[], assigned_to=None)
    run = backfill(box, edge.tmp / "third", state=run2.state)
    assert run.exit_code == 0, run.output
    return run, {"both": both.id}


def test_R_SFV_8_R_FLOW_3_tags_removed_and_unassigned_in_aircall_empty_those_fields(cleared):
    run, ids = cleared
    av = av_of(run, ids["both"])
    assert not run.created(VOICE_OBJECT) and not run.created("VoiceCall")
    assert (empty(av[AV["tags"]]), empty(av[AV["assigned_to"]])) == (None, None)


# ====================================================================== the request budget


def test_budget_1000_calls_over_300_numbers_at_most_30_requests_and_a_rerun_writes_nothing(tmp_path):
    """Issue: "a 1,000-call backfill in voice mode with 300 distinct numbers uses at most 30 Salesforce
    requests; re-running it writes nothing". Requests are counted on the emulated Salesforce server."""
    box = start_box(seed=9, calls=1000, pool_size=700)
    try:
        first = backfill(box, tmp_path / "first")
        assert first.exit_code == 0, first.output
        facts = all_facts(first)
        logged = [f for f in facts if f.settled]
        assert len(facts) == 1000 and len(logged) >= 990
        numbers = {f.e164 for f in facts if f.e164}
        assert len(numbers) >= 300, len(numbers)
        assert len(first.created("VoiceCall")) == len(logged)
        assert len(first.created(VOICE_OBJECT)) == len([f for f in logged if not f.voice_only])
        assert first.requests <= 30, f"{first.requests} Salesforce requests for {len(logged)} calls"

        again = backfill(box, tmp_path / "again", state=first.state)
        assert again.exit_code == 0, again.output
        assert [(obj, op) for obj, op, _ in again.sent] == []
        assert again.after == first.after
        assert again.requests <= 30
        print(f"\nbudget: {len(logged)} calls, {len(numbers)} numbers: first run {first.requests} Salesforce "
              f"requests, re-run {again.requests}")
    finally:
        box.stop()
