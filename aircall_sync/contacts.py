"""Saving matched Salesforce records in the Aircall phone (RULES §9, R-CONTACT-1…4): the run's part.

After a chunk of calls (or messages) is logged, each **existing** Salesforce record one of them was logged
against becomes (or updates) a shared Aircall contact. The Salesforce target hands over the records it matched,
with the fields it read in the lookups the run makes anyway (``Source``); this module decides what to do with
each and does it through the run's Aircall client, so the requests are paced with the call reads (Aircall's
limit is company-wide, DESIGN §5).

- R-CONTACT-3, once per record and run, and only when it changed: the record's fingerprint
  (``aircall.contacts.fingerprint``) is kept in the state with the contact it went to. The same fingerprint
  costs no request, in this run or the next.
- Never lost: what is to be saved is queued in the state in the same transaction as the chunk's outcomes
  (``enqueue``), then saved (``drain``). A run killed in between leaves it queued; the next run saves it
  before anything else.
- Never twice (Aircall has no upsert): the contact is the one the record was saved to before, else the call's
  own contact (``fetch_contact=true``), else one found by number (``GET /v1/contacts/search``); only then is
  one created. The create is marked in the state and committed before ``POST /v1/contacts``, which is sent
  once; a mark found later (the answer was lost, or the process was killed) makes the next attempt take the
  contact carrying the record's ``Salesforce {object} {Id}`` line, found by the search or among the contacts
  created last (a search may lag a create), before creating anything.
- R-CONTACT-2, only what differs: the contact is read (``GET``, or the search's answer) and compared
  (``aircall.contacts.plan_writes``).
- Never in the way of logging: a contact that cannot be saved is reported (report line, run summary,
  ``status``), never a reason to stop the run or to fail a call. A 403 (a key that may only read) stops contact
  saving for the run with one warning; records wait in the queue. Aircall unreachable: the same, for the run.

**decision** (R-CONTACT-2): when the state knows the Aircall contact a record was saved to, that one is updated
even if a later call carries another contact: one record, one contact, instead of writes going back and forth
between two contacts holding the same number.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aircall_sync.aircall.client import AircallApiError, ContactsForbiddenError
from aircall_sync.aircall.contacts import AircallContact, Desired, Writes, desired_from_record, fingerprint, plan_writes
from aircall_sync.errors import AircallSyncError, StateError
from aircall_sync.plan import Action, Change, Outcome

__all__ = ["CREATED_REASON", "NO_NUMBER_REASON", "ContactSaver", "ContactStats", "Source", "TARGET"]

log = logging.getLogger("aircall_sync.contacts")

TARGET = "aircall"
OBJECT = "contact"
CREATED_REASON = ("created by aircall-sync for an unknown number (R-SF-MATCH-4); aircall.contacts.save_created = "
                  "false")
#: Pages of the newest contacts looked through for a create whose answer was lost (100 contacts).
RECENT_PAGES = 2
NO_NUMBER_REASON = ("no Aircall contact has the number, and the record has no valid Phone to create one with "
                    "(R-CONTACT-1)")


@dataclass(frozen=True)
class Source:
    """A Salesforce record a logged call or message points at, with what the run read of it."""

    key: int  # the call id, or a message's key
    message_id: str | None
    object: str  # Contact | Lead | Account | PersonAccount
    record_id: str | None  # None: a record a dry run would create
    row: Mapping[str, Any]  # the record's fields (R-CONTACT-1)
    account_name: str | None = None  # a Contact's Account name
    created: bool = False  # created by aircall-sync for an unknown number (R-SF-MATCH-4)
    region: str | None = None  # the region national values are read in (the call's number's)
    number: str | None = None  # the call's external number, E.164: the first one searched
    call_contact_id: int | None = None  # the call's own Aircall contact


@dataclass
class ContactStats:
    """What a run did (or, dry run, would do) about Aircall contacts."""

    records: int = 0  # records met (once per run)
    created: int = 0
    updated: int = 0
    unchanged: int = 0  # saved before and unchanged since, or equal in Aircall already
    skipped: int = 0
    failed: int = 0
    requests: int = 0  # Aircall requests made (dry run: that a run would make, about)
    to_create: int = 0  # dry run
    to_update: int = 0  # dry run
    forbidden: bool = False  # 403: no contact saved for the rest of the run
    error: str | None = None  # a failure that stopped contact saving for the run

    def to_json(self, requests_per_minute: int, dry_run: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"records": self.records}
        if dry_run:
            out.update(create=self.to_create, update=self.to_update)
        else:
            out.update(created=self.created, updated=self.updated, failed=self.failed)
        out.update(unchanged=self.unchanged, skipped=self.skipped, requests=self.requests,
                   seconds=-(-self.requests * 60 // max(1, requests_per_minute)),
                   requests_per_minute=requests_per_minute)
        if self.forbidden:
            out["forbidden"] = True
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class _Decision:
    source: Source
    record_id: str
    desired: Desired
    hash: str
    known: Any  # ContactState | None
    verdict: str  # save | queued | unchanged | skip
    reason: str | None = None


class _Gone(Exception):
    """The Aircall contact was deleted while it was being updated."""


class ContactSaver:
    """One run's (or one live batch's) saving of matched records as Aircall contacts."""

    def __init__(self, settings, client, state, *, dry_run: bool = False):
        self.settings = settings
        self.save_created = settings.aircall.contacts.save_created
        self.client = client
        self.state = state
        self.dry_run = dry_run
        self.stats = ContactStats()
        self._seen: set[str] = set()  # R-CONTACT-3: once per record and run
        self._warned: set[str] = set()

    @property
    def stopped(self) -> bool:
        return bool(self.stats.error) or bool(getattr(self.client, "contacts_forbidden", False))

    # ------------------------------------------------------------ deciding (no request)

    def _decide(self, sources: Iterable[Source]) -> list[_Decision]:
        fresh: list[tuple[Source, str]] = []
        for source in sources:
            rid = source.record_id or f"new:{source.object}:{source.number}"
            if rid in self._seen:
                continue
            self._seen.add(rid)
            fresh.append((source, rid))
        known = self.state.get_contacts([rid for _, rid in fresh])
        out = []
        for source, rid in fresh:
            desired = desired_from_record(source.object, {**source.row, "Id": rid}, account_name=source.account_name,
                                          region=source.region)
            hash_ = fingerprint(desired)
            state = known.get(rid)
            decision = _Decision(source, rid, desired, hash_, state, "save")
            if source.created and not self.save_created:
                decision.verdict, decision.reason = "skip", CREATED_REASON
            elif state is not None and state.skip_hash == hash_ and (
                    state.skip_reason != CREATED_REASON or not self.save_created):
                # Created by aircall-sync and untouched since (a later run finds it as an existing record),
                # or nothing Aircall takes: not saved while it stays so.
                decision.verdict, decision.reason = "skip", state.skip_reason
            elif state is not None and state.saved_hash == hash_ and state.queued is None:
                decision.verdict = "unchanged"
            elif state is not None and state.queued_hash == hash_:
                decision.verdict = "queued"  # left by an earlier run: drained before this chunk's
            self.stats.records += 1
            out.append(decision)
        return out

    def _records(self, d: _Decision, contact_id: int | None = None) -> dict[str, str]:
        records = {d.source.object: d.record_id} if d.source.record_id else {}
        if contact_id is not None:
            records = {OBJECT: str(contact_id), **records}
        return records

    def preview(self, sources: Iterable[Source]) -> list[Change]:
        """The dry run and ``explain``: what a run would save, and about what it costs (no request)."""
        changes = []
        for d in self._decide(sources):
            s = d.source
            if d.verdict == "skip":
                self.stats.skipped += 1
                changes.append(Change(s.key, TARGET, OBJECT, Action.SKIP, reason=d.reason, message_id=s.message_id))
                continue
            known_id = d.known.contact_id if d.known is not None else None
            if d.verdict == "unchanged":
                self.stats.unchanged += 1
                changes.append(Change(s.key, TARGET, OBJECT, Action.NOOP, record_id=_str(known_id),
                                      note=f"R-CONTACT-3: {s.object} {d.record_id} unchanged since it was saved",
                                      message_id=s.message_id))
                continue
            what = f"{s.object} {d.record_id}" if s.record_id else f"the new {s.object}"
            target_id = known_id or s.call_contact_id
            if target_id:
                self.stats.to_update += 1
                self.stats.requests += 2  # a read, and (about) one write of what differs
                whose = "the contact it was saved to" if known_id else "the call's own Aircall contact"
                changes.append(Change(s.key, TARGET, OBJECT, Action.UPDATE, fields=d.desired.shown(),
                                      record_id=str(target_id), message_id=s.message_id,
                                      note=f"R-CONTACT-2: {what} into {whose}; only what differs is written"))
            elif not d.desired.phones:
                # Nothing Aircall takes to create one: saved only into a contact a run finds by the number.
                self.stats.skipped += 1
                self.stats.requests += len(_search_numbers(s, d.desired))
                changes.append(Change(s.key, TARGET, OBJECT, Action.SKIP, message_id=s.message_id,
                                      reason="the record has no valid Phone (R-CONTACT-1): saved only if Aircall "
                                             "already has a contact with the number (a run searches for it)"))
            else:
                self.stats.to_create += 1
                numbers = _search_numbers(s, d.desired)
                self.stats.requests += len(numbers) + 1
                changes.append(Change(
                    s.key, TARGET, OBJECT, Action.CREATE, fields=d.desired.shown(), message_id=s.message_id,
                    note=f"R-CONTACT-2: {what}; Aircall is searched by {', '.join(numbers) or 'number'} first, and "
                         "a contact found is updated instead"))
        return changes

    # ------------------------------------------------------------ a real run

    def enqueue(self, sources: Iterable[Source]) -> list[Outcome]:
        """Queue the records to save, in the caller's transaction (with the chunk's outcomes); no request.
        Returns the outcomes decided now (unchanged, skipped); the saved ones come from ``drain``."""
        outcomes: list[Outcome] = []
        queue, skips = [], []
        for d in self._decide(sources):
            s = d.source
            if d.verdict == "skip":
                self.stats.skipped += 1
                skips.append((d.record_id, s.object, d.hash, d.reason))
                outcomes.append(Outcome(s.key, TARGET, "skipped", records=self._records(d), reason=d.reason,
                                        message_id=s.message_id))
            elif d.verdict == "unchanged":
                self.stats.unchanged += 1
                outcomes.append(Outcome(s.key, TARGET, "unchanged", records=self._records(d, d.known.contact_id),
                                        message_id=s.message_id))
            elif d.verdict == "save":
                queue.append((d.record_id, s.object, d.hash, {
                    "desired": d.desired.to_json(), "key": s.key, "message_id": s.message_id, "number": s.number,
                    "call_contact_id": s.call_contact_id}))
        self.state.skip_contacts(skips)
        self.state.queue_contacts(queue)
        return outcomes

    def drain(self) -> list[Outcome]:
        """Save what is queued (this run's and what an earlier run left), in the order it was queued."""
        if self.dry_run or self.stopped:
            return []
        outcomes = []
        for row in self.state.queued_contacts():
            if self.stopped:
                break
            outcome = self._save(row)
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    def _save(self, row) -> Outcome | None:
        payload = row.queued
        desired = Desired.from_json(payload["desired"])
        hash_ = row.queued_hash
        key, message_id = int(payload.get("key") or 0), payload.get("message_id")
        records = {row.object: row.record_id}
        base = {"message_id": message_id}
        try:
            current, ours, lost_create = self._locate(row, payload, desired)
            if current is None:
                return self._create(row, desired, hash_, key, records, base)
            self.state.contact_found(row.record_id, current.id, ours)
            writes = plan_writes(desired, current, ours=ours)
            self._write(current.id, writes)
            self.state.contact_saved(row.record_id, current.id, ours, hash_)
            # A create whose answer was lost (an earlier attempt): it is that create's outcome.
            verb = "created" if lost_create else "updated" if writes else "unchanged"
            setattr(self.stats, verb, getattr(self.stats, verb) + 1)
            return Outcome(key, TARGET, verb, records={OBJECT: str(current.id), **records}, **base)
        except StateError:
            raise
        except ContactsForbiddenError as exc:
            self._forbid(exc)
            return Outcome(key, TARGET, "skipped", records=records, reason=_FORBIDDEN_REASON, **base)
        except _Gone:
            self.state.contact_found(row.record_id, None, False)
            return self._failed(row, key, records, base, "NOT_FOUND", "the Aircall contact was deleted while it "
                                "was being updated; the next run saves the record again", again=True)
        except AircallApiError as exc:
            # A refusal of this contact (400 …): final until the record changes or is logged again.
            return self._failed(row, key, records, base, str(exc.status), str(exc), again=False)
        except AircallSyncError as exc:
            # Aircall unreachable, 5xx, credentials: nothing more this run; it stays queued.
            self._stop(str(exc))
            return self._failed(row, key, records, base, "UNAVAILABLE", str(exc), again=True)

    def _create(self, row, desired: Desired, hash_: str, key: int, records, base) -> Outcome:
        if not desired.phones:
            self.state.skip_contacts([(row.record_id, row.object, hash_, NO_NUMBER_REASON)])
            self.stats.skipped += 1
            return Outcome(key, TARGET, "skipped", records=records, reason=NO_NUMBER_REASON, **base)
        self.state.contact_creating(row.record_id)  # committed before the POST (never twice)
        try:
            made = self._request(self.client.create_contact, desired.create_body())
        except (ContactsForbiddenError, StateError):
            raise
        except AircallApiError as exc:
            self.state.contact_failed(row.record_id, str(exc.status), str(exc), again=False, clear_creating=True)
            self.stats.failed += 1
            self._warn(f"Aircall contact of {row.object} {row.record_id} not created: {exc}")
            return Outcome(key, TARGET, "failed", records=records, error={"code": str(exc.status),
                                                                          "message": str(exc)}, **base)
        except AircallSyncError as exc:
            # The answer is lost: the contact may exist. Look for it now; else the mark stays, and the next
            # attempt looks again before creating.
            found = None
            try:
                found = self._recent_with_marker(desired.information)
            except AircallSyncError:
                pass
            if found is None:
                self._stop(str(exc))
                return self._failed(row, key, records, base, "UNCERTAIN",
                                    f"{exc}; the next run looks for the contact before creating it", again=True)
            made = {"id": found.id}
        self.state.contact_saved(row.record_id, int(made["id"]), True, hash_)
        self.stats.created += 1
        return Outcome(key, TARGET, "created", records={OBJECT: str(made["id"]), **records}, **base)

    def _failed(self, row, key, records, base, code: str, message: str, *, again: bool) -> Outcome:
        self.state.contact_failed(row.record_id, code, message, again=again)
        self.stats.failed += 1
        self._warn(f"Aircall contact of {row.object} {row.record_id} not saved: {message}")
        return Outcome(key, TARGET, "failed", records=records, error={"code": code, "message": message}, **base)

    # ------------------------------------------------------------ finding the contact (R-CONTACT-2)

    def _request(self, method, *args, **kwargs):
        self.stats.requests += 1
        return method(*args, **kwargs)

    def _get(self, contact_id: int) -> AircallContact | None:
        return AircallContact.parse(self._request(self.client.get_contact, contact_id))

    def _locate(self, row, payload: Mapping[str, Any],
                desired: Desired) -> tuple[AircallContact | None, bool, bool]:
        """The contact to update, whether aircall-sync created it, and whether it is the contact of a create
        whose answer was lost; (None, False, False): none, create one."""
        if row.contact_id:
            current = self._get(row.contact_id)
            if current is not None:
                return current, row.ours, False
            self.state.contact_found(row.record_id, None, False)  # deleted in Aircall: found again below
        call_contact = payload.get("call_contact_id")
        if isinstance(call_contact, int) and call_contact != row.contact_id:
            current = self._get(call_contact)
            if current is not None:
                return current, False, False
        line = desired.information
        found: list[AircallContact] = []
        for number in _search_numbers_of(payload.get("number"), desired):
            found = [c for c in (AircallContact.parse(x) for x in
                                 self._request(self.client.search_contacts, phone_number=number)) if c is not None]
            if found:
                break
        if row.creating_at is not None:
            # A create whose answer never came (a run killed, a timeout): the contact carrying the record's
            # line is that create's, if it landed; a search may lag a create, so the newest are listed too.
            mine = [c for c in found if c.has_marker(line)] or [c for c in [self._recent_with_marker(line)] if c]
            if mine:
                return mine[0], True, True
        if found:
            # One carrying the record's line first, then the contact changed last.
            return max(found, key=lambda c: (c.has_marker(line), c.updated_at, c.id)), False, False
        return None, False, False

    def _recent_with_marker(self, line: str, pages: int = RECENT_PAGES) -> AircallContact | None:
        """Among the contacts created last (``pages`` pages of 50), the one carrying ``line``."""
        for page in range(1, pages + 1):
            items, more = self._request(self.client.recent_contacts, page)
            for item in items:
                contact = AircallContact.parse(item)
                if contact is not None and contact.has_marker(line):
                    return contact
            if not more:
                break
        return None

    def _write(self, contact_id: int, writes: Writes) -> None:
        if writes.scalars and self._request(self.client.update_contact, contact_id, writes.scalars) is None:
            raise _Gone
        for kind, action, detail in writes.details:
            if action == "add":
                ok = self._request(self.client.add_contact_detail, contact_id, kind, detail.label, detail.value)
            elif action == "put":
                ok = self._request(self.client.update_contact_detail, contact_id, kind, detail.id, detail.label,
                                   detail.value)
            else:
                self._request(self.client.delete_contact_detail, contact_id, kind, detail.id)
                ok = True
            if not ok:
                raise _Gone

    # ------------------------------------------------------------ stopping

    def _forbid(self, exc: BaseException) -> None:
        self.stats.forbidden = True
        if not getattr(self.client, "contacts_forbidden", False):
            # On the client: in live mode one warning per process, not one per batch.
            self.client.contacts_forbidden = True
            log.warning("Aircall contacts: %s. This API key may not write contacts: none is saved in this run "
                        "(the records wait for a later one). Use a key that may, or set "
                        "aircall.contacts.save_matched = false", exc)

    def _stop(self, message: str) -> None:
        if not self.stats.error:
            self.stats.error = message
            log.warning("Aircall contacts: %s; no more contacts are saved in this run (they wait for the next)",
                        message)

    def _warn(self, message: str) -> None:
        if len(self._warned) < 20 and message not in self._warned:
            self._warned.add(message)
            log.warning(message)


_FORBIDDEN_REASON = ("Aircall answered 403 to a contact request: this API key may not write contacts "
                     "(aircall.contacts.save_matched)")


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _search_numbers_of(number: str | None, desired: Desired) -> list[str]:
    """The numbers a contact is searched by: the call's (what the phone shows), then the record's own."""
    return list(dict.fromkeys([n for n in [number, *(v for _, v in desired.phones)] if n]))


def _search_numbers(source: Source, desired: Desired) -> list[str]:
    return _search_numbers_of(source.number, desired)
