"""What ``serve`` does on a timer: the reconciler, and the hourly look at its webhook (DESIGN §10).

The reconciler runs the ``sync`` path every ``live.reconcile_every`` over
``live.reconcile_window`` ending ``sync.lag`` ago, so that Aircall's late
rewrites (duration, cost, even ``started_at``, for ~20 minutes) and any event
that never came are caught. It is the only reader of Aircall's call list in
live mode, and it leaves the ``sync`` watermark alone. Each run is in the run
history as ``reconcile`` (``status`` shows the last one).

The webhook is looked at when ``serve`` starts and every hour (when
``live.public_url`` says which one is ours): a webhook Aircall disabled after
failed deliveries is enabled again, with the full list of events.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from aircall_sync.aircall import webhooks
from aircall_sync.errors import AircallSyncError, StateError, stop_message
from aircall_sync.locks import WriteLock
from aircall_sync.runner import Runner, _iso
from aircall_sync.state import State

__all__ = ["Maintenance", "WEBHOOK_CHECK_EVERY", "WEBHOOK_META"]

log = logging.getLogger("aircall_sync.live")

WEBHOOK_CHECK_EVERY = timedelta(hours=1)
WEBHOOK_META = "live.webhook"  # the last look at the webhook, for `status`


class Maintenance:
    """A thread that reconciles and looks after the webhook, on their own schedules."""

    def __init__(self, settings, state: State, targets: list, client, *, reconcile_first: bool = True):
        self.settings = settings
        self.state = state
        self.targets = targets
        self.client = client
        self.write_lock = WriteLock(settings.sync.state_path)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_reconcile = datetime.now(UTC) if reconcile_first else datetime.now(UTC) + settings.live.reconcile_every
        self._next_webhook = datetime.now(UTC)
        self.reconciles = 0
        self.last_summary: Any = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="aircall-sync-reconciler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # A reconcile in progress ends at its next chunk; a Bulk job or an Aircall page may take a while.
            self._thread.join(timeout=10)
        if self._thread is None or not self._thread.is_alive():
            self.write_lock.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = datetime.now(UTC)
            if now >= self._next_webhook:
                self._next_webhook = now + WEBHOOK_CHECK_EVERY
                self.look_after_webhook()
            if now >= self._next_reconcile:
                self._next_reconcile = now + self.settings.live.reconcile_every
                try:
                    self.reconcile(now)
                except Exception as exc:  # noqa: BLE001 - the next one runs on time anyway
                    log.error("reconcile: %s", stop_message(exc), exc_info=log.isEnabledFor(logging.DEBUG))
            wake = min(self._next_webhook, self._next_reconcile)
            self._stop.wait(max(0.0, (wake - datetime.now(UTC)).total_seconds()))

    def reconcile(self, now: datetime | None = None):
        """One reconcile over ``(now - lag - window, now - lag]``; returns its RunSummary."""
        now = now or datetime.now(UTC)
        end = now - self.settings.sync.lag
        start = end - self.settings.live.reconcile_window
        runner = Runner(self.settings, "reconcile", targets=self.targets, state=self.state, client=self.client,
                        now=now, write_lock=self.write_lock)
        runner.run_id = self.state.start_run("reconcile", {"from": _iso(start), "to": _iso(end)})
        try:
            summary = runner.reconcile(start, end)
        except BaseException:
            self.state.finish_run(runner.run_id, "error", runner.summary.counts())
            raise
        outcome = ("target-stopped" if runner.stopped else "failed-records" if summary.failures else "ok")
        self.state.finish_run(runner.run_id, outcome, summary.counts())
        self.reconciles += 1
        self.last_summary = summary
        counts = ", ".join(f"{t} {o} {n}" for (t, o), n in sorted(summary.outcomes.items())) or "nothing to log"
        log.info("reconcile %s..%s: %d call(s); %s", _iso(start), _iso(end), summary.calls, counts)
        for name, exc in runner.stopped.items():
            log.warning("reconcile: %s stopped: %s", name, stop_message(exc))
        return summary

    def look_after_webhook(self) -> webhooks.WebhookCheck | None:
        """Check ours (when ``live.public_url`` names it); enable a disabled one again, with every event."""
        url = self.settings.live.public_url
        if not url:
            return None
        events = webhooks.needed_events(self.settings)
        try:
            result = webhooks.check(self.client, url, events)
            repaired = False
            if result.hook is not None and not result.ok:
                webhooks.repair(self.client, result.hook, events)
                repaired = True
                log.warning("webhook %s: %s; enabled again with its %d events", result.hook.webhook_id,
                            "; ".join(result.problems), len(events))
            elif result.hook is None:
                log.error("webhook: %s", result.problems[0])
            record = {"checked_at": _iso(datetime.now(UTC)), "url": url, "ok": result.ok or repaired,
                      "webhook_id": result.hook.webhook_id if result.hook else None,
                      "problems": list(result.problems), "repaired": repaired}
        except AircallSyncError as exc:
            log.warning("webhook: could not check it: %s", stop_message(exc))
            record = {"checked_at": _iso(datetime.now(UTC)), "url": url, "ok": False, "webhook_id": None,
                      "problems": [f"could not check it: {exc}"], "repaired": False}
            result = None
        try:
            self.state.set_meta(WEBHOOK_META, record)
        except StateError as exc:
            log.warning("webhook: %s", exc)
        return result
