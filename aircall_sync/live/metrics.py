"""``GET /metrics`` of ``serve``: Prometheus text format, from prometheus-client (DESIGN §10).

One registry per app (no module-level state): deliveries received by event and
refused by reason, the inbox's depth and oldest pending age (read at scrape
time), records written and failed by target, requests to each service, and
the delay from a delivery to the record written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from aircall_sync.live.inbox import InboxStats

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Event names are labels: only the ones Aircall documents, so that a sender with the token cannot grow
# the label set without bound (anything else counts as "other").
_KNOWN_PREFIXES = ("call.", "message.", "group_message.", "user.", "number.", "contact.", "summary.",
                   "topics.", "sentiment.", "action_item.", "transcription.")

# Seconds: the budget is "within a few seconds", the test bound 10 s; the tail shows retries.
_DELAY_BUCKETS = (0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 300, 1800)


class _Live:
    """Values read when Prometheus scrapes: the inbox and the services' request counters."""

    def __init__(self, inbox: Callable[[], InboxStats], requests: Callable[[], dict[str, int]],
                 clock: Callable[[], datetime]):
        self.inbox = inbox
        self.requests = requests
        self.clock = clock

    def collect(self) -> Iterable:
        stats = self.inbox()
        yield GaugeMetricFamily("aircall_sync_inbox_depth", "Webhook events waiting to be processed.",
                                value=stats.depth)
        age = (self.clock() - stats.oldest).total_seconds() if stats.oldest else 0.0
        yield GaugeMetricFamily("aircall_sync_inbox_oldest_age_seconds",
                                "Age of the oldest event waiting to be processed (0 when none waits).",
                                value=max(0.0, age))
        yield GaugeMetricFamily("aircall_sync_inbox_failing", "Waiting events that failed at least once.",
                                value=stats.failing)
        requests = CounterMetricFamily("aircall_sync_requests", "Requests sent to each service.",
                                       labels=["service"])
        for service, count in sorted(self.requests().items()):
            requests.add_metric([service], count)
        yield requests


class Metrics:
    def __init__(self, *, inbox: Callable[[], InboxStats], requests: Callable[[], dict[str, int]],
                 clock: Callable[[], datetime]):
        self.registry = CollectorRegistry()
        self.deliveries = Counter("aircall_sync_deliveries", "Webhook deliveries accepted, by event.", ["event"],
                                  registry=self.registry)
        self.duplicates = Counter("aircall_sync_deliveries_duplicate",
                                  "Accepted deliveries that repeated an event already stored.", registry=self.registry)
        self.refused = Counter("aircall_sync_deliveries_refused", "Webhook deliveries refused, by reason.",
                               ["reason"], registry=self.registry)
        self.records = Counter("aircall_sync_records", "Call outcomes per target (created, updated, failed...).",
                               ["target", "outcome"], registry=self.registry)
        self.delay = Histogram("aircall_sync_delivery_to_record_seconds",
                               "From the delivery of a call's newest event to its records written.",
                               buckets=_DELAY_BUCKETS, registry=self.registry)
        self.registry.register(_Live(inbox, requests, clock))
        for reason in ("too_large", "not_json", "token", "not_envelope", "store"):
            self.refused.labels(reason)  # every reason shows, at 0, from the first scrape

    def delivered(self, event: str, *, duplicate: bool) -> None:
        self.deliveries.labels(event if event.startswith(_KNOWN_PREFIXES) and len(event) <= 64 else "other").inc()
        if duplicate:
            self.duplicates.inc()

    def batch(self, summary, received: list[datetime], written_at: datetime) -> None:
        for (target, outcome), count in summary.outcomes.items():
            self.records.labels(target, outcome).inc(count)
        for moment in received:
            self.delay.observe(max(0.0, (written_at - moment).total_seconds()))

    def render(self) -> bytes:
        return generate_latest(self.registry)
