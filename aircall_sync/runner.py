"""Runs: backfill, sync and retry. Fetch calls, plan per target, apply, record.

The flow of DESIGN §2, window by window and chunk by chunk:

    Aircall window ─▶ chunk of calls ─▶ rules.assess ─▶ target.plan ─┬─▶ render (dry run)
                                                                      └─▶ target.submit ─▶ collect ─▶ state + report

Fetching runs one chunk ahead in a thread (Prefetch), and a chunk is planned
while Salesforce still processes the Bulk job of the chunk before it.

Every chunk's outcomes, and the checkpoint of its window when it is the last
chunk, are committed to the state in one transaction after the CRM writes: a
run killed in between leaves CRM records the state does not know, and the next
run finds them by their key before creating anything (DESIGN §6).
"""

from __future__ import annotations

import itertools
import json
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from aircall_sync import render, rules
from aircall_sync.aircall.client import AircallClient, BadCall
from aircall_sync.aircall.models import Call, CallParseError
from aircall_sync.errors import RecordsFailedError, StateError, TargetsStoppedError, UsageError, stop_message
from aircall_sync.plan import Change
from aircall_sync.locks import WriteLock
from aircall_sync.state import State, acquire_lock

log = logging.getLogger("aircall_sync")

CHUNK = 2000  # calls planned together: bounds memory, batches lookups and writes
# A run's first chunk is smaller: its writes start while later pages are still being read,
# instead of after 40 pages (and at most one chunk more of lookups per run).
FIRST_CHUNK = 1000
#: Set by the program's entry point (cli.main): the run's long-lived objects are frozen out of
#: the cyclic collector's view once connected. In-process callers (tests) leave it off.
FREEZE_AT_START = False
WINDOW = timedelta(days=31)  # backfill checkpoint granularity: a resume re-reads at most this much


@dataclass
class RunSummary:
    command: str
    dry_run: bool
    calls: int = 0
    messages: int = 0  # live mode: messages planned (RULES §7)
    unsettled: int = 0
    unreadable: list[BadCall] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)  # (target, outcome) -> n
    changes: Counter = field(default_factory=Counter)  # (target, object, action) -> n
    failures: list[dict] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)
    watermark: datetime | None = None
    #: Targets that met a run-stopping error, with its message; the others went on (issue 11).
    stopped: dict[str, str] = field(default_factory=dict)
    resumed_windows: int = 0
    seconds: float = 0.0
    #: AI insights (RULES §8), when aircall.ai.enabled: eligible calls, requests, what was found.
    ai: dict[str, Any] | None = None
    #: Matched records saved as Aircall contacts (RULES §9), when aircall.contacts.save_matched.
    contacts: dict[str, Any] | None = None

    def counts(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            **({"messages": self.messages} if self.messages else {}),
            "unsettled": self.unsettled,
            "unreadable": len(self.unreadable),
            "outcomes": {f"{t}.{o}": n for (t, o), n in sorted(self.outcomes.items())},
            "requests": self.requests,
            "retries": self.retries,
            **({"stopped": self.stopped} if self.stopped else {}),
            **({"ai": self.ai} if self.ai is not None else {}),
            **({"contacts": self.contacts} if self.contacts is not None else {}),
        }


class ChangeSink:
    """Where a dry run's changes go: a streamed JSON document or rendered text."""

    def __init__(self, out: IO[str], fmt: str, render_text: Callable[[Change], None] | None):
        self.out = out
        self.fmt = fmt
        self.render_text = render_text
        self.first = True
        if fmt == "json":
            out.write('{"changes": [')

    def add(self, change: Change) -> None:
        if self.fmt == "json":
            self.out.write(("\n  " if self.first else ",\n  ") + json.dumps(change.to_json(), ensure_ascii=False,
                                                                          default=str))
            self.first = False
        elif self.render_text is not None:
            self.render_text(change)

    def close(self, summary: dict) -> None:
        if self.fmt == "json":
            self.out.write("\n], \"summary\": " + json.dumps(summary, ensure_ascii=False, default=str) + "}\n")


class Runner:
    """One run of one command against the enabled targets."""

    def __init__(
        self,
        settings,
        command: str,
        *,
        targets: list,
        state: State,
        client: AircallClient,
        dry_run: bool = False,
        sink: ChangeSink | None = None,
        report: IO[str] | None = None,
        progress: Callable[[str, int], None] | None = None,
        now: datetime | None = None,
        limit: int | None = None,
        stopped: dict[str, BaseException] | None = None,
        names: list[str] | None = None,
        write_lock: WriteLock | None = None,
    ):
        self.settings = settings
        self.command = command
        self.targets = targets
        #: Every target the command writes to, stopped at sign-in or not: a backfill's range key.
        self.names = names or [t.name for t in targets]
        self.state = state
        self.client = client
        self.dry_run = dry_run
        self.sink = sink
        self.report = report
        self.progress = progress or (lambda _msg, _n: None)
        self.now = now or datetime.now(UTC)
        self.limit = limit
        self.summary = RunSummary(command, dry_run)
        #: Targets ended for this run by an error of their own (at sign-in, or mid-run): see _stop.
        self.stopped: dict[str, BaseException] = {}
        for name, exc in (stopped or {}).items():
            self._stop(name, exc)
        self.run_id: int | None = None
        self._started = time.monotonic()
        self._sent: _Sent | None = None  # the chunk whose writes are in flight
        self._chunks = 0  # chunks planned so far in this run
        #: Held from a chunk's plan to its record, and across pipelined chunks until another writer
        #: waits (DESIGN §10: serve, sync and backfill side by side on one org). None: no other writer.
        self.write_lock = write_lock
        #: AI insights (RULES §8): asked for in the thread that reads calls ahead, attached to each call.
        self.ai = None
        if settings.aircall.ai.enabled:
            from aircall_sync.ai import InsightSource

            self.ai = InsightSource(settings, client, state, dry_run=dry_run, now=self.now,
                                    targets=lambda: [t.name for t in self.active_targets()])
        #: Matched Salesforce records saved in the Aircall phone (RULES §9), after each chunk is logged.
        self.contacts = None
        if settings.aircall.contacts.save_matched and "salesforce" in self.names:
            from aircall_sync.contacts import ContactSaver

            self.contacts = ContactSaver(settings, client, state, dry_run=dry_run)
        self._leftovers_saved = False

    # ------------------------------------------------------------ entry points

    def backfill(self, start: datetime, end: datetime) -> RunSummary:
        key = f"{'+'.join(self.names)}|{_iso(start)}|{_iso(end)}"
        windows = _windows(start, end)
        resumed = None if self.dry_run else self.state.unfinished_backfill(key)
        if resumed is not None:
            pending = [tuple(w) for w in resumed.pending]
            self.summary.resumed_windows = resumed.done_windows
            if resumed.done_windows:
                log.info("resuming the interrupted backfill of this range: %d of %d windows already done",
                         resumed.done_windows, resumed.total_windows)
        else:
            pending = windows
            if not self.dry_run:
                self.state.start_backfill(key, windows)
        for window in pending:
            lo, hi = (datetime.fromtimestamp(t, UTC) for t in window)
            self._process(self._prefetch(self.client.iter_calls(lo, hi, on_bad=self.summary.unreadable.append)),
                          checkpoint=None if self.dry_run else (key, window))
            if self._limit_reached() or not self.active_targets():
                break
        else:
            if not self.dry_run and not self.stopped:
                self.state.finish_backfill(key)
        return self._finish()

    def sync(self) -> RunSummary:
        s = self.settings.sync
        watermark = self.state.get_watermark()
        end = self.now - s.lag
        if watermark is None:
            start = self.now - s.revisit
            log.info("no watermark yet: this first sync starts at now - sync.revisit (%s)", _iso(start))
        else:
            start = min(watermark - s.revisit, end)
        if start < end:
            self._process(self._prefetch(self.client.iter_calls(start, end, on_bad=self.summary.unreadable.append)))
        if self.stopped:
            # The stopped target's calls were not all logged: the next sync reads them again
            # (the other targets' are unchanged by then and cost no write).
            log.info("the sync watermark stays where it was: %s stopped", " and ".join(self.stopped))
        elif not self.dry_run:
            self.state.set_watermark(end)
            self.summary.watermark = end
        return self._finish()

    def retry(self) -> RunSummary:
        failures = self.state.failures()
        wanted = {f.call_id for f in failures if f.target in {t.name for t in self.targets}}
        if not wanted:
            log.info("no failed records to retry")
            return self._finish()
        messages = self._stored_messages(sorted(k for k in wanted if k < 0))
        wanted = {k for k in wanted if k > 0}

        def calls() -> Iterator[Call]:
            for call_id in sorted(wanted):
                payload = self.client.get_call(call_id)
                try:
                    yield Call.parse(payload)
                except CallParseError as exc:
                    self.summary.unreadable.append(BadCall(call_id, str(exc)))

        self._process(itertools.chain(messages, (self._assess(call) for call in calls())), only_changed=False)
        return self._finish()

    def _stored_messages(self, keys: list[int]) -> list:
        """Failed messages, rebuilt from the events the inbox keeps (Aircall lists no messages: RULES §7)."""
        if not keys:
            return []
        from aircall_sync.aircall.messages import MessageParseError
        from aircall_sync.live.inbox import Inbox
        from aircall_sync.live.messages import NumberNames, message_from_events
        from aircall_sync.message_rules import assess_message

        inbox = Inbox(self.state)
        names = NumberNames(self.client)
        out = []
        for key, message_id in sorted(self.state.message_ids(keys).items()):
            events = inbox.events_of("message", message_id)
            if not events:
                log.warning("message %s: its events are no longer kept (live.keep_events); it cannot be retried",
                            message_id)
                continue
            try:
                out.append(assess_message(message_from_events(events), self.settings, number_names=names))
            except MessageParseError as exc:
                log.warning("message %s cannot be read: %s", message_id, exc)
        return out

    def process(self, assessments: Iterable) -> RunSummary:
        """Live mode's worker: calls and messages already in hand (webhook snapshots; ``rules.Assessment`` and
        ``message_rules.MessageAssessment``), planned and written together as a run's chunks."""
        self._process(assessments)
        return self._finish()

    def replay(self, start: datetime, end: datetime, kind: str = "all") -> RunSummary:
        """``replay``: the calls and messages of the stored webhook events in ``[start, end)``, planned again."""
        from aircall_sync.live.inbox import Inbox
        from aircall_sync.live.replay import replay_items

        items = replay_items(self.settings, Inbox(self.state), self.client, start, end, kind, self.now,
                             self.summary.unreadable, dry_run=self.dry_run)
        self._process(items)
        if not self.summary.calls and not self.summary.unsettled:
            log.info("no stored webhook events in this range (live mode keeps them live.keep_events)")
        return self._finish()

    def reconcile(self, start: datetime, end: datetime) -> RunSummary:
        """Live mode's reconciler: the sync path over ``(start, end]``; the sync watermark is left alone."""
        self._process(self._prefetch(self.client.iter_calls(start, end, on_bad=self.summary.unreadable.append)))
        return self._finish()

    # ------------------------------------------------------------ one target's stop

    def active_targets(self) -> list:
        return [t for t in self.targets if t.name not in self.stopped]

    def _stop(self, name: str, exc: BaseException) -> None:
        """A run-stopping error of one target ends that target for this run; the others go on.

        Salesforce's daily API limit must not stop Front logging, nor a revoked Front token
        stop Salesforce (issue 11). The stopped target's calls from here on are not
        written, and nothing is checkpointed for them (no backfill window completed, no
        watermark moved), so the next run picks them up.
        """
        if name in self.stopped:
            return
        self.stopped[name] = exc
        self.summary.stopped[name] = stop_message(exc)
        log.debug("%s stopped", name, exc_info=exc)
        others = [t.name for t in self.active_targets()]
        log.warning("%s stopped: %s%s", name, stop_message(exc),
                    f"; {' and '.join(others)} go(es) on" if others else "")

    def _each(self, targets: list, step: Callable[[Any], Any]) -> list[tuple[Any, Any]]:
        """``step(target)`` for each target; a target whose step raises is stopped, not the run.

        A broken state file stops everything (it is every target's), and so does an
        interruption (``KeyboardInterrupt`` is not an ``Exception``).
        """
        out = []
        for target in targets:
            try:
                out.append((target, step(target)))
            except StateError:
                raise
            except Exception as exc:  # noqa: BLE001 - reported through _stop, with the traceback under -v
                self._stop(target.name, exc)
        return out

    # ------------------------------------------------------------ the loop

    def _limit_reached(self) -> bool:
        return self.limit is not None and self.summary.calls >= self.limit

    def _assess(self, call: Call) -> rules.Assessment:
        return rules.assess(call, self.settings, self.now)

    def _prefetch(self, calls: Iterable[Call]) -> Prefetch:
        # One chunk ahead: the next chunk is read and assessed while this one is planned
        # and written, so a chunk never waits for Aircall once the first has arrived.
        assessed = map(self._assess, calls)
        return Prefetch(assessed if self.ai is None else self._with_insights(assessed), depth=CHUNK)

    def _with_insights(self, assessments: Iterable[rules.Assessment]) -> Iterator[rules.Assessment]:
        """RULES §8 in the reading thread: each page's eligible calls get their missing insights (paced with
        the pages themselves), so the chunk being written never waits for them. Past ``--limit`` settled
        calls nothing more is asked (the reader runs ahead of what the run will log)."""
        left = self.limit  # settled calls the run will still log (None: all)
        source = iter(assessments)
        while page := list(itertools.islice(source, Prefetch.BATCH)):
            cut = len(page)
            if left is not None:
                settled = [i for i, a in enumerate(page) if a.settled]
                cut = settled[left] if left < len(settled) else len(page)
                left = max(0, left - len(settled))
            yield from self.ai.attach(page[:cut])
            if cut < len(page):
                yield from self.ai.attach(page[cut:], ask=False)

    def _process(self, assessments: Iterable[rules.Assessment],
                 checkpoint: tuple[str, tuple[int, int]] | None = None, only_changed: bool = True) -> None:
        chunk: list[rules.Assessment] = []
        try:
            for assessment in assessments:
                if self._limit_reached() or not self.active_targets():
                    break
                if not assessment.settled:
                    self.summary.unsettled += 1
                    continue
                if assessment.call is None:
                    self.summary.messages += 1  # a message (RULES §7), planned beside the calls
                else:
                    self.summary.calls += 1
                chunk.append(assessment)
                if len(chunk) % Prefetch.BATCH == 0:
                    self._give_way()
                if len(chunk) >= (CHUNK if self._chunks else FIRST_CHUNK):
                    self._chunk(chunk, None, only_changed)
                    chunk = []
            self._chunk(chunk, checkpoint, only_changed)
        except BaseException:
            if self._sent is not None:
                # What was sent is still collected and recorded before the error stops the run (its contacts
                # stay queued for the next run: no Aircall request on the way out).
                try:
                    self._collect(self._sent, save_contacts=False)
                except Exception:  # noqa: BLE001 - the first error is the one to report
                    log.debug("could not collect the writes already sent", exc_info=True)
            raise
        if self._sent is not None:
            self._collect(self._sent)

    def _chunk(self, chunk: list[rules.Assessment], checkpoint, only_changed: bool) -> None:
        """Plan this chunk, collect and record the one sent before, then send this one.

        Planning runs while Salesforce processes the previous chunk's Bulk job
        (DESIGN §5). It needs nothing from that job: the records its calls point
        at (Leads, Cases, owner moves) were written when it was sent. The
        previous chunk is recorded before this one writes anything, so the state
        follows the order of the writes.
        """
        self._chunks += 1
        if not self.dry_run:
            self._take_turn()
        if self.ai is not None:
            chunk[:] = self.ai.attach_known(chunk)  # live events, retries: the insights the state holds
        batches = self._each(self.active_targets(), lambda target: target.plan(chunk, only_changed=only_changed))
        if self.dry_run:
            for target, batch in batches:
                changes = batch.changes()
                if self.contacts is not None and hasattr(target, "contact_sources"):
                    changes += self.contacts.preview(target.contact_sources(batch))
                for change in changes:
                    self.summary.changes[(change.target, change.object, change.action.value)] += 1
                    if self.sink:
                        self.sink.add(change)
            self.progress("planned", len(chunk))
            return
        if self._sent is not None:
            self._collect(self._sent)
        self._save_leftover_contacts()
        sent = self._sent = _Sent(len(chunk), checkpoint)
        plans = dict(batches)
        sent.batches = {target.name: batch for target, batch in batches}

        def send(target) -> Callable[[], list]:
            batch = plans[target]
            submit = getattr(target, "submit", None)
            if submit is not None:
                collect = submit(batch)
            else:
                try:
                    outcomes = target.apply(batch)
                except Exception as exc:
                    # Stopped mid-batch: what it wrote before the error is still recorded (below, in
                    # _collect), so that the next run does not post it again.
                    partial = getattr(exc, "outcomes", None)
                    if partial:
                        sent.targets.append((target, lambda partial=partial: partial))
                    raise
                collect = lambda outcomes=outcomes: outcomes  # noqa: E731
            for change in batch.changes():
                self.summary.changes[(change.target, change.object, change.action.value)] += 1
            return collect

        sent.targets.extend(self._each([t for t, _ in batches], send))
        sent.complete = True

    def _take_turn(self) -> None:
        """Hold the write lock for the chunk about to be planned.

        Kept from chunk to chunk while no other writer waits, so the next chunk is
        planned while the last one's Bulk job runs. When one waits, nothing of ours
        is left in flight (the last chunk is collected and recorded) before it goes:
        it plans against a CRM and a state that hold everything we wrote. What the
        targets remember of the CRM is forgotten when the lock comes back, since the
        other writer may have created a Lead, a Case or a conversation meanwhile.
        """
        lock = self.write_lock
        if lock is None:
            return
        if lock.held:
            if not lock.wanted():
                return
            if self._sent is not None:
                self._collect(self._sent, save_contacts=False)  # the writer waiting is not kept waiting
            lock.pass_if_wanted()
        else:
            lock.acquire()
            if lock.waited:
                log.debug("waited %.1f s for another writer", lock.waited)
        for target in self.targets:
            forget = getattr(target, "forget", None)
            if forget is not None:
                forget()

    def _give_way(self) -> None:
        """While the next chunk is read from Aircall (up to a minute at Aircall's pace), a writer
        that waits gets the lock: ours in flight is collected and recorded first."""
        lock = self.write_lock
        if lock is None or not lock.held or not lock.wanted():
            return
        if self._sent is not None:
            self._collect(self._sent, save_contacts=False)
        lock.release()  # taken again, fairly, by the next chunk's _take_turn

    def _collect(self, sent: _Sent, save_contacts: bool = True) -> None:
        """Wait for a sent chunk's results; record them, and its window's checkpoint, in one transaction.

        Once only, even when it fails (a collect function is not run twice). The
        checkpoint is recorded only for a chunk every target sent and collected,
        and only while no target has stopped: otherwise a resumed run would skip
        calls that were never written.

        With ``aircall.contacts.save_matched`` (RULES §9), the records the chunk's calls were logged against
        are queued in the same transaction, then saved in Aircall (``save_contacts``; otherwise, and when
        this run is stopped before, the queue is saved by the next chunk or the next run).
        """
        if self._sent is sent:
            self._sent = None
        targets, sent.targets = sent.targets, []
        results = []
        error: BaseException | None = None
        for target, collect in targets:
            try:
                results.extend(self._each([target], lambda _target, collect=collect: collect()))
            except BaseException as exc:  # the others are still recorded, then this is raised
                error = error or exc
        contacts: list = []
        with self.state.transaction():
            for target, outcomes in results:
                target.record(outcomes, self.run_id)
                batch = sent.batches.get(target.name)
                if self.contacts is not None and batch is not None and hasattr(target, "contact_sources"):
                    contacts += self.contacts.enqueue(target.contact_sources(batch, outcomes))
            if sent.checkpoint is not None and sent.complete and error is None and not self.stopped:
                self.state.complete_window(*sent.checkpoint)
        for target, outcomes in results:
            for outcome in outcomes:
                self.summary.outcomes[(outcome.target, outcome.outcome)] += 1
                if outcome.outcome == "failed":
                    self.summary.failures.append(outcome.to_json())
                if self.report is not None:
                    self.report.write(json.dumps(outcome.to_json(), ensure_ascii=False) + "\n")
        if self.contacts is not None and save_contacts and error is None:
            contacts += self.contacts.drain()
        self._record_contacts(contacts)
        if self.report is not None:
            self.report.flush()
        if error is not None:
            raise error
        self.progress("logged", sent.calls)

    def _save_leftover_contacts(self) -> None:
        """What an earlier run queued and did not save (killed, Aircall away): saved first, once per run, under
        the write lock (RULES §9), even by a run that has no call to log (a resumed backfill with nothing left)."""
        if self.contacts is None or self.dry_run or self._leftovers_saved:
            return
        self._leftovers_saved = True
        if self.write_lock is not None and not self.write_lock.held:
            self.write_lock.acquire()
        self._record_contacts(self.contacts.drain())

    def _record_contacts(self, outcomes: list) -> None:
        """RULES §9 outcomes (target ``aircall``) in the summary and the report. A contact not saved is
        reported, never a failed record of the run (exit 3 is for the calls' own records)."""
        for outcome in outcomes:
            self.summary.outcomes[(outcome.target, outcome.outcome)] += 1
            if self.report is not None:
                self.report.write(json.dumps(outcome.to_json(), ensure_ascii=False) + "\n")

    def _finish(self) -> RunSummary:
        self._save_leftover_contacts()
        if self.write_lock is not None:
            self.write_lock.release()
        self.summary.requests = {"aircall": self.client.stats.requests}
        self.summary.retries = {"aircall": self.client.stats.retries}
        for target in self.targets:
            stats = target.org.stats
            self.summary.requests[target.name] = stats.requests
            self.summary.retries[target.name] = stats.retries + getattr(stats, "reauthentications", 0)
        self.summary.seconds = time.monotonic() - self._started
        if self.ai is not None:
            self.summary.ai = self.ai.stats.to_json(self.settings.aircall.requests_per_minute, self.dry_run)
        if self.contacts is not None:
            self.summary.contacts = self.contacts.stats.to_json(self.settings.aircall.requests_per_minute,
                                                                self.dry_run)
        if self.sink is not None:
            self.sink.close(self.plan_summary())
        return self.summary

    def plan_summary(self) -> dict:
        per: dict[str, dict[str, dict[str, int]]] = {}
        for (target, obj, action), n in self.summary.changes.items():
            per.setdefault(target, {}).setdefault(obj, {})[action] = n
        return {"calls": self.summary.calls, **({"messages": self.summary.messages} if self.summary.messages else {}),
                "unsettled": self.summary.unsettled, "changes": per,
                **({"ai": self.summary.ai} if self.summary.ai is not None else {}),
                **({"contacts": self.summary.contacts} if self.summary.contacts is not None else {})}


@dataclass
class _Sent:
    """A chunk whose writes were sent, and what collects their outcomes."""

    calls: int
    checkpoint: tuple[str, tuple[int, int]] | None
    targets: list[tuple[Any, Callable[[], list]]] = field(default_factory=list)
    complete: bool = False  # every target sent its writes
    batches: dict[str, Any] = field(default_factory=dict)  # target name -> its plan (RULES §9 reads it)


class Prefetch:
    """Read (and assess) calls from Aircall in a background thread while the previous batch is planned and written.

    DESIGN §5: fetching and writing overlap. A thread (not asyncio) because both
    HTTP stacks in use block, and they release the GIL while they wait: the
    thread's parsing and rule checks run while the main thread waits on
    Salesforce or Front. The queue is bounded, so memory stays flat whatever
    the range: at most ``depth`` calls wait. Errors from the reader surface in
    the consumer, where they are raised.
    """

    _DONE = object()
    #: Items handed over together: one queue operation per Aircall page, not per call.
    BATCH = 50

    def __init__(self, source: Iterable, depth: int = 500):
        import queue
        import threading

        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth // self.BATCH))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(source,), name="aircall-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, source: Iterable) -> None:
        batch: list = []
        try:
            for item in source:
                batch.append(item)
                if len(batch) >= self.BATCH:
                    if not self._put(batch):
                        return
                    batch = []
        except BaseException as exc:  # handed to the consumer, raised there (after what was read before it)
            self._error = exc
        finally:
            if batch:
                self._put(batch)
            self._put(self._DONE)

    def __iter__(self):
        try:
            while True:
                batch = self._queue.get()
                if batch is self._DONE:
                    if self._error is not None:
                        raise self._error
                    return
                yield from batch
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _windows(start: datetime, end: datetime) -> list[tuple[int, int]]:
    out = []
    cursor = start
    while cursor < end:
        upper = min(cursor + WINDOW, end)
        out.append((int(cursor.timestamp()), int(upper.timestamp())))
        cursor = upper
    return out


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def open_state(path: Path, dry_run: bool) -> tuple[State, Callable[[], None]]:
    """The state for a run. A dry run writes nothing: with no state file yet it uses a throwaway one."""
    if dry_run and not Path(path).exists():
        tmp = tempfile.TemporaryDirectory(prefix="aircall-sync-dry-run-")
        state = State.open(Path(tmp.name) / "state.sqlite3")

        def cleanup() -> None:
            state.close()
            tmp.cleanup()

        return state, cleanup
    state = State.open(path)
    return state, state.close




# ---------------------------------------------------------------- targets


def target_names(settings, which: str = "all") -> list[str]:
    """The targets a command writes to: enabled in the settings and chosen by ``--target``."""
    if which not in ("salesforce", "front", "all"):
        raise UsageError(f'--target: expected one of salesforce, front, all, got "{which}"')
    enabled = settings.enabled_targets()
    names = enabled if which == "all" else [which]
    for name in names:
        if name not in enabled:
            raise UsageError(f"--target {name}: {name}.enabled is false in the settings; enable it first")
    if not names:
        raise UsageError("no target is enabled: set salesforce.enabled = true (with its credentials) in the settings")
    return names


def connect_org(settings):
    """A signed-in Salesforce org (CredentialsError, exit 5, when the login is refused)."""
    from aircall_sync.targets.salesforce import SalesforceOrg

    sf = settings.salesforce
    if sf.auth == "password" and not sf.consumer_key:
        raise UsageError('salesforce.auth = "password" needs consumer_key and consumer_secret (the OAuth '
                         'username-password flow; SOAP login is retired)')
    return SalesforceOrg(sf).connect()


def front_client(settings):
    from aircall_sync.targets.front_client import FrontClient

    f = settings.front
    return FrontClient(f.base_url, f.api_token.reveal(), requests_per_minute=f.requests_per_minute)


def connect_targets(settings, names: list[str], state: State, *, dry_run: bool = False,
                    stopped: dict[str, BaseException] | None = None) -> list:
    """The signed-in targets. With ``stopped``, a target that cannot start is put there and the
    others start anyway (issue 11: one target's refusal does not stop the other); the first
    error is raised when none starts."""
    from aircall_sync.targets.front import FrontTarget
    from aircall_sync.targets.salesforce_target import SalesforceTaskTarget, SalesforceVoiceTarget

    def start(name: str):
        if name == "front":
            target = FrontTarget(settings, front_client(settings), state, dry_run=dry_run)
        else:
            cls = SalesforceVoiceTarget if settings.salesforce.mode == "voice" else SalesforceTaskTarget
            target = cls(settings, connect_org(settings), state)
        target.start()
        return target

    targets = []
    errors: dict[str, BaseException] = {}
    for name in names:
        try:
            targets.append(start(name))
        except StateError:
            raise
        except Exception as exc:
            if stopped is None:
                raise
            errors[name] = exc
    if errors and not targets:
        raise next(iter(errors.values()))
    if stopped is not None:
        stopped.update(errors)
    return targets


def aircall_client(settings) -> AircallClient:
    import os
    import ssl

    a = settings.aircall
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE")
    verify = ssl.create_default_context(cafile=bundle) if bundle else True
    media = (settings.salesforce.recording, settings.salesforce.voicemail)
    return AircallClient(a.base_url, a.api_id, a.api_token.reveal(), requests_per_minute=a.requests_per_minute,
                         verify=verify, fetch_short_urls=any(m.store and m.link == "short_url" for m in media))


# ---------------------------------------------------------------- one function per command


def execute(
    settings,
    command: str,
    *,
    out: IO[str],
    err: IO[str],
    which: str = "all",
    dry_run: bool = False,
    fmt: str = "text",
    report_path: Path | None = None,
    limit: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    quiet: bool = False,
    now: datetime | None = None,
    sample: int | None = None,
    kind: str = "all",
) -> RunSummary:
    """Run ``backfill`` / ``sync`` / ``retry`` / ``replay`` end to end; raise ``RecordsFailedError`` if records
    failed."""
    if fmt not in ("text", "json"):
        raise UsageError(f'--format: expected one of text, json, got "{fmt}"')
    if fmt == "json" and not dry_run:
        raise UsageError("--format json describes a plan: use it with --dry-run (real runs can write --report FILE)")
    if limit is not None and limit < 1:
        raise UsageError(f"--limit: expected a positive number of calls, got {limit}")
    names = target_names(settings, which)
    # The run lock comes first: a run that will give way (exit 4) must not touch the state file,
    # which the run holding the lock may be creating at this very moment.
    lock = None if dry_run else acquire_lock(settings.sync.state_path, command)
    try:
        state, close_state = open_state(settings.sync.state_path, dry_run)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    report = None
    progress = None
    write_lock = None
    try:
        if not dry_run:
            write_lock = WriteLock(settings.sync.state_path)
        if report_path is not None:
            try:
                report = open(report_path, "w", encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"--report: cannot write {report_path}: {exc.strerror}") from None
        with aircall_client(settings) as client:
            stopped: dict[str, BaseException] = {}
            targets = connect_targets(settings, names, state, dry_run=dry_run, stopped=stopped)
            if FREEZE_AT_START:
                import gc

                gc.freeze()  # what is alive now lives as long as the run: out of the collector's view
            sink = None
            printer = render.PlanPrinter(out, limit=sample) if dry_run and fmt == "text" else None
            if dry_run:
                sink = ChangeSink(out, fmt, printer)
            progress = render.Progress(err, command, quiet=quiet or fmt == "json")
            runner = Runner(settings, command, targets=targets, state=state, client=client, dry_run=dry_run,
                            sink=sink, report=report, progress=progress, now=now, limit=limit, stopped=stopped,
                            names=names, write_lock=write_lock)
            if not dry_run:
                runner.run_id = state.start_run(command, {"from": start and _iso(start), "to": end and _iso(end),
                                                          "target": which, "limit": limit,
                                                          **({"kind": kind} if command == "replay" else {})})
            try:
                if command == "backfill":
                    summary = runner.backfill(start, end)
                elif command == "replay":
                    summary = runner.replay(start, end, kind)
                elif command == "sync":
                    summary = runner.sync()
                else:
                    summary = runner.retry()
            except BaseException:
                if runner.run_id is not None:
                    state.finish_run(runner.run_id, "error", runner.summary.counts())
                raise
            finally:
                progress.close()
            if runner.run_id is not None:
                outcome = ("error" if not runner.active_targets() else "target-stopped") if runner.stopped else (
                    "failed-records" if summary.failures else "ok")
                state.finish_run(runner.run_id, outcome, summary.counts())
    finally:
        if report is not None:
            report.close()
        if write_lock is not None:
            write_lock.close()
        if lock is not None:
            lock.release()
        close_state()
    if runner.stopped and len(names) == 1:
        raise next(iter(runner.stopped.values()))  # the only target: its error is the run's, as it was
    if dry_run:
        if printer is not None:
            printer.close()
            render.plan_table(out, runner.plan_summary())
    else:
        render.run_summary(out, summary)
    if runner.stopped:
        raise TargetsStoppedError(runner.stopped, finished=[t.name for t in runner.active_targets()],
                                  records_failed=len(summary.failures))
    if summary.failures and not dry_run:
        raise RecordsFailedError(f"{len(summary.failures)} record(s) failed; `aircall-sync status` lists them")
    return summary


def _live_status(c, state: State, settings) -> None:
    """Live mode's part of ``status`` (DESIGN §10): the inbox, the last reconcile, the webhook.

    Read from the state store only: ``status`` never waits and sends no request.
    """
    from aircall_sync.live.inbox import Inbox
    from aircall_sync.live.reconcile import WEBHOOK_META

    stats = Inbox(state).stats()
    reconcile = state.last_runs(1, command="reconcile")
    webhook = state.get_meta(WEBHOOK_META)
    if not stats.stored and not reconcile and not webhook:
        return  # live mode has never run with this state
    now = datetime.now(UTC)
    if stats.depth:
        age = int((now - stats.oldest).total_seconds()) if stats.oldest else 0
        line = f"Live inbox: {stats.depth} event(s) waiting, the oldest for {age} s"
        if stats.failing:
            line += f"; {stats.failing} failed at least once, last error: {stats.last_error}"
        c.print(line, markup=False)
    else:
        c.print(f"Live inbox: empty ({stats.stored} event(s) kept for {_span(settings.live.keep_events)})",
                markup=False)
    if reconcile:
        run = reconcile[0]
        outcome = run.outcome or "running"
        c.print(f"Last reconcile: {_iso(run.started_at)}, {outcome}, {run.counts.get('calls', 0)} call(s) "
                f"({run.args.get('from')} to {run.args.get('to')})", markup=False)
    if webhook:
        state_text = "active and subscribed" if webhook.get("ok") else "; ".join(webhook.get("problems") or [])
        repaired = " (serve enabled it again)" if webhook.get("repaired") else ""
        c.print(f"Webhook {webhook.get('webhook_id') or ''} at {webhook.get('url')}: {state_text}{repaired} "
                f"(checked {webhook.get('checked_at')})", markup=False)


def _contacts_status(c, state: State, settings) -> None:
    """``status``: the Salesforce records saved in Aircall (RULES §9), from the state only."""
    counts = state.contact_counts()
    if not settings.aircall.contacts.save_matched and not any(counts.values()):
        return
    line = (f"Aircall contacts: {counts['saved']} Salesforce record(s) saved ({counts['created']} in contacts "
            f"aircall-sync created), {counts['queued']} waiting for the next run, {counts['skipped']} not saved "
            f"(created by aircall-sync, or no number Aircall takes), {counts['failed']} failed")
    if not settings.aircall.contacts.save_matched:
        line += " (aircall.contacts.save_matched is false now)"
    c.print(line + ".", markup=False)
    for row in state.contact_failures():
        where = f" (contact {row.contact_id})" if row.contact_id else ""
        again = "tried again by the next run" if row.queued else "tried again when the record changes or is logged again"
        c.print(f"  {row.object} {row.record_id}{where}: {row.error_code}: {row.error} [{row.attempts} attempt(s), "
                f"last {_iso(row.updated_at)}; {again}]", markup=False)


def _span(delta: timedelta) -> str:
    days, seconds = delta.days, delta.seconds
    return f"{days}d" if days and not seconds else f"{int(delta.total_seconds())}s"


def _stored_message_events(settings, message_id: str) -> list:
    """The inbox's events of a message (messages exist nowhere else: RULES §7); [] without a state file."""
    from aircall_sync.live.inbox import Inbox

    path = Path(settings.sync.state_path)
    if not message_id or not path.exists():
        return []
    with State.open(path) as state:
        return Inbox(state).events_of("message", message_id)


def explain(settings, item_id: int | str, *, out: IO[str], now: datetime | None = None) -> None:
    """``explain ID``: a call (an Aircall call id) or a message (an id whose events the inbox holds), as the
    rules read it, the decision and the exact records per target."""
    text = str(item_id).strip()
    events = _stored_message_events(settings, text)
    if events:
        return explain_message(settings, text, events, out=out)
    if not text.isdigit() or int(text) <= 0:
        raise UsageError(f"no call or message {text}: a call id is a number; a message is explained from the "
                         "webhook events serve stored (none for this id in the state file)")
    return _explain_call(settings, int(text), out=out, now=now)


def explain_message(settings, message_id: str, events: list, *, out: IO[str]) -> None:
    """``explain MESSAGE_ID``: the message its stored events describe (RULES §7) and what each target writes."""
    from aircall_sync.aircall.messages import MessageParseError
    from aircall_sync.live.messages import NumberNames, message_from_events
    from aircall_sync.message_rules import assess_message
    from aircall_sync.targets.salesforce_message import channel_word

    try:
        message = message_from_events(events)
    except MessageParseError as exc:
        raise UsageError(f"message {message_id} cannot be read from its stored events: {exc}") from None
    with aircall_client(settings) as client:
        a = assess_message(message, settings, number_names=NumberNames(client))
    c = render.console(out)
    external = a.external
    lines = [
        f"Message {message.id}: {message.direction} {channel_word(message)}"
        f"{' (group)' if message.group else ''}{' with media' if message.attachments else ''}, "
        f"created {_iso(message.created_at)} on {a.number_name or 'an unknown line'}",
        "  external number: " + (external.e164 + ("" if external.valid else " (invalid number)") if external
                                 else "none (R-MSG-2)"),
        f"  user: {message.user.name if message.user and message.user.name else 'none named'}; status: "
        f"{message.status or 'unknown'}{' (a failed delivery, R-MSG-6)' if message.failed else ''}; "
        f"attachments: {len(message.attachments)}",
        f"  stored events: {len(events)} ({', '.join(sorted({e.event for e in events}))})",
    ]
    for name, decision in a.decisions.items():
        lines.append(f"  {name}: " + (f"skip ({decision.reason})" if decision.skipped else "log"))
    for line in lines:
        c.print(line, markup=False)
    if not settings.enabled_targets():
        return
    state, close_state = open_state(settings.sync.state_path, dry_run=True)
    try:
        _explain_plans(settings, state, a, out, c)
    finally:
        close_state()


def _explain_call(settings, call_id: int, *, out: IO[str], now: datetime | None = None) -> None:
    from aircall_sync.errors import ServiceError

    now = now or datetime.now(UTC)
    with aircall_client(settings) as client:
        try:
            payload = client.get_call(call_id)
        except ServiceError as exc:
            if "HTTP 404" in str(exc):
                raise UsageError(f"Aircall has no call {call_id} (or this API key cannot see it)") from None
            raise
    try:
        call = Call.parse(payload)
    except CallParseError as exc:
        raise UsageError(f"call {call_id} cannot be read: {exc}") from None
    a = rules.assess(call, settings, now)
    c = render.console(out)
    lines = [
        f"Call {call.id}: {a.kind.value}{' (conference)' if a.conference else ''}, {call.direction}, "
        f"started {_iso(call.started_at)} on {call.number.name if call.number else 'an unknown line'}",
        f"  external number: {a.external.e164 + ('' if a.external.valid else ' (invalid number)') if a.external else 'none (R-CALL-4)'}",
        f"  talk {a.talk_seconds}s, wait {a.wait_seconds}s; answered by "
        f"{(rules.answered_by(call).name if rules.answered_by(call) else 'nobody')}",
        f"  tags: {', '.join(t.name for t in call.tags) or 'none'}; comments: {len(call.comments)}",
        "  settled: yes" if a.settled else f"  settled: no ({a.unsettled_reason}); a later run will log it",
    ]
    for name, decision in a.decisions.items():
        lines.append(f"  {name}: " + (f"skip ({decision.reason})" if decision.skipped else decision.flow.value))
    state, close_state = open_state(settings.sync.state_path, dry_run=True)
    try:
        if settings.aircall.ai.enabled:
            a, line = _explain_insights(a, settings, state, now)
            lines.append(line)
        for line in lines:
            c.print(line, markup=False)
        _explain_plans(settings, state, a, out, c)
    finally:
        close_state()


def _explain_plans(settings, state: State, a, out: IO[str], c) -> None:
    """``explain``: what each enabled target would write for one call or message (and, with
    aircall.contacts.save_matched, the Aircall contact its record would be saved as)."""
    names = settings.enabled_targets()
    if not names:
        return
    printer = render.PlanPrinter(out, show_unchanged=True)
    for target in connect_targets(settings, names, state, dry_run=True):
        batch = target.plan([a], only_changed=False)
        for change in batch.changes():
            printer(change)
        _explain_contacts(settings, state, target, batch, printer, c)


def _explain_contacts(settings, state: State, target, batch, printer, c) -> None:
    """``explain`` with ``aircall.contacts.save_matched`` (RULES §9): what would be saved in Aircall for the
    record the item is logged against (nothing is sent: a run searches Aircall first)."""
    if not settings.aircall.contacts.save_matched or not hasattr(target, "contact_sources"):
        return
    from aircall_sync.contacts import ContactSaver

    changes = ContactSaver(settings, None, state, dry_run=True).preview(target.contact_sources(batch))
    if not changes:
        c.print("Aircall contact: nothing to save (R-CONTACT-1: only a Salesforce record the item is logged "
                "against is saved)", markup=False)
    for change in changes:
        printer(change)


def _explain_insights(a: rules.Assessment, settings, state: State, now: datetime) -> tuple[rules.Assessment, str]:
    """``explain`` with AI on (RULES §8): the call with the insights the state knows (nothing is fetched), and a
    line saying what is known and whether a run would ask Aircall."""
    from aircall_sync.ai import eligible, insights_of, to_ask
    from aircall_sync.aircall.insights import KINDS

    known = state.get_insights([a.call.id]).get(a.call.id, {})
    a = replace(a, insights=insights_of(known))
    found = [k for k in KINDS if k in known and known[k].found]
    none = [k for k in KINDS if k in known and known[k].status == "none"]
    words = [f"known: {', '.join(found)}" if found else "none known yet"]
    if none:
        words.append(f"known not to exist: {', '.join(none)}")
    if not eligible(a, settings):
        words.append(f"not eligible (R-AI-1: a settled, answered call with at least "
                     f"{settings.aircall.ai.min_talk_seconds} s of talk, logged by a target)")
    else:
        ask = to_ask(a, known, now, settings.aircall.ai.settle)
        words.append(f"a run would ask Aircall for: {', '.join(ask)}" if ask else "nothing left to ask Aircall")
    return a, "  AI insights: " + "; ".join(words)


def status(settings, *, out: IO[str]) -> None:
    """``status``: watermark, unfinished backfills, last runs, failed records."""
    from rich.table import Table

    c = render.console(out)
    path = Path(settings.sync.state_path)
    if not path.exists():
        c.print(f"No state file yet at {path}: nothing has run with these settings.", markup=False)
        return
    with State.open(path) as state:
        watermark = state.get_watermark()
        c.print(f"State: {path}", markup=False)
        c.print("Sync watermark: " + (f"{_iso(watermark)} (the next sync reads from "
                                      f"{_iso(watermark - settings.sync.revisit)})" if watermark else
                                      "none yet (no sync has run)"), markup=False)
        for b in state.unfinished_backfills():
            c.print(f"Unfinished backfill {b.range_key}: {b.done_windows} of {b.total_windows} windows done "
                    "(run the same backfill again to resume)", markup=False)
        _live_status(c, state, settings)
        runs = state.last_runs(10, exclude=("reconcile",))
        if runs:
            table = Table(title="Last runs", show_edge=False, pad_edge=False)
            for column in ("id", "command", "started", "finished", "outcome", "calls"):
                table.add_column(column)
            for run in runs:
                table.add_row(str(run.id), run.command, _iso(run.started_at),
                              _iso(run.finished_at) if run.finished_at else "-", str(run.outcome or "running"),
                              str(run.counts.get("calls", "-")))
            c.print(table)
        _contacts_status(c, state, settings)
        failures = state.failures()
        if not failures:
            c.print("Failed records: none.")
            return
        # One line each: error messages are long, and a table would squeeze them on 80 columns.
        c.print(f"Failed records ({len(failures)}):", markup=False)
        for f in failures:
            c.print(f"  {f.label} ({f.target} {f.object_name}): {f.code}: {f.message} "
                    f"[{f.attempts} attempt(s), last {_iso(f.last_failed_at)}]", markup=False)
        c.print("Fix the cause (often a setting or a validation rule in Salesforce), then run `aircall-sync retry`.")
