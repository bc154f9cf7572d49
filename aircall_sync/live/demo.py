"""``aircall-sync demo --live``: calls placed in the sandbox, logged by the real ``serve`` as they end.

The sandbox's Aircall places a call of every kind, one after the other, and
delivers its webhook events (at least once, sometimes twice, in any order) to
a ``serve`` process started for the demo. Each call is printed when its record
lands in the emulated org, with the delay from the moment Aircall delivered
the event that ended it. Then two messages, and the AI summary of the first
call (its Aircall AI insights come minutes after the call, RULES §8). No
credentials; nothing leaves the machine.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import httpx

from aircall_sync.errors import ServiceError

__all__ = ["DEMO_CALLS", "run_live_demo"]

# One call of each kind the rules tell apart (RULES §1-2), then a repeat caller. The first talks long enough for
# Aircall AI (the emulator's threshold is 60 s): its summary lands later (RULES §8).
AI_TALK_S = 90
DEMO_CALLS = (
    dict(kind="inbound_answered", tags=("VIP",), comments=("Wants the annual plan",), talk_s=AI_TALK_S),
    dict(kind="outbound_answered", recording=True),
    dict(kind="missed", missed_call_reason="agents_did_not_answer"),
    dict(kind="voicemail"),
    dict(kind="outbound_unanswered"),
    dict(kind="inbound_answered", external_number="unknown", transfer="user"),
)
TIME_SCALE = 0.05  # the demo's calls run 20 times faster: the 30 s before call.ended take 1.5 s
FINISHED = ("call.hungup", "call.ended")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run_live_demo(out: IO[str], *, seed: int = 1, mode: str = "task", calls: int = 50) -> None:
    from aircall_sync.sandbox.stack import BANNER, Sandbox, SandboxOptions
    from aircall_sync.sandbox.webhook_delivery import DeliveryOptions

    def say(text: str = "") -> None:
        out.write(text + "\n")
        out.flush()

    delivery = DeliveryOptions(p_duplicate=0.2, p_reorder=0.2, reorder_hold_s=20.0, duplicate_delay_s=5.0)
    with tempfile.TemporaryDirectory(prefix="aircall-sync-demo-live-") as tmp, \
            Sandbox(SandboxOptions(calls=calls, seed=seed, days=2, live=True, time_scale=TIME_SCALE,
                                   webhook_delivery=delivery, front=False)) as box:
        from aircall_sync.sandbox.aircall_webhooks import AI_EVENTS, CALL_EVENTS, MESSAGE_EVENTS

        port = _free_port(box.options.host)
        receiver = box.register_receiver(port, events=CALL_EVENTS + MESSAGE_EVENTS + AI_EVENTS)
        config = Path(tmp) / "settings.toml"
        # Aircall AI on (RULES §8): the emulated company has the AI package.
        config.write_text(box.settings_toml(Path(tmp) / "state.sqlite3", mode=mode, live=receiver)
                          + "\n[aircall.ai]\nenabled = true\n", "utf-8")
        say(f"{BANNER}.\nAircall's webhook points at {receiver['public_url']}; starting `aircall-sync serve` there.")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRCALL_SYNC_")}
        serve = subprocess.Popen([sys.executable, "-m", "aircall_sync", "--quiet", "--config", str(config), "serve"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                 text=True, env=env, start_new_session=True)
        try:
            _wait_ready(serve, f"http://{box.options.host}:{port}/readyz")
            say(f"serve is ready. Placing {len(DEMO_CALLS)} calls, one of each kind; each line comes when its "
                f"record is in the sandbox org.\n")
            first = _place_and_watch(box, say, mode)
            say("\nMessages exist only as webhook events (Aircall's API lists none): two are sent now.")
            _send_and_watch_messages(box, say)
            say("\nAircall AI produces a summary, topics, a sentiment and action items minutes after a call; "
                "the first call's land in its record:")
            _watch_ai_summary(box, say, mode, next((c.id for c in box.traffic.placed if c.spec.talk_s == AI_TALK_S), None))
            box.wait_idle(timeout=60, finalize=False)  # the tags, comments and recordings that come later
            _wait_drained(f"http://{box.options.host}:{port}/readyz")
            _summary(box, say, mode, first)
        finally:
            if serve.poll() is None:
                os.killpg(serve.pid, signal.SIGTERM)
            try:
                code = serve.wait(45)
            except subprocess.TimeoutExpired:
                os.killpg(serve.pid, signal.SIGKILL)
                code = serve.wait()
            errors = serve.stderr.read() if serve.stderr else ""
            if serve.stderr:
                serve.stderr.close()
        say(f"\nserve stopped on SIGTERM (exit {code}). Next: `aircall-sync webhooks install --url https://...` "
            "with your own Aircall account, then `aircall-sync serve` behind a TLS proxy (see the README).")
        if code != 0:
            raise ServiceError(f"serve exited {code}: {errors.strip().splitlines()[-1] if errors.strip() else ''}")


def _wait_ready(proc: subprocess.Popen, url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise ServiceError(f"serve did not start (exit {proc.returncode}): {err.strip()[-500:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise ServiceError(f"serve did not answer {url} within {timeout:g} s")


def _wait_drained(url: str, timeout: float = 30) -> None:
    """Until serve has processed every event it acknowledged (its inbox is empty)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).json().get("inbox_depth") == 0:
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.1)


def _place_and_watch(box, say, mode: str) -> dict[int, str]:
    """Place the calls and print each as its record lands; returns what each record said then."""
    record_of = "VoiceCall" if mode == "voice" else "Task"
    key = "VendorCallKey" if mode == "voice" else "CallObject"
    now = box.live_clock.now()
    placed: dict[int, dict] = {}
    for i, spec in enumerate(DEMO_CALLS):
        call_id = box.traffic.place(at=now + 8 * i, **{"talk_s": 40, **spec})
        placed[call_id] = spec
    ended_seen: dict[int, float] = {}  # when the event that ended it was delivered (real time)
    shown: dict[int, str] = {}
    deadline = time.monotonic() + 120
    seen_log = 0
    while len(shown) < len(placed) and time.monotonic() < deadline:
        log = box.webhook_delivery.log
        for record in log[seen_log:]:
            if record.call_id in placed and record.event in FINISHED and record.status == 200:
                ended_seen.setdefault(record.call_id, time.monotonic())
        seen_log = len(log)
        landed = {str(r.get(key)): r for r in box.sf_store.records(record_of)}
        for call_id in placed:
            if call_id in shown or str(call_id) not in landed or call_id not in ended_seen:
                continue
            delay = time.monotonic() - ended_seen[call_id]
            record = landed[str(call_id)]
            what = _describe(record)
            shown[call_id] = what
            say(f"  call {call_id} ({placed[call_id]['kind'].replace('_', ' ')}): {record_of} {record['Id']} "
                f"\"{what}\", {delay:.1f} s after Aircall delivered its end")
        time.sleep(0.05)
    for call_id in placed:
        if call_id not in shown:
            say(f"  call {call_id}: not logged within 2 minutes (see `aircall-sync status`)")
    return shown


def _send_and_watch_messages(box, say) -> None:
    """An inbound SMS and an outbound WhatsApp message; each printed when its Task is in the org (RULES §7)."""
    now = box.live_clock.now()
    sent = {
        box.traffic.message("inbound", at=now, external_number="pool",
                            body="Hi, can I move my delivery to Friday?"): ("inbound SMS", time.monotonic()),
        box.traffic.message("outbound", at=now, channel="whatsapp", names_user=True,
                            body="Friday works, see you then!"): ("outbound WhatsApp", time.monotonic()),
    }
    shown: set[str] = set()
    deadline = time.monotonic() + 60
    while len(shown) < len(sent) and time.monotonic() < deadline:
        tasks = {str(t.get("CallObject")): t for t in box.sf_store.records("Task")}
        for message_id, (label, at) in sent.items():
            task = tasks.get(f"message:{message_id}")
            if message_id in shown or task is None:
                continue
            shown.add(message_id)
            say(f"  message {message_id} ({label}): Task {task['Id']} \"{task.get('Subject')}\", "
                f"{time.monotonic() - at:.1f} s after it was sent")
        time.sleep(0.05)
    for message_id in sent:
        if message_id not in shown:
            say(f"  message {message_id}: not logged within a minute (see `aircall-sync status`)")


def _watch_ai_summary(box, say, mode: str, call_id: int | None) -> None:
    """The first call's AI summary, printed when it is in its record (R-AI-4), with the delay after Aircall
    delivered ``summary.created``."""
    if call_id is None:
        return
    obj, key = ("aircall__Aircall_Voice__c", "aircall__Call_Id__c") if mode == "voice" else ("Task", "CallObject")
    delivered: float | None = None
    seen_log = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        log = box.webhook_delivery.log
        for record in log[seen_log:]:
            if record.call_id == call_id and record.event == "summary.created" and record.status == 200:
                delivered = delivered or time.monotonic()
        seen_log = len(log)
        record = next((r for r in box.sf_store.records(obj) if str(r.get(key)) == str(call_id)), None)
        summary = _summary_of(record, mode) if record else None
        if summary and delivered is not None:
            say(f"  call {call_id}: {obj} {record['Id']} now holds the AI summary \"{_short(summary)}\", "
                f"{time.monotonic() - delivered:.1f} s after Aircall delivered summary.created")
            return
        time.sleep(0.05)
    say(f"  call {call_id}: no AI summary within 2 minutes (see `aircall-sync status`)")


def _summary_of(record: dict, mode: str) -> str | None:
    if mode == "voice":
        return record.get("aircall__AI_Summary__c") or None
    description = record.get("Description") or ""
    marker = "AI insights:\nSummary: "
    return description.split(marker, 1)[1].split("\n", 1)[0] if marker in description else None


def _short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(record: dict) -> str:
    return record.get("Subject") or f"{record.get('CallType')} {record.get('FromPhoneNumber')}"


def _summary(box, say, mode: str, first: dict[int, str]) -> None:
    log = box.webhook_delivery.log
    counters = box.webhook_delivery.counters
    record_of = "VoiceCall" if mode == "voice" else "Task"
    key = "VendorCallKey" if mode == "voice" else "CallObject"
    records = {str(r.get(key)): r for r in box.sf_store.records(record_of)
               if not str(r.get(key)).startswith("message:")}  # messages' Tasks are counted apart
    later = [(call_id, _describe(records[str(call_id)])) for call_id in first
             if str(call_id) in records and _describe(records[str(call_id)]) != first[call_id]]
    if later:
        say("\nWhat came after the end (a voicemail, tags, comments, a recording) updated the same records:")
        for call_id, now in later:
            say(f"  call {call_id}: now \"{now}\"")
    others = len(records) - len(first)
    say(f"\nAircall delivered {len(log)} webhook requests ({counters.get('duplicates', 0)} duplicates, "
        f"{counters.get('held', 0)} held back to arrive out of order). The org holds one {record_of} per placed "
        f"call" + (f", and {others} for calls that ended 0.5 to 2.5 hours ago, which the reconciler logged when "
                   "serve started." if others else "."))
