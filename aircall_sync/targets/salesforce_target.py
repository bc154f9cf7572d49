"""The Salesforce target in mode ``task``: plan a batch of calls, then apply the plan.

``plan`` only reads (the org and the state): it resolves numbers, owners and
Cases in a few batched requests, builds each call's Task (pure mapping in
``salesforce_task``), reads the Tasks that already carry the calls' ids
(``CallObject``, the reconciliation key of DESIGN §6) and diffs. ``apply``
writes exactly the planned changes. The dry run renders the same plan.

A call is re-planned only when its fingerprint (what it says, under the
settings that matter) differs from the one recorded when it was written, so an
unchanged call costs no request at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from aircall_sync import rules
from aircall_sync.aircall.models import Call
from aircall_sync.errors import OrgMismatchError
from aircall_sync.plan import Action, Change, Outcome, diff
from aircall_sync.message_rules import MessageAssessment
from aircall_sync.rules import Assessment, ExternalNumber
from aircall_sync.targets import salesforce_match as matching
from aircall_sync.targets.salesforce import (
    RETRIABLE_RECORD_ERRORS,
    UNCERTAIN,
    SalesforceOrg,
    SaveResult,
    soql_in,
)
from aircall_sync.targets.salesforce_message import (
    KEY_PREFIX,
    build_message_task,
    message_fingerprint,
    message_owner,
    message_subject,
)
from aircall_sync.targets.salesforce_task import (
    CREATE_ONLY_FIELDS,
    Match,
    Owner,
    SfUser,
    TaskContext,
    build_task,
    owner,
    reassignment,
    subject,
)

log = logging.getLogger("aircall_sync.salesforce")

TARGET = "salesforce"
NEW = "new:"  # placeholder ids of records this plan creates, replaced when they exist


@dataclass
class CallPlan:
    """The plan of one item: a call, or a message (RULES §7: ``assessment.call`` is then None)."""

    assessment: Assessment | MessageAssessment
    fingerprint: str
    task: Change | None = None  # None: skipped or unchanged
    writes: list[Change] = field(default_factory=list)  # every write of the call, in order (voice: two)
    outcome: Outcome | None = None  # decided at plan time (skip / unchanged)
    depends_on: list[str] = field(default_factory=list)  # placeholder ids the Task needs
    extra_records: dict[str, str] = field(default_factory=dict)  # e.g. the matched record
    #: The record the item is logged against (RULES §9 saves it in Aircall); None when not planned now.
    match: Match | None = None

    @property
    def key(self) -> int:
        """The call id, or a message's state key (negative)."""
        return self.assessment.key

    @property
    def message_id(self) -> str | None:
        return self.assessment.message_id


@dataclass
class Batch:
    calls: list[CallPlan]
    new_records: dict[str, Change] = field(default_factory=dict)  # placeholder -> create change
    reassignments: dict[str, Change] = field(default_factory=dict)  # record id -> update change
    new_matches: dict[str, Match] = field(default_factory=dict)  # placeholder -> the Match calls point at

    def changes(self) -> list[Change]:
        out: list[Change] = []
        for placeholder, change in self.new_records.items():
            out.append(change)
        out.extend(self.reassignments.values())
        for plan in self.calls:
            if plan.writes:
                out.extend(plan.writes)
            elif plan.task is not None:
                out.append(plan.task)
            elif plan.outcome is not None:
                action = Action.SKIP if plan.outcome.outcome == "skipped" else Action.NOOP
                out.append(Change(plan.key, TARGET, "Task", action, reason=plan.outcome.reason,
                                  record_id=plan.outcome.records.get("Task"), message_id=plan.message_id))
        return out


def fingerprint(call: Call, settings, insights=None) -> str:
    """What the Task depends on, hashed: the call's loggable content and the settings that shape it.

    Media URLs that are re-signed on every read (``recording``, ``voicemail``)
    count only by presence; ``asset`` and short URLs are stable. With AI on, the
    insights this target writes (R-AI-4) count too: one arriving later re-writes
    the call in place (R-FLOW-3), an unchanged one costs nothing.
    """
    payload = {
        "call": [call.direction, call.status, _ts(call.started_at), _ts(call.answered_at), _ts(call.ended_at),
                 call.raw_digits, call.missed_call_reason, call.asset, bool(call.recording), bool(call.voicemail),
                 call.recording_short_url, call.voicemail_short_url, len(call.participants)],
        "number": [call.number.name, call.number.digits, call.number.country, call.number.time_zone]
        if call.number else None,
        "people": [_person(call.user), _person(call.transferred_to), _person(call.assigned_to)],
        "contact": [call.contact.first_name, call.contact.last_name, call.contact.company_name]
        if call.contact else None,
        "tags": [t.name for t in call.tags],
        "comments": [[c.content, _ts(c.posted_at), _person(c.posted_by)] for c in call.comments],
        "settings": settings.derived(_shaping_settings),
    }
    if settings.aircall.ai.enabled:
        # Absent while AI is off: turning it on re-plans the calls, an upgrade with it off does not.
        written = settings.derived(ai_kinds_written)
        payload["ai"] = [{k: insights.get(k) for k in written if insights and insights.get(k)},
                         settings.derived(_ai_settings)]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


def ai_kinds_written(settings) -> tuple[str, ...]:
    """R-AI-4: the insights Salesforce writes in this mode: in mode task the Description's four and the
    transcription when a Task field holds it; in mode voice those with an Aircall Voice field."""
    from aircall_sync.aircall.insights import KINDS

    sf = settings.salesforce
    if sf.mode == "voice":
        fields = sf.voice.fields.enabled(ai=True)
        return tuple(k for k in KINDS if f"ai_{k}" in fields)
    fields = sf.task.fields.enabled(ai=True)
    return tuple(k for k in KINDS if k != "transcription" or "ai_transcription" in fields)


def _ai_settings(settings) -> str:
    sf = settings.salesforce
    fields = sf.voice.fields.enabled(ai=True) if sf.mode == "voice" else sf.task.fields.enabled(ai=True)
    return repr(sorted((k, v) for k, v in fields.items() if k.startswith("ai_")))


def _shaping_settings(settings) -> str:
    sf = settings.salesforce
    return repr((sf.mode, sf.call_flow, sf.matching, sf.task, sf.recording, sf.voicemail,
                 settings.sync.log_calls, settings.sync.business_hours, settings.sync.timezone))


def _ts(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment else None


def _person(user) -> list | None:
    return [user.id, user.name, (user.email or "").lower()] if user else None


class SalesforceTaskTarget:
    name = TARGET
    primary = "Task"  # the record whose id says a call is written
    #: R-SF-OWNER (owner, reassignment) applies to calls' Tasks; voice mode's call records keep the
    #: integration user. Messages are Tasks in both modes, so it always applies to them.
    owner_rules_for_calls = True

    def __init__(self, settings, org: SalesforceOrg, state):
        self.settings = settings
        self.sf = settings.salesforce
        self.org = org
        self.state = state
        self.task_fields: frozenset[str] | None = None
        self.task_lengths: dict[str, int] | None = None  # lower-cased Task field -> length (R-AI-4 cuts)
        self.checkboxes: frozenset[str] = frozenset()
        self.person_accounts = False
        self._matches: dict[str, Match | None] = {}
        self._users: dict[str, SfUser | None] = {}
        self._links: dict[str, str | None] = {}
        self._warned: set[str] = set()
        self._planned: dict[str, Any] = {}  # placeholders planned this run (dry runs span batches)
        #: RULES §9 (aircall.contacts.save_matched): the fields of matched records R-CONTACT-1 saves, read in
        #: the lookups the run makes anyway, and the names of matched Contacts' Accounts (one query a chunk).
        self.save_contacts = settings.aircall.contacts.save_matched
        self.contact_fields: dict[str, tuple[str, ...]] = {}
        self._rows: dict[str, dict[str, Any]] = {}
        self._account_names: dict[str, str | None] = {}

    # ------------------------------------------------------------ setup

    def start(self) -> None:
        """Learn the org once per run: Task fields (R-SF-FIELDS, R-SF-TASK-6), person accounts."""
        described = self.org.describe_many(["Task", "Account", *(("Contact", "Lead") if self.save_contacts else ())])
        task = described.get("Task")
        if not task:
            raise OrgMismatchError("the Salesforce user cannot see the Task object; grant it read/create on Task")
        self.task_fields = frozenset(f["name"] for f in task.get("fields", []))
        self.task_lengths = _lengths(task)
        # Checkboxes are never null in Salesforce: an absent value is not a value to clear.
        self.checkboxes = frozenset(f["name"] for f in task.get("fields", []) if f.get("type") == "boolean")
        account = described.get("Account") or {}
        self.person_accounts = any(f.get("name") == "IsPersonAccount" for f in account.get("fields", []))
        self._learn_contact_fields(described)
        self._await_earlier_jobs()

    def _learn_contact_fields(self, described: Mapping[str, Any]) -> None:
        """RULES §9: the record fields R-CONTACT-1 saves that the API user can see (a hidden one is not read,
        and that part of the contact is left alone)."""
        if not self.save_contacts:
            return
        visible = {o: {f["name"].lower(): f["name"] for f in (described.get(o) or {}).get("fields", [])}
                   for o in ("Contact", "Lead", "Account")}
        wanted = dict(matching.CONTACT_FIELDS)
        account = list(wanted["Account"]) + (list(wanted["PersonAccount"]) if self.person_accounts else [])
        wanted = {"Contact": wanted["Contact"], "Lead": wanted["Lead"], "Account": tuple(account)}
        self.contact_fields = {o: tuple(visible[o][f.lower()] for f in fields if f.lower() in visible[o])
                               for o, fields in wanted.items()}

    def _await_earlier_jobs(self) -> None:
        """Wait for the Task Bulk jobs a run that did not finish left processing (DESIGN §6).

        Salesforce goes on processing a closed job after the run that sent it
        died, and its Tasks are visible only when it ends: planning before then
        would write them again. Asked only after such a run (or with no run
        history: the state may have been lost), since listing jobs costs
        requests.
        """
        last = self.state.last_runs(1)
        if last and last[0].outcome not in (None, "interrupted", "error"):
            return
        for job_id in self.org.unfinished_bulk_jobs("Task"):
            log.info("waiting for Bulk job %s, left processing by an earlier run, before planning", job_id)
            self.org.bulk_wait(job_id)

    def forget(self) -> None:
        """Drop what this run remembers of the CRM's records: another writer may have created a
        Lead or a Case since (DESIGN §10); the next plan looks them up again."""
        self._matches.clear()
        self._links.clear()
        self._rows.clear()
        self._account_names.clear()

    # ------------------------------------------------------------ plan

    def plan(self, items: Sequence[Assessment | MessageAssessment], *, only_changed: bool = True) -> Batch:
        """Plan a chunk of calls and messages (RULES §7) together: one round of lookups for both."""
        known = self.state.get_records([a.key for a in items], TARGET)
        plans: list[CallPlan] = []
        todo: list[CallPlan] = []
        for a in items:
            print_ = (message_fingerprint(a, self.settings) if a.call is None
                      else fingerprint(a.call, self.settings, a.insights))
            plan = CallPlan(a, print_)
            decision = a.decisions[TARGET]
            record = known.get(a.key)
            if decision.skipped:
                plan.outcome = Outcome(a.key, TARGET, "skipped", reason=decision.reason, message_id=a.message_id)
            elif only_changed and record is not None and record.is_written and record.hash == plan.fingerprint:
                plan.outcome = Outcome(a.key, TARGET, "unchanged", records=dict(record.crm_ids),
                                       fingerprint=plan.fingerprint, message_id=a.message_id)
            else:
                todo.append(plan)
            plans.append(plan)
        batch = Batch(plans)
        if not todo:
            return batch

        numbers = {p.assessment.external.e164: p.assessment.external for p in todo if p.assessment.external}
        # The records already written for these items are read with the exact-number queries: one Composite
        # request for both (a live batch of one call: a search and one query request, not two).
        existing_soqls, read_existing = self._existing_reads(todo)
        existing = read_existing(self._resolve(list(numbers.values()), also=existing_soqls))
        if self.save_contacts:
            self._load_account_names(todo)
        self._load_users(todo)
        contacts: dict[bool, set[str]] = {True: set(), False: set()}  # is a message -> matched Contacts
        for p in todo:
            if (m := self._match_for(p.assessment)) and m.object == "Contact":
                contacts[p.assessment.call is None].add(m.id)
        self._load_links(contacts[False], contacts[True])

        self._settle_owners(todo, batch)
        for plan in todo:
            plan_item = self._plan_message if plan.assessment.call is None else self._plan_call
            plan_item(plan, batch, existing.get(plan.key))
        return batch

    def _owner(self, a: Assessment | MessageAssessment, match: Match | None, users) -> Owner:
        """R-SF-OWNER for a call (its answering agent) or a message (its user)."""
        if a.call is None:
            return message_owner(a.message, match, users, self.org.user_id or "", self.sf.matching.fallback_owner_id)
        return owner(a.call, match, users, self.org.user_id or "", self.sf.matching.fallback_owner_id)

    def _settle_owners(self, todo: list[CallPlan], batch: Batch) -> None:
        """R-SF-OWNER moves of this batch, decided before any record is built.

        Every call of the batch then sees the record's owner after the batch: a run
        killed and started again builds exactly what one clean run builds, whatever
        the point where it was killed.
        """
        users = {k: v for k, v in self._users.items() if v is not None}
        integration = self.org.user_id or ""
        for plan in todo:
            a = plan.assessment
            match = self._match_for(a)
            if match is None and a.external is not None:
                match = self._plan_new_record(a, batch)
            if match is None or (a.call is not None and not self.owner_rules_for_calls):
                continue
            chosen = self._owner(a, match, users)
            move = reassignment(match, chosen, integration, self.sf.matching.reassign_integration_owned)
            if move is None:
                continue
            self._move_owner(a, batch, match, move)

    def _move_owner(self, a, batch: Batch, match: Match, move: tuple[str, str]) -> None:
        record_id, owner_id = move
        if record_id.startswith(NEW):
            # Created this run: created owned by the answering user (the same end state as
            # create-then-move, one request fewer).
            batch.new_records[record_id].fields.setdefault("OwnerId", owner_id)
        elif record_id not in batch.reassignments:
            batch.reassignments[record_id] = Change(
                a.key, TARGET, match.object if match.object != "PersonAccount" else "Account", Action.UPDATE,
                fields={"OwnerId": owner_id}, diff={"OwnerId": (match.owner_id, owner_id)}, record_id=record_id,
                note="R-SF-OWNER: the record was owned by the integration user; moved to the answering user",
                message_id=a.message_id,
            )
        # Later items of the same record see its new owner (R-SF-OWNER rule 2).
        self._set_owner(a, batch, match, owner_id)

    def _match_for(self, a: Assessment) -> Match | None:
        return self._matches.get(a.external.e164) if a.external else None

    def _match_or_new(self, a: Assessment, batch: Batch) -> tuple[Match | None, str]:
        """The record a call is logged on (a new one planned when its number matches none), and why."""
        match = self._match_for(a)
        note = self._match_note(a, match)
        if match is None and a.external is not None:
            match = self._plan_new_record(a, batch)
        return match, note

    def _plan_call(self, plan: CallPlan, batch: Batch, current: Mapping[str, Any] | None) -> None:
        a = plan.assessment
        call = a.call
        match, note = self._match_or_new(a, batch)
        plan.match = match
        what_id = None
        if match is not None and match.object == "Contact" and not match.created:
            what_id = self._links.get(match.id)
            if what_id is None and self.sf.matching.create_case:
                what_id = self._plan_case(a, match, batch)
        ctx = TaskContext(
            match=match,
            what_id=what_id,
            users_by_email={k: v for k, v in self._users.items() if v is not None},
            integration_user_id=self.org.user_id or "",
            task_fields=self.task_fields,
            field_lengths=self.task_lengths,
        )
        draft = build_task(call, a, ctx, self.settings)
        for warning in draft.warnings:
            self._warn_once(warning)
        if draft.reassign:
            self._move_owner(a, batch, match, draft.reassign)
        # A value the call no longer has (comments or a transfer removed in Aircall) is cleared. An owner
        # taken from the record (R-SF-OWNER 2-3) is the CRM's state when the call was logged; only the
        # call's own agent (rule 1) is a change of the call to carry over.
        self._plan_task_write(
            plan, match, draft, current, call.id, note, clearable=self._clearable_task_fields(),
            own_agent=lambda: owner(call, match, ctx.users_by_email, ctx.integration_user_id,
                                    self.sf.matching.fallback_owner_id).step == 1)

    def _plan_task_write(self, plan: CallPlan, match: Match | None, draft, current: Mapping[str, Any] | None,
                         key: int, note: str, *, clearable: Iterable[str], own_agent: Callable[[], bool],
                         message_id: str | None = None) -> None:
        """The Task write of a call or a message: a create, an update of what differs, or nothing."""
        fields = dict(draft.fields)
        plan.depends_on = [v for v in fields.values() if isinstance(v, str) and v.startswith(NEW)]
        if match is not None and not match.id.startswith(NEW):
            plan.extra_records[match.object] = match.id
        if current is None:
            action, send, changes = diff(fields, None)
            record_id = None
        else:
            compare = {k: v for k, v in fields.items() if k not in CREATE_ONLY_FIELDS}
            for name in clearable:
                compare.setdefault(name, None)
            if not own_agent():
                compare.pop("OwnerId", None)
            action, send, changes = diff(compare, current, create_only=CREATE_ONLY_FIELDS)
            record_id = current["Id"]
        if action is Action.NOOP:
            plan.outcome = Outcome(key, TARGET, "unchanged", records={"Task": record_id, **plan.extra_records},
                                   fingerprint=plan.fingerprint, message_id=message_id)
            return
        plan.task = Change(key, TARGET, "Task", action, fields=send, diff=changes, record_id=record_id,
                           note=note, warnings=list(draft.warnings), message_id=message_id)

    def _plan_message(self, plan: CallPlan, batch: Batch, current: Mapping[str, Any] | None) -> None:
        """R-MSG-4: a message's Task, in modes task and voice, matched, linked and owned as a call's."""
        a = plan.assessment
        match, note = self._match_or_new(a, batch)
        plan.match = match
        what_id = None
        if match is not None and match.object == "Contact" and not match.created:
            what_id = self._links.get(match.id)
            if what_id is None and self.sf.matching.create_case and self.sf.matching.link_to == "case":
                what_id = self._plan_case(a, match, batch)
        users = {k: v for k, v in self._users.items() if v is not None}
        ctx = TaskContext(match=match, what_id=what_id, users_by_email=users,
                          integration_user_id=self.org.user_id or "", task_fields=self.task_fields)
        draft = build_message_task(a, ctx, self.settings)
        for warning in draft.warnings:
            self._warn_once(warning)
        if draft.reassign:
            self._move_owner(a, batch, match, draft.reassign)
        # A body removed is cleared; the record's owner when it was logged is not the message's change.
        clearable = {"Description"} if self.task_fields is None or "Description" in self.task_fields else set()
        self._plan_task_write(plan, match, draft, current, a.key, note, clearable=clearable,
                              own_agent=lambda: self._owner(a, match, users).step == 1, message_id=a.message_id)

    def _set_owner(self, a: Assessment, batch: Batch, match: Match, owner_id: str) -> None:
        moved = replace(match, owner_id=owner_id)
        if match.id.startswith(NEW):
            batch.new_matches[match.id] = moved
        else:
            for e164, known in self._matches.items():
                if known is not None and known.id == match.id:
                    self._matches[e164] = moved

    def _match_note(self, a: Assessment, match: Match | None) -> str:
        if a.external is None:
            return "no external number: logged without WhoId/WhatId (R-CALL-4)"
        if match is None:
            verb = {"lead": "a new Lead", "contact": "a new Contact", "account": "a new Account"}.get(
                self.sf.matching.unknown_number)
            return f"{a.external.e164} matches no record: " + (f"logged on {verb}" if verb else "logged unlinked")
        return f"{a.external.e164} matches {match.object} {match.id} ({match.name or 'no name'})"

    def _plan_new_record(self, a: Assessment, batch: Batch) -> Match | None:
        """R-SF-MATCH-4/5: one new record per number, shared by every call of that number."""
        number = a.external
        contact = a.call.contact if a.call is not None else a.message.contact
        spec = matching.new_record(number, contact, self.sf.matching.unknown_number,
                                   self.sf.matching.new_lead_company)
        if spec is None:
            return None
        placeholder = f"{NEW}{spec.sobject}:{number.e164}"
        if placeholder in batch.new_matches:
            return batch.new_matches[placeholder]
        if placeholder in self._planned:
            # Planned by an earlier batch of this dry run: the preview shows one record, not two.
            batch.new_matches[placeholder] = self._planned[placeholder]
            return self._planned[placeholder]
        if placeholder not in batch.new_records:
            batch.new_records[placeholder] = Change(
                a.key, TARGET, spec.sobject, Action.CREATE, fields=spec.fields, record_id=None,
                message_id=a.message_id,
                note=f"R-SF-MATCH-4: {number.e164} matches no record (salesforce.matching.unknown_number = "
                     f"\"{self.sf.matching.unknown_number}\")",
            )
        name = spec.fields.get("Name") or " ".join(
            p for p in (spec.fields.get("FirstName"), spec.fields.get("LastName")) if p)
        match = Match(spec.sobject, placeholder, name or None, self.org.user_id, created=True)
        batch.new_matches[placeholder] = match
        self._planned[placeholder] = match
        return match

    def _plan_case(self, a: Assessment, match: Match, batch: Batch) -> str:
        placeholder = f"{NEW}Case:{match.id}"
        if placeholder not in batch.new_records and placeholder not in self._planned:
            task_subject = (message_subject(a, match, self.sf.messages.subjects) if a.call is None
                            else subject(a.call, a, match, self.sf.task.subjects))
            fields = {"Origin": "Phone", "ContactId": match.id, "Subject": task_subject}
            if match.account_id:
                fields["AccountId"] = match.account_id
            batch.new_records[placeholder] = Change(
                a.key, TARGET, "Case", Action.CREATE, fields=fields, message_id=a.message_id,
                note="R-SF-MATCH-6: the Contact has no open Case (salesforce.matching.create_case = true)",
            )
        return placeholder

    # ------------------------------------------------------------ lookups (batched, cached per run)

    def _resolve(self, numbers: list[ExternalNumber], also: Sequence[str] = ()) -> list[list[dict]]:
        """Match the numbers not matched yet (R-SF-MATCH); returns the rows of the ``also`` queries, sent with
        the exact-number queries (Composite, 5 queries a request)."""
        wanted = [n for n in numbers if n.e164 not in self._matches]
        extra = self.contact_fields or None
        records = [r for rows in self.org.searches(matching.sosl_queries(wanted, self.person_accounts, extra))
                   for r in rows] if wanted else []
        # Records this tool created carry the E.164 value: found exactly even
        # before the search index has them (§5), so a number never gets two.
        created_type = {"lead": "Lead", "contact": "Contact", "account": "Account"}.get(
            self.sf.matching.unknown_number)
        exact = matching.exact_queries(wanted, created_type, self.person_accounts, extra) if (
            wanted and created_type) else []
        results = self.org.queries([*exact, *also]) if exact or also else []
        if not wanted:
            return results
        for rows in results[:len(exact)]:
            for row in rows:
                row.setdefault("attributes", {"type": created_type})
                records.append(row)
        index = matching.index_by_number(records, wanted)
        for number in wanted:
            best = matching.choose(index.get(number.e164, []), number)
            self._matches[number.e164] = matching.to_match(best) if best else None
            if best and self.save_contacts:
                self._rows[str(best["Id"])] = {k: v for k, v in best.items() if k != "attributes"}
        return results[len(exact):]

    def _load_account_names(self, todo: Iterable[CallPlan]) -> None:
        """RULES §9: the Account names of matched Contacts (their company in Aircall): one query per chunk."""
        wanted = sorted({m.account_id for p in todo if (m := self._match_for(p.assessment)) is not None
                         and m.object == "Contact" and m.account_id and m.account_id not in self._account_names})
        if not wanted:
            return
        for account_id in wanted:
            self._account_names[account_id] = None
        soqls = [f"SELECT Id, Name FROM Account WHERE Id IN {soql_in(wanted[i:i + 300])}"
                 for i in range(0, len(wanted), 300)]
        for rows in self.org.queries(soqls):
            for row in rows:
                self._account_names[str(row.get("Id"))] = row.get("Name")
        # Ids come back in 18 characters whatever was asked: an AccountId read in 15 finds its name too.
        for row_id, name in list(self._account_names.items()):
            if len(row_id) == 18:
                self._account_names.setdefault(row_id[:15], name)

    def contact_sources(self, batch: Batch, outcomes: Iterable[Outcome] | None = None) -> list:
        """RULES §9: the records the batch's items were logged against, with what R-CONTACT-1 saves of them.

        ``outcomes``: only the items logged (created, updated or unchanged; not failed or skipped). None: all
        planned (a dry run, ``explain``). A record this batch created is marked ``created``.
        """
        from aircall_sync.contacts import Source
        from aircall_sync.targets.salesforce_match import region_of

        logged = None if outcomes is None else {
            o.call_id for o in outcomes if o.outcome in ("created", "updated", "unchanged")}
        out = []
        for plan in batch.calls:
            match, a = plan.match, plan.assessment
            if match is None or a.external is None or (logged is not None and plan.key not in logged):
                continue
            if match.id.startswith(NEW):
                change = batch.new_records.get(match.id)
                if change is None:
                    continue
                record_id = change.record_id
                if record_id is None and logged is not None:
                    continue  # its create failed
                row = dict(change.fields)
            else:
                record_id = match.id
                row = self._rows.get(match.id, {})
            contact = a.call.contact if a.call is not None else a.message.contact
            out.append(Source(
                key=plan.key, message_id=plan.message_id, object=match.object, record_id=record_id, row=row,
                account_name=self._account_names.get(match.account_id) if match.account_id else None,
                created=match.created, region=region_of(a.external), number=a.external.e164,
                call_contact_id=contact.id if contact is not None else None))
        return out

    def _load_users(self, plans: Iterable[CallPlan]) -> None:
        spellings: dict[str, set[str]] = {}
        for plan in plans:
            a = plan.assessment
            agent = a.message.user if a.call is None else rules.answered_by(a.call)
            if agent and agent.email:
                spellings.setdefault(agent.email.lower(), set()).add(agent.email)
        wanted = sorted(e for e in spellings if e not in self._users)
        if not wanted:
            return
        # SOQL compares strings case-insensitively; sending Aircall's spelling too costs nothing.
        values = sorted({v for e in wanted for v in spellings[e] | {e}})
        rows = self.org.query(
            f"SELECT Id, Email, IsActive, CreatedDate FROM User WHERE Email IN {soql_in(values)}")
        for email in wanted:
            self._users[email] = None
        for row in rows:
            email = str(row.get("Email") or "").lower()
            created = _parse_sf_datetime(row.get("CreatedDate"))
            user = SfUser(id=row["Id"], email=email, active=bool(row.get("IsActive")), created_at=created)
            current = self._users.get(email)
            # Two users with one email: prefer the active one.
            if current is None or (user.active and not current.active):
                self._users[email] = user

    def _load_links(self, contact_ids: set[str], message_contacts: set[str] = frozenset()) -> None:
        """R-SF-MATCH-6: the most recently modified open Case / Opportunity of each Contact (of calls and
        messages: one query for both)."""
        wanted = sorted(c for c in set(contact_ids) | set(message_contacts) if c not in self._links)
        link_to = self.sf.matching.link_to
        if not wanted or link_to == "none":
            return
        for cid in wanted:
            self._links[cid] = None
        if link_to == "case":
            soql = (f"SELECT Id, ContactId, LastModifiedDate FROM Case WHERE IsClosed = false AND ContactId IN "
                    f"{soql_in(wanted)} ORDER BY LastModifiedDate DESC")
            key, value = "ContactId", "Id"
        else:
            soql = (f"SELECT OpportunityId, ContactId, Opportunity.LastModifiedDate FROM OpportunityContactRole "
                    f"WHERE ContactId IN {soql_in(wanted)} AND Opportunity.IsClosed = false "
                    f"ORDER BY Opportunity.LastModifiedDate DESC")
            key, value = "ContactId", "OpportunityId"
        for row in self.org.query(soql):
            cid = row.get(key)
            if cid in self._links and self._links[cid] is None:
                self._links[cid] = row.get(value)

    def _existing_reads(self, todo: list[CallPlan]) -> tuple[list[str], Callable[[list[list[dict]]], dict[int, dict]]]:
        """The records already written for these calls and messages, by key (DESIGN §6): the queries, and
        what reads their rows (``plan`` sends them with its other reads)."""
        call_ids = [p.key for p in todo if p.assessment.call is not None]
        messages = {p.assessment.message.id: p.key for p in todo if p.assessment.call is None}
        return self._task_reads(call_ids, messages)

    def _task_reads(self, call_ids: list[int], messages: Mapping[str, int] | None = None
                    ) -> tuple[list[str], Callable[[list[list[dict]]], dict[int, dict]]]:
        """Tasks already carrying these calls' ids, or ``message:{id}`` (CallObject): the reconciliation of
        DESIGN §6, in one query for the calls and the messages of a chunk. ``messages``: id -> key."""
        messages = messages or {}
        values = [str(i) for i in call_ids] + [KEY_PREFIX + m for m in messages]
        if not values:
            return [], lambda _results: {}
        fields = sorted(self._task_read_fields())
        soql = f"SELECT {', '.join(fields)} FROM Task WHERE CallObject IN {soql_in(values)} ORDER BY CreatedDate ASC"
        return [soql], lambda results: self._read_tasks(results[0], messages)

    def _read_tasks(self, rows: list[dict], messages: Mapping[str, int]) -> dict[int, dict]:
        found: dict[int, dict] = {}
        for row in rows:
            key_text = str(row.get("CallObject") or "")
            if key_text.startswith(KEY_PREFIX):
                call_id = messages.get(key_text[len(KEY_PREFIX):])
                if call_id is None:
                    continue
            else:
                try:
                    call_id = int(key_text)
                except ValueError:
                    continue
            if call_id in found:
                self._warn_once(f"{key_text if call_id < 0 else f'call {call_id}'} has more than one Task in Salesforce "
                                f"({found[call_id]['Id']}, {row['Id']}); the oldest is kept up to date")
                continue
            found[call_id] = row
        return found

    def _clearable_task_fields(self) -> set[str]:
        """Task fields whose value comes from the call alone, so an empty value means "clear it"."""
        names = {"Description"} | set(self.sf.task.fields.enabled().values())
        if self.task_fields is not None:
            lower = {n.lower(): n for n in self.task_fields}
            names = {lower[n.lower()] for n in names if n.lower() in lower}
        return names - self.checkboxes

    def _task_read_fields(self) -> set[str]:
        names = {"Id", "CallObject", "CreatedDate", "Subject", "Status", "ActivityDate", "CallType",
                 "CallDurationInSeconds", "CallDisposition", "Description", "WhoId", "WhatId", "OwnerId", "Type"}
        # The AI fields are read (to compare) but never cleared (_clearable_task_fields): an insight not
        # known this time is not an insight gone.
        names |= set(self.sf.task.fields.enabled(ai=self.settings.aircall.ai.enabled).values())
        if self.sf.task.record_type_id:
            names.add("RecordTypeId")
        if self.task_fields is not None:
            lower = {n.lower(): n for n in self.task_fields}
            names = {lower[n.lower()] for n in names if n.lower() in lower}
        return names

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            log.warning(message)

    # ------------------------------------------------------------ apply

    def apply(self, batch: Batch) -> list[Outcome]:
        return self.submit(batch)()

    def submit(self, batch: Batch) -> Callable[[], list[Outcome]]:
        """Write the batch; the Task results are collected by the function returned.

        The records calls point at (new Leads, Cases, owner moves) are written
        here, before anything else. A Bulk job of Tasks is sent and closed, and
        Salesforce processes it on its own (§4): the runner plans the next batch
        meanwhile, then calls the function returned, which waits for the job and
        returns the batch's outcomes.
        """
        created, failed = self._create_new_records(batch)
        self._reassign(batch)

        outcomes: list[Outcome] = []
        creates: list[CallPlan] = []
        updates: list[CallPlan] = []
        for plan in batch.calls:
            blocked = self._point_at_created(plan, created, failed)
            if blocked is not None:
                outcomes.append(blocked)
                continue
            (creates if plan.task.action is Action.CREATE else updates).append(plan)

        sent = []
        for plans, method in ((creates, "insert"), (updates, "update")):
            if not plans:
                continue
            if method == "insert":
                rows = [{"attributes": {"type": "Task"}, **p.task.fields} for p in plans]
            else:
                rows = [{"attributes": {"type": "Task"}, "id": p.task.record_id, **p.task.fields} for p in plans]
            sent.append((plans, method, self._send_tasks(method, rows)))

        def collect() -> list[Outcome]:
            for plans, method, results_of in sent:
                for plan, result in zip(plans, results_of(), strict=True):
                    call_id = plan.key
                    if result.success:
                        task_id = result.id or plan.task.record_id
                        plan.task.record_id = task_id
                        outcomes.append(Outcome(call_id, TARGET, "created" if method == "insert" else "updated",
                                                records={"Task": task_id, **plan.extra_records},
                                                warnings=list(plan.task.warnings), fingerprint=plan.fingerprint,
                                                message_id=plan.message_id))
                    else:
                        outcomes.append(Outcome(call_id, TARGET, "failed", error=_error(result, "Task not written"),
                                                records=dict(plan.extra_records), fingerprint=plan.fingerprint,
                                                message_id=plan.message_id))
            order = {p.key: i for i, p in enumerate(batch.calls)}
            outcomes.sort(key=lambda o: order[o.call_id])
            return outcomes

        return collect

    def _reassign(self, batch: Batch) -> None:
        """R-SF-OWNER: integration-owned records move to the answering user (or the message's user)."""
        if not batch.reassignments:
            return
        records = [{"attributes": {"type": c.object}, "id": rid, **c.fields} for rid, c in batch.reassignments.items()]
        for change, result in zip(batch.reassignments.values(), self.org.update(records), strict=True):
            if not result.success:
                self._warn_once(f"could not move {change.object} {change.record_id} to its answering user: "
                                f"{result.error.code}: {result.error.message}")

    @staticmethod
    def _point_at_created(plan: CallPlan, created: dict[str, str], failed: dict[str, dict]) -> Outcome | None:
        """Replace a call's placeholders by the ids just created; its outcome when it has nothing to write
        or a record it points at could not be created."""
        if plan.task is None:
            return plan.outcome
        broken = [failed[p] for p in plan.depends_on if p in failed]
        if broken:
            return Outcome(plan.key, TARGET, "failed", error=broken[0], fingerprint=plan.fingerprint,
                           message_id=plan.message_id)
        for change in plan.writes or [plan.task]:
            for name, value in list(change.fields.items()):
                if isinstance(value, str) and value in created:
                    change.fields[name] = created[value]
        for placeholder in plan.depends_on:
            if placeholder in created:
                plan.extra_records[placeholder.split(":")[1]] = created[placeholder]
        return None

    def _create_new_records(self, batch: Batch) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
        """Create the records calls will point at (placeholder -> id), and say which failed."""
        created: dict[str, str] = {}
        failed: dict[str, dict[str, str]] = {}
        if batch.new_records:
            # Leads/Contacts/Accounts before the Cases that may name them.
            order = sorted(batch.new_records.items(), key=lambda kv: kv[1].object == "Case")
            records = [{"attributes": {"type": c.object}, **c.fields} for _, c in order]
            for (placeholder, change), result in zip(order, self._create_new(order, records), strict=True):
                if result.success:
                    created[placeholder] = result.id
                    change.record_id = result.id
                    self._remember_created(placeholder, change, result.id)
                else:
                    self._planned.pop(placeholder, None)  # a later batch tries again
                    failed[placeholder] = _error(result, f"{change.object} for the call could not be created")
        return created, failed

    def _remember_created(self, placeholder: str, change: Change, record_id: str) -> None:
        """R-SF-MATCH-5: the rest of the run reuses what this batch created (never a second Lead or Case)."""
        _, sobject, key = placeholder.split(":", 2)
        self._planned.pop(placeholder, None)
        if sobject == "Case":
            self._links[key] = record_id
            return
        fields = change.fields
        name = fields.get("Name") or " ".join(p for p in (fields.get("FirstName"), fields.get("LastName")) if p)
        self._matches[key] = Match(sobject, record_id, name or None, fields.get("OwnerId") or self.org.user_id)
        if self.save_contacts:
            # Later chunks find it as an existing record: the same fields, so the same contact fingerprint
            # (RULES §9: not saved while it stays as created, unless aircall.contacts.save_created).
            self._rows[record_id] = {**fields, "Id": record_id}

    def _create_new(self, order: list[tuple[str, Change]], records: list[dict]) -> list[SaveResult]:
        """Create the new records; those whose answer was lost are found again before any re-send.

        Leads, Contacts and Accounts by their E.164 phone. A Case by its Contact:
        one was planned because the Contact had no open Case, so an open Case
        there now is the one the lost answer created (or one R-SF-MATCH-6 links
        to anyway).
        """
        def find(indexes: list[int]) -> dict[int, str]:
            by_type: dict[str, dict[str, int]] = {}
            cases: dict[str, int] = {}
            for i in indexes:
                placeholder, change = order[i]
                if change.object == "Case":
                    cases[change.fields.get("ContactId")] = i
                else:
                    by_type.setdefault(change.object, {})[change.fields.get("Phone")] = i
            found: dict[int, str] = {}
            for sobject, phones in by_type.items():
                soql = f"SELECT Id, Phone FROM {sobject} WHERE Phone IN {soql_in([p for p in phones if p])}"
                for row in self.org.query(soql):
                    if row.get("Phone") in phones:
                        found.setdefault(phones[row["Phone"]], row["Id"])
            contacts = [c for c in cases if c and not c.startswith(NEW)]
            if contacts:
                soql = (f"SELECT Id, ContactId FROM Case WHERE IsClosed = false AND ContactId IN {soql_in(contacts)} "
                        "ORDER BY CreatedDate DESC")
                for row in self.org.query(soql):
                    if row.get("ContactId") in cases:
                        found.setdefault(cases[row["ContactId"]], row["Id"])
            return found

        return self._create_reconciled(records, find)

    def _finder(self, object_name: str, key: str, rows: list[dict]):
        """Look up, by their key field, rows whose create answer was lost (DESIGN §6)."""
        def find(indexes: list[int]) -> dict[int, str]:
            wanted = {str(rows[i].get(key)): i for i in indexes}
            soql = f"SELECT Id, {key} FROM {object_name} WHERE {key} IN {soql_in(list(wanted))}"
            return {wanted[str(row[key])]: row["Id"] for row in self.org.query(soql) if str(row.get(key)) in wanted}

        return find

    def _create_reconciled(self, rows: list[dict], find) -> list[SaveResult]:
        """Create; rows whose outcome is unknown (a lost answer, DESIGN §6) are looked up before any re-send."""
        results = self.org.create(rows)
        uncertain = [i for i, r in enumerate(results) if r.error is not None and r.error.code == UNCERTAIN]
        if uncertain:
            found = find(uncertain)
            for i, record_id in found.items():
                results[i] = SaveResult(record_id, True, (), True)
            again = [i for i in uncertain if i not in found]
            if again:
                for i, result in zip(again, self.org.create([rows[i] for i in again]), strict=True):
                    results[i] = result
        return results

    def _send_tasks(self, method: str, rows: list[dict]) -> Callable[[], list[SaveResult]]:
        """Send the Tasks; the function returned gives their results (a Bulk job is waited for there)."""
        if len(rows) < self.sf.bulk_threshold:
            results = self._write_tasks_small(method, rows)
            return lambda: results
        if method == "insert":
            job = self.org.bulk_submit("Task", "insert", [_flat(r) for r in rows], key="CallObject")
        else:
            job = self.org.bulk_submit("Task", "update", [{"Id": r["id"], **_flat(r)} for r in rows], key="Id")

        def results_of() -> list[SaveResult]:
            results = self.org.bulk_results(job)
            # Bulk does not retry row locks itself (DESIGN §5): those rows go again, through Collections.
            locked = [i for i, r in enumerate(results) if r.error is not None and r.error.code in
                      RETRIABLE_RECORD_ERRORS | {"UNPROCESSED"}]
            if locked:
                again = self._write_tasks_small(method, [rows[i] for i in locked])
                for i, result in zip(locked, again, strict=True):
                    results[i] = result
            return results

        return results_of

    def _write_tasks_small(self, method: str, rows: list[dict]) -> list[SaveResult]:
        if method != "insert":
            return self.org.update(rows)

        return self._create_reconciled(rows, self._finder("Task", "CallObject", rows))

    # ------------------------------------------------------------ state

    def record(self, outcomes: Iterable[Outcome], run_id: int | None) -> None:
        """Write the outcomes to state; the caller holds the transaction."""
        written = []
        for o in outcomes:
            # A message's record is its Task, in both modes (R-MSG-4); a call's is the mode's primary record.
            primary = "Task" if o.call_id < 0 else self.primary
            if o.outcome in ("created", "updated", "unchanged") and o.fingerprint and o.records.get(primary):
                written.append((o.call_id, TARGET, {k: v for k, v in o.records.items() if v}, o.fingerprint))
            elif o.outcome == "failed" and o.error:
                self.state.record_failure(o.call_id, TARGET, primary, o.error["code"], o.error["message"], run_id)
        if written:
            self.state.mark_written(written)
            self.state.clear_failures([w[0] for w in written], TARGET)


def _lengths(described: Mapping[str, Any]) -> dict[str, int]:
    """Lower-cased field name -> length, for the text fields of a describe (what R-AI-4 cuts to)."""
    return {str(f["name"]).lower(): int(f["length"]) for f in described.get("fields", [])
            if isinstance(f.get("length"), int) and f.get("length") > 0
            and f.get("type") in ("string", "textarea", "email", "url", "phone", "picklist", "multipicklist")}


def _flat(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("attributes", "id")}


def _error(result: SaveResult, fallback: str) -> dict[str, str]:
    err = result.error
    return {"code": err.code if err else "UNKNOWN", "message": err.message if err else fallback}


def _parse_sf_datetime(value: Any) -> datetime:
    text = str(value or "").replace("Z", "+00:00").replace("+0000", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return datetime.now(UTC)  # unknown age: treated as new, so never trusted by R-SF-OWNER step 1
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# ---------------------------------------------------------------- check

#: Task fields every logged call writes (RULES §4); CRM Call Center provides the Call* ones.
CORE_TASK_FIELDS = ("Subject", "Status", "ActivityDate", "WhoId", "WhatId", "OwnerId", "Description", "TaskSubtype",
                    "CallType", "CallDurationInSeconds", "CallObject", "CallDisposition")


def check_org(settings, org: SalesforceOrg) -> tuple[list[str], list[str]]:
    """``check`` for Salesforce: what the org offers, and every problem with the setting that fixes it."""
    sf = settings.salesforce
    infos: list[str] = []
    problems: list[str] = []
    described = org.describe_many(["Task", "Account", "Lead", "Contact", "Case"])
    task = described.get("Task")
    if not task:
        return infos, ["Task: the API user cannot see the Task object; give its profile read/create on Tasks"]
    fields = {f["name"].lower(): f for f in task.get("fields", [])}
    if not task.get("createable", True):
        problems.append("Task: the API user cannot create Tasks; give its profile the Create permission on Tasks")
    if "type" not in fields:
        problems.append("Task.Type is not visible to the API user (R-SF-TASK-6): Setup > Object Manager > Task > "
                        "Fields > Type > Set Field-Level Security, and make it visible to that user's profile")
    for name in CORE_TASK_FIELDS:
        if name.lower() not in fields:
            problems.append(f"Task.{name} is missing or hidden: the call fields come with Salesforce CRM Call Center; "
                            "check the API user's field-level security")
    for key, api_name in sf.task.fields.enabled(ai=settings.aircall.ai.enabled).items():
        if api_name.lower() not in fields:
            problems.append(f"Task.{api_name} (salesforce.task.fields.{key}) does not exist or is hidden: create it, "
                            f"or set salesforce.task.fields.{key} = \"\" to stop writing it"
                            + (" (R-AI-4)" if key.startswith("ai_") else ""))
    if sf.task.record_type_id and "recordtypeid" not in fields:
        problems.append("Task has no record types but salesforce.task.record_type_id is set; set it to \"\"")
    account = described.get("Account") or {}
    person = any(f.get("name") == "IsPersonAccount" for f in account.get("fields", []))
    infos.append("Person Accounts: " + ("enabled, searched too (R-SF-MATCH-1)" if person else "not enabled"))
    created = {"lead": "Lead", "contact": "Contact", "account": "Account"}.get(sf.matching.unknown_number)
    if created:
        described_created = described.get(created)
        if not described_created or not described_created.get("createable", True):
            problems.append(f"{created}: the API user cannot create {created}s, but salesforce.matching.unknown_number "
                            f"= \"{sf.matching.unknown_number}\"; grant Create on {created}, or set it to \"nothing\"")
    if sf.matching.create_case:
        case = described.get("Case")
        if not case or not case.get("createable", True):
            problems.append("Case: the API user cannot create Cases, but salesforce.matching.create_case = true; "
                            "grant Create on Case, or set it to false")
    infos.append(f"Task fields: {len(fields)} visible; API version {sf.api_version}; signed in as user {org.user_id}")
    return infos, problems


def check_contact_fields(settings, org: SalesforceOrg) -> list[str]:
    """``check`` with ``aircall.contacts.save_matched`` (RULES §9): which record fields R-CONTACT-1 saves the API
    user cannot see (those parts of the Aircall contact are left alone; not a problem)."""
    if not settings.aircall.contacts.save_matched:
        return []
    described = org.describe_many(["Contact", "Lead", "Account"])
    account = described.get("Account") or {}
    person = any(f.get("name") == "IsPersonAccount" for f in account.get("fields", []))
    wanted = {"Contact": matching.CONTACT_FIELDS["Contact"], "Lead": matching.CONTACT_FIELDS["Lead"],
              "Account": matching.CONTACT_FIELDS["Account"] + (matching.CONTACT_FIELDS["PersonAccount"] if person
                                                              else ())}
    hidden = []
    for obj, fields in wanted.items():
        names = {f["name"].lower() for f in (described.get(obj) or {}).get("fields", [])}
        hidden += [f"{obj}.{f}" for f in fields if f.lower() not in names]
    if not hidden:
        return ["Aircall contacts (RULES §9): every record field saved is visible to the API user"]
    return [f"Aircall contacts (RULES §9): {', '.join(hidden)} hidden from the API user: saved contacts go without "
            "them (grant read access in its profile to save them)"]


# ---------------------------------------------------------------- mode "voice" (RULES §5)


class SalesforceVoiceTarget(SalesforceTaskTarget):
    """A VoiceCall plus an Aircall Voice record per call (R-SFV-1), matched and created as in §3 (R-SFV-5).

    Both records are found again by their keys before anything is created:
    ``VendorCallKey`` on VoiceCall and the call-id field on the custom object.
    They are written in two Collections batches in order (the Aircall Voice
    records, then the VoiceCalls that point at them), so a batch of 200 calls
    costs two requests, not one per call.
    """

    primary = "VoiceCall"
    owner_rules_for_calls = False

    def start(self) -> None:
        from aircall_sync.targets.salesforce_voice import VoiceContext

        voice = self.sf.voice
        # Messages are Tasks in voice mode too (R-MSG-4): the Task describe says which fields exist.
        described = self.org.describe_many(["VoiceCall", voice.aircall_voice_object, "Account", "Task",
                                            *(("Contact", "Lead") if self.save_contacts else ())])
        task = described.get("Task")
        if task:
            self.task_fields = frozenset(f["name"] for f in task.get("fields", []))
        voice_call = described.get("VoiceCall")
        if not voice_call or not voice_call.get("createable"):
            raise OrgMismatchError(
                f"VoiceCall is not createable by the API user at API version {self.sf.api_version} (R-SFV-7): give "
                "it the Contact Center Agent or Admin permission set, and use salesforce.api_version 63.0 or later")
        custom = described.get(voice.aircall_voice_object)
        if not custom:
            raise OrgMismatchError(
                f"the object {voice.aircall_voice_object} does not exist or is hidden (R-SFV-1): install the Aircall "
                "package, or set salesforce.voice.aircall_voice_object to the org's Aircall Voice object")
        self.voice_call_fields = frozenset(f["name"] for f in voice_call.get("fields", []))
        self.voice_object_fields = frozenset(f["name"] for f in custom.get("fields", []))
        self.voice_object_lengths = _lengths(custom)
        self.checkboxes = frozenset(f["name"] for f in custom.get("fields", []) if f.get("type") == "boolean")
        account = described.get("Account") or {}
        self.person_accounts = any(f.get("name") == "IsPersonAccount" for f in account.get("fields", []))
        self._learn_contact_fields(described)
        self._ctx = lambda match: VoiceContext(match, self.voice_call_fields, self.voice_object_fields,
                                               self.voice_object_lengths)

    def _load_users(self, plans) -> None:
        # R-SF-OWNER is a Task rule: voice records keep the integration user; messages are Tasks (R-MSG-4).
        super()._load_users([p for p in plans if p.assessment.call is None])

    def _load_links(self, contact_ids, message_contacts=frozenset()) -> None:
        # A VoiceCall's RelatedRecordId is the matched record itself (R-SFV-2); a message's Task links as in
        # mode task (R-MSG-4).
        if message_contacts:
            super()._load_links(set(), message_contacts)

    def _key_field(self) -> str:
        names = {n.lower(): n for n in self.voice_object_fields}
        return names.get(self.sf.voice.fields.call_id.lower(), self.sf.voice.fields.call_id)

    def _existing_reads(self, todo: list[CallPlan]) -> tuple[list[str], Callable[[list[list[dict]]], dict[int, dict]]]:
        """Both voice records of each call; the Task of each message (R-MSG-4): the queries, and what reads
        their rows."""
        call_soqls, read_calls = self._voice_reads([p.key for p in todo if p.assessment.call is not None])
        messages = {p.assessment.message.id: p.key for p in todo if p.assessment.call is None}
        task_soqls, read_tasks = SalesforceTaskTarget._task_reads(self, [], messages)

        def read(results: list[list[dict]]) -> dict[int, dict]:
            found = read_calls(results[:len(call_soqls)])
            found.update(read_tasks(results[len(call_soqls):]))
            return found

        return call_soqls + task_soqls, read

    def _voice_reads(self, call_ids: list[int]) -> tuple[list[str], Callable[[list[list[dict]]], dict[int, dict]]]:
        """Both records of each call, found by their keys (DESIGN §6)."""
        if not call_ids:
            return [], lambda _results: {}
        keys = soql_in([str(i) for i in call_ids])
        obj = self.sf.voice.aircall_voice_object
        key = self._key_field()
        vc_fields = sorted({"Id", "VendorCallKey", "RelatedRecordId", "CreatedDate"}
                           | ({self._link_field()} - {None}))
        enabled = self.sf.voice.fields.enabled(ai=self.settings.aircall.ai.enabled)
        av_fields = sorted({"Id", key, "CreatedDate"} | {f for f in enabled.values()
                                                          if f.lower() in {n.lower() for n in self.voice_object_fields}})
        av_fields = [self._org_name(f, self.voice_object_fields) for f in av_fields]
        soqls = [
            f"SELECT {', '.join(vc_fields)} FROM VoiceCall WHERE VendorCallKey IN {keys} ORDER BY CreatedDate ASC",
            f"SELECT {', '.join(dict.fromkeys(av_fields))} FROM {obj} WHERE {key} IN {keys} ORDER BY CreatedDate ASC",
        ]

        def read(results: list[list[dict]]) -> dict[int, dict]:
            vc_rows, av_rows = results
            found: dict[int, dict] = {}
            for kind, rows, field_name in (("VoiceCall", vc_rows, "VendorCallKey"), ("Voice", av_rows, key)):
                for row in rows:
                    try:
                        call_id = int(str(row.get(field_name)))
                    except ValueError:
                        continue
                    found.setdefault(call_id, {}).setdefault(kind, row)
            return found

        return soqls, read

    @staticmethod
    def _org_name(name: str, names: frozenset[str]) -> str:
        return {n.lower(): n for n in names}.get(name.lower(), name)

    def _link_field(self) -> str | None:
        names = {n.lower(): n for n in self.voice_call_fields}
        return names.get(self.sf.voice.voice_call_link_field.lower())

    def _plan_call(self, plan: CallPlan, batch: Batch, current: Mapping[str, Any] | None) -> None:
        from aircall_sync.targets.salesforce_voice import build_voice, voice_call_update_fields

        a = plan.assessment
        call = a.call
        match, note = self._match_or_new(a, batch)
        plan.match = match
        draft = build_voice(call, a, self._ctx(match), self.settings)
        for warning in draft.warnings:
            self._warn_once(warning)
        current = current or {}
        writes: list[Change] = []
        obj = self.sf.voice.aircall_voice_object
        if draft.aircall_voice is not None:
            existing = current.get("Voice")
            desired = dict(draft.aircall_voice)
            if existing is not None:
                # Tags removed, unassigned, re-matched to another record type: empty means clear it. Not the AI
                # fields (enabled() leaves them out): an insight not known this time is not an insight gone.
                for api_name in self.sf.voice.fields.enabled().values():
                    name = self._org_name(api_name, self.voice_object_fields)
                    if name not in self.checkboxes:
                        desired.setdefault(name, None)
                desired = {k: v for k, v in desired.items()
                           if k.lower() in {n.lower() for n in self.voice_object_fields}}
            action, send, changes = diff(desired, existing)
            if action is not Action.NOOP:
                writes.append(Change(call.id, TARGET, obj, action, fields=send, diff=changes,
                                     record_id=existing["Id"] if existing else None, note=note))
            elif existing:
                plan.extra_records[obj] = existing["Id"]
        existing_vc = current.get("VoiceCall")
        if existing_vc is None:
            action, send, changes = diff(draft.voice_call, None)
        else:
            # R-SFV-8: most VoiceCall fields are set on create only.
            action, send, changes = diff(voice_call_update_fields(draft.voice_call), existing_vc)
        if action is not Action.NOOP:
            writes.append(Change(call.id, TARGET, "VoiceCall", action, fields=send, diff=changes,
                                 record_id=existing_vc["Id"] if existing_vc else None, note=note,
                                 warnings=list(draft.warnings)))
        elif existing_vc:
            plan.extra_records["VoiceCall"] = existing_vc["Id"]
        plan.depends_on = [v for w in writes for v in w.fields.values() if isinstance(v, str) and v.startswith(NEW)]
        if match is not None and not match.id.startswith(NEW):
            plan.extra_records[match.object] = match.id
        if not writes:
            plan.outcome = Outcome(call.id, TARGET, "unchanged", records=dict(plan.extra_records),
                                   fingerprint=plan.fingerprint)
            return
        plan.writes = writes
        plan.task = writes[-1]

    def submit(self, batch: Batch) -> Callable[[], list[Outcome]]:
        """Write the batch now (Collections answer at once); the function returned gives the outcomes."""
        outcomes = self._write(batch)
        return lambda: outcomes

    def _write(self, batch: Batch) -> list[Outcome]:
        created, failed = self._create_new_records(batch)
        self._reassign(batch)
        outcomes: list[Outcome] = []
        ready: list[CallPlan] = []
        messages: list[CallPlan] = []
        for plan in batch.calls:
            blocked = self._point_at_created(plan, created, failed)
            if blocked is not None:
                outcomes.append(blocked)
                continue
            (messages if plan.assessment.call is None else ready).append(plan)
        outcomes.extend(self._write_message_tasks(messages))
        obj = self.sf.voice.aircall_voice_object
        link = self._link_field()
        errors: dict[int, dict[str, str]] = {}
        # Pass 1: the Aircall Voice records; pass 2: the VoiceCalls, linked to them (R-SFV-1).
        for object_name in (obj, "VoiceCall"):
            for method in (Action.CREATE, Action.UPDATE):
                todo = [(p, c) for p in ready if p.key not in errors
                        for c in p.writes if c.object == object_name and c.action is method]
                if not todo:
                    continue
                if object_name == "VoiceCall" and method is Action.CREATE and link:
                    for p, c in todo:
                        if p.extra_records.get(obj):
                            c.fields.setdefault(link, p.extra_records[obj])
                rows = [{"attributes": {"type": object_name}, **({"id": c.record_id} if c.record_id else {}),
                         **c.fields} for _, c in todo]
                if method is Action.CREATE:
                    results = self._create_reconciled(
                        rows, self._finder(object_name, "VendorCallKey" if object_name == "VoiceCall"
                                           else self._key_field(), rows))
                else:
                    results = self.org.update(rows)
                for (p, c), result in zip(todo, results, strict=True):
                    if result.success:
                        c.record_id = result.id or c.record_id
                        p.extra_records[object_name] = c.record_id
                    else:
                        errors[p.key] = _error(result, f"{object_name} not written")
        for plan in ready:
            call_id = plan.key
            if call_id in errors:
                outcomes.append(Outcome(call_id, TARGET, "failed", error=errors[call_id],
                                        records=dict(plan.extra_records), fingerprint=plan.fingerprint))
                continue
            verb = "created" if any(c.action is Action.CREATE for c in plan.writes) else "updated"
            outcomes.append(Outcome(call_id, TARGET, verb, records=dict(plan.extra_records),
                                    warnings=list(plan.task.warnings), fingerprint=plan.fingerprint))
        order = {p.key: i for i, p in enumerate(batch.calls)}
        outcomes.sort(key=lambda o: order[o.call_id])
        return outcomes

    def _write_message_tasks(self, plans: list[CallPlan]) -> list[Outcome]:
        """The Tasks of a batch's messages (R-MSG-4, R-SFV-1): one Collections request per 200 and method."""
        outcomes: list[Outcome] = []
        for method in (Action.CREATE, Action.UPDATE):
            todo = [p for p in plans if p.task.action is method]
            if not todo:
                continue
            if method is Action.CREATE:
                rows = [{"attributes": {"type": "Task"}, **p.task.fields} for p in todo]
                results = self._create_reconciled(rows, self._finder("Task", "CallObject", rows))
            else:
                results = self.org.update([{"attributes": {"type": "Task"}, "id": p.task.record_id, **p.task.fields}
                                           for p in todo])
            for plan, result in zip(todo, results, strict=True):
                if result.success:
                    plan.task.record_id = result.id or plan.task.record_id
                    outcomes.append(Outcome(plan.key, TARGET, "created" if method is Action.CREATE else "updated",
                                            records={"Task": plan.task.record_id, **plan.extra_records},
                                            warnings=list(plan.task.warnings), fingerprint=plan.fingerprint,
                                            message_id=plan.message_id))
                else:
                    outcomes.append(Outcome(plan.key, TARGET, "failed", error=_error(result, "Task not written"),
                                            records=dict(plan.extra_records), fingerprint=plan.fingerprint,
                                            message_id=plan.message_id))
        return outcomes


def check_voice(settings, org: SalesforceOrg) -> tuple[list[str], list[str]]:
    """``check`` in mode voice: R-SFV-7 (VoiceCall createable), the custom object and fields, R-SFV-6."""
    voice = settings.salesforce.voice
    infos: list[str] = []
    problems: list[str] = []
    messages = settings.salesforce.messages
    described = org.describe_many(["VoiceCall", voice.aircall_voice_object]
                                  + (["Task"] if messages.log != "none" else []))
    if messages.log != "none":
        # Messages are Tasks in mode voice too (R-MSG-4).
        task = described.get("Task")
        if not task or not task.get("createable", True):
            problems.append("Task: messages are logged as Tasks in mode voice too (R-MSG-4), but the API user "
                            "cannot create Tasks; grant Create on Task, or set salesforce.messages.log = \"none\"")
        elif messages.task_type and "type" not in {f["name"].lower() for f in task.get("fields", [])}:
            problems.append("Task.Type is not visible to the API user, but salesforce.messages.task_type is set: "
                            "make Task.Type visible to that user's profile, or set salesforce.messages.task_type "
                            "= \"\"")
    vc = described.get("VoiceCall")
    if not vc or not vc.get("createable"):
        problems.append(f"VoiceCall is not createable at API version {settings.salesforce.api_version} (R-SFV-7): "
                        "give the API user the Contact Center Agent or Admin permission set (Service Cloud Voice) "
                        "or Dialer Outbound (Sales Dialer), and keep salesforce.api_version at 63.0 or later")
    else:
        names = {f["name"].lower() for f in vc.get("fields", [])}
        if voice.voice_call_link_field.lower() not in names:
            problems.append(f"VoiceCall.{voice.voice_call_link_field} (salesforce.voice.voice_call_link_field) does "
                            "not exist: create the lookup to the Aircall Voice object, or name the org's lookup")
    custom = described.get(voice.aircall_voice_object)
    if not custom:
        problems.append(f"{voice.aircall_voice_object} (salesforce.voice.aircall_voice_object) does not exist or is "
                        "hidden: install the Aircall package or name the org's Aircall Voice object")
    else:
        names = {f["name"].lower() for f in custom.get("fields", [])}
        for key, api_name in voice.fields.enabled(ai=settings.aircall.ai.enabled).items():
            if api_name.lower() not in names:
                if key.startswith("ai_"):
                    # R-AI-4: our names, not confirmed against Aircall's package.
                    problems.append(f"{voice.aircall_voice_object}.{api_name} (salesforce.voice.fields.{key}) does "
                                    f"not exist or is hidden: the AI {key[3:].replace('_', ' ')} goes there (R-AI-4); "
                                    f"create it, set salesforce.voice.fields.{key} to the org's field, or "
                                    f"salesforce.voice.fields.{key} = \"\" to leave it out")
                    continue
                problems.append(f"{voice.aircall_voice_object}.{api_name} (salesforce.voice.fields.{key}) does not "
                                f"exist or is hidden: create it, or set salesforce.voice.fields.{key} = \"\"")
    infos.append("Omni-Channel presence mapping (R-SFV-6) is a live phone-app feature that a sync tool cannot do: "
                 "keep it in Aircall's own Service Cloud Voice integration")
    matching_settings = settings.salesforce.matching
    if matching_settings.link_to != "none" or matching_settings.create_case:
        infos.append("salesforce.matching.link_to and create_case apply to mode task only: a VoiceCall's "
                     "RelatedRecordId is the matched record itself (R-SFV-2)")
    infos.append(f"VoiceCall: {'createable' if vc and vc.get('createable') else 'NOT createable'}; "
                 f"signed in as user {org.user_id}")
    return infos, problems
