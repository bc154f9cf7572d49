"""The worker of live mode: the inbox's events, through the same runner as a backfill (DESIGN §10).

What arrived within ``live.batch_window`` is planned as one chunk, so a burst
of calls costs one round of CRM lookups. Per call only the newest snapshot
counts (envelope timestamp, then arrival); one older than a snapshot already
applied changes nothing. A call is logged as soon as a snapshot shows it
finished, with no ``sync.lag``; the webhook's call object is used as it is,
with no request to Aircall. Calls go in the order their first finished
snapshot arrived, so live mode writes what a backfill processing them in that
order writes.

A target that cannot write (a CRM down, rate-limited, refusing the session)
stops for the batch (runner's per-target stop): the batch's events wait and
are tried again with backoff capped at 60 s, while the receiver keeps
answering 200. A call written already costs nothing when tried again (its
fingerprint is unchanged).

Messages (RULES §7) go through the same runner, in the same batch as the
calls, in the order their first event arrived: a message is rebuilt from all
its stored events (``live.messages``), so any event carrying it logs it, and a
duplicate or a late older snapshot rebuilds the same message, whose unchanged
fingerprint costs no request. Their events stay in the inbox (``replay``).

AI insights (RULES §8, with ``aircall.ai.enabled``): a ``*.created`` event's
content is taken when it carries it, else fetched (``GET
/v1/calls/:id/{endpoint}``, R-AI-1), and kept in the state; the call is then
planned again, so the insight lands in its records in place (R-FLOW-3), and an
unchanged insight changes no fingerprint and costs nothing. An insight known
already is not fetched again. An ``action_item.created`` event is one item of
a list whose length it does not tell: the list is read from the endpoint
(once per call and batch) unless the item is known (**decision**: the order
and the whole list are then Aircall's, as a backfill reads them). A 404 after
the event is tried again with backoff for up to ``aircall.ai.settle``; a 403
is warned about once. The call itself comes from its newest finished snapshot
in the inbox; when its events were pruned (``live.keep_events``) or never
came, it is read once from Aircall (``GET /v1/calls/:id``), and the log says so.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aircall_sync import rules
from aircall_sync.aircall.client import AircallApiError
from aircall_sync.aircall.insights import ENDPOINT_OF, EVENT_KIND, event_text, response_text
from aircall_sync.aircall.messages import MessageParseError
from aircall_sync.aircall.models import Call, CallParseError
from aircall_sync.errors import CredentialsError, ServiceError, stop_message
from aircall_sync.live.inbox import Event, Inbox
from aircall_sync.live.messages import NumberNames, message_from_events
from aircall_sync.message_rules import assess_message
from aircall_sync.locks import WriteLock
from aircall_sync.runner import Runner
from aircall_sync.state import State

__all__ = ["BatchResult", "Worker", "ai_backoff", "backoff"]

log = logging.getLogger("aircall_sync.live")

MAX_BACKOFF = 60.0  # DESIGN §10: a CRM error is retried with backoff capped at 60 s
BATCH_LIMIT = 2000  # events taken at once (the runner's chunk)
PRUNE_EVERY = timedelta(hours=1)
IDLE_WAIT = 30.0  # seconds between looks at the inbox when nothing announces an event
AI_MAX_BACKOFF = 600.0  # a 404 after an AI event: tried again up to every 10 minutes, until aircall.ai.settle


def ai_backoff(attempts: int, rng: random.Random | None = None) -> float:
    """Seconds before an AI insight Aircall did not serve yet (a 404 after its event) is asked again."""
    ceiling = min(AI_MAX_BACKOFF, 15.0 * 2.0 ** max(0, attempts))
    return (rng or random).uniform(ceiling / 2, ceiling)


def backoff(attempts: int, rng: random.Random | None = None) -> float:
    """Seconds before the next try of an event that failed ``attempts`` times (full jitter, capped)."""
    ceiling = min(MAX_BACKOFF, 2.0 ** max(0, attempts))
    return (rng or random).uniform(ceiling / 2, ceiling)


@dataclass
class BatchResult:
    events: int = 0
    calls: int = 0
    messages: int = 0
    written: int = 0
    stale: int = 0  # events whose snapshot was older than one already applied
    insights: int = 0  # AI insight events read (RULES §8)
    insight_requests: int = 0  # Aircall requests they took (content fetched, a call read)
    retried: int = 0
    outcomes: dict[tuple[str, str], int] = field(default_factory=dict)
    error: str | None = None


class Worker:
    """Processes the inbox in a thread of its own (``start``/``stop``), or batch by batch (``run_once``)."""

    def __init__(self, settings, state: State, targets: list, client, *, metrics: Any = None,
                 on_batch: Callable[[BatchResult], None] | None = None):
        self.settings = settings
        self.state = state
        self.inbox = Inbox(state)
        self.targets = targets
        self.client = client
        self.metrics = metrics
        self.on_batch = on_batch
        self.write_lock = WriteLock(settings.sync.state_path)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._draining_until: float | None = None
        self._thread: threading.Thread | None = None
        self._last_prune = datetime.min.replace(tzinfo=UTC)
        self.batches = 0
        self.last_error: str | None = None
        #: Aircall numbers' names, read once per number and process (R-MSG-4).
        self.number_names = NumberNames(client)
        self._ai_forbidden = False  # a 403 from the AI endpoints was warned about (once per process)

    # ------------------------------------------------------------ the thread

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="aircall-sync-worker", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def notify(self) -> None:
        """An event was stored: wake up."""
        self._wake.set()

    def stop(self, drain_seconds: float = 30.0) -> bool:
        """Process what is due for up to ``drain_seconds``, then stop; True if the thread ended.

        What is left stays in the inbox for the next start.
        """
        self._draining_until = time.monotonic() + drain_seconds
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=drain_seconds + 1)
        ended = not self.alive
        if ended:
            self.write_lock.close()
        return ended

    def _loop(self) -> None:
        window = self.settings.live.batch_window.total_seconds()
        while True:
            if self._stopping.is_set():
                self._drain()
                return
            self._wake.wait(timeout=self._idle_wait())
            self._wake.clear()
            if self._stopping.is_set():
                continue
            if window > 0:
                # Gather what else arrives within the window into this batch (a burst: one round of lookups).
                self._stopping.wait(window)
            try:
                while self.run_once().events and not self._stopping.is_set():
                    pass
                self._prune()
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any one batch
                self.last_error = stop_message(exc)
                log.error("live worker: %s", self.last_error, exc_info=log.isEnabledFor(logging.DEBUG))
                self._stopping.wait(5.0)

    def _drain(self) -> None:
        while self._draining_until is not None and time.monotonic() < self._draining_until:
            try:
                if not self.run_once().events:
                    return
            except Exception as exc:  # noqa: BLE001
                log.error("live worker while draining: %s", stop_message(exc))
                return

    def _idle_wait(self) -> float:
        due = self.inbox.next_due()
        if due is None:
            return IDLE_WAIT
        return max(0.0, min(IDLE_WAIT, (due - datetime.now(UTC)).total_seconds()))

    def _prune(self) -> None:
        now = datetime.now(UTC)
        if now - self._last_prune < PRUNE_EVERY:
            return
        self._last_prune = now
        pruned = self.inbox.prune(now - self.settings.live.keep_events)
        if pruned:
            log.info("pruned %d processed event(s) older than live.keep_events", pruned)

    # ------------------------------------------------------------ one batch

    def run_once(self, now: datetime | None = None) -> BatchResult:
        """Process the events due now; returns what was done."""
        now = now or datetime.now(UTC)
        events = self.inbox.due(now=now, limit=BATCH_LIMIT)
        result = BatchResult(events=len(events))
        if not events:
            return result
        calls: dict[str, list[Event]] = {}
        messages: dict[str, list[Event]] = {}
        insights: dict[str, list[Event]] = {}
        for event in events:
            if event.kind == "call":
                calls.setdefault(event.object_id, []).append(event)
            elif event.kind == "message":
                messages.setdefault(event.object_id, []).append(event)
            elif event.kind == "insight" and self.settings.aircall.ai.enabled:
                insights.setdefault(event.object_id, []).append(event)
        # Every other event (AI ones while AI is off) is acknowledged and kept, with nothing to write.
        self.inbox.done(e.seq for e in events if e.kind not in ("call", "message")
                        and not (e.kind == "insight" and self.settings.aircall.ai.enabled))
        again = self._insights(insights, calls, now, result) if insights else {}
        if calls or messages or again:
            self._calls(calls, now, result, messages, again)
        self.batches += 1
        if self.on_batch is not None:
            self.on_batch(result)
        return result

    def _messages(self, messages: dict[str, list[Event]], result: BatchResult) -> dict[str, tuple]:
        """Per message id: (its arrival order, its assessment, the newest event), rebuilt from every stored
        event of the message (R-MSG-1); one that cannot be read is marked done with the reason."""
        out: dict[str, tuple] = {}
        for message_id, events in messages.items():
            stored = self.inbox.events_of("message", message_id) or events
            try:
                message = message_from_events(stored)
            except MessageParseError as exc:
                log.warning("message %s: its events cannot be read (%s)", message_id, exc)
                self.inbox.done((e.seq for e in events), error=f"cannot be read: {exc}")
                continue
            assessment = assess_message(message, self.settings, number_names=self.number_names)
            out[message_id] = (min(e.seq for e in stored), assessment, max(stored, key=lambda e: e.order))
        if out:
            self.state.remember_messages([(a.key, a.message_id, a.message.created_at) for _, a, _ in out.values()])
        result.messages = len(out)
        return out

    # ------------------------------------------------------------ AI insights (RULES §8)

    def _insights(self, groups: dict[str, list[Event]], calls: dict[str, list[Event]], now: datetime,
                  result: BatchResult) -> dict[str, tuple[Call | None, list[Event]]]:
        """Read each insight event's text (fetched when the event has none), keep it in the state, and return
        the calls to plan again: call id -> (the call rebuilt for it, or None when the call's own events are in
        this batch; its insight events, done with the batch). The other insight events are done, or tried
        again later, here."""
        result.insights = sum(len(events) for events in groups.values())
        known = self.state.get_insights([int(c) for c in groups])
        answers: list[tuple[int, str, str, str | None]] = []
        found: set[str] = set()  # calls with an insight in hand (new or known)
        waiting: set[int] = set()  # events tried again later (a 404 after the event, Aircall out of reach)
        for call_id, events in groups.items():
            cid = int(call_id)
            by_kind: dict[str, list[Event]] = {}
            for event in events:
                by_kind.setdefault(EVENT_KIND[event.event], []).append(event)
            for kind, kind_events in by_kind.items():
                stored = known.get(cid, {}).get(kind)
                texts = [t for e in sorted(kind_events, key=lambda e: e.order)
                         if (t := event_text(kind, e.body.get("data"))) is not None]
                if kind != "action_items" and texts:
                    answers.append((cid, kind, "found", texts[-1]))  # the newest event's
                    found.add(call_id)
                    continue
                if stored is not None and stored.found and (
                        kind != "action_items" or (texts and all(t in stored.text.split("\n") for t in texts))):
                    found.add(call_id)  # known already: not fetched again (an unchanged insight costs nothing)
                    continue
                text, retry = self._fetch_insight(cid, kind, kind_events, now, result)
                if retry:
                    waiting.update(e.seq for e in kind_events)
                elif text is not None:
                    answers.append((cid, kind, "found", text))
                    found.add(call_id)
        changed = {str(c) for c in self.state.put_insights(answers)} if answers else set()
        again: dict[str, tuple[Call | None, list[Event]]] = {}
        for call_id in found:
            events = [e for e in groups[call_id] if e.seq not in waiting]
            if call_id in calls:
                again[call_id] = (None, events)  # planned with its own events; the insights are attached
                continue
            retried = any(e.attempts for e in events)
            call = self._call_for_insight(call_id, fetch=call_id in changed or retried, result=result)
            if call is not None:
                again[call_id] = (call, events)
        going = {e.seq for _call, events in again.values() for e in events}
        self.inbox.done(sorted({e.seq for events in groups.values() for e in events} - waiting - going))
        return again

    def _fetch_insight(self, cid: int, kind: str, events: list[Event], now: datetime,
                       result: BatchResult) -> tuple[str | None, bool]:
        """``(text, tried again later)`` of an insight whose event carries none: fetched (R-AI-1). A 404
        within ``aircall.ai.settle`` of the event, or Aircall out of reach, puts the events back with backoff."""
        if self._ai_forbidden:
            return None, False
        try:
            result.insight_requests += 1
            status, body = self.client.get_insight(cid, ENDPOINT_OF[kind])
        except CredentialsError:
            raise
        except AircallApiError as exc:
            log.warning("call %s: the AI %s announced by its event cannot be read: %s", cid, kind, exc)
            return None, False
        except ServiceError as exc:
            self.inbox.retry([e.seq for e in events], f"AI {kind}: {stop_message(exc)}",
                             now + timedelta(seconds=backoff(max(e.attempts for e in events) + 1)))
            return None, True
        if status == 403:
            self._ai_forbidden = True
            log.warning("AI insights: Aircall answered 403 to GET /v1/calls/%s/%s (the company has no Aircall AI "
                        "package, or this API key may not read it): AI events without content are not fetched "
                        "until serve restarts; set aircall.ai.enabled = false to stop", cid, ENDPOINT_OF[kind])
            return None, False
        text = response_text(kind, body) if status == 200 else None
        if text is not None:
            return text, False
        first = min(e.received_at for e in events)
        if now - first >= self.settings.aircall.ai.settle:
            log.warning("call %s: Aircall still has no AI %s %s after its event; given up (aircall.ai.settle)",
                        cid, kind, _span(now - first))
            return None, False
        self.inbox.retry([e.seq for e in events], f"AI {kind}: Aircall answered {status} after the event; "
                         "tried again", now + timedelta(seconds=ai_backoff(max(e.attempts for e in events) + 1)))
        return None, True

    def _call_for_insight(self, call_id: str, *, fetch: bool, result: BatchResult) -> Call | None:
        """The call an insight arrived for, to write it again: its newest finished snapshot in the inbox; else,
        when ``fetch`` (the insight is new, or its write is tried again), read once from Aircall."""
        snapshots = [e for e in self.inbox.events_of("call", call_id) if e.finished]
        for event in sorted(snapshots, key=lambda e: e.order, reverse=True):
            try:
                return Call.parse(event.body.get("data"))
            except CallParseError:
                continue
        if not fetch:
            return None
        log.info("call %s: an AI insight arrived and no stored event describes the call (pruned after "
                 "live.keep_events, or none came): read once from Aircall (GET /v1/calls/%s)", call_id, call_id)
        try:
            result.insight_requests += 1
            call = Call.parse(self.client.get_call(int(call_id)))
        except CredentialsError:
            raise
        except (ServiceError, CallParseError) as exc:
            log.warning("call %s: cannot be read from Aircall (%s); its AI insight is kept and written with the "
                        "call's next event or reconcile", call_id, exc)
            return None
        if call.status != "done" or call.ended_at is None:
            return None  # not finished: logged (with its insights) when it is
        return call

    def _calls(self, calls: dict[str, list[Event]], now: datetime, result: BatchResult,
               messages: dict[str, list[Event]] | None = None,
               again: dict[str, tuple[Call | None, list[Event]]] | None = None) -> None:
        messages = messages or {}
        again = again or {}
        in_hand = self._messages(messages, result)
        applied = self.inbox.applied("call", calls)
        newest: dict[str, Event] = {}
        for call_id, events in calls.items():
            latest = max(events, key=lambda e: e.order)
            if call_id in applied and latest.order <= applied[call_id]:
                result.stale += len(events)
                self.inbox.done(e.seq for e in events)
                continue
            newest[call_id] = latest
        parsed: dict[str, Call] = {}
        for call_id, event in newest.items():
            try:
                parsed[call_id] = Call.parse(event.body.get("data"))
            except CallParseError as exc:
                log.warning("call %s: its %s event cannot be read (%s); left for the reconciler", call_id,
                            event.event, exc)
                self.inbox.done((e.seq for e in calls[call_id]), error=f"cannot be read: {exc}")
                newest.pop(call_id)
        # Calls whose AI insight arrived (RULES §8): planned again with it, from the snapshot rebuilt for it, or
        # with their own events of this batch; their insight events go (done or retried) with the batch.
        insight_events = {c: events for c, (_call, events) in again.items()}
        rebuilt = {c: call for c, (call, _e) in again.items() if call is not None and c not in newest}
        for c, (call, _e) in again.items():
            if call is None and c not in newest:  # its own events were stale (or unreadable): as if not here
                found = self._call_for_insight(c, fetch=True, result=result)
                if found is not None:
                    rebuilt[c] = found
        if not newest and not in_hand and not rebuilt:
            self.inbox.done(e.seq for events in insight_events.values() for e in events)
            return
        order = self.inbox.first_finished(newest)
        # Calls in the order their first finished snapshot arrived, messages in the order their first event
        # did, together (DESIGN §10); calls written again for an insight in the order of its event.
        keyed = [((order.get(c, newest[c].seq), newest[c].seq), "call", c) for c in newest]
        keyed += [((first, first), "message", m) for m, (first, _a, _e) in in_hand.items()]
        keyed += [((min(e.seq for e in insight_events[c]),) * 2, "call", c) for c in rebuilt]
        keyed.sort()
        ids = [c for _, kind, c in keyed if kind == "call"]
        parsed.update(rebuilt)
        # R-CALL-5 with no lag: a finished snapshot is logged at once (an ended_at a little ahead of our
        # clock still counts as ended).
        items = [rules.assess(parsed[c], self.settings, max(now, parsed[c].ended_at or now), lag=timedelta(0))
                 if kind == "call" else in_hand[c][1] for _, kind, c in keyed]
        result.calls = len(ids)
        groups = {**{("call", c): calls.get(c, []) + insight_events.get(c, []) for c in ids},
                  **{("message", m): messages[m] for m in in_hand}}
        leftover = [e.seq for c, events in insight_events.items() if c not in ids for e in events]
        if leftover:  # the call's own events turned out stale: its insight events have nothing more to do
            self.inbox.done(leftover)
        seqs = [e.seq for events in groups.values() for e in events]
        runner = Runner(self.settings, "serve", targets=self.targets, state=self.state, client=self.client,
                        now=now, write_lock=self.write_lock)
        try:
            summary = runner.process(items)
        except Exception as exc:  # noqa: BLE001 - nothing is dropped: the batch waits and is tried again
            self._retry(groups, stop_message(exc), result)
            log.debug("live batch failed", exc_info=True)
            return
        for key, count in summary.outcomes.items():
            result.outcomes[key] = result.outcomes.get(key, 0) + count
        result.written = sum(n for (_t, outcome), n in summary.outcomes.items() if outcome in ("created", "updated"))
        if runner.stopped:
            self._retry(groups, "; ".join(f"{name} stopped: {stop_message(e)}"
                                          for name, e in runner.stopped.items()), result)
            return
        self.inbox.mark_applied("call", {c: newest[c].order for c in ids if c in newest})
        self.inbox.mark_applied("message", {m: newest_event.order for m, (_f, _a, newest_event) in in_hand.items()})
        self.inbox.done(seqs)
        written_at = datetime.now(UTC)
        delivered = [(newest[c] if c in newest else max(insight_events[c], key=lambda e: e.seq)).received_at
                     for c in ids] + [max(e.received_at for e in messages[m]) for m in in_hand]
        if self.metrics is not None:
            self.metrics.batch(summary, delivered, written_at)
        slowest = max((written_at - moment).total_seconds() for moment in delivered)
        counts = "; ".join(f"{t} {o} {n}" for (t, o), n in sorted(summary.outcomes.items())) or "nothing to log"
        what = f"{len(ids)} call(s)" + (f", {len(in_hand)} message(s)" if in_hand else "")
        log.info("live: %s, %d event(s): %s (%.1f s after the delivery at most)", what, len(seqs), counts, slowest)

    def _retry(self, groups: dict[tuple[str, str], list[Event]], error: str, result: BatchResult) -> None:
        events = [e for group in groups.values() for e in group]
        attempts = max(e.attempts for e in events) + 1
        at = datetime.now(UTC) + timedelta(seconds=backoff(attempts))
        self.inbox.retry([e.seq for e in events], error, at)
        result.retried = len(events)
        result.error = error
        self.last_error = error
        calls = sum(1 for kind, _ in groups if kind == "call")
        log.warning("live: %d call(s) and %d message(s) wait and are tried again at %s: %s", calls,
                    len(groups) - calls, at.strftime("%H:%M:%S"), error)


def _span(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"
