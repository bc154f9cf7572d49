"""All the emulated services together, and settings that point the tool at them.

Used by ``aircall-sync sandbox``, by the end-to-end tests and by the benchmarks:
one place decides how the emulators are started and what a settings file for
them looks like. Nothing here imports the client's code.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import tomli_w

from aircall_sync.sandbox.aircall_ai import AiInsights, AiOptions
from aircall_sync.sandbox.aircall_api import DEFAULT_API_ID, DEFAULT_API_TOKEN, AircallApp
from aircall_sync.sandbox.aircall_contacts import ContactBook, ContactOptions
from aircall_sync.sandbox.aircall_webhooks import CALL_EVENTS, WebhookRegistry
from aircall_sync.sandbox.front_api import DEFAULT_API_TOKEN as FRONT_TOKEN
from aircall_sync.sandbox.front_api import start_front_sandbox
from aircall_sync.sandbox.generator import CallStore, generate, to_epoch
from aircall_sync.sandbox.live_clock import LiveClock
from aircall_sync.sandbox.live_traffic import LiveTraffic
from aircall_sync.sandbox.salesforce_api import AuthConfig, OrgOptions, SalesforceFaults, start_salesforce_sandbox
from aircall_sync.sandbox.server import Faults, LoopbackServer
from aircall_sync.sandbox.tls import ensure_tls_files, server_ssl_context
from aircall_sync.sandbox.webhook_delivery import DeliveryEngine, DeliveryOptions

BANNER = "aircall-sync sandbox: emulated APIs on loopback, not the real services"


@dataclass
class SandboxOptions:
    calls: int = 500
    seed: int = 1
    days: int = 7
    host: str = "127.0.0.1"
    port: int = 0
    #: Server-side limit (None: unlimited), as Aircall's company-wide budget.
    aircall_requests_per_minute: int | None = None
    aircall_faults: Faults | None = None
    #: Serve Aircall over HTTPS too, with the sandbox's CA (``ca_path``); a client
    #: trusts it through SSL_CERT_FILE (httpx reads it). The benchmarks use it.
    aircall_tls: bool = False
    end: datetime | None = None
    #: Distinct external numbers (None: the generator's default for the call count).
    pool_size: int | None = None
    salesforce: bool = True
    salesforce_options: OrgOptions | None = None
    salesforce_faults: SalesforceFaults | None = None
    salesforce_http_faults: Faults | None = None
    salesforce_auth: AuthConfig | None = None
    front: bool = True
    front_requests_per_minute: int | None = None
    front_faults: Faults | None = None
    front_burst_limit_per_second: int | None = None
    #: Share of the callers that already have a Front contact (the 409 path of R-FRONT-1).
    front_known_share: float = 0.2
    #: Where the sandbox's TLS files go (None: a temporary folder removed at stop).
    tls_dir: Path | None = None
    #: Live mode: calls placed over time (``Sandbox.traffic``) and their webhook events delivered to
    #: the webhooks registered through ``POST /v1/webhooks``. The webhook endpoints exist either way.
    live: bool = False
    #: Calls placed per emulated hour in the background (0: only the calls a test places).
    live_calls_per_hour: float = 0.0
    #: Messages (SMS, MMS, WhatsApp, in and out) per emulated hour in the background; None: a third of
    #: live_calls_per_hour, so ``sandbox --live`` has some; 0: only the messages a test sends.
    live_messages_per_hour: float | None = None
    #: Real seconds per emulated second for live mode's timings (1.0: real time; 0.001: the 30 s
    #: before call.ended take 30 ms). The live clock starts at the data set's end.
    time_scale: float = 1.0
    #: Webhook delivery: faults (p_duplicate, p_reorder), timeout, failures before auto-disable…
    webhook_delivery: DeliveryOptions = field(default_factory=DeliveryOptions)
    #: The company has the Aircall AI package: the five AI endpoints serve insights of eligible calls and
    #: live calls send their *.created events. False: 403 on those endpoints, no AI event.
    ai_package: bool = True
    #: Aircall AI behaviour: min_talk_s (60), the share of events carrying content, timings.
    ai: AiOptions = field(default_factory=AiOptions)
    #: The contacts API where the reference is unsure: emojis refused or stripped, search lagging creates.
    aircall_contacts: ContactOptions = field(default_factory=ContactOptions)


@dataclass
class Sandbox:
    options: SandboxOptions = field(default_factory=SandboxOptions)
    aircall_server: LoopbackServer | None = None
    aircall_store: CallStore | None = None
    salesforce: Any = None  # the SalesforceSandbox: .server, .store, .app, .summary
    front_sandbox: Any = None  # the FrontSandbox: .server, .store, .app
    ca_path: Path | None = None
    #: The emulated clock of live mode (webhook timings, placed calls).
    live_clock: LiveClock | None = None
    #: The Aircall company's webhooks (what ``/v1/webhooks`` serves).
    aircall_webhooks: WebhookRegistry | None = None
    #: Delivers webhook events; its threads start with the first event.
    webhook_delivery: DeliveryEngine | None = None
    #: Places calls and sends messages over time (``options.live`` only).
    traffic: LiveTraffic | None = None
    #: The company's Aircall AI (what the AI endpoints serve; its clock is the live clock).
    ai_insights: AiInsights | None = None
    #: The company's Aircall contacts (what ``/v1/contacts`` serves; its clock is the live clock): list,
    #: find by number, add one by hand as an agent would in the app, and read what the API changed.
    aircall_contacts: ContactBook | None = None
    _tmp: tempfile.TemporaryDirectory | None = None

    def start(self) -> Sandbox:
        o = self.options
        end = o.end or datetime.now(UTC).replace(microsecond=0)
        store = generate(calls=o.calls, seed=o.seed, start=end - timedelta(days=o.days), end=end,
                         pool_size=o.pool_size)
        # Live calls start where the generated data ends (now, unless end is given).
        self.live_clock = LiveClock(o.time_scale, origin=to_epoch(end))
        self.aircall_webhooks = WebhookRegistry(seed=o.seed, clock=self.live_clock.now)
        # "Produced yet?" is read on the live clock, like every other live timing.
        self.ai_insights = AiInsights(seed=o.seed, clock=self.live_clock.now, package=o.ai_package, options=o.ai)
        # Contacts made now carry the live clock's time, like the calls placed now.
        self.aircall_contacts = ContactBook(store.world, clock=self.live_clock.now, options=o.aircall_contacts)
        app = AircallApp(
            store,
            api_id=DEFAULT_API_ID,
            api_token=DEFAULT_API_TOKEN,
            requests_per_minute=o.aircall_requests_per_minute,
            webhooks=self.aircall_webhooks,
            ai=self.ai_insights,
            contacts=self.aircall_contacts,
        )
        tls_dir = o.tls_dir
        if tls_dir is None and (o.salesforce or o.aircall_tls):
            self._tmp = tempfile.TemporaryDirectory(prefix="aircall-sync-sandbox-")
            tls_dir = Path(self._tmp.name)
        ssl_context = None
        if o.aircall_tls:
            files = ensure_tls_files(tls_dir)
            ssl_context = server_ssl_context(files)
            self.ca_path = Path(files.ca_cert)
        self.aircall_server = LoopbackServer(app, api="aircall", host=o.host, port=o.port, faults=o.aircall_faults,
                                             ssl_context=ssl_context)
        self.aircall_server.start()
        self.aircall_contacts.base_url = self.aircall_server.url
        self.aircall_store = store
        if o.salesforce:
            self.salesforce = start_salesforce_sandbox(
                tls_dir, port=o.port + 1 if o.port else 0, host=o.host, seed=o.seed,
                external_numbers=store.external_numbers(), users=store.agents(), options=o.salesforce_options,
                faults=o.salesforce_faults, http_faults=o.salesforce_http_faults, auth=o.salesforce_auth, now=end,
            )
            self.ca_path = Path(self.salesforce[2])
        if o.front:
            numbers = store.external_numbers()
            known = numbers[: int(len(numbers) * o.front_known_share)]
            self.front_sandbox = start_front_sandbox(
                port=o.port + 2 if o.port else 0, host=o.host, agents=store.agents(), contacts=known,
                requests_per_minute=o.front_requests_per_minute, faults=o.front_faults,
                burst_limit_per_second=o.front_burst_limit_per_second, rate_window_seconds=60.0,
            )
        delivery = o.webhook_delivery
        if delivery.ca_file is None and self.ca_path is not None:
            # An HTTPS receiver may use the sandbox's loopback certificate.
            delivery = replace(delivery, ca_file=self.ca_path)
        self.webhook_delivery = DeliveryEngine(self.aircall_webhooks, self.live_clock, delivery, seed=o.seed)
        if o.live:
            self.traffic = LiveTraffic(store, self.webhook_delivery, self.live_clock,
                                       base_url=self.aircall_server.url, seed=o.seed, ai=self.ai_insights)
            if o.live_calls_per_hour > 0:
                self.traffic.start_background(o.live_calls_per_hour)
            messages = o.live_messages_per_hour
            if messages is None:
                messages = o.live_calls_per_hour / 3
            if messages > 0:
                self.traffic.start_background_messages(messages)
        return self

    def stop(self) -> None:
        # Producers first: no event may be published into a stopped engine.
        if self.traffic is not None:
            self.traffic.stop()
        if self.webhook_delivery is not None:
            self.webhook_delivery.stop()
        if self.aircall_server is not None:
            self.aircall_server.stop()
        if self.salesforce is not None:
            self.salesforce.stop()
        if self.front_sandbox is not None:
            self.front_sandbox.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_idle(self, timeout: float = 10.0, *, finalize: bool = True) -> bool:
        """Block until placed calls and messages have run their lifecycle and no webhook delivery is pending
        (``finalize=False``: without the late REST rewrite and AI events)."""
        deadline = time.monotonic() + timeout
        if self.traffic is not None and not self.traffic.wait_idle(timeout, finalize=finalize):
            return False
        assert self.webhook_delivery is not None, "start the sandbox first"
        return self.webhook_delivery.wait_idle(max(0.0, deadline - time.monotonic()))

    @property
    def aircall_url(self) -> str:
        assert self.aircall_server is not None, "start the sandbox first"
        return self.aircall_server.url + "/v1"

    @property
    def front_store(self):
        return self.front_sandbox[1] if self.front_sandbox is not None else None

    @property
    def sf_store(self):
        return self.salesforce[1] if self.salesforce is not None else None

    def register_receiver(self, port: int, path: str = "/aircall/webhook",
                          events: Iterable[str] | None = None) -> dict:
        """Register a webhook for a receiver on this machine (``serve``), as an admin would in Aircall,
        and return the ``[live]`` settings that go with it (its URL, port and token).

        Subscribed to ``events``, by default every call event: the receiver takes what it needs. Add
        ``aircall_webhooks.MESSAGE_EVENTS`` and ``AI_EVENTS`` for messages and AI insights. Plain
        ``http://`` is accepted for loopback receivers only (a sandbox decision; Aircall wants HTTPS).
        """
        assert self.aircall_webhooks is not None, "start the sandbox first"
        url = f"http://{self.options.host}:{port}{path}"
        hook = self.aircall_webhooks.create({"custom_name": "aircall-sync sandbox", "url": url,
                                             "events": list(CALL_EVENTS if events is None else events)})
        return {"host": self.options.host, "port": port, "path": path, "public_url": url,
                "webhook_token": hook.token}

    def settings(self, state_path: str | Path = "aircall-sync-sandbox.sqlite3", mode: str = "task",
                 targets: tuple[str, ...] = ("salesforce",), live: dict | None = None) -> dict:
        """Settings (as a TOML-ready dict) that point the tool at this sandbox, for the given targets
        (and ``live``: the ``[live]`` table of :meth:`register_receiver`)."""
        front = {"front": {
            "enabled": True,
            "api_token": FRONT_TOKEN,
            "base_url": self.front_sandbox.url,
            "inbox": "Aircall Phone",
            "requests_per_minute": 6000,
        }} if self.front_sandbox is not None and "front" in targets else {}
        return {
            "aircall": {
                "api_id": DEFAULT_API_ID,
                "api_token": DEFAULT_API_TOKEN,
                "base_url": self.aircall_url,
                # The emulator has no company-wide budget to share: go fast.
                "requests_per_minute": 6000,
            },
            "sync": {"state_path": str(state_path)},
            **({"salesforce": {
                "enabled": True,
                "mode": mode,
                **({"voice": {"call_center_id": self.salesforce.summary.call_center_id}} if mode == "voice" else {}),
                "instance_url": self.salesforce.url,
                "api_version": "63.0",
                "auth": "token",
                "access_token": self.salesforce.app.auth.fixed_token,
                "ca_bundle": str(self.ca_path),
            }} if self.salesforce is not None and "salesforce" in targets else {}),
            **front,
            **({"live": dict(live)} if live else {}),
        }

    def settings_toml(self, state_path: str | Path = "aircall-sync-sandbox.sqlite3", mode: str = "task",
                      targets: tuple[str, ...] = ("salesforce",), live: dict | None = None) -> str:
        head = (
            f"# {BANNER}.\n"
            "# The credentials below are the sandbox's fixed test values, not secrets.\n"
        )
        return head + tomli_w.dumps(self.settings(state_path, mode, targets, live))
