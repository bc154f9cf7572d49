"""The real `aircall-sync serve` in a process of its own, and webhook deliveries to it over HTTP.

Deliveries are built the way Aircall's are (reference aircall-live.md §1.3 and
the recorded deliveries): the envelope ``{resource, event, timestamp, token,
data}`` with the call in webhook form (``call_uuid`` for ``sid``,
``participants`` for ``conference_participants``, ``user`` absent for an
unanswered inbound call).
"""

from __future__ import annotations

import copy
import json
import os
import queue
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
TOKEN = "live-test-webhook-token-4f2a"
_LISTENING = re.compile(r"listening on (https?://[\d.]+:\d+)(/\S*)")


SANDBOX_HOST = "http://aircall.sandbox.invalid"  # the emulator's store writes links with it; its API serves its own


def webhook_form(call: Mapping[str, Any], base: str | None = None) -> dict[str, Any]:
    """A call of the emulator's store as a webhook event carries it (links on the emulator's ``base``)."""
    data = copy.deepcopy(dict(call))
    if base:
        data = json.loads(json.dumps(data).replace(SANDBOX_HOST, base.removesuffix("/v1")))
    for key in ("recording_short_url", "voicemail_short_url"):  # only sent when asked for (REST)
        data.pop(key, None)
    sid = data.pop("sid", None)
    if sid:
        data["call_uuid"] = sid
    if "conference_participants" in data:
        data["participants"] = data.pop("conference_participants")
    if data.get("direction") == "inbound" and not data.get("answered_at"):
        data.pop("user", None)  # wire-formats Aircall §3: omitted for unanswered inbound calls
    for key in [k for k, v in data.items() if v is None and k in ("transferred_to", "transferred_by", "assigned_to")]:
        del data[key]
    return data


def envelope(event: str, data: Mapping[str, Any], timestamp: int | float, token: str = TOKEN) -> dict[str, Any]:
    return {"resource": "call", "event": event, "timestamp": timestamp, "token": token, "data": dict(data)}


def lifecycle(call: Mapping[str, Any]) -> list[dict[str, Any]]:
    """created (in progress), hungup (finished), ended (+30 s): what Aircall sends for a finished call."""
    done = webhook_form(call)
    started, ended = int(call["started_at"]), int(call["ended_at"] or call["started_at"])
    initial = dict(done, status="initial", answered_at=None, ended_at=None, duration=0, tags=[], comments=[])
    return [envelope("call.created", initial, started), envelope("call.hungup", done, ended),
            envelope("call.ended", done, ended + 30)]


class ServeProcess:
    """``aircall-sync serve --port 0`` as a subprocess; its log lines are kept in ``lines``."""

    def __init__(self, config: Path, *, token: str = TOKEN, extra_env: Mapping[str, str] | None = None,
                 args: tuple[str, ...] = (), port: int = 0, verify: str | bool = True):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRCALL_SYNC_")}
        env.update({"PYTHONPATH": str(REPO), "AIRCALL_WEBHOOK_TOKEN": token, "PYTHONUNBUFFERED": "1",
                    "NO_COLOR": "1", "TERM": "dumb"})
        env.update(extra_env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aircall_sync", "--config", str(config), *args, "serve", "--port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, env=env,
            cwd=str(REPO), start_new_session=True)
        self.lines: list[str] = []
        self._url: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.base = ""
        self.path = ""
        # The CA that signed serve's certificate, when it speaks HTTPS.
        self.verify = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            match = _LISTENING.search(line)
            if match:
                self._url.put(match.group(1) + "|" + match.group(2))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                base, path = self._url.get(timeout=0.2).split("|")
                self.base, self.path = base, path
                break
            except queue.Empty:
                assert self.proc.poll() is None, f"serve exited ({self.proc.returncode}):\n{self.output}"
                assert time.monotonic() < deadline, f"serve did not start:\n{self.output}"
        while True:
            try:
                if httpx.get(self.base + "/readyz", timeout=5, verify=self.verify).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None, f"serve exited ({self.proc.returncode}):\n{self.output}"
            assert time.monotonic() < deadline, f"serve is not ready:\n{self.output}"
            time.sleep(0.05)

    def post(self, body: Any, *, raw: bytes | None = None, headers: Mapping[str, str] | None = None) -> httpx.Response:
        if raw is not None:
            return httpx.post(self.base + self.path, content=raw, headers=dict(headers or {}), timeout=10,
                              verify=self.verify)
        return httpx.post(self.base + self.path, json=body, timeout=10, verify=self.verify)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.base + path, timeout=10, verify=self.verify)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def kill(self) -> int:
        return self.stop(signal.SIGKILL)


def worker_config(box, tmp: Path, targets=("salesforce", "front")) -> Path:
    """Settings for an in-process live worker on ``box``: no pacing, no batch window, a fixed token."""
    from conftest import write_settings

    tmp.mkdir(parents=True, exist_ok=True)
    settings = box.settings(tmp / "state.sqlite3", targets=targets)
    settings["aircall"]["requests_per_minute"] = 60000
    if "front" in settings:
        settings["front"]["requests_per_minute"] = 60000
    settings["live"] = {"webhook_token": "t", "batch_window": "0s"}
    return write_settings(tmp / "settings.toml", settings)


def finished_calls(box) -> list[dict]:
    """The sandbox's finished calls, in the order they started."""
    calls = [c for c in box.aircall_store.iter_calls(0, 2**40) if c["status"] == "done" and c["ended_at"]]
    return sorted(calls, key=lambda c: (c["started_at"], c["id"]))


def wait_for(condition, timeout: float = 10.0, what: str = "the condition") -> None:
    """Poll ``condition`` until true (a bound, not a sleep standing in for synchronisation)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:g} s"
        time.sleep(0.02)


class LocalBox:
    """An in-process Sandbox seen as ``reliability_harness.org_state`` reads a box."""

    def __init__(self, box):
        self.box = box
        store = box.sf_store
        self.seed_ids = {rec["Id"] for obj in store.schema for rec in store.records(obj)}
        self.info = {"aircall_url": box.aircall_server.url}  # links are served from the root, not /v1

    def records(self, obj: str) -> list[dict]:
        return self.box.sf_store.records(obj)


def front_state(box) -> dict:
    """What the tool wrote into the emulated Front, comparable across sandboxes: per contact handle, its
    conversations in order with their subject, status, assignee, message external ids and comments."""
    store = box.front_store
    out: dict[str, list] = {}
    for conversation in sorted(store.conversations.values(), key=lambda c: c.seq):
        handles = sorted({h for m in conversation.messages for h in _handles(m)})
        key = ",".join(handles) or conversation.id
        out.setdefault(key, []).append({
            "subject": conversation.subject, "status": conversation.status, "assignee": conversation.assignee_id,
            "messages": sorted(m.external_id or "" for m in conversation.messages),
            "comments": [c.body for c in conversation.comments],
        })
    return out


def _handles(message) -> list[str]:
    found = []
    for attr in ("sender_handle", "handle"):
        value = getattr(message, attr, None)
        if isinstance(value, str) and value.startswith("+"):
            found.append(value)
    for recipient in getattr(message, "recipients", None) or getattr(message, "to", None) or []:
        value = recipient if isinstance(recipient, str) else getattr(recipient, "handle", None)
        if isinstance(value, str) and value.startswith("+"):
            found.append(value)
    return found


class LiveWorker:
    """The live worker with its targets signed in over one state file, fed events directly (in-process)."""

    def __init__(self, config: Path):
        from aircall_sync.live.inbox import Inbox
        from aircall_sync.live.worker import Worker
        from aircall_sync.runner import aircall_client, connect_targets
        from aircall_sync.settings import load_settings
        from aircall_sync.state import State

        self.settings = load_settings(config)
        self.state = State.open(self.settings.sync.state_path)
        self.client = aircall_client(self.settings)
        self.targets = connect_targets(self.settings, self.settings.enabled_targets(), self.state)
        self.worker = Worker(self.settings, self.state, self.targets, self.client)
        self.inbox = Inbox(self.state)

    def deliver(self, *envelopes: dict) -> None:
        """Store events as the receiver does: without their token."""
        for body in envelopes:
            self.inbox.put({k: v for k, v in body.items() if k != "token"})

    def close(self) -> None:
        self.worker.write_lock.close()
        self.client.close()
        self.state.close()
