"""One retry contract for every API client (Aircall now; Salesforce and Front reuse it).

The contract, after the Meltano Singer SDK's REST streams:

- requests are paced on the client side (the vendors' budgets are company-wide,
  so we never rely on hitting 429 to find the limit);
- 429 is retriable after the wait the service asks for (each client says how to
  read it from the response);
- 5xx, timeouts and dropped connections are retriable with bounded exponential
  backoff and full jitter;
- every other 4xx is final and goes back to the caller.

Nothing here logs headers or bodies: the Authorization header must never reach a
log line or an exception message.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from aircall_sync.errors import ServiceError

#: Failures where the request may not have reached the service or its answer was
#: lost: safe to repeat for reads, and for writes only because every write we
#: make is keyed (DESIGN §6) and reconciled before a retry creates anything.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)


class Pacer:
    """Spaces requests evenly so that at most ``per_minute`` start in any minute.

    Even spacing (rather than a bursty token bucket) keeps us below a leaky
    bucket on the vendor's side whatever its capacity, and it is shared by
    threads so pipelined fetches and writes of one service share one budget.
    """

    def __init__(
        self,
        per_minute: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            self._sleep(start - now)

    def hold(self, seconds: float) -> None:
        """Push every later request back: the service told us to wait."""
        with self._lock:
            self._next = max(self._next, self._clock() + seconds)


@dataclass
class RetryStats:
    """What the retry loop did, so a run can report the retries it made."""

    requests: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    transport_errors: int = 0
    waited_seconds: float = 0.0

    @property
    def retries(self) -> int:
        return self.rate_limited + self.server_errors + self.transport_errors


@dataclass
class RetryPolicy:
    """Bounded exponential backoff with full jitter.

    ``max_attempts`` bounds 5xx/transport failures; 429s have their own, larger
    bound because waiting them out is the normal way through a rate limit.
    """

    max_attempts: int = 6
    max_rate_limited: int = 20
    base_delay: float = 1.0
    max_delay: float = 60.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def backoff(self, attempt: int) -> float:
        return self.rng.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


def send(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    service: str,
    pacer: Pacer,
    policy: RetryPolicy,
    stats: RetryStats,
    rate_limit_wait: Callable[[httpx.Response], float],
    **kwargs,
) -> httpx.Response:
    """Send one request under the retry contract and return the final response.

    Returns any response that is not retriable (2xx, 3xx, non-429 4xx) for the
    caller to interpret; raises ``ServiceError`` once retries are exhausted.
    """
    failures = 0
    limited = 0
    while True:
        pacer.wait()
        stats.requests += 1
        try:
            response = client.request(method, url, **kwargs)
        except TRANSIENT_ERRORS as exc:
            failures += 1
            stats.transport_errors += 1
            if failures >= policy.max_attempts:
                raise ServiceError(
                    f"{service} did not answer after {failures} attempts "
                    f"({type(exc).__name__}); check the network or {service}'s status page, then run again"
                ) from None
            delay = policy.backoff(failures)
        else:
            if response.status_code == 429:
                limited += 1
                stats.rate_limited += 1
                if limited > policy.max_rate_limited:
                    raise ServiceError(
                        f"{service} kept answering 429 Too Many Requests ({limited} times); "
                        f"another integration may be using the company-wide budget: lower "
                        f"requests_per_minute or run later"
                    )
                delay = max(0.0, rate_limit_wait(response))
                pacer.hold(delay)
            elif response.status_code >= 500:
                failures += 1
                stats.server_errors += 1
                if failures >= policy.max_attempts:
                    raise ServiceError(
                        f"{service} answered HTTP {response.status_code} {failures} times in a row "
                        f"for {method} {_path_of(url)}; try again later"
                    )
                delay = policy.backoff(failures)
            else:
                return response
        stats.waited_seconds += delay
        policy.sleep(delay)


def _path_of(url: str) -> str:
    # Only the path: a query string may carry values we do not want echoed.
    return httpx.URL(url).path
