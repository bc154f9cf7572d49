"""Emulated time for live mode: Aircall's timings, scaled so tests take milliseconds.

Live mode has timings measured in seconds to hours: ``call.ended`` about 30 s
after the hang-up, a call rewritten about 20 minutes after it ends, failed
webhook events retried for up to 12 hours (``shared/reference/aircall-live.md``
§1.2, §1.5; ``wire-formats.md`` Aircall §1). Every one of them is expressed in
*emulated* seconds and measured on a :class:`LiveClock`:

- ``time_scale`` is the number of real seconds per emulated second: 1.0 runs
  in real time (the ``sandbox --live`` demo), 0.001 runs the 30 s wait in
  30 ms and 12 h in 43 s, 0.0001 runs 12 h in about 4 s;
- :meth:`LiveClock.now` is an epoch timestamp that starts at ``origin`` and
  runs ``1 / time_scale`` times faster than the wall clock, so the times
  written into calls and envelopes stay consistent with the delays between
  events (``ended_at`` + 30 ≈ the ``call.ended`` timestamp);
- :meth:`LiveClock.advance` jumps forward: a test can run in real time and
  still reach "20 minutes later" at once, without sleeping.

Only HTTP timeouts are *not* scaled (see ``webhook_delivery``): a loaded
machine's round trip does not shrink with the emulated clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["LiveClock"]


class LiveClock:
    """Emulated epoch seconds, ``1 / time_scale`` times as fast as real time."""

    def __init__(self, time_scale: float = 1.0, origin: float | None = None) -> None:
        if not time_scale > 0:
            raise ValueError(f"time_scale must be positive, got {time_scale}")
        self.time_scale = float(time_scale)
        self._origin = time.time() if origin is None else float(origin)
        self._t0 = time.monotonic()
        self._offset = 0.0
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> float:
        """The emulated time, as UNIX seconds."""
        return self._origin + self._offset + (time.monotonic() - self._t0) / self.time_scale

    def real_seconds(self, emulated_seconds: float) -> float:
        """How long an emulated duration lasts in real time (never negative)."""
        return max(0.0, emulated_seconds * self.time_scale)

    def real_until(self, emulated_ts: float) -> float:
        """Real seconds from now until the clock reads ``emulated_ts`` (0 if past)."""
        return self.real_seconds(emulated_ts - self.now())

    def advance(self, seconds: float) -> None:
        """Jump the clock forward; whatever waits on it re-checks its deadlines."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += seconds
            listeners = list(self._listeners)
        for fn in listeners:
            fn()

    def on_advance(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` after every :meth:`advance` (schedulers wake up on it)."""
        with self._lock:
            self._listeners.append(fn)
