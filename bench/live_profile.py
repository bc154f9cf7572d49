"""The ``live`` profile of ``bench/run.py``: ``serve`` fed by the Aircall emulator's webhooks (DESIGN §10).

One sandbox (Aircall with live traffic and webhook delivery, and the target's
emulator) runs in the bench process, as ``aircall-sync demo --live`` runs it;
``serve`` runs in a process of its own, started exactly as a user starts it:

    python -m aircall_sync --config bench.toml serve        (AIRCALL_WEBHOOK_TOKEN in its environment)

The sandbox's Aircall has one day of history (``--live-calls-per-day`` calls,
spread evenly over the last 24 hours) and a webhook registered for serve's
port. The phases, in this order, on the same serve and state file:

1. start: serve looks at its webhook and reconciles ``live.reconcile_window``
   (2 h ending ``sync.lag``, 30 min, ago); the bench waits for its log line.
2. steady: ``--calls`` calls (default 300) placed at ``--live-rate`` calls a
   minute, the background mix of the emulator (every call kind, transfers,
   conferences, tags, notes, unknown and anonymous callers), talk times of 10
   to 60 s; the emulator runs each call's lifecycle on its clock
   (``--live-time-scale``, default 1: real time) and delivers its events at
   least once (5% duplicated, 5% held back to arrive out of order).
3. burst: ``--live-burst`` answered outbound calls (default 100) whose
   ``call.hungup`` events all come due at the same moment (the emulator's
   clock is moved forward to it): they are delivered within about a second.
4. ack: serve's receiver driven directly, from a process of its own, with
   realistic envelopes (calls of the history, in webhook form, with the
   webhook's token), one connection per POST as Aircall opens them: first
   ``--live-posts`` / 10 POSTs from one client (a lone request's answer
   time), then ``--live-posts`` POSTs (default 2,000; 10% of them
   re-deliveries of an earlier one) from ``--live-clients`` concurrent
   clients (default 16).
5. restart: SIGTERM (serve must exit 0 with an empty inbox), start again: the
   start's reconcile over a window now logged already (the steady state).
6. sync: serve stopped, ``aircall-sync sync`` twice on the same state, to
   count what a cron run reads from Aircall over ``sync.revisit`` (24 h).

What is measured:

- delay (steady, burst): from the moment serve acknowledged (200) the first
  delivery that shows a call finished (``call.hungup`` or ``call.ended``,
  whichever came first) to the moment the call's record is readable in the
  emulated store (Salesforce Task or VoiceCall by its call key; Front: a
  message with the call's ``external_id``). The acknowledgement time is the
  emulator's own record of the delivery (``DeliveryRecord.at`` on its clock,
  converted to this process's monotonic clock); the store is polled every
  20 ms by the bench, so a delay is over-stated by up to 20 ms. p50, p95, max.
- requests per call: counted on the emulators' servers, between the ends of
  the phases (each phase ends when every delivery has settled and serve's
  inbox is empty, after the emulator's clock is moved on past the calls'
  late events: tags, notes, recordings, assignments). The worker's cost
  (steady, burst, ack phases) is apart from the reconciler's (the start and
  restart phases, the only other requests serve makes).
- acknowledgement: each POST's time from connect to the answer read, in the
  load process; every answer must be 200, every distinct event must be in the
  inbox once (rows added to the state file's events table) and the repeats
  counted as duplicates (``/metrics``); accepted/s = 200s / the load's wall time.
- a day's Aircall requests: 24 h / ``live.reconcile_every`` reconciles, each
  costing what the restart's reconcile cost, plus 24 hourly webhook checks,
  against 144 cron ``sync`` runs (every 10 minutes) each costing what the
  second ``sync`` cost.

Correctness is checked on the way, and a failure marks the row: every placed
call logged (Front skips anonymous callers, RULES R-FRONT-1), one record per
call, serve exits 0 on SIGTERM, no emulator error.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FINISHED = ("call.hungup", "call.ended")
POLL = 0.02  # seconds between looks at the stores (the bench polls; no sleep stands for synchronisation)
DAY = 86_400
CRON_EVERY_MINUTES = 10  # DESIGN §10: a cron sync every 10 minutes
CRON_RUNS_A_DAY = 24 * 60 // CRON_EVERY_MINUTES
WEBHOOK_CHECKS_A_DAY = 24  # serve looks at its webhook hourly
APIS = ("aircall", "salesforce", "front")
_RECONCILE_LINE = re.compile(r"reconcile (\S+)\.\.(\S+): (\d+) call\(s\)")


@dataclass
class LiveConfig:
    calls: int = 300  # steady phase
    rate: float = 60.0  # calls placed a minute (real time)
    burst: int = 100
    posts: int = 2000
    clients: int = 16
    repeat_share: float = 0.1  # share of the POSTs that re-deliver an earlier event
    calls_per_day: int = 5000
    time_scale: float = 1.0
    talk: tuple[int, int] = (10, 60)
    burst_talk: int = 60
    p_duplicate: float = 0.05
    p_reorder: float = 0.05
    seed: int = 1
    syncs: int = 2
    restart: bool = True
    phase_timeout: float = 900.0
    latency_ms: float = 50.0  # added to every request of every emulated API (issue 12: 50 ms)


@dataclass
class Delays:
    calls: int = 0  # placed
    skipped: int = 0  # not logged by the target's rules (Front: no external number)
    landed: int = 0
    values: list[float] = field(default_factory=list)
    spread: float | None = None  # first to last finishing delivery (burst)
    missing: list[str] = field(default_factory=list)

    def pct(self, q: float) -> float | None:
        if not self.values:
            return None
        ordered = sorted(self.values)
        # nearest rank
        return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class Ack:
    posts: int = 0
    distinct: int = 0
    clients: int = 0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    wall: float = 0.0
    stored: int | None = None
    duplicates: float | None = None
    delivered: float | None = None
    drained: float | None = None
    calls: int = 0

    def pct(self, q: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class Reconcile:
    window_calls: int | None = None
    window: str = ""
    requests: dict[str, dict[str, int]] = field(default_factory=dict)  # api -> endpoint -> n


@dataclass
class LiveResult:
    mode: str
    status: str = "failed"
    problems: list[str] = field(default_factory=list)
    steady: Delays = field(default_factory=Delays)
    burst: Delays = field(default_factory=Delays)
    acks: list[Ack] = field(default_factory=list)  # one client (baseline), then the concurrent load
    ack_calls: int = 0
    first_reconcile: Reconcile = field(default_factory=Reconcile)
    steady_reconcile: Reconcile | None = None
    syncs: list[dict[str, dict[str, int]]] = field(default_factory=list)
    sync_calls: list[str] = field(default_factory=list)
    phases: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # phase -> api -> endpoint -> n
    serve_cpu: dict[str, float] = field(default_factory=dict)
    steal: float | None = None
    emulator_cpu: float | None = None
    wall: float | None = None
    serve_rss_mib: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    records: int = 0
    duplicate_records: int = 0


# ---------------------------------------------------------------- helpers


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _cpu_of(pid: int) -> float | None:
    """User + system CPU seconds of a running process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _self_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _count(box: Any, endpoint: Any, servers: Any) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for server in servers(box):
        for r in server.requests:
            per = out.setdefault(r.api, {})
            key = endpoint(r.method, r.path)
            per[key] = per.get(key, 0) + 1
    return out


def _minus(after: dict[str, dict[str, int]], before: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for api, kinds in after.items():
        for kind, n in kinds.items():
            d = n - before.get(api, {}).get(kind, 0)
            if d:
                out.setdefault(api, {})[kind] = d
    return out


def total(counts: dict[str, dict[str, int]], api: str, *, exclude: tuple[str, ...] = ()) -> int:
    return sum(n for kind, n in counts.get(api, {}).items() if not any(x in kind for x in exclude))


def _emulator_errors(box: Any, servers: Any) -> int:
    errors = sum(len(s.errors) for s in servers(box))
    if box.salesforce is not None:
        errors += len(getattr(box.salesforce.app, "bulk_errors", ()))
    if box.traffic is not None:
        errors += len(box.traffic.errors)
    return errors


class Landed:
    """Which calls have a record readable in the emulated target (polled; cheap enough every 20 ms)."""

    def __init__(self, box: Any, mode: str):
        self.box, self.mode = box, mode

    def call_ids(self) -> list[str]:
        """One entry per record (a call logged twice shows twice)."""
        if self.mode == "front":
            store = self.box.front_store
            with store.lock:
                ids = [external for (_inbox, external) in store._external_ids]
            # Activities: aircall-{id}-summary|duration|media|combined; one call counts once.
            return sorted({m.group(1) for x in ids if (m := re.fullmatch(r"aircall-(\d+)-\w+", x))})
        store = self.box.sf_store
        obj, key = ("VoiceCall", "VendorCallKey") if self.mode == "voice" else ("Task", "CallObject")
        with store._lock:  # records() copies every field of every record: too slow to poll
            return [str(r.get(key)) for r in store._data[obj].values() if r.get(key)]

    def duplicates(self) -> tuple[int, int]:
        keys = self.call_ids()
        return len(keys), len(keys) - len(set(keys))


class Watch:
    """The delivery log and the store, read together: when each call's end was acknowledged, when it landed."""

    def __init__(self, box: Any, landed: Landed):
        self.box = box
        self.landed = landed
        self.seen = 0
        self.ended_at: dict[str, float] = {}  # call id -> monotonic time of its first finishing 200
        self.deliveries = 0

    def read_log(self) -> None:
        """Convert the new delivery records' emulated times to this process's monotonic clock.

        Call before every ``clock.advance``: the conversion assumes the clock did not jump since.
        """
        clock = self.box.live_clock
        log = self.box.webhook_delivery.log
        now_mono, now_emu = time.monotonic(), clock.now()
        for record in log[self.seen:]:
            self.deliveries += 1
            if record.call_id is not None and record.event in FINISHED and record.ok:
                at = now_mono - (now_emu - record.at) * clock.time_scale
                self.ended_at.setdefault(str(record.call_id), at)
        self.seen = len(log)

    def follow(self, ids: list[str], deadline: float, *, loggable: Any) -> Delays:
        """Poll until every call that ``loggable(call_id)`` says the target logs landed (or the deadline);
        the delays of those that did. ``loggable`` is asked once the call's end was delivered."""
        landed_at: dict[str, float] = {}
        wanted = set(ids)
        skipped: set[str] = set()
        judged: set[str] = set()
        while time.monotonic() < deadline:
            self.read_log()
            now = time.monotonic()
            for key in self.landed.call_ids():
                if key in wanted and key not in landed_at and key in self.ended_at:
                    landed_at[key] = now
            for key in wanted.intersection(self.ended_at) - judged:
                judged.add(key)
                if not loggable(key):
                    skipped.add(key)
            if judged == wanted and wanted - skipped <= set(landed_at):
                break
            time.sleep(POLL)
        self.read_log()
        expected = wanted - skipped
        result = Delays(calls=len(wanted), skipped=len(skipped))
        result.values = [max(0.0, landed_at[k] - self.ended_at[k]) for k in ids if k in landed_at]
        result.landed = len(landed_at)
        result.missing = sorted(expected - set(landed_at))
        ends = [self.ended_at[k] for k in ids if k in self.ended_at]
        result.spread = (max(ends) - min(ends)) if ends else None
        return result


class Serve:
    """``python -m aircall_sync --config X serve``, as a user runs it; its log in a file."""

    def __init__(self, config: Path, work: Path, token: str, base: str, name: str):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRCALL_SYNC_")}
        env.update({"AIRCALL_WEBHOOK_TOKEN": token, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"})
        self.log_path = work / f"serve-{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "aircall_sync", "--config", str(config), "serve"],
                                     stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=work, env=env, start_new_session=True)
        self.base = base
        self.rss_mib: float | None = None

    def text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def tail(self, lines: int = 6) -> str:
        return " | ".join(self.text().strip().splitlines()[-lines:])

    def get(self, path: str, timeout: float = 10) -> Any:
        import httpx

        return httpx.get(self.base + path, timeout=timeout)

    def wait_ready(self, timeout: float = 90) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited {self.proc.returncode} before it was ready: {self.tail()}")
            try:
                if self.get("/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"serve was not ready within {timeout:g} s: {self.tail()}")

    def wait_line(self, pattern: re.Pattern, count: int, timeout: float) -> list[re.Match]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = list(pattern.finditer(self.text()))
            if len(found) >= count:
                return found
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited {self.proc.returncode}: {self.tail()}")
            time.sleep(0.05)
        raise RuntimeError(f"serve's log did not show {pattern.pattern!r} within {timeout:g} s: {self.tail()}")

    def depth(self) -> int | None:
        try:
            return int(self.get("/readyz", timeout=5).json().get("inbox_depth"))
        except Exception:  # noqa: BLE001 - a look, retried by the caller
            return None

    def wait_drained(self, timeout: float) -> float:
        began = time.monotonic()
        deadline = began + timeout
        while time.monotonic() < deadline:
            if self.depth() == 0:
                return time.monotonic() - began
            time.sleep(POLL)
        raise RuntimeError(f"serve's inbox was not empty within {timeout:g} s: {self.tail()}")

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for line in self.get("/metrics").text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
        return out

    def cpu(self) -> float | None:
        return _cpu_of(self.proc.pid)

    def stop(self, timeout: float = 60) -> int | None:
        if self.proc.poll() is None:
            self.rss_mib = _rss_mib(self.proc.pid)
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            code = None
        self._log.close()
        return code


def _deliveries_total(metrics: dict[str, float]) -> float:
    return sum(v for k, v in metrics.items() if k.startswith("aircall_sync_deliveries_total{"))


def _events_stored(state_path: Path) -> int:
    with sqlite3.connect(f"file:{state_path}?mode=ro", uri=True, timeout=30) as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


# ---------------------------------------------------------------- the load (a process of its own)


def _post_all(url: str, bodies: list[bytes], clients: int) -> dict:
    """POST every body, ``clients`` at a time, one connection each (as Aircall's deliveries come)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    results: list[tuple[int | None, float] | None] = [None] * len(bodies)
    lock = threading.Lock()
    nxt = iter(range(len(bodies)))
    headers = {"Content-Type": "application/json", "User-Agent": "axios/1.7.7", "aircall-origin": "webhooks"}

    def client() -> None:
        while True:
            with lock:
                i = next(nxt, None)
            if i is None:
                return
            began = time.perf_counter()
            status: int | None = None
            try:
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
                conn.request("POST", parts.path, bodies[i], headers)
                response = conn.getresponse()
                response.read()
                status = response.status
                conn.close()
            except (OSError, http.client.HTTPException):
                status = None
            results[i] = (status, time.perf_counter() - began)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    return {"results": results, "wall": wall}


def _load_child(conn: Any, url: str, bodies: list[bytes], clients: int) -> None:
    try:
        conn.send(_post_all(url, bodies, clients))
    except BaseException as exc:  # noqa: BLE001
        conn.send({"error": repr(exc)})
    finally:
        conn.close()


def run_load(url: str, bodies: list[bytes], clients: int, timeout: float) -> dict:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_load_child, args=(child, url, bodies, clients), name="bench-live-load", daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise RuntimeError(f"the load did not finish within {timeout:g} s")
        reply = parent.recv()
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.terminate()
        parent.close()
    if "error" in reply:
        raise RuntimeError("the load failed: " + reply["error"])
    return reply


def _ack_bodies(box: Any, token: str, cutoff: int, seed: int, posts: int, repeat_share: float,
                skip: set[str]) -> tuple[list[bytes], int, set[str], set[str]]:
    """Envelopes of history calls that started before ``cutoff`` (outside every reconcile window) and
    are not in ``skip``: per call created, hungup, ended, and one tagged per tag; then repeats of
    earlier ones, shuffled. Returns the bodies, how many are distinct, the calls whose finishing event
    is among them (they must be logged) and every call they touch."""
    from aircall_sync.sandbox.live_calls import webhook_call

    store = box.aircall_store
    base = box.aircall_server.url
    rng = random.Random(f"bench-live-ack:{seed}:{posts}")
    repeats = int(posts * repeat_share)
    wanted = posts - repeats
    distinct: list[tuple[str, bool, bytes]] = []
    for pos in reversed(store.window(None, cutoff)):
        if len(distinct) >= wanted:
            break
        rest = store.render_at(pos, base=base, fetch_contact=False, fetch_short_urls=False)
        if rest.get("status") != "done" or not rest.get("ended_at") or str(rest["id"]) in skip:
            continue
        done = webhook_call(rest)
        initial = dict(done, status="initial", answered_at=None, ended_at=None, duration=0, tags=[], comments=[])
        initial.pop("missed_call_reason", None)
        started, ended = int(rest["started_at"]), int(rest["ended_at"])
        events = [("call.created", initial, started), ("call.hungup", done, ended), ("call.ended", done, ended + 30)]
        for k, _tag in enumerate(done.get("tags") or []):
            events.append(("call.tagged", done, ended + 40 + k))
        for name, data, ts in events:
            body = {"resource": "call", "event": name, "timestamp": ts, "token": token, "data": data}
            distinct.append((str(rest["id"]), name != "call.created",
                             json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")))
    distinct = distinct[:wanted]
    finished = {call for call, fin, _ in distinct if fin}
    touched = {call for call, _, _ in distinct}
    bodies = [b for _, _, b in distinct]
    bodies += [rng.choice(bodies) for _ in range(repeats)]
    rng.shuffle(bodies)
    return bodies, len(distinct), finished, touched


# ---------------------------------------------------------------- the run


def _placed_specs(box: Any, cfg: LiveConfig, count: int) -> list[Any]:
    from aircall_sync.sandbox.live_calls import background_specs

    tags = [t.name for t in box.aircall_store.world.tags]
    specs = background_specs(cfg.seed, tags)
    rng = random.Random(f"bench-live-talk:{cfg.seed}")
    return [dataclasses.replace(next(specs), talk_s=rng.randint(*cfg.talk)) for _ in range(count)]


def _loggable(box: Any, mode: str) -> Any:
    """Whether the target logs a call: Salesforce every call; Front not one without an external number
    (R-FRONT-1, R-CALL-4: anonymous, unparsable or impossible numbers), judged by the tool's own rule."""
    from aircall_sync import rules
    from aircall_sync.aircall.models import Call

    def loggable(call_id: str) -> bool:
        if mode != "front":
            return True
        rest = box.aircall_store.get(int(call_id), base=box.aircall_server.url)
        return rest is not None and rules.external_number(Call.parse(rest)) is not None

    return loggable


def _settle(box: Any, watch: Watch, serve: Serve, advance: float, timeout: float, *, every_step: bool) -> None:
    """Move the emulator's clock on, let the deliveries settle, drain serve.

    ``every_step``: also wait for every step of the placed calls (their late events: tags, notes,
    recordings, assignments), which ``advance`` must have brought due, or this waits in real time.
    """
    watch.read_log()
    if advance > 0:
        box.live_clock.advance(advance)
    settled = (box.wait_idle(timeout=timeout, finalize=False) if every_step
               else box.webhook_delivery.wait_idle(timeout))
    if not settled:
        raise RuntimeError("the emulator's deliveries did not settle")
    watch.read_log()
    serve.wait_drained(timeout)


def run_live(mode: str, cfg: LiveConfig, *, log: Any, endpoint: Any, servers: Any, steal: Any,
             keep: Path | None = None) -> LiveResult:
    from aircall_sync.sandbox.stack import Sandbox, SandboxOptions
    from aircall_sync.sandbox.webhook_delivery import DeliveryOptions

    result = LiveResult(mode)
    began, steal0, cpu0 = time.monotonic(), steal(), _self_cpu()
    end = datetime.now(UTC).replace(microsecond=0)
    # Spread evenly: the generator shapes arrival times by business hours on spans of a day or more only.
    history_days = (DAY - 60) / DAY
    delivery = DeliveryOptions(p_duplicate=cfg.p_duplicate, p_reorder=cfg.p_reorder,
                               reorder_hold_s=20.0, duplicate_delay_s=5.0)
    from aircall_sync.sandbox.server import Faults

    slow = Faults(latency_ms=cfg.latency_ms) if cfg.latency_ms else None
    front = mode == "front"
    options = SandboxOptions(calls=cfg.calls_per_day, seed=cfg.seed, days=history_days, end=end, live=True,
                             time_scale=cfg.time_scale, webhook_delivery=delivery,
                             salesforce=mode in ("task", "voice"), front=front,
                             aircall_faults=slow, salesforce_http_faults=slow,
                             front_faults=slow if front else None)
    with tempfile.TemporaryDirectory(prefix="aircall-sync-bench-live-") as tmp, Sandbox(options) as box:
        work = Path(tmp)
        try:
            _run_phases(box, mode, cfg, result, work, log=log, endpoint=endpoint, servers=servers)
        except Exception as exc:  # noqa: BLE001 - the row says what failed
            result.problems.append(f"{type(exc).__name__}: {exc}")
        finally:
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                for src in work.glob("*"):
                    if src.suffix in (".log", ".toml", ".txt"):
                        (keep / f"live-{mode}-{src.name}").write_bytes(src.read_bytes())
        errors = _emulator_errors(box, servers)
        if errors:
            result.problems.append(f"{errors} emulator error(s)")
        result.records, result.duplicate_records = Landed(box, mode).duplicates()
        if result.duplicate_records:
            result.problems.append(f"{result.duplicate_records} call(s) logged twice")
    result.wall = time.monotonic() - began
    result.emulator_cpu = _self_cpu() - cpu0
    if steal0 is not None and (after := steal()) is not None:
        result.steal = after - steal0
    result.status = "ok" if not result.problems else "failed"
    return result


def _run_phases(box: Any, mode: str, cfg: LiveConfig, result: LiveResult, work: Path, *, log: Any,
                endpoint: Any, servers: Any) -> None:
    import tomli_w

    host = box.options.host
    port = _free_port(host)
    receiver = box.register_receiver(port)
    token = receiver["webhook_token"]
    state_path = work / "state.sqlite3"
    settings = box.settings(state_path, mode=mode if mode != "front" else "task",
                            targets=("front",) if mode == "front" else ("salesforce",),
                            live={**receiver, "webhook_token": "${AIRCALL_WEBHOOK_TOKEN}"})
    config = work / "bench.toml"
    config.write_text(tomli_w.dumps(settings), encoding="utf-8")
    result.settings = {"reconcile_every": "30m", "reconcile_window": "2h", "batch_window": "1s", "lag": "30m",
                       "revisit": "24h"}  # the defaults: the settings file sets none of them
    base = f"http://{host}:{port}"
    landed = Landed(box, mode)
    watch = Watch(box, landed)
    count = lambda: _count(box, endpoint, servers)
    scale = cfg.time_scale
    timeout = cfg.phase_timeout

    # 1. start: the webhook check and the first reconcile (it logs the window's calls: a catch-up).
    log(f"  live {mode}: serve on {base}; history of {cfg.calls_per_day:,} calls over the last 24 h")
    before = count()
    serve = Serve(config, work, token, base, "1")
    try:
        serve.wait_ready()
        [line] = serve.wait_line(_RECONCILE_LINE, 1, timeout)
        serve.wait_drained(timeout)
        c0 = count()
        result.first_reconcile = Reconcile(int(line.group(3)), f"{line.group(1)}..{line.group(2)}",
                                           _minus(c0, before))
        cpu = serve.cpu() or 0.0
        result.serve_cpu["start"] = cpu
        log(f"  live {mode}: first reconcile read {line.group(3)} call(s)")

        # 2. steady: calls placed at a steady rate; each delay from its end's delivery to its record.
        specs = _placed_specs(box, cfg, cfg.calls)
        spacing = 60.0 / cfg.rate / scale  # emulated seconds between two placements
        t0 = box.live_clock.now() + 2 / scale
        ids = [box.traffic.place_spec(spec, at=t0 + i * spacing) for i, spec in enumerate(specs)]
        last_start = t0 + (len(ids) - 1) * spacing
        wait = (last_start - box.live_clock.now()) * scale + 400 * scale + 120
        log(f"  live {mode}: steady: {len(ids)} calls at {cfg.rate:g}/min (about {wait / 60:.1f} min at most)")
        result.steady = watch.follow([str(i) for i in ids], time.monotonic() + wait, loggable=_loggable(box, mode))
        if result.steady.missing:
            result.problems.append(f"steady: {len(result.steady.missing)} call(s) not logged, e.g. "
                                   f"{result.steady.missing[:3]}")
        _settle(box, watch, serve, 300, timeout, every_step=True)  # tags, notes, recordings, assignments: up to ~3 min later
        c1 = count()
        result.phases["steady"] = _minus(c1, c0)
        result.serve_cpu["steady"] = (serve.cpu() or 0.0) - cpu
        cpu = serve.cpu() or 0.0

        # 3. burst: answered outbound calls whose hang-ups all come due at one moment.
        rng = random.Random(f"bench-live-burst:{cfg.seed}")
        from aircall_sync.sandbox.live_calls import CallSpec

        t0 = box.live_clock.now() + 1
        burst_ids = [box.traffic.place_spec(
            CallSpec("outbound_answered", external_number="unknown" if rng.random() < 0.1 else "pool",
                     talk_s=cfg.burst_talk, recording=False), at=t0) for _ in range(cfg.burst)]
        # Answered 3-25 s after the start, hung up talk_s later, call.ended 30 s after that: move the clock
        # past every answer, let those deliveries settle, then past every hang-up (before any call.ended).
        _settle(box, watch, serve, max(0.0, t0 + 26 - box.live_clock.now()), timeout, every_step=False)
        hangups = max(at for c in burst_ids for at, event in box.traffic.call(c).events if event == "call.hungup")
        first_ended = min(at for c in burst_ids for at, event in box.traffic.call(c).events if event == "call.ended")
        watch.read_log()
        jump = hangups + 0.5 - box.live_clock.now()
        if box.live_clock.now() + jump >= first_ended:
            raise RuntimeError("the burst's hang-ups cannot be brought together before its first call.ended")
        log(f"  live {mode}: burst: {len(burst_ids)} calls hang up at once")
        box.live_clock.advance(max(0.0, jump))
        result.burst = watch.follow([str(i) for i in burst_ids], time.monotonic() + timeout,
                                    loggable=_loggable(box, mode))
        if result.burst.missing:
            result.problems.append(f"burst: {len(result.burst.missing)} call(s) not logged")
        _settle(box, watch, serve, 300, timeout, every_step=True)
        c2 = count()
        result.phases["burst"] = _minus(c2, c1)
        result.serve_cpu["burst"] = (serve.cpu() or 0.0) - cpu
        cpu = serve.cpu() or 0.0

        # 4. ack: POSTs of realistic envelopes straight to the receiver: one client (the answer time of a
        # lone request), then many at once.
        cutoff = int(datetime.now(UTC).timestamp() - 3 * 3600)  # older than any reconcile window
        ack_calls: set[str] = set()
        touched: set[str] = set()
        for posts, clients, share in ((max(1, cfg.posts // 10), 1, 0.0), (cfg.posts, cfg.clients, cfg.repeat_share)):
            bodies, distinct, calls, seen = _ack_bodies(box, token, cutoff, cfg.seed, posts, share, touched)
            ack_calls |= calls
            touched |= seen
            stored0, metrics0 = _events_stored(state_path), serve.metrics()
            log(f"  live {mode}: ack: {len(bodies):,} POSTs from {clients} client(s)")
            load = run_load(base + receiver["path"], bodies, clients, timeout)
            posted = time.monotonic()
            ack = Ack(posts=len(bodies), distinct=distinct, clients=clients, wall=load["wall"], calls=len(calls))
            for status, seconds in load["results"]:
                ack.latencies.append(seconds)
                ack.statuses[str(status)] = ack.statuses.get(str(status), 0) + 1
            serve.wait_drained(timeout)
            ack.drained = time.monotonic() - posted
            metrics1 = serve.metrics()
            ack.stored = _events_stored(state_path) - stored0
            ack.delivered = _deliveries_total(metrics1) - _deliveries_total(metrics0)
            ack.duplicates = (metrics1.get("aircall_sync_deliveries_duplicate_total", 0.0)
                              - metrics0.get("aircall_sync_deliveries_duplicate_total", 0.0))
            result.acks.append(ack)
            if ack.statuses.get("200", 0) != ack.posts:
                result.problems.append(f"ack x{clients}: answers {ack.statuses}")
            if ack.stored != distinct or ack.duplicates != ack.posts - distinct or ack.delivered != ack.posts:
                result.problems.append(f"ack x{clients}: {ack.stored} event(s) stored for {distinct} distinct, "
                                       f"{ack.duplicates:g} counted as duplicates for {ack.posts - distinct} "
                                       f"repeats, {ack.delivered:g} deliveries counted for {ack.posts} POSTs")
        keys = set(landed.call_ids())
        unlogged = [c for c in ack_calls if c not in keys]
        if mode != "front" and unlogged:
            result.problems.append(f"ack: {len(unlogged)} call(s) of the POSTed events not logged")
        result.ack_calls = len(ack_calls)
        c3 = count()
        result.phases["ack"] = _minus(c3, c2)
        result.serve_cpu["ack"] = (serve.cpu() or 0.0) - cpu
    finally:
        code = serve.stop()
        result.serve_rss_mib = serve.rss_mib
    text = serve.text()
    if code != 0:
        result.problems.append(f"serve exited {code} on SIGTERM: {serve.tail()}")
    elif "serve: stopped; 0 event(s) wait in the inbox" not in text:
        result.problems.append(f"serve stopped with events in its inbox: {serve.tail(2)}")
    if "Traceback" in text:
        result.problems.append("a traceback in serve's log")

    # 5. restart: the start's reconcile over a window logged already (steady state).
    if cfg.restart:
        c4 = count()
        serve = Serve(config, work, token, base, "2")
        try:
            serve.wait_ready()
            [line] = serve.wait_line(_RECONCILE_LINE, 1, timeout)
            serve.wait_drained(timeout)
            result.steady_reconcile = Reconcile(int(line.group(3)), f"{line.group(1)}..{line.group(2)}",
                                                _minus(count(), c4))
        finally:
            code = serve.stop()
        if code != 0:
            result.problems.append(f"the restarted serve exited {code}: {serve.tail()}")

    # 6. cron sync, for comparison (serve stopped: its lock is released; they could also run side by side).
    for k in range(cfg.syncs):
        c5 = count()
        log(f"  live {mode}: sync {k + 1} of {cfg.syncs}")
        done = subprocess.run([sys.executable, "-m", "aircall_sync", "--config", str(config), "--quiet", "sync"],
                              check=False, cwd=work, capture_output=True, text=True, timeout=timeout,
                              env={k: v for k, v in os.environ.items() if not k.startswith("AIRCALL_SYNC_")})
        if done.returncode != 0:
            result.problems.append(f"sync exited {done.returncode}: {done.stderr.strip()[-300:]}")
            break
        result.syncs.append(_minus(count(), c5))
        result.sync_calls.append(" ".join(done.stdout.strip().splitlines()[:1]))


# ---------------------------------------------------------------- the tables


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def _table(columns: tuple[str, ...], rows: list[list[str]], numeric: set[str]) -> str:
    all_rows = [list(columns)] + rows
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(columns))]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if columns[i] in numeric else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([fmt(all_rows[0]), fmt(["-" * w for w in widths])] + [fmt(r) for r in all_rows[1:]])


def per_call(counts: dict[str, dict[str, int]], api: str, calls: int, *, present: bool = True) -> str:
    if not present:
        return "-"
    return f"{total(counts, api) / calls:.2f}" if calls else "-"


DELAY_COLUMNS = ("profile", "mode", "phase", "calls", "result", "rate", "p50 s", "p95 s", "max s",
                 "Aircall req/call", "Salesforce req/call", "Front req/call", "serve CPU s")


def delay_table(results: list[LiveResult], cfg: LiveConfig) -> str:
    rows = []
    for r in results:
        sf, front = r.mode in ("task", "voice"), r.mode == "front"
        for phase, d in (("steady", r.steady), ("burst", r.burst)):
            counts = r.phases.get(phase, {})
            rate = (f"{cfg.rate:g}/min" if phase == "steady"
                    else f"all in {d.spread:.2f} s" if d.spread is not None else "-")
            rows.append(["live", r.mode, phase, f"{d.calls:,}", r.status if d.values else "failed", rate,
                         _fmt(d.pct(50)), _fmt(d.pct(95)), _fmt(max(d.values) if d.values else None),
                         per_call(counts, "aircall", d.calls), per_call(counts, "salesforce", d.calls, present=sf),
                         per_call(counts, "front", d.calls, present=front), _fmt(r.serve_cpu.get(phase), ".1f")])
    return _table(DELAY_COLUMNS, rows, set(DELAY_COLUMNS[3:4] + DELAY_COLUMNS[6:]))


ACK_COLUMNS = ("profile", "mode", "POSTs", "clients", "result", "p50 ms", "p99 ms", "max ms", "accepted/s",
               "non-200", "events stored", "duplicates", "drained s", "calls")


def ack_table(results: list[LiveResult]) -> str:
    rows = []
    for r in results:
        for a in r.acks:
            ok200 = a.statuses.get("200", 0)
            rows.append(["live", r.mode, f"{a.posts:,}", str(a.clients), r.status if a.latencies else "failed",
                         _fmt(a.pct(50) * 1000 if a.latencies else None, ".1f"),
                         _fmt(a.pct(99) * 1000 if a.latencies else None, ".1f"),
                         _fmt(max(a.latencies) * 1000 if a.latencies else None, ".1f"),
                         _fmt(ok200 / a.wall if a.wall else None, ",.0f"), f"{a.posts - ok200:,}",
                         "-" if a.stored is None else f"{a.stored:,} of {a.distinct:,}",
                         "-" if a.duplicates is None else f"{a.duplicates:,.0f} of {a.posts - a.distinct:,}",
                         _fmt(a.drained, ".1f"), f"{a.calls:,}"])
    return _table(ACK_COLUMNS, rows, set(ACK_COLUMNS[2:4] + ACK_COLUMNS[5:]))


DAY_COLUMNS = ("profile", "mode", "calls/day", "window calls", "reconcile Aircall req", "webhook check req",
               "live Aircall req/day", "sync Aircall req/run", "cron Aircall req/day", "live/cron")


@dataclass
class DayBudget:
    reconcile: int
    window_calls: int
    check: int
    live_day: int
    sync_run: int | None
    cron_day: int | None
    reconciles: int
    text: str


def day_budget(r: LiveResult, cfg: LiveConfig) -> DayBudget | None:
    rec = r.steady_reconcile or r.first_reconcile
    if rec.window_calls is None:
        return None
    reconcile = total(rec.requests, "aircall", exclude=("webhooks",))
    # An hourly check of a healthy webhook: the restart's (the first start may also repair the subscription the
    # sandbox registered, once: not a daily cost).
    check = total(rec.requests, "aircall") - total(rec.requests, "aircall", exclude=("webhooks",))
    reconciles = 24 * 60 // 30  # live.reconcile_every = 30 min (the default the bench runs with)
    sync_run = total(r.syncs[-1], "aircall") if r.syncs else None
    cron_day = CRON_RUNS_A_DAY * sync_run if sync_run is not None else None
    worker = sum(total(r.phases.get(p, {}), "aircall") for p in ("steady", "burst", "ack"))
    worker_calls = r.steady.calls + r.burst.calls + r.ack_calls
    bound = reconciles + 4 * cfg.calls_per_day / 50
    per_call = worker / worker_calls if worker_calls else 0.0
    live_day = reconciles * reconcile + WEBHOOK_CHECKS_A_DAY * check + round(per_call * cfg.calls_per_day)
    text = (f"a day's Aircall requests at {cfg.calls_per_day:,} calls/day, live: 24 h / 30 min = {reconciles} "
            f"reconciles x {reconcile} (one reconcile's requests: the {rec.window_calls} calls of its 2 h window"
            f"{', on the restart, logged already' if r.steady_reconcile else ', at start'}) + "
            f"{WEBHOOK_CHECKS_A_DAY} hourly webhook checks x {check} + the worker's {per_call:.2f} per call x "
            f"{cfg.calls_per_day:,} ({worker} for the {worker_calls:,} calls of the steady, burst and ack phases) = "
            f"{live_day:,}; however the day's calls are spread, each is read "
            f"by window / every = 4 reconciles: at most {reconciles} + 4 x {cfg.calls_per_day:,} / 50 = "
            f"{bound:,.0f} list pages a day")
    if sync_run is not None:
        text += (f"; cron `sync` every {CRON_EVERY_MINUTES} min over sync.revisit (24 h): {CRON_RUNS_A_DAY} runs x "
                 f"{sync_run} requests (measured: the last of {len(r.syncs)} run(s), "
                 f"{', '.join(str(total(s, 'aircall')) for s in r.syncs)} requests) = {cron_day:,} "
                 f"(DESIGN §10: 144 x 100 = 14,400); live / cron = {live_day / cron_day:.3f}")
    return DayBudget(reconcile, rec.window_calls, check, live_day, sync_run, cron_day, reconciles, text)


def day_table(results: list[LiveResult], cfg: LiveConfig) -> str:
    rows = []
    for r in results:
        b = day_budget(r, cfg)
        if b is None:
            rows.append(["live", r.mode, f"{cfg.calls_per_day:,}"] + ["-"] * (len(DAY_COLUMNS) - 3))
            continue
        rows.append(["live", r.mode, f"{cfg.calls_per_day:,}", f"{b.window_calls:,}", str(b.reconcile), str(b.check),
                     f"{b.live_day:,}", "-" if b.sync_run is None else str(b.sync_run),
                     "-" if b.cron_day is None else f"{b.cron_day:,}",
                     "-" if not b.cron_day else f"{b.live_day / b.cron_day:.3f}"])
    return _table(DAY_COLUMNS, rows, set(DAY_COLUMNS[2:]))


def _endpoints(counts: dict[str, dict[str, int]]) -> str:
    parts = []
    for api, kinds in sorted(counts.items()):
        top = sorted(kinds.items(), key=lambda kv: -kv[1])
        parts.append(f"{api} " + ", ".join(f"{k} {n}" for k, n in top[:6])
                     + (f", {len(top) - 6} more kinds" if len(top) > 6 else ""))
    return "; ".join(parts) or "none"


def live_notes(results: list[LiveResult], cfg: LiveConfig) -> list[str]:
    out = []
    for r in results:
        label = f"- live {r.mode}"
        parts = []
        if r.problems:
            parts.append("PROBLEMS: " + "; ".join(r.problems))
        rec = r.first_reconcile
        parts.append(f"start: webhook check and first reconcile ({rec.window}, {rec.window_calls} calls, all new: "
                     f"a catch-up): {_endpoints(rec.requests)}")
        if r.steady_reconcile:
            s = r.steady_reconcile
            parts.append(f"restart's reconcile ({s.window}, {s.window_calls} calls, logged already except those "
                         f"that entered the window since): {_endpoints(s.requests)}")
        for phase, calls in (("steady", r.steady.calls), ("burst", r.burst.calls), ("ack", r.ack_calls)):
            counts = r.phases.get(phase, {})
            per = ", ".join(f"{api} {per_call(counts, api, calls)}" for api in APIS if api in counts) or "none"
            parts.append(f"worker, {phase} phase ({calls:,} calls; requests per call: {per}): {_endpoints(counts)}")
        for phase, d in (("steady", r.steady), ("burst", r.burst)):
            if d.skipped:
                parts.append(f"{phase}: {d.skipped} of the {d.calls} calls have no external number (R-CALL-4): "
                             f"Front does not log them (R-FRONT-1), the delays are the other "
                             f"{d.calls - d.skipped}'s")
        if r.burst.spread is not None:
            parts.append(f"the burst's {r.burst.calls} ends were acknowledged within {r.burst.spread:.2f} s "
                         f"(the emulator delivers to one webhook one request at a time)")
        b = day_budget(r, cfg)
        if b is not None:
            parts.append(b.text)
        if r.syncs:
            parts.append("sync runs: " + " / ".join(f"{c} ({_endpoints(s)})" for c, s in zip(r.sync_calls, r.syncs)))
        parts.append(f"{r.records:,} records in the target, {r.duplicate_records} call(s) twice")
        cpu = ", ".join(f"{k} {v:.1f}" for k, v in r.serve_cpu.items())
        parts.append(f"serve's CPU seconds by phase: {cpu}; its peak RSS {_fmt(r.serve_rss_mib, '.0f')} MiB")
        if r.emulator_cpu is not None:
            parts.append(f"the bench process (emulators, polling) used {r.emulator_cpu:.1f} s of CPU")
        if r.steal is not None:
            parts.append(f"CPU taken by the hypervisor during the run (steal, both cores): {r.steal:.1f}s")
        if r.wall is not None:
            parts.append(f"the row took {r.wall / 60:.1f} min")
        out.append(label + ": " + "; ".join(parts))
    return out


def settings_line(cfg: LiveConfig) -> str:
    return (f"Live profile: serve (`python -m aircall_sync --config X serve`, default [live] and [sync] settings: "
            f"batch_window 1 s, reconcile_every 30 min, reconcile_window 2 h, lag 30 min) fed by the Aircall "
            f"emulator's webhooks over loopback HTTP, emulators in the bench process ("
            f"{f'{cfg.latency_ms:g} ms on every request of every API' if cfg.latency_ms else 'no latency'}, no "
            f"limits); "
            f"history {cfg.calls_per_day:,} calls over 24 h, evenly; steady {cfg.calls:,} calls at {cfg.rate:g}/min "
            f"(talk {cfg.talk[0]}-{cfg.talk[1]} s, time scale {cfg.time_scale:g}), deliveries "
            f"{cfg.p_duplicate:.0%} duplicated and {cfg.p_reorder:.0%} reordered; burst {cfg.burst:,} answered "
            f"calls; ack {max(1, cfg.posts // 10):,} POSTs from 1 client, then {cfg.posts:,} ({cfg.repeat_share:.0%} "
            f"repeats) from {cfg.clients} clients, in a process of their own, one connection per POST; "
            f"seed {cfg.seed}. Delays: from serve's 200 to the first delivery showing the call finished, to "
            f"the call's record readable in the target (store polled every {POLL * 1000:.0f} ms).")
