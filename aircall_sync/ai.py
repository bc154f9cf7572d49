"""AI insights in batch runs and live mode (RULES §8): which calls, what to ask Aircall, what is known.

Batch runs (``backfill``, ``sync``, live mode's reconciler): each settled,
answered call with at least ``aircall.ai.min_talk_seconds`` of talk that a
target logs is *eligible* (R-AI-1). For each, only the insights not known yet
are asked for, one ``GET /v1/calls/:id/{endpoint}`` each, through the run's
Aircall client (so paced with every other Aircall request): at most 5
requests per eligible call, none for an insight found or known not to exist.
This runs in the thread that reads the calls ahead of the writes (the runner's
``Prefetch``), so the pipeline is not stalled by it.

What Aircall said is kept in the state (schema 4, ``State.put_insights``):

- 200 ⇒ ``found``, with its text (R-AI-3): never asked again (an unchanged
  insight costs nothing);
- 404 (or a 200 that says nothing) ⇒ ``none``, final, once the call ended more
  than ``aircall.ai.settle`` ago; before that ``asked``, and asked again by a
  later run: not before the call is twice as old as it was when asked (at
  least 10 minutes later), and once more when it has settled, so a cron sync
  every five minutes does not ask every time (**decision**);
- 403 ⇒ the company has no AI package: one warning, and nothing more is asked
  for the rest of the run (the run's summary says so); nothing is recorded, so
  a later run (after the package is bought) asks.

A dry run asks nothing: it counts the eligible calls and the requests a run
would make, and says how long they take at ``aircall.requests_per_minute``
(R-AI-2). Every call planned carries the insights known (``Assessment.insights``),
so a target writes them (R-AI-4) and its fingerprint includes them.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aircall_sync import rules
from aircall_sync.aircall.client import AircallApiError
from aircall_sync.aircall.insights import ENDPOINT_OF, KINDS, Insights, response_text
from aircall_sync.errors import CredentialsError, ServiceError
from aircall_sync.state import InsightState

__all__ = ["AiStats", "InsightSource", "RETRY_AFTER", "due", "eligible", "insights_of", "to_ask"]

log = logging.getLogger("aircall_sync.ai")

#: The shortest wait before an insight Aircall did not have (404, call not settled) is asked again.
RETRY_AFTER = timedelta(minutes=10)
#: R-AI-2: at most this many requests per eligible call (one per insight).
PER_CALL = len(KINDS)


@dataclass
class AiStats:
    """What a run did (or, dry run, would do) about AI insights."""

    eligible: int = 0  # eligible calls met
    requests: int = 0  # AI requests made (dry run: that a run would make)
    found: int = 0  # insights found by this run's requests
    none: int = 0  # insights now known not to exist (final)
    later: int = 0  # insights Aircall did not have yet (asked again by a later run)
    forbidden: bool = False  # 403: no AI package; nothing more asked this run
    error: str | None = None  # a failure that stopped asking for the run

    def to_json(self, requests_per_minute: int, dry_run: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"eligible_calls": self.eligible, "requests": self.requests,
                               "seconds": seconds_for(self.requests, requests_per_minute),
                               "requests_per_minute": requests_per_minute}
        if not dry_run:
            out.update(found=self.found, none=self.none, later=self.later)
        if self.forbidden:
            out["forbidden"] = True
        if self.error:
            out["error"] = self.error
        return out


def seconds_for(requests: int, requests_per_minute: int) -> int:
    """R-AI-2: how long ``requests`` Aircall requests take at the configured pace (whole seconds, rounded up)."""
    return -(-requests * 60 // max(1, requests_per_minute))


# ---------------------------------------------------------------- pure: which calls, which insights


def eligible(a, settings, targets: Iterable[str] | None = None) -> bool:
    """R-AI-1: a settled, answered call with ``talk ≥ aircall.ai.min_talk_seconds`` that a target logs."""
    call = getattr(a, "call", None)
    if call is None or not a.settled or not rules.is_answered(call):
        return False
    if a.talk_seconds < settings.aircall.ai.min_talk_seconds:
        return False
    names = a.decisions.keys() if targets is None else targets
    return any(name in a.decisions and not a.decisions[name].skipped for name in names)


def due(state: InsightState | None, ended_at: datetime, now: datetime, settle: timedelta) -> bool:
    """Whether an insight is to be asked for now (R-AI-1): never when found or known not to exist; when
    Aircall did not have it yet, once the call is twice as old as it was then (at least RETRY_AFTER later),
    and once it has settled."""
    if state is None:
        return True
    if state.final:
        return False
    if now >= ended_at + settle > state.asked_at:
        return True  # the last word, after the call settled
    return now - state.asked_at >= max(RETRY_AFTER, state.asked_at - ended_at)


def to_ask(a, known: dict[str, InsightState], now: datetime, settle: timedelta) -> list[str]:
    """The insights of an eligible call to ask Aircall for now, in RULES order."""
    ended = a.call.ended_at or now
    return [kind for kind in KINDS if due(known.get(kind), ended, now, settle)]


def insights_of(known: dict[str, InsightState] | None) -> Insights:
    """The texts found, as an ``Insights``."""
    return Insights.of({k: s.text for k, s in (known or {}).items() if s.found})


# ---------------------------------------------------------------- the source of a run


class InsightSource:
    """A run's AI insights: asks Aircall for what is missing (unless ``dry_run``) and attaches what is known.

    ``targets()`` names the targets still writing (a stopped target's calls are not worth a request).
    Thread-safe for one producer (the Prefetch thread) and the consumer that reads ``stats``.
    """

    def __init__(self, settings, client, state, *, dry_run: bool = False, now: datetime,
                 targets: Callable[[], Sequence[str]] | None = None):
        self.settings = settings
        self.ai = settings.aircall.ai
        self.client = client
        self.state = state
        self.dry_run = dry_run
        self.now = now
        self.targets = targets
        self.stats = AiStats()
        self.stopped = False  # 403 or a failure: nothing more is asked this run
        self._lock = threading.Lock()

    def attach_known(self, items: Sequence) -> list:
        """Each call's assessment with the insights known in the state (no request)."""
        ids = [a.call.id for a in items if getattr(a, "call", None) is not None and a.insights is None]
        if not ids:
            return list(items)
        known = self.state.get_insights(ids)
        return [dataclasses.replace(a, insights=insights_of(known.get(a.call.id)))
                if getattr(a, "call", None) is not None and a.insights is None else a for a in items]

    def attach(self, items: Sequence, *, ask: bool = True) -> list:
        """Ask Aircall for the missing insights of the eligible calls among ``items`` (``ask`` and not a dry
        run), record the answers, and return the items with the insights known attached."""
        calls = [a for a in items if getattr(a, "call", None) is not None]
        if not calls:
            return list(items)
        known = self.state.get_insights([a.call.id for a in calls])
        names = self.targets() if self.targets is not None else None
        answers: list[tuple[int, str, str, str | None]] = []
        for a in calls:
            if not ask or not eligible(a, self.settings, names):
                continue  # not ask: past the run's --limit, these calls are not logged by it
            kinds = to_ask(a, known.get(a.call.id, {}), self.now, self.ai.settle)
            with self._lock:
                self.stats.eligible += 1
                if self.dry_run:
                    self.stats.requests += len(kinds)
            if self.dry_run:
                continue
            for kind in kinds:
                if self.stopped:
                    break
                answer = self._ask(a, kind)
                if answer is not None:
                    answers.append(answer)
        if answers:
            self.state.put_insights(answers, at=self.now)
            known = self.state.get_insights([a.call.id for a in calls])
        return [dataclasses.replace(a, insights=insights_of(known.get(a.call.id)))
                if getattr(a, "call", None) is not None else a for a in items]

    def _ask(self, a, kind: str) -> tuple[int, str, str, str | None] | None:
        call = a.call
        try:
            status, body = self.client.get_insight(call.id, ENDPOINT_OF[kind])
        except CredentialsError:
            raise
        except AircallApiError as exc:
            # A refusal of this one call (400 "invalid call_id"…): asked again by a later run.
            log.warning("AI %s of call %s: %s", kind, call.id, exc)
            self._count(requests=1, later=1)
            return call.id, kind, "asked", None
        except ServiceError as exc:
            self.stopped = True
            with self._lock:
                self.stats.requests += 1
                self.stats.error = str(exc)
            log.warning("AI insights: %s; no more are asked for in this run (the calls are logged without them "
                        "and a later run asks again)", exc)
            return None
        if status == 403:
            self.stopped = True
            with self._lock:
                self.stats.requests += 1
                self.stats.forbidden = True
            log.warning("AI insights: Aircall answered 403 (the company has no Aircall AI package, or this API key "
                        "may not read it): none is asked for in the rest of this run; buy the package, or set "
                        "aircall.ai.enabled = false")
            return None
        text = response_text(kind, body) if status == 200 else None
        if text is not None:
            self._count(requests=1, found=1)
            return call.id, kind, "found", text
        ended = call.ended_at or self.now
        if self.now >= ended + self.ai.settle:
            self._count(requests=1, none=1)
            return call.id, kind, "none", None
        self._count(requests=1, later=1)
        return call.id, kind, "asked", None

    def _count(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self.stats, name, getattr(self.stats, name) + n)
