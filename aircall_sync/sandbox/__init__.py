"""Offline emulators of the APIs aircall-sync talks to (DESIGN.md §7).

- :mod:`.server`: the generic loopback HTTP(S) server, request log and fault
  injection that every emulated API is mounted on.
- :mod:`.generator`: the deterministic Aircall data set and its compact store.
- :mod:`.aircall_api`: the Aircall public API v1 emulator (it routes
  ``/v1/webhooks`` to :mod:`.aircall_webhooks`, the webhook registry, and
  ``/v1/calls/:id/{transcription,summary,topics,sentiments,action_items}`` to
  :mod:`.aircall_ai`, the company's Aircall AI, whose text
  :mod:`.aircall_ai_content` writes, and ``/v1/contacts`` to
  :mod:`.aircall_contacts`, the company's shared contacts, which start with
  the contacts the generated calls carry).
- Live mode: :mod:`.webhook_delivery` POSTs webhook events to registered URLs
  (retries, auto-disable, seeded duplicate/reorder faults);
  :mod:`.live_traffic` places calls over time whose lifecycle
  (:mod:`.live_calls`) updates the store and publishes the events, followed
  by the AI events of eligible calls, and sends SMS/MMS/WhatsApp messages
  (:mod:`.live_messages`), which exist only as events; all of it runs on
  :mod:`.live_clock`'s scaled clock. ``Sandbox(SandboxOptions(live=True))``
  (:mod:`.stack`) wires them together.

Typical use in a test::

    server, store = start_aircall_sandbox(calls=500, seed=1, start=..., end=...)
    base_url = server.url + "/v1"      # what the tool's settings point at
    ...
    server.stop()
"""

from aircall_sync.sandbox.aircall_api import (
    DEFAULT_API_ID,
    DEFAULT_API_TOKEN,
    AircallApp,
    start_aircall_sandbox,
)
from aircall_sync.sandbox.generator import CallStore, generate
from aircall_sync.sandbox.server import Fault, Faults, LoopbackServer, Request, RequestRecord, Response

__all__ = [
    "DEFAULT_API_ID",
    "DEFAULT_API_TOKEN",
    "AircallApp",
    "CallStore",
    "Fault",
    "Faults",
    "LoopbackServer",
    "Request",
    "RequestRecord",
    "Response",
    "generate",
    "start_aircall_sandbox",
]
