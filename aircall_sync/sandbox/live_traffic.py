"""Calls placed and messages sent over time on the emulated Aircall, for live mode.

:class:`LiveTraffic` places calls (:meth:`LiveTraffic.place`, or at a steady
rate with :meth:`LiveTraffic.start_background`) and runs each one's lifecycle
(:mod:`.live_calls`) on the shared :class:`~.live_clock.LiveClock`: at each
step it updates the call in the :class:`~.generator.CallStore`, so that
``GET /v1/calls`` shows it as it is at that moment, and hands the event, with
the call in webhook form, to the :class:`~.webhook_delivery.DeliveryEngine`.
When the company has Aircall AI (:mod:`.aircall_ai`), an eligible call's
``*.created`` AI events follow, seconds to minutes after it ends, each when
its insight becomes readable through the API.

Messages (:meth:`LiveTraffic.message`, or at a steady rate with
:meth:`LiveTraffic.start_background_messages`) are planned by
:mod:`.live_messages` and only published: no API lists them.

Everything is seeded: the n-th placed call with the same spec, the same
``at`` and the same store gets the same id, caller, agent, timings and
content, and so does the n-th message; the background mode places the same
sequence of calls and messages (arrival times are drawn from the seed too,
in emulated seconds, calls and messages from separate streams so that one
rate does not change the other's sequence).

One thread runs the steps in emulated-time order; steps of calls placed in
the past run at once, in order. Tests synchronise with :meth:`wait_idle`
(every step done and every delivery settled), never with sleeps.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from aircall_sync.sandbox.aircall_ai import EVENT_OF, AiInsights
from aircall_sync.sandbox.generator import CallStore, TimeLike, to_epoch
from aircall_sync.sandbox.live_calls import (
    CallSpec,
    Plan,
    Step,
    background_specs,
    plan_call,
    resolve_caller,
    webhook_call,
)
from aircall_sync.sandbox.live_clock import LiveClock
from aircall_sync.sandbox.live_messages import (
    MessageSpec,
    MessageStep,
    background_message_specs,
    plan_message,
)
from aircall_sync.sandbox.webhook_delivery import DeliveryEngine

__all__ = ["LiveTraffic", "PlacedCall", "PlacedMessage"]


@dataclass(frozen=True, slots=True)
class PlacedCall:
    """What a test needs to know about a placed call.

    ``caller`` is ``"pool"`` (a number the CRM seed has), ``"unknown"``,
    ``"anonymous"`` or ``"explicit"``; ``in_pool`` says whether the number is
    one of ``CallStore.external_numbers()``. ``events`` is the planned
    ``(emulated time, event)`` sequence of the call's lifecycle;
    ``finalize_at`` the time of the late REST rewrite; ``ai_events`` the
    Aircall AI events that follow (empty for a call without insights).
    """

    id: int
    spec: CallSpec
    started_at: int
    raw_digits: str
    caller: str
    in_pool: bool
    events: tuple[tuple[int, str], ...]
    finalize_at: int
    ai_events: tuple[tuple[int, str], ...] = ()

    @property
    def kind(self) -> str:
        return self.spec.kind


@dataclass(frozen=True, slots=True)
class PlacedMessage:
    """What a test needs to know about a sent or received message.

    ``external_number`` is in Aircall's display format, ``raw_digits`` its
    digits; ``caller`` and ``in_pool`` as for :class:`PlacedCall`;
    ``number_id`` the line; ``events`` the planned ``(emulated time,
    event)`` sequence; ``status`` the last status.
    """

    id: str
    spec: MessageSpec
    at: float
    external_number: str
    raw_digits: str
    caller: str
    in_pool: bool
    number_id: int
    events: tuple[tuple[float, str], ...]
    status: str

    @property
    def direction(self) -> str:
        return self.spec.direction


# Step categories: what wait_idle waits for ("call", "message"; "finalize" on request), never "background".
# "finalize" holds what comes late: the REST rewrite and the AI insights.
_CALL, _MESSAGE, _FINAL, _BACKGROUND = "call", "message", "finalize", "background"


class LiveTraffic:
    """Places calls and sends messages over time; see the module doc. Start-up is lazy: no thread until a
    call or a message is placed."""

    def __init__(self, store: CallStore, engine: DeliveryEngine, clock: LiveClock, *, base_url: str,
                 seed: int = 1, ai: AiInsights | None = None) -> None:
        self.store = store
        self.engine = engine
        self.clock = clock
        self.base_url = base_url.rstrip("/")
        self.seed = seed
        #: The company's Aircall AI: decides which placed calls get AI events, and when (None: no AI events).
        self.ai = ai
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, str, Callable[[], None]]] = []
        self._ids = itertools.count()
        self._pending = {_CALL: 0, _MESSAGE: 0, _FINAL: 0, _BACKGROUND: 0}
        self._running = 0
        self._placed: dict[int, PlacedCall] = {}
        self._messages: dict[str, PlacedMessage] = {}
        self._n = 0
        self._m = 0
        self._pool: set[str] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._errors: list[str] = []
        self._bg_rate: float | None = None
        self._bg_generation = 0
        self._bg_specs: Iterator[CallSpec] | None = None
        self._bg_time_rng = random.Random(f"live-arrivals:{seed}")
        self._bg_msg_rate: float | None = None
        self._bg_msg_generation = 0
        self._bg_msg_specs: Iterator[MessageSpec] | None = None
        self._bg_msg_time_rng = random.Random(f"live-message-arrivals:{seed}")
        clock.on_advance(self._poke)

    # -- placing calls ----------------------------------------------------------------

    def place(self, kind: str = "inbound_answered", *, at: TimeLike | None = None, **options: Any) -> int:
        """Place one call; returns its id at once (the call appears in the API when it starts).

        ``options`` are :class:`~.live_calls.CallSpec` fields: ``external_number``
        (``"pool"``, ``"unknown"``, ``"anonymous"`` or a number), ``line``,
        ``agent``, ``missed_call_reason``, ``transfer`` (``"user"``/``"team"``),
        ``conference``, ``tags``, ``comments``, ``assign``, ``archive``,
        ``recording``, ``talk_s``, ``wrap_up_s``. ``at`` is when the call starts
        on the emulated clock (default now; in the past, its steps up to now
        run at once).
        """
        for key in ("tags", "comments"):
            if key in options and not isinstance(options[key], str):
                options[key] = tuple(options[key])
        return self.place_spec(CallSpec(kind, **options), at=at)

    def place_spec(self, spec: CallSpec, *, at: TimeLike | None = None) -> int:
        with self._cond:
            n = self._n
            self._n += 1
            t0 = int(self.clock.now()) if at is None else to_epoch(at)
            rng = random.Random(f"live:{self.seed}:{n}")
            caller = resolve_caller(self.store.world, spec.external_number, n, self._pool_numbers())
            call_id = self.store.reserve_id(gap=rng.randint(1, 4000))
            plan = plan_call(self.store.world, spec, call_id=call_id, started_at=t0, base=self.base_url,
                             caller=caller, rng=rng)
            final = next(s.at for s in plan.steps if s.finalize)
            ai_events = self._plan_ai(call_id, plan)
            self._placed[call_id] = PlacedCall(
                id=call_id, spec=spec, started_at=t0, raw_digits=plan.call["raw_digits"], caller=plan.caller,
                in_pool=plan.in_pool, events=tuple(plan.events), finalize_at=final, ai_events=tuple(ai_events),
            )
            for step in plan.steps:
                self._push(step.at, _FINAL if step.finalize else _CALL,
                           lambda step=step: self._apply(call_id, plan, step))
            self._start()
            self._cond.notify_all()
        return call_id

    def _plan_ai(self, call_id: int, plan: Plan) -> list[tuple[int, str]]:
        """Schedule the AI events of an eligible call (under the lock); returns them, in time order."""
        if self.ai is None:
            return []
        answered = next((s.fields["answered_at"] for s in plan.steps if s.event == "call.answered"), None)
        ended = next(s.fields["ended_at"] for s in plan.steps if s.event == "call.hungup")
        self.ai.pin_start(call_id, plan.call["started_at"])
        times = self.ai.ready_times(call_id, answered, ended)
        out: list[tuple[int, str]] = []
        for kind, at in sorted(times.items(), key=lambda kv: kv[1]):
            count = self.ai.action_item_count(call_id) if kind == "action_items" else 1
            out += [(at, EVENT_OF[kind])] * count
            # Late like the REST rewrite: wait_idle(finalize=False) does not wait for insights.
            self._push(at, _FINAL, lambda kind=kind, at=at: self._publish_ai(call_id, kind, at))
        return out

    @property
    def placed(self) -> list[PlacedCall]:
        """Every placed call, in placing order."""
        with self._cond:
            return list(self._placed.values())

    def call(self, call_id: int) -> PlacedCall:
        with self._cond:
            return self._placed[call_id]

    # -- messages ---------------------------------------------------------------------------

    def message(self, direction: str = "inbound", *, at: TimeLike | None = None, **options: Any) -> str:
        """Send or receive one message; returns its id (a string) at once.

        ``options`` are :class:`~.live_messages.MessageSpec` fields:
        ``channel`` (``None`` for SMS/MMS, ``"whatsapp"``),
        ``external_number`` (``"pool"``, ``"unknown"`` or a number), ``body``,
        ``media`` (attachment file names), ``line``, ``user`` (the agent of an
        outbound message), ``names_user`` (whether its events carry ``user``;
        None: seeded), ``fail`` (``True``, ``"failed"`` or ``"undelivered"``),
        ``group`` (``True`` or a participant count). ``at`` is when it is
        sent (default now; in the past, its events up to now go at once).
        """
        if "media" in options and not isinstance(options["media"], str):
            options["media"] = tuple(options["media"])
        return self.message_spec(MessageSpec(direction, **options), at=at)

    def message_spec(self, spec: MessageSpec, *, at: TimeLike | None = None) -> str:
        """:meth:`message` with a ready-made :class:`~.live_messages.MessageSpec`."""
        with self._cond:
            n = self._m
            self._m += 1
            # Message times keep their milliseconds (timestamps may be written in ms).
            t0 = self.clock.now() if at is None else float(at) if isinstance(at, (int, float)) else float(to_epoch(at))
            plan = plan_message(self.store.world, spec, n=n, at=t0, base=self.base_url, pool=self._pool_numbers())
            self._messages[plan.id] = PlacedMessage(
                id=plan.id, spec=spec, at=t0, external_number=plan.external_number, raw_digits=plan.raw_digits,
                caller=plan.caller, in_pool=plan.in_pool, number_id=plan.number_id, events=tuple(plan.events),
                status=plan.status,
            )
            for step in plan.steps:
                self._push(step.at, _MESSAGE, lambda step=step: self._publish_message(step))
            self._start()
            self._cond.notify_all()
        return plan.id

    @property
    def messages(self) -> list[PlacedMessage]:
        """Every message sent or received, in placing order."""
        with self._cond:
            return list(self._messages.values())

    def placed_message(self, message_id: str) -> PlacedMessage:
        with self._cond:
            return self._messages[message_id]

    # -- background mode --------------------------------------------------------------

    def start_background(self, calls_per_hour: float) -> None:
        """Place calls at random (seeded) arrival times, ``calls_per_hour`` on average (emulated hours).

        The first calls cover every case the tool distinguishes (see
        :func:`~.live_calls.background_specs`), then a weighted mix follows.
        """
        if not calls_per_hour > 0:
            raise ValueError("calls_per_hour must be positive")
        with self._cond:
            restart = self._bg_rate is None
            self._bg_rate = float(calls_per_hour)
            if self._bg_specs is None:
                tags = [t.name for t in self.store.world.tags]
                self._bg_specs = background_specs(self.seed, tags)
            if restart:
                self._bg_generation += 1
                self._schedule_background(self.clock.now(), self._bg_generation)
            self._start()

    def start_background_messages(self, messages_per_hour: float) -> None:
        """Send and receive messages at random (seeded) times, ``messages_per_hour`` on average.

        The first ones cover every case (see
        :func:`~.live_messages.background_message_specs`), then a mix follows.
        """
        if not messages_per_hour > 0:
            raise ValueError("messages_per_hour must be positive")
        with self._cond:
            restart = self._bg_msg_rate is None
            self._bg_msg_rate = float(messages_per_hour)
            if self._bg_msg_specs is None:
                self._bg_msg_specs = background_message_specs(self.seed)
            if restart:
                self._bg_msg_generation += 1
                self._schedule_background_message(self.clock.now(), self._bg_msg_generation)
            self._start()

    def stop_background(self) -> None:
        """Stop placing calls and sending messages in the background."""
        with self._cond:
            self._bg_rate = None
            self._bg_generation += 1
            self._bg_msg_rate = None
            self._bg_msg_generation += 1
            self._cond.notify_all()

    def _schedule_background_message(self, after: float, generation: int) -> None:
        assert self._bg_msg_rate is not None
        at = after + self._bg_msg_time_rng.expovariate(self._bg_msg_rate / 3600.0)
        self._push(at, _BACKGROUND, lambda: self._background_message(at, generation))

    def _background_message(self, at: float, generation: int) -> None:
        with self._cond:
            if generation != self._bg_msg_generation or self._bg_msg_rate is None:
                return
            assert self._bg_msg_specs is not None
            spec = next(self._bg_msg_specs)
        self.message_spec(spec, at=at)
        with self._cond:
            if generation == self._bg_msg_generation and self._bg_msg_rate is not None:
                self._schedule_background_message(at, generation)

    def _schedule_background(self, after: float, generation: int) -> None:
        assert self._bg_rate is not None
        at = after + self._bg_time_rng.expovariate(self._bg_rate / 3600.0)
        self._push(at, _BACKGROUND, lambda: self._background(at, generation))

    def _background(self, at: float, generation: int) -> None:
        with self._cond:
            if generation != self._bg_generation or self._bg_rate is None:
                return
            assert self._bg_specs is not None
            spec = next(self._bg_specs)
        self.place_spec(spec, at=int(at))
        with self._cond:
            if generation == self._bg_generation and self._bg_rate is not None:
                self._schedule_background(at, generation)

    # -- synchronisation for tests ------------------------------------------------------

    def wait_idle(self, timeout: float = 10.0, *, finalize: bool = True) -> bool:
        """Block until every placed call and message has run its steps and every delivery has settled.

        ``finalize=False`` does not wait for what comes late: the REST rewrite
        (20 emulated minutes after each call) and the AI events (seconds to
        minutes after). The background mode's next placement is never waited
        for. Returns False on timeout (real seconds).
        """
        deadline = time.monotonic() + timeout

        def steps_done() -> bool:
            return (self._running == 0 and self._pending[_CALL] == 0 and self._pending[_MESSAGE] == 0
                    and (not finalize or self._pending[_FINAL] == 0))

        with self._cond:
            if not self._cond.wait_for(steps_done, timeout):
                return False
        return self.engine.wait_idle(max(0.0, deadline - time.monotonic()))

    def wait_placed(self, count: int, timeout: float = 10.0, *, messages: int = 0) -> bool:
        """Block until at least ``count`` calls (and ``messages`` messages) were placed (background mode)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: len(self._placed) >= count and len(self._messages) >= messages, timeout)

    @property
    def errors(self) -> list[str]:
        """Tracebacks of steps that raised (an emulator bug: tests assert this is empty)."""
        with self._cond:
            return list(self._errors)

    def stop(self) -> None:
        """Stop the step thread; steps not yet run are abandoned."""
        with self._cond:
            self._stopping = True
            self._bg_rate = None
            self._bg_msg_rate = None
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=10)

    # -- the step runner --------------------------------------------------------------------

    def _pool_numbers(self) -> set[str]:
        if self._pool is None:
            self._pool = set(self.store.external_numbers())
        return self._pool

    def _push(self, at: float, category: str, fn: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (at, next(self._ids), category, fn))
        self._pending[category] += 1

    def _poke(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _start(self) -> None:
        if self._thread is None and not self._stopping:
            self._thread = threading.Thread(target=self._run, name="aircall-live-traffic", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    if self._heap and self._heap[0][0] <= self.clock.now():
                        _, _, category, fn = heapq.heappop(self._heap)
                        self._running += 1
                        break
                    wait = self.clock.real_until(self._heap[0][0]) if self._heap else 0.5
                    # Capped: a clock jump or a missed notification costs at most 0.5 s.
                    self._cond.wait(min(wait, 0.5))
            try:
                fn()
            except Exception:
                with self._cond:
                    self._errors.append(traceback.format_exc())
            finally:
                with self._cond:
                    self._running -= 1
                    self._pending[category] -= 1
                    self._cond.notify_all()

    def _apply(self, call_id: int, plan: Plan, step: Step) -> None:
        if step.event == "call.created":
            self.store.add_calls([plan.call])
        if step.fields:
            self.store.update_call(call_id, **step.fields)
        if step.event is not None:
            # §1.3: data is the call as of the event, in webhook form.
            rest = self.store.get(call_id, base=self.base_url, fetch_contact=False, fetch_short_urls=False)
            assert rest is not None
            self.engine.publish(step.event, webhook_call(rest), at=step.at, call_id=call_id)

    def _publish_message(self, step: MessageStep) -> None:
        # §1.3: resource "message" for message.* and group_message.* alike.
        self.engine.publish(step.event, step.data, at=step.at, resource="message", timestamp_ms=step.timestamp_ms)

    def _publish_ai(self, call_id: int, kind: str, at: int) -> None:
        # The insight's content is what the endpoint serves from now on, computed from the call as it is.
        rest = self.store.get(call_id, base=self.base_url, fetch_contact=False, fetch_short_urls=False)
        assert rest is not None and self.ai is not None
        for data in self.ai.event_data(rest, kind):
            self.engine.publish(EVENT_OF[kind], data, at=at, call_id=call_id)
