"""The emulated Aircall webhook delivery engine: POSTs events to registered URLs.

Semantics follow ``shared/reference/aircall-live.md`` §1.3–1.5:

- each published event goes, for every *active* webhook subscribed to it, as
  the envelope ``{resource, event, timestamp, token, data}`` (``timestamp``
  in UNIX seconds, or milliseconds when the producer asks for it, as for a
  share of message events; ``token`` the webhook's own), with the headers a real
  delivery carried: ``content-type: application/json``, ``user-agent:
  axios/<version>``, ``aircall-origin: webhooks`` and Datadog trace ids that
  change per request (§1.4). No signature header: Aircall has none;
- at least once, unordered; a 5 s timeout; any 2xx is a success, anything
  else (another status, a timeout, a refused connection, a TLS failure) is a
  failure, retried with backoff;
- after N consecutive failures the webhook is disabled (``active: false``,
  visible through ``GET /v1/webhooks``); failed events are still retried for
  up to 12 h and a success re-enables the webhook. New events are not sent
  to a disabled webhook.

Deliveries run on a few background threads, one attempt at a time per
webhook (a slow receiver delays only its own webhook), never on the API
server's threads. Faults for tests are seeded: ``p_duplicate`` (an event is
delivered twice) and ``p_reorder`` (an event is held back until a later one
to the same webhook has gone). All delays are emulated seconds on the shared
:class:`~.live_clock.LiveClock`; only the HTTP timeout is real time.

What tests read: :attr:`DeliveryEngine.log` (one :class:`DeliveryRecord` per
attempt), :attr:`DeliveryEngine.counters`, :meth:`DeliveryEngine.wait_idle`
(returns once nothing is pending; never sleep to synchronise) and
:meth:`DeliveryEngine.wait_for`. Decisions the reference leaves open are in
:data:`AMBIGUITIES`.
"""

from __future__ import annotations

import heapq
import http.client
import itertools
import json
import random
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aircall_sync.sandbox.aircall_webhooks import WEBHOOK_EVENTS, Webhook, WebhookRegistry, event_resource
from aircall_sync.sandbox.live_clock import LiveClock

__all__ = ["AMBIGUITIES", "DeliveryEngine", "DeliveryOptions", "DeliveryRecord"]

_EVENTS = frozenset(WEBHOOK_EVENTS)

AMBIGUITIES: tuple[str, ...] = (
    "Consecutive failures before auto-disable: the sources say 50 (the API reference's 'retried up to 50 "
    "times' and the best-practices page's '50 consecutive failures') and 10 (an older tutorial). Default "
    "max_consecutive_failures=50, the two current sources; configurable so a client can be tested at 10.",
    "Backoff schedule (undocumented): 30 s, then doubling, capped at 15 min, which spaces about 50 retries "
    "over 12 h, the 'up to 50x over 12h' that Attio's receiver assumes. The schedule runs from when each "
    "attempt was due, not from when a slow attempt ended, so the number of tries does not depend on the "
    "machine's load. An event is given up after max_retries=50 retries or when its next try would fall "
    "more than 12 h after its first, whichever comes first.",
    "Retries carry the same body: the envelope is built once, when the event is generated, so `timestamp` "
    "does not change between attempts (open question 1 of the reference; 'when the payload was built').",
    "A disabled webhook gets no new events; its already-failed events keep their retry schedule, and the "
    "first success re-enables it and resets the failure count (§1.5). PUT {active: false} is different: "
    "pending deliveries of that webhook are dropped (aircall_webhooks.AMBIGUITIES).",
    "Deleting a webhook drops its pending deliveries; an attempt already on the wire completes.",
    "The 5 s timeout bounds the whole exchange (connect, send, status and body); it is real time, not "
    "scaled by time_scale, because a loaded machine's round trip does not shrink with the emulated clock.",
    "Redirects are not followed: a 3xx is a failure like any non-2xx.",
    "HTTPS deliveries verify the certificate (Aircall refuses self-signed ones); the sandbox also trusts "
    "its own CA (ca_file) so that a receiver using the sandbox's loopback certificate can be reached.",
    "Without faults, events to one webhook are sent in the order they were generated, one at a time; "
    "reordering then only comes from retries (a failed event goes back after newer ones) and from "
    "p_reorder. Aircall promises no order at all, so a client must not rely on this.",
    "user-agent is axios/1.7.7: the observed delivery says axios/<version> without the number.",
)


@dataclass(frozen=True, slots=True)
class DeliveryOptions:
    """How the engine delivers. Durations are emulated seconds, except ``timeout_s`` (real seconds)."""

    #: Probability that an event is delivered a second time (at least once, §1.5).
    p_duplicate: float = 0.0
    #: Probability that an event is held back until a later event to the same webhook has gone.
    p_reorder: float = 0.0
    #: Real seconds a receiver has to answer (§1.5: 5 s). Not scaled by the clock.
    timeout_s: float = 5.0
    #: Consecutive failed attempts that disable a webhook (50 or 10 in the sources; see AMBIGUITIES).
    max_consecutive_failures: int = 50
    #: Retries of one event after its first attempt.
    max_retries: int = 50
    #: How long after its first attempt a failed event is still retried (§1.5: 12 h).
    retry_window_s: float = 12 * 3600.0
    backoff_base_s: float = 30.0
    backoff_cap_s: float = 15 * 60.0
    #: The second copy of a duplicated event comes up to this much later.
    duplicate_delay_s: float = 5.0
    #: The longest a held-back event waits for a later one before it goes anyway.
    reorder_hold_s: float = 60.0
    #: Delivery threads (one attempt at a time per webhook).
    workers: int = 4
    #: A CA file trusted in addition to the system's, for HTTPS receivers (the sandbox CA).
    ca_file: str | Path | None = None
    user_agent: str = "axios/1.7.7"

    def __post_init__(self) -> None:
        for name in ("p_duplicate", "p_reorder"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {p}")
        if self.max_consecutive_failures < 1 or self.max_retries < 0 or self.workers < 1:
            raise ValueError("max_consecutive_failures and workers must be >= 1, max_retries >= 0")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")

    def backoff(self, attempt: int) -> float:
        """Emulated seconds before the retry that follows failed attempt number ``attempt`` (1-based)."""
        return min(self.backoff_base_s * 2 ** min(attempt - 1, 30), self.backoff_cap_s)


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One delivery attempt.

    ``seq`` numbers the generated event (a duplicate shares its original's);
    ``status`` is the HTTP status or ``None`` when no answer came; ``error`` is
    ``"timeout"``, a connection or TLS error, or ``None``; ``at`` is the
    emulated time the attempt ended; ``gave_up`` marks the last failed attempt
    of an event that will not be retried.
    """

    seq: int
    webhook_id: str
    url: str
    event: str
    call_id: int | None
    attempt: int
    status: int | None
    error: str | None
    at: float
    duplicate: bool = False
    gave_up: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300


@dataclass(eq=False, slots=True)
class _Job:
    id: int
    seq: int
    webhook_id: str
    event: str
    call_id: int | None
    body: bytes
    due: float
    duplicate: bool = False
    attempt: int = 0
    first_due: float | None = None
    hold_deadline: float | None = None
    #: A held-back job that may go once this one has been attempted.
    release: _Job | None = None


_COUNTERS = (
    "published", "enqueued", "skipped_inactive", "attempts", "delivered", "failed", "retries",
    "gave_up", "duplicates", "held", "disabled", "reenabled", "dropped",
)


@dataclass
class _State:
    lanes: dict[str, list[tuple[float, int, _Job]]] = field(default_factory=dict)
    busy: set[str] = field(default_factory=set)
    held: list[_Job] = field(default_factory=list)
    holding: dict[str, _Job] = field(default_factory=dict)  # webhook -> held job with no later event yet
    inflight: int = 0


class DeliveryEngine:
    """Delivers published events to the registry's webhooks (see the module doc)."""

    def __init__(self, registry: WebhookRegistry, clock: LiveClock, options: DeliveryOptions | None = None,
                 *, seed: int = 1) -> None:
        self.registry = registry
        self.clock = clock
        self.options = options or DeliveryOptions()
        self._cond = threading.Condition()  # an RLock: registry callbacks may re-enter from a worker
        self._s = _State()
        self._rng = random.Random(f"delivery:{seed}")       # fault decisions, drawn in publish order
        self._trace_rng = random.Random(f"trace:{seed}")    # header values, drawn by the workers
        self._seq = 0
        self._job_ids = itertools.count(1)
        self._log: list[DeliveryRecord] = []
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._ssl: ssl.SSLContext | None = None
        registry.on_change(self._poke)
        clock.on_advance(self._poke)

    # -- producing ----------------------------------------------------------------

    def publish(self, event: str, data: Mapping[str, Any], *, at: float | None = None,
                call_id: int | None = None, resource: str | None = None, timestamp_ms: bool = False) -> int:
        """Queue ``event`` for every active webhook subscribed to it; returns its sequence number.

        ``at`` is the emulated time the payload was built (the envelope's
        ``timestamp``; default now). ``data`` is serialized at once, so later
        changes to the caller's dict do not leak into the delivery.
        ``timestamp_ms`` writes the envelope's ``timestamp`` in epoch
        milliseconds instead of seconds, as the one third-party
        ``message.received`` sample does (aircall-live.md §1.3, UNCONFIRMED).
        """
        if event not in _EVENTS:
            raise ValueError(f"not an Aircall webhook event: {event!r}")
        when = self.clock.now() if at is None else at
        ts = int(round(when * 1000)) if timestamp_ms else int(when)
        targets, inactive = self.registry.targets(event)
        data_json = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        res = resource or event_resource(event)
        o = self.options
        with self._cond:
            self._seq += 1
            seq = self._seq
            if self._stopping:
                return seq
            self._counters["published"] += 1
            self._counters["skipped_inactive"] += inactive
            now = self.clock.now()
            for hook in targets:
                body = _envelope(res, event, ts, hook.token, data_json)
                job = _Job(next(self._job_ids), seq, hook.webhook_id, event, call_id, body, due=now)
                self._counters["enqueued"] += 1
                # Three draws per delivery, whatever is decided: the same seed and
                # the same events give the same faults.
                r_hold, r_dup, r_delay = self._rng.random(), self._rng.random(), self._rng.random()
                earlier = self._s.holding.pop(hook.webhook_id, None)
                if earlier is not None:
                    job.release = earlier  # the held event goes after this one
                    self._push(job)
                elif r_hold < o.p_reorder:
                    job.hold_deadline = now + o.reorder_hold_s
                    self._s.holding[hook.webhook_id] = job
                    self._s.held.append(job)
                    self._counters["held"] += 1
                else:
                    self._push(job)
                if r_dup < o.p_duplicate:
                    dup = _Job(next(self._job_ids), seq, hook.webhook_id, event, call_id, body,
                               due=now + r_delay * o.duplicate_delay_s, duplicate=True)
                    self._push(dup)
                    self._counters["duplicates"] += 1
                    self._counters["enqueued"] += 1
            if targets:
                self._start_workers()
            self._cond.notify_all()
        return seq

    # -- what tests read ------------------------------------------------------------

    @property
    def log(self) -> list[DeliveryRecord]:
        """Every attempt so far, in the order they ended."""
        with self._cond:
            return list(self._log)

    @property
    def counters(self) -> dict[str, int]:
        """``published``, ``enqueued``, ``attempts``, ``delivered``, ``failed``, ``retries``, ``gave_up``,
        ``duplicates``, ``held`` (reordered), ``disabled``, ``reenabled``, ``skipped_inactive`` (an event
        not sent to a disabled webhook), ``dropped`` (pending work of a deleted or PUT-disabled webhook)."""
        with self._cond:
            return dict(self._counters)

    def pending(self) -> int:
        """Deliveries queued, held back or on the wire."""
        with self._cond:
            self._purge()
            return self._s.inflight + len(self._s.held) + sum(len(h) for h in self._s.lanes.values())

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until no delivery is pending (queued, held back, retrying or in flight).

        Returns False if that did not happen within ``timeout`` real seconds.
        """
        return self.wait_for(lambda: self.pending() == 0, timeout)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Block until ``predicate()`` is true, re-checking after every attempt and registry change."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    def stop(self) -> None:
        """Stop the delivery threads; pending deliveries are abandoned."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            threads, self._threads = self._threads, []
        for t in threads:
            t.join(timeout=self.options.timeout_s + 5)

    # -- scheduling (all under self._cond) ----------------------------------------------

    def _push(self, job: _Job) -> None:
        heapq.heappush(self._s.lanes.setdefault(job.webhook_id, []), (job.due, job.id, job))

    def _poke(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _start_workers(self) -> None:
        if self._threads or self._stopping:
            return
        for k in range(self.options.workers):
            t = threading.Thread(target=self._work, name=f"aircall-webhooks-{k}", daemon=True)
            self._threads.append(t)
            t.start()

    def _purge(self) -> None:
        """Drop pending work of webhooks that were deleted or disabled through the API."""
        s = self._s
        wids = set(s.lanes) | {j.webhook_id for j in s.held}
        for wid in wids:
            hook = self.registry.find(wid)
            if hook is not None and hook.disabled_by != "api":
                continue
            lane = s.lanes.pop(wid, [])
            held = [j for j in s.held if j.webhook_id == wid]
            s.held = [j for j in s.held if j.webhook_id != wid]
            s.holding.pop(wid, None)
            self._counters["dropped"] += len(lane) + len(held)

    def _release(self, job: _Job, due: float) -> None:
        """Queue a held-back job; ``due`` ranks it (the later event's own, so it goes right after it)."""
        if job in self._s.held:
            self._s.held.remove(job)
            if self._s.holding.get(job.webhook_id) is job:
                del self._s.holding[job.webhook_id]
            job.hold_deadline = None
            job.due = due
            self._push(job)

    def _next(self) -> tuple[_Job | None, Webhook | None, float | None]:
        """The job to attempt now and its webhook, or how many real seconds to wait."""
        s = self._s
        self._purge()
        now = self.clock.now()
        for job in [j for j in s.held if j.hold_deadline is not None and j.hold_deadline <= now]:
            self._release(job, now)
        best: tuple[float, int, str] | None = None
        wake: float | None = None
        for wid, heap in s.lanes.items():
            if not heap or wid in s.busy:
                continue
            due, jid, _ = heap[0]
            if due <= now:
                if best is None or (due, jid) < best[:2]:
                    best = (due, jid, wid)
            elif wake is None or due < wake:
                wake = due
        for job in s.held:
            if job.hold_deadline is not None and (wake is None or job.hold_deadline < wake):
                wake = job.hold_deadline
        if best is not None:
            wid = best[2]
            _, _, job = heapq.heappop(s.lanes[wid])
            if not s.lanes[wid]:
                del s.lanes[wid]
            hook = self.registry.find(wid)
            assert hook is not None  # _purge just ran under the same lock
            return job, hook, None
        return None, None, (self.clock.real_until(wake) if wake is not None else None)

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    job, hook, wait = self._next()
                    if job is not None:
                        break
                    # Capped so a clock jump or a missed notification costs at most 0.5 s.
                    self._cond.wait(min(wait, 0.5) if wait is not None else 0.5)
                assert hook is not None
                self._s.busy.add(job.webhook_id)
                self._s.inflight += 1
                job.attempt += 1
                if job.first_due is None:
                    job.first_due = job.due
                headers = self._headers(len(job.body))
            status, error = self._post(hook.url, job.body, headers)
            with self._cond:
                self._s.busy.discard(job.webhook_id)
                self._s.inflight -= 1
                self._settle(job, hook.url, status, error)
                self._cond.notify_all()

    def _settle(self, job: _Job, url: str, status: int | None, error: str | None) -> None:
        o = self.options
        now = self.clock.now()
        ok = error is None and status is not None and 200 <= status < 300
        self._counters["attempts"] += 1
        change = self.registry.record_result(job.webhook_id, ok, o.max_consecutive_failures)
        if change is not None:
            self._counters[change] += 1
        if job.release is not None:
            # The held-back event goes next: it arrives after the later one, before anything newer.
            self._release(job.release, job.due)
            job.release = None
        gave_up = False
        if ok:
            self._counters["delivered"] += 1
        else:
            self._counters["failed"] += 1
            assert job.first_due is not None
            # On the planned timeline (see AMBIGUITIES): a retry already overdue goes at once.
            next_due = job.due + o.backoff(job.attempt)
            if job.attempt - 1 >= o.max_retries or next_due > job.first_due + o.retry_window_s:
                gave_up = True
                self._counters["gave_up"] += 1
            else:
                job.due = next_due
                self._push(job)
                self._counters["retries"] += 1
        self._log.append(DeliveryRecord(
            seq=job.seq, webhook_id=job.webhook_id, url=url, event=job.event, call_id=job.call_id,
            attempt=job.attempt, status=status, error=error, at=now, duplicate=job.duplicate, gave_up=gave_up,
        ))

    # -- the HTTP request -------------------------------------------------------------------

    def _headers(self, length: int) -> dict[str, str]:
        # §1.4: what a live delivery carried; the trace ids change per request.
        r = self._trace_rng
        return {
            "Content-Type": "application/json",
            "User-Agent": self.options.user_agent,
            "aircall-origin": "webhooks",
            "x-datadog-trace-id": str(r.getrandbits(63)),
            "x-datadog-parent-id": str(r.getrandbits(63)),
            "tracestate": f"dd=s:1;p:{r.getrandbits(64):016x}",
            "Content-Length": str(length),
        }

    def _ssl_context(self) -> ssl.SSLContext:
        with self._cond:
            if self._ssl is None:
                ctx = ssl.create_default_context()
                if self.options.ca_file is not None:
                    ctx.load_verify_locations(cafile=str(self.options.ca_file))
                self._ssl = ctx
            return self._ssl

    def _post(self, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int | None, str | None]:
        timeout = self.options.timeout_s
        parts = urlsplit(url)
        https = parts.scheme.lower() == "https"
        host = parts.hostname or ""
        port = parts.port or (443 if https else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn: http.client.HTTPConnection
        if https:
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl_context())
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        t0 = time.monotonic()
        try:
            conn.putrequest("POST", path, skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders(body)
            response = conn.getresponse()
            response.read()
            if time.monotonic() - t0 > timeout:
                return response.status, "timeout"
            return response.status, None
        except TimeoutError:
            return None, "timeout"
        except ssl.SSLError as exc:
            return None, f"tls: {exc.reason or exc}"
        except (OSError, http.client.HTTPException) as exc:
            return None, f"connection: {type(exc).__name__}: {exc}"
        finally:
            conn.close()


def _envelope(resource: str, event: str, timestamp: int, token: str, data_json: str) -> bytes:
    # §1.3: {resource, event, timestamp, token, data}, compact as axios sends it.
    head = json.dumps({"resource": resource, "event": event, "timestamp": timestamp, "token": token},
                      separators=(",", ":"), ensure_ascii=False)
    return (head[:-1] + ',"data":' + data_json + "}").encode("utf-8")
