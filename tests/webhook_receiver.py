"""A webhook receiver on loopback for the emulator's tests: records every delivery it gets.

Shared by the tests of the emulated webhooks, messages and AI events
(``test_sandbox_aircall_*``). It is the sandbox's own LoopbackServer with an
app that records each POST and answers ``status`` (or a scripted fault).
"""

from __future__ import annotations

import json
import threading
from typing import Any

from aircall_sync.sandbox import Faults, LoopbackServer, Response


class Receiver:
    """Records every POST it gets; answers ``status`` (or a scripted fault)."""

    def __init__(self, ssl_context=None) -> None:
        self.status = 200
        self._lock = threading.Lock()
        self.got: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.faults = Faults()
        self.server = LoopbackServer(self, api="receiver", faults=self.faults, ssl_context=ssl_context).start()

    def _record(self, request) -> None:
        with self._lock:
            self.got.append((request.path, dict(request.headers), json.loads(request.body)))

    def handle(self, request):
        self._record(request)
        return Response(status=self.status)

    def fault_response(self, fault, request):
        self._record(request)
        return Response(status=fault.status)

    def url(self, path: str = "/aircall") -> str:
        return self.server.url + path

    def bodies(self, path: str | None = None, call_id: int | None = None) -> list[dict[str, Any]]:
        """What came to ``path``; with ``call_id``, that call's lifecycle events (resource "call": an AI
        event's data also has an id, and sentiment.created's is the call id)."""
        with self._lock:
            return [b for p, _, b in self.got
                    if (path is None or p == path)
                    and (call_id is None or (b["resource"] == "call" and b["data"].get("id") == call_id))]

    def events(self, path: str | None = None, call_id: int | None = None) -> list[str]:
        return [b["event"] for b in self.bodies(path, call_id)]

    def of_resource(self, resource: str, path: str | None = None) -> list[dict[str, Any]]:
        """Every body of that envelope ``resource`` (``"message"``, ``"conversation_intelligence"``…)."""
        with self._lock:
            return [b for p, _, b in self.got if (path is None or p == path) and b["resource"] == resource]

    def message_bodies(self, message_id: str, path: str | None = None) -> list[dict[str, Any]]:
        """One message's events, in arrival order."""
        return [b for b in self.of_resource("message", path) if b["data"]["id"] == message_id]

    def ai_bodies(self, call_id: int, path: str | None = None) -> list[dict[str, Any]]:
        """One call's AI events (their data's call_id is a string), in arrival order."""
        return [b for b in self.of_resource("conversation_intelligence", path) if b["data"]["call_id"] == str(call_id)]

    def stop(self) -> None:
        self.server.stop()
