#!/usr/bin/env python3
"""Benchmark: a backfill of N sandbox calls per target mode, one table (DESIGN §5, §9); live mode (§10).

    python bench/run.py                      # the default run (about 10 minutes on 2 cores)
    python bench/run.py --smoke              # N=500, raw profile, mode task (what CI runs)
    python bench/run.py --profile real --calls 100000 --max-floor-minutes 60   # opt-in: >= 34 minutes
    python bench/run.py --profile live       # serve fed by webhooks, mode task (about 12 minutes a mode)
    python bench/run.py --smoke --profile live   # a tiny live row (about 15 s; CI runs it)

What one row is: a fresh sandbox of N generated calls is built and served by
two child processes, one per vendor (Aircall; Salesforce or Front), as each
vendor is its own service; the emulators never share the measured interpreter,
and every API is served over loopback HTTPS except Front's. The tool then
runs, in its own process, exactly as a user would:

    python -m aircall_sync --config bench.toml --quiet backfill --from F --to T

and the row reports, for that process: wall time (start to exit, interpreter
start-up and imports included), calls/s (N / wall), CPU seconds (user + system),
peak RSS, the requests each emulated API served per 1,000 calls (counted on the
server side, retries included), and the wall time divided by the rate-limit
floor.

Profiles:

- ``real``: every emulated request takes ``--latency-ms`` (default 50 ms);
  Aircall is limited to ``--aircall-rpm`` (default 60/min, the company-wide
  default) on both sides (the tool's setting and a 429 from the emulator);
  Front to ``--front-rpm`` (default 50/min). Salesforce has no per-minute limit.
- ``raw``: no latency and no limit: what is left is the tool's own CPU cost
  (and the emulators', in the other process).
- ``live`` (run only when named; DESIGN §10 "Budgets"): ``aircall-sync serve``
  in a process of its own, started as a user starts it (``python -m
  aircall_sync --config X serve``), fed by the Aircall emulator's webhook
  deliveries for calls it places over time, every request to every emulated
  API taking ``--latency-ms``. Its tables: the delay from the
  acknowledged delivery that ends a call (``call.hungup`` or ``call.ended``)
  to the record readable in the emulated CRM (p50, p95, max) for calls at a
  steady rate (``--calls``, default 300, at ``--live-rate`` a minute) and for
  a burst of ``--live-burst`` calls hanging up at once, with the requests per
  call each emulator served; serve's answer time to ``--live-posts``
  concurrent webhook POSTs (p50, p99, max, accepted/s; every answer 200, every
  event stored once); and a day's Aircall requests at
  ``--live-calls-per-day``: one reconcile's cost x 48 + 24 webhook checks,
  against a cron ``sync`` every 10 minutes. ``--modes`` defaults to ``task``
  here. Its phases and how each number is taken: ``bench/live_profile.py``.

The rate-limit floor is the time the configured limits alone force, given the
requests no implementation can avoid, services running in parallel (so the
floor is the largest of):

- Aircall: ceil(N/50) list pages + (ceil(N/9,999) - 1) extra probes (a window
  must hold fewer than 10,000 calls; splitting into k windows costs k - 1
  probes), at ``--aircall-rpm`` evenly spaced: requests x 60 / rpm seconds;
- Salesforce: ceil(N/200) sObject Collection writes, one after the other, each
  ``--latency-ms`` (no per-minute limit);
- Front (mode ``front``, ``activities = "combined"``): one imported message per
  call, at ``--front-rpm``.

In the raw profile there is no floor (the ratio shows "-").

Real-profile rows whose floor exceeds ``--max-floor-minutes`` (default 10) are
skipped and say so: at 60 requests/min, 100,000 calls need >= 2,010 Aircall
requests, i.e. >= 33.5 minutes, and mode ``front`` at 50/min needs N/50 minutes
(200 minutes for 10,000 calls). Raise ``--max-floor-minutes`` to run them.

The default run is the real profile at 10,000 calls and the raw profile at
10,000 and 100,000 calls, for the modes ``task,voice,front``. A mode the installed
tool refuses (exit 2 with its "not available yet" message) is reported as "not
available": each mode is tried first on a 50-call raw sandbox, so no large
sandbox is built for a mode that cannot run. When voice and Front land, their
rows fill in without edits here (see ``_mode_settings`` and ``_sandbox_options``
for the settings and sandbox options they are given).

Peak RSS: the tool is started with ``subprocess.Popen`` and reaped with
``os.wait4(pid)``, whose resource usage is that child's own (Linux: ``ru_maxrss``
in KiB). ``getrusage(RUSAGE_CHILDREN)`` would give the maximum over every child
reaped so far, the sandbox processes included (they hold the generated calls),
so it is not used.

The emulators of the live profile run in the bench process, as in ``aircall-sync
demo --live`` (the bench reads their stores and delivery log directly); the
load of the acknowledgement phase comes from a process of its own. Its rows
share the machine's cores with serve and the emulators, and their notes give
the CPU each used and the steal time, like the batch rows.

The table is printed and appended to ``bench/results.md`` (``--results``) with
the date (UTC), the machine, the git commit and the command line; ``--smoke``
writes no file unless ``--results`` is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import multiprocessing
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import live_profile  # bench/live_profile.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.md"

MODES = ("task", "voice", "front")
PROFILES = ("real", "raw", "live")
BATCH_PROFILES = ("real", "raw")
DEFAULT_CALLS = {"real": [10_000], "raw": [10_000, 100_000]}
SMOKE_CALLS = 500
PROBE_CALLS = 50

AIRCALL_PAGE = 50  # per_page maximum (DESIGN §2)
AIRCALL_WINDOW_CAP = 9_999  # a window must hold fewer than 10,000 calls
SALESFORCE_BATCH = 200  # records per sObject Collections request (DESIGN §5)
FRONT_REQUESTS_PER_CALL = 1  # activities = "combined": one imported message per call (RULES R-FRONT-4)
UNLIMITED_RPM = 1_000_000_000  # the tool's settings want a positive integer: "no limit" in practice

#: Exit 2 with one of these in the message: the installed tool refuses the mode (not built yet).
NOT_AVAILABLE_MARKERS = ("not available", "cannot log to", "tasks only", "not built", "not supported yet")


# ---------------------------------------------------------------- what is run


@dataclass(frozen=True)
class Case:
    profile: str
    mode: str
    calls: int


@dataclass
class Config:
    latency_ms: float
    aircall_rpm: int
    front_rpm: int
    days: int
    pool: int | None
    seed: int
    max_floor_minutes: float
    timeout: float
    cprofile: Path | None
    keep: Path | None

    def latency(self, profile: str) -> float:
        return self.latency_ms if profile == "real" else 0.0

    def rpm(self, profile: str, service: str) -> int | None:
        if profile == "raw":
            return None
        return self.aircall_rpm if service == "aircall" else self.front_rpm


@dataclass
class Floor:
    seconds: float
    binding: str
    parts: dict[str, float]


def floor_for(case: Case, config: Config) -> Floor:
    """The time the configured limits and latencies alone force on N calls (see the module docstring)."""
    n = case.calls
    parts: dict[str, float] = {}
    aircall_requests = math.ceil(n / AIRCALL_PAGE) + max(0, math.ceil(n / AIRCALL_WINDOW_CAP) - 1)
    rpm = config.rpm(case.profile, "aircall")
    parts["Aircall"] = aircall_requests * 60.0 / rpm if rpm else 0.0
    if case.mode in ("task", "voice"):
        parts["Salesforce"] = math.ceil(n / SALESFORCE_BATCH) * config.latency(case.profile) / 1000.0
    if case.mode == "front":
        rpm = config.rpm(case.profile, "front")
        parts["Front"] = n * FRONT_REQUESTS_PER_CALL * 60.0 / rpm if rpm else 0.0
    binding = max(parts, key=lambda k: parts[k])
    return Floor(parts[binding], binding, parts)


@dataclass
class Result:
    case: Case
    status: str  # "ok", "not available", "skipped", "failed"
    note: str = ""
    wall: float | None = None
    cpu: float | None = None
    rss_kib: int | None = None
    requests: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    floor: Floor | None = None
    summary: str = ""
    sandbox_seconds: float | None = None
    sandbox_cpu: float | None = None  # CPU the emulators spent serving the run (the other process)
    steal: float | None = None  # CPU the hypervisor took from this machine during the run
    endpoints: dict[str, dict[str, int]] = field(default_factory=dict)  # api -> request kind -> count


# ---------------------------------------------------------------- the sandbox, in its own process


def _sandbox_options(spec: dict) -> Any:
    """SandboxOptions for one case. Front options are passed only if this version's sandbox has them."""
    from aircall_sync.sandbox.server import Faults
    from aircall_sync.sandbox.stack import SandboxOptions

    latency = spec["latency_ms"]
    names = {f.name for f in dataclasses.fields(SandboxOptions)}
    aircall_only = spec["role"] == "aircall"
    kwargs: dict[str, Any] = dict(
        calls=spec["calls"], seed=spec["seed"], days=spec["days"], end=spec["end"], pool_size=spec["pool"],
        aircall_requests_per_minute=spec["aircall_rpm"],
        aircall_faults=Faults(latency_ms=latency) if latency else None,
        salesforce=spec["mode"] in ("task", "voice") and not aircall_only,
        salesforce_http_faults=Faults(latency_ms=latency) if latency else None,
    )
    if aircall_only and "aircall_tls" in names:
        kwargs["aircall_tls"] = True
    front = spec["mode"] == "front" and not aircall_only
    # The Front emulator's options, passed when this version's sandbox has them (it is started only for
    # mode front: the other modes do not pay for it).
    for name, value in (("front", front), ("front_requests_per_minute", spec["front_rpm"] if front else None),
                        ("front_faults", Faults(latency_ms=latency) if front and latency else None),
                        ("front_http_faults", Faults(latency_ms=latency) if front and latency else None)):
        if name in names:
            kwargs[name] = value
    return SandboxOptions(**kwargs)


def _servers(box: Any) -> list[Any]:
    """Every LoopbackServer of the sandbox (Aircall, Salesforce, and Front when it exists)."""
    from aircall_sync.sandbox.server import LoopbackServer

    found: dict[int, Any] = {}
    for value in vars(box).values():
        for candidate in (value, getattr(value, "server", None)):
            if isinstance(candidate, LoopbackServer):
                found[id(candidate)] = candidate
    return list(found.values())


def _record_counts(box: Any) -> dict[str, int]:
    store = box.sf_store
    if store is None:
        return {}
    return {name: len(store.records(name)) for name in store.schema}


def _counts(box: Any, before: dict[str, int]) -> dict:
    requests: dict[str, int] = {}
    faults: dict[str, int] = {}
    errors = 0
    endpoints: dict[str, dict[str, int]] = {}
    for server in _servers(box):
        for r in server.requests:
            requests[r.api] = requests.get(r.api, 0) + 1
            per = endpoints.setdefault(r.api, {})
            key = _endpoint(r.method, r.path)
            per[key] = per.get(key, 0) + 1
            if r.status == 429 or r.status is None or (r.status or 0) >= 500:
                key = f"{r.api} {r.status or 'drop'}"
                faults[key] = faults.get(key, 0) + 1
        errors += len(server.errors)
    if box.salesforce is not None:
        errors += len(getattr(box.salesforce.app, "bulk_errors", ()))  # jobs run outside any request
    after = _record_counts(box)
    created = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    return {"requests": requests, "faults": faults, "emulator_errors": errors, "created": created,
            "endpoints": endpoints, "cpu": _cpu_seconds()}


_PREFIXED_ID = re.compile(r"[a-z]{2,4}_[0-9a-z]+")  # Front ids: cnv_yo1kg5q, crd_…, msg_…


def _endpoint(method: str, path: str) -> str:
    """``POST /inboxes/{id}/imported_messages``: a request's kind, with ids and numbers folded."""
    parts = []
    for segment in path.split("/"):
        if not segment:
            continue
        # Words stay ("v63.0", "oauth2"); ids ("cnv_yo1kg5q", "00T5e00000AbCdE") and numbers are folded.
        word = segment.rstrip("0123456789.").isalpha() and segment[:1].isalpha() and len(segment) <= 12
        prefixed_id = _PREFIXED_ID.fullmatch(segment) is not None
        has_digit = any(ch.isdigit() for ch in segment)
        parts.append("{id}" if prefixed_id or (has_digit and not word) else segment)
    return f"{method} /" + "/".join(parts)


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _box_settings(box: Any, spec: dict) -> dict:
    """``box.settings(...)`` for the case's target, with whichever of ``mode`` / ``targets`` it accepts."""
    import inspect

    params = inspect.signature(box.settings).parameters
    kwargs: dict[str, Any] = {}
    if "mode" in params and spec["mode"] in ("task", "voice"):
        kwargs["mode"] = spec["mode"]
    if "targets" in params:
        kwargs["targets"] = ("front",) if spec["mode"] == "front" else ("salesforce",)
    return box.settings(spec["state_path"], **kwargs)


def serve_sandbox(conn: Any, spec: dict) -> None:
    """Child process: build and serve the sandbox; send its settings, then its counters when asked."""
    try:
        from aircall_sync.sandbox.stack import Sandbox

        began = time.monotonic()
        box = Sandbox(_sandbox_options(spec)).start()
        before = _record_counts(box)
        settings = _box_settings(box, spec)
        reply: dict[str, Any] = {"settings": settings, "seconds": time.monotonic() - began, "cpu": _cpu_seconds(),
                                 "ca": str(box.ca_path) if getattr(box, "ca_path", None) else None}
        if spec["role"] != "aircall" and spec["mode"] == "front" and "front" not in settings:
            # Never point the tool at the real Front: without an emulator there is nothing to measure.
            reply["unavailable"] = "this version's sandbox has no Front emulator"
        if spec["mode"] == "voice" and getattr(box.sf_store, "call_center_id", None):
            voice = settings["salesforce"].setdefault("voice", {})
            voice.setdefault("call_center_id", box.sf_store.call_center_id)
        conn.send(reply)
    except BaseException:
        conn.send({"error": traceback.format_exc()})
        return
    try:
        while True:
            message = conn.recv()
            if message == "counts":
                conn.send(_counts(box, before))
            elif message == "stop":
                break
    except EOFError:
        pass
    finally:
        box.stop()


class SandboxProcess:
    def __init__(self, spec: dict):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=serve_sandbox, args=(child, spec), name="bench-sandbox", daemon=True)
        self.process.start()
        child.close()

    def receive(self, timeout: float) -> Any:
        if not self.conn.poll(timeout):
            raise RuntimeError(f"the sandbox process did not answer within {timeout:.0f}s")
        return self.conn.recv()

    def ready(self) -> dict:
        reply = self.receive(1800)
        if "error" in reply:
            raise RuntimeError("the sandbox failed to start:\n" + reply["error"])
        return reply

    def counts(self) -> dict:
        self.conn.send("counts")
        return self.receive(600)

    def stop(self) -> None:
        try:
            self.conn.send("stop")
        except (BrokenPipeError, OSError):
            pass
        self.process.join(60)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(10)
        self.conn.close()


# ---------------------------------------------------------------- settings per mode


def _mode_settings(settings: dict, case: Case, config: Config) -> dict:
    """The sandbox's settings, turned to one target mode and one profile."""
    aircall_rpm = config.rpm(case.profile, "aircall") or UNLIMITED_RPM
    settings["aircall"]["requests_per_minute"] = aircall_rpm
    if case.mode in ("task", "voice"):
        settings["salesforce"]["mode"] = case.mode
        if "front" in settings:
            settings["front"]["enabled"] = False
    else:
        if "salesforce" in settings:
            settings["salesforce"]["enabled"] = False
        front = settings.setdefault("front", {})
        front.setdefault("api_token", "bench-front-token")  # today's sandbox has no Front: the tool refuses first
        front["enabled"] = True
        front["activities"] = "combined"
        front["requests_per_minute"] = config.rpm(case.profile, "front") or UNLIMITED_RPM
    return settings


# ---------------------------------------------------------------- one row


def _end_of_data() -> datetime:
    """Midnight UTC a day ago: every generated call ended long before the sync lag."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=1)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _tail(path: Path, lines: int = 5) -> str:
    text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return " | ".join(text[-lines:])


def _is_not_available(code: int, stderr: str) -> bool:
    return code == 2 and any(marker in stderr.lower() for marker in NOT_AVAILABLE_MARKERS)


def run_case(case: Case, config: Config, *, log: Any) -> Result:
    import tomli_w

    result = Result(case, "failed", floor=floor_for(case, config))
    end = _end_of_data()
    start = end - timedelta(days=config.days)
    with tempfile.TemporaryDirectory(prefix="aircall-sync-bench-") as tmp:
        work = Path(tmp)
        spec = {
            "calls": case.calls, "seed": config.seed, "days": config.days, "end": end,
            "pool": config.pool or max(30, case.calls // 5), "mode": case.mode,
            "latency_ms": config.latency(case.profile),
            "aircall_rpm": config.rpm(case.profile, "aircall"), "front_rpm": config.rpm(case.profile, "front"),
            "state_path": str(work / "state.sqlite3"),
        }
        # One process per vendor, as each vendor is its own service: in one process the two
        # emulators would take turns on one interpreter lock, a wait no real backfill has.
        aircall = SandboxProcess({**spec, "role": "aircall"})
        targets = SandboxProcess({**spec, "role": "targets"})
        boxes = (aircall, targets)
        try:
            ready_aircall, ready = aircall.ready(), targets.ready()
            result.sandbox_seconds = max(ready_aircall["seconds"], ready["seconds"])
            if "unavailable" in ready:
                result.status, result.note = "not available", ready["unavailable"]
                return result
            ready["settings"]["aircall"] = ready_aircall["settings"]["aircall"]
            settings_path = work / "bench.toml"
            settings_path.write_text(tomli_w.dumps(_mode_settings(ready["settings"], case, config)),
                                     encoding="utf-8")
            python = [sys.executable]
            if config.cprofile is not None:
                out = config.cprofile / f"{case.profile}-{case.mode}-{case.calls}.prof"
                out.parent.mkdir(parents=True, exist_ok=True)
                python += ["-m", "cProfile", "-o", str(out)]
            command = [*python, "-m", "aircall_sync", "--config", str(settings_path), "--quiet",
                       "backfill", "--from", _iso(start), "--to", _iso(end)]
            out_path, err_path = work / "stdout.txt", work / "stderr.txt"
            log(f"  {case.profile} {case.mode} {case.calls:,}: sandbox ready in {ready['seconds']:.1f}s; "
                "running the tool")
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                began, steal = time.perf_counter(), _steal_seconds()
                env = {**os.environ, "PYTHONUNBUFFERED": "1"}
                if ready_aircall.get("ca"):
                    # Aircall over HTTPS, from the sandbox's CA (the tool reads either variable).
                    env["SSL_CERT_FILE"] = env["REQUESTS_CA_BUNDLE"] = ready_aircall["ca"]
                proc = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=work, env=env)
                code, usage = _wait(proc, config.timeout)
                result.wall = time.perf_counter() - began
                if steal is not None and (after := _steal_seconds()) is not None:
                    result.steal = after - steal
            result.cpu = usage.ru_utime + usage.ru_stime
            result.rss_kib = usage.ru_maxrss // 1024 if sys.platform == "darwin" else usage.ru_maxrss
            stderr = err_path.read_text(encoding="utf-8", errors="replace")
            stdout = out_path.read_text(encoding="utf-8", errors="replace")
            result.summary = " ".join(line.strip() for line in stdout.strip().splitlines()[:2])
            counts = _merge_counts(aircall.counts(), targets.counts())
            result.requests = counts["requests"]
            result.faults = counts["faults"]
            result.endpoints = counts["endpoints"]
            result.sandbox_cpu = counts["cpu"] - ready["cpu"] - ready_aircall["cpu"]
            created = ", ".join(f"{n} {obj}" for obj, n in sorted(counts["created"].items()))
            if counts["emulator_errors"]:
                result.note = f"{counts['emulator_errors']} emulator error(s); "
            if code is None:
                result.status = "failed"
                result.note += f"killed after --timeout {config.timeout:.0f}s"
            elif code == 0:
                result.status = "ok"
                result.note += f"created {created}" if created else ""
            elif _is_not_available(code, stderr):
                result.status = "not available"
                result.note = stderr.strip().splitlines()[-1] if stderr.strip() else ""
            else:
                result.status = "failed"
                result.note += f"exit {code}: {_tail(err_path) or _tail(out_path)}"
            if config.keep is not None:
                config.keep.mkdir(parents=True, exist_ok=True)
                for src in (settings_path, out_path, err_path):
                    (config.keep / f"{case.profile}-{case.mode}-{case.calls}-{src.name}").write_bytes(src.read_bytes())
        finally:
            for box in boxes:
                box.stop()
    return result


def _merge_counts(aircall: dict, targets: dict) -> dict:
    """The two sandbox processes' counters as one: Aircall's from its own process, the rest from the other."""
    def pick(counts: dict, keep_aircall: bool) -> dict:
        return {k: v for k, v in counts.items() if (k.split()[0] == "aircall") == keep_aircall}

    return {
        "requests": {**pick(targets["requests"], False), **pick(aircall["requests"], True)},
        "faults": {**pick(targets["faults"], False), **pick(aircall["faults"], True)},
        "endpoints": {**pick(targets["endpoints"], False), **pick(aircall["endpoints"], True)},
        "emulator_errors": aircall["emulator_errors"] + targets["emulator_errors"],
        "created": targets["created"],
        "cpu": aircall["cpu"] + targets["cpu"],
    }


def _wait(proc: subprocess.Popen, timeout: float) -> tuple[int | None, Any]:
    """Reap the tool with wait4: its own rusage (CPU, peak RSS), not every child's."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage
        if time.monotonic() > deadline:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            return None, usage
        time.sleep(0.02)


# ---------------------------------------------------------------- the table


COLUMNS = ("profile", "mode", "calls", "result", "wall s", "calls/s", "CPU s", "peak RSS MiB",
           "Aircall req/1k", "Salesforce req/1k", "Front req/1k", "floor s", "wall/floor")
NUMERIC = set(COLUMNS[2:3] + COLUMNS[4:])


def _per_1k(n: int | None, calls: int) -> str:
    return "-" if not n else f"{n * 1000 / calls:.1f}"


def row(result: Result) -> list[str]:
    c = result.case
    base = [c.profile, c.mode, f"{c.calls:,}", result.status]
    if result.status != "ok":
        return base + ["-"] * (len(COLUMNS) - len(base))
    floor = result.floor
    ratio = "-" if not floor or not floor.seconds else f"{result.wall / floor.seconds:.2f}"
    floor_text = "-" if not floor or not floor.seconds else f"{floor.seconds:.1f} ({floor.binding})"
    return base + [
        f"{result.wall:.1f}",
        f"{c.calls / result.wall:,.0f}",
        f"{result.cpu:.1f}",
        f"{result.rss_kib / 1024:.0f}",
        _per_1k(result.requests.get("aircall"), c.calls),
        _per_1k(result.requests.get("salesforce"), c.calls),
        _per_1k(result.requests.get("front"), c.calls),
        floor_text,
        ratio,
    ]


def table(results: list[Result]) -> str:
    rows = [list(COLUMNS)] + [row(r) for r in results]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]

    def fmt(cells: list[str]) -> str:
        return "  ".join(cell.rjust(w) if COLUMNS[i] in NUMERIC else cell.ljust(w)
                         for i, (cell, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [fmt(rows[0]), fmt(["-" * w for w in widths])]
    lines += [fmt(r) for r in rows[1:]]
    return "\n".join(lines)


def notes(results: list[Result]) -> list[str]:
    out = []
    for r in results:
        c = r.case
        label = f"{c.profile} {c.mode} {c.calls:,}"
        parts = []
        if r.summary:
            parts.append(f"tool: {r.summary}")
        if r.note:
            parts.append(r.note)
        for api, kinds in sorted(r.endpoints.items()):
            top = sorted(kinds.items(), key=lambda kv: -kv[1])
            shown = ", ".join(f"{k} {n}" for k, n in top[:5]) + (f", {len(top) - 5} more kinds" if len(top) > 5 else "")
            parts.append(f"{api} requests: {shown}")
        if r.faults:
            parts.append("throttled/failed requests: " + ", ".join(f"{k}: {v}" for k, v in sorted(r.faults.items())))
        if r.sandbox_cpu is not None:
            parts.append(f"emulators' CPU while serving: {r.sandbox_cpu:.1f}s")
        if r.steal is not None:
            parts.append(f"CPU taken by the hypervisor during the run (steal, both cores): {r.steal:.1f}s")
        if r.sandbox_seconds is not None and r.status == "ok":
            parts.append(f"sandbox built in {r.sandbox_seconds:.1f}s (not measured)")
        if parts:
            out.append(f"- {label}: " + "; ".join(parts))
    return out


# ---------------------------------------------------------------- the header


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "memory unknown"


def _git_commit() -> str:
    """The commit of the aircall_sync that is measured (PYTHONPATH may point at another checkout)."""
    import aircall_sync

    measured = Path(aircall_sync.__file__).resolve().parent.parent
    where = "" if measured == ROOT else f" (measured from {measured})"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=measured, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "aircall_sync"], cwd=measured).returncode
        return commit + (" + uncommitted changes in aircall_sync/" if dirty else "") + where
    except (OSError, subprocess.CalledProcessError):
        return "unknown" + where


def _steal_seconds() -> float | None:
    """CPU time the hypervisor gave to others (all cores), from /proc/stat; None off Linux.

    On a shared virtual machine this is what makes the same row take 5 s or 12 s.
    """
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def header(argv: list[str], started: datetime) -> str:
    when = started.strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.platform()}, {os.cpu_count()} cores, {_memory()}, Python {platform.python_version()}"
    command = "python bench/run.py" + ("" if not argv else " " + shlex.join(argv))
    return f"## {when} · {machine} · commit {_git_commit()} · `{command}`"


def settings_line(config: Config, profiles: list[str]) -> str:
    parts = []
    if "real" in profiles:
        parts.append(f"real = {config.latency_ms:g} ms per request, Aircall {config.aircall_rpm}/min, "
                     f"Front {config.front_rpm}/min, Salesforce latency only")
    if "raw" in profiles:
        parts.append("raw = no latency, no limits")
    pool = f"{config.pool:,} numbers" if config.pool else "N/5 numbers"
    return (f"Profiles: {'; '.join(parts)}. Calls over {config.days} days, {pool}, seed {config.seed}; "
            f"real rows with a floor over {config.max_floor_minutes:g} min are skipped.")


PREAMBLE = """# Benchmark results

Appended by `python bench/run.py` (see its docstring, or the README's
"Benchmarks" section). Each section is one run: the date (UTC), the machine, the
commit and the command line, then the table. Columns: wall time of the tool's
process (start to exit); calls/s = N / wall; CPU s = user + system of the tool's
process; peak RSS of the tool's process (the sandbox runs in another process);
requests per 1,000 calls counted by each emulated API; the rate-limit floor (the
time the configured per-minute limits and latency alone force on the
unavoidable requests, and which service sets it) and wall / floor. A live
section (`--profile live`, see bench/live_profile.py) has three tables instead:
delays from a call's end to its record with requests per call, webhook
acknowledgement times, and a day's Aircall requests against cron `sync`.
"""


# ---------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", default=None, help="target modes, comma-separated (default task,voice,front)")
    p.add_argument("--profile", default=None,
                   help="real, raw, live, or several comma-separated (default real,raw: real at 10,000 calls, raw "
                        "at 10,000 and 100,000; live is run only when named: serve fed by webhooks, mode task "
                        "unless --modes says otherwise, about 12 minutes a mode)")
    p.add_argument("--calls", default=None,
                   help="numbers of calls, comma-separated (applies to every profile; live: the steady phase's, "
                        f"first number only, default {live_profile.LiveConfig.calls})")
    p.add_argument("--smoke", action="store_true",
                   help=f"N={SMOKE_CALLS}, raw profile, mode task, no results file: checks that it runs "
                        "(with --profile live: a tiny live row, about 20 s)")
    p.add_argument("--latency-ms", type=float, default=50.0, help="per-request latency of the real and live profiles (50)")
    p.add_argument("--aircall-rpm", type=int, default=60, help="Aircall requests per minute, real profile (60)")
    p.add_argument("--front-rpm", type=int, default=50, help="Front requests per minute, real profile (50)")
    p.add_argument("--days", type=int, default=30, help="spread the calls over this many days (30)")
    p.add_argument("--pool", type=int, default=None, help="distinct external numbers (default N/5)")
    p.add_argument("--seed", type=int, default=1, help="seed of the generated data (1)")
    p.add_argument("--max-floor-minutes", type=float, default=10.0,
                   help="skip real rows whose rate-limit floor is longer (10); raise it to run 100k real")
    p.add_argument("--timeout", type=float, default=3 * 3600, help="kill a tool run after this many seconds")
    p.add_argument("--results", type=Path, default=None,
                   help="append the table here (default bench/results.md; none with --smoke)")
    p.add_argument("--no-results", action="store_true", help="print only; append to no file")
    p.add_argument("--cprofile", type=Path, default=None, metavar="DIR",
                   help="run the tool under cProfile, one .prof per row in DIR (slows it down)")
    p.add_argument("--sequential", action="store_true",
                   help="one row at a time (default: the real rows, which wait on rate limits, run alongside)")
    p.add_argument("--repeat", type=int, default=1, metavar="K",
                   help="run each row K times and report the run of median wall time (a noisy machine)")
    p.add_argument("--keep", type=Path, default=None, metavar="DIR",
                   help="keep each row's settings file and the tool's output in DIR")
    live = p.add_argument_group("live profile (see bench/live_profile.py)")
    d = live_profile.LiveConfig()
    live.add_argument("--live-rate", type=float, default=d.rate, metavar="PER_MIN",
                      help=f"steady phase: calls placed a minute ({d.rate:g})")
    live.add_argument("--live-burst", type=int, default=d.burst, metavar="N",
                      help=f"burst phase: calls hanging up at the same moment ({d.burst})")
    live.add_argument("--live-posts", type=int, default=d.posts, metavar="N",
                      help=f"ack phase: webhook POSTs sent straight to serve ({d.posts:,}, 10%% of them repeats)")
    live.add_argument("--live-clients", type=int, default=d.clients, metavar="N",
                      help=f"ack phase: concurrent clients ({d.clients})")
    live.add_argument("--live-calls-per-day", type=int, default=d.calls_per_day, metavar="N",
                      help=f"the Aircall history (24 h) the reconciler and sync read ({d.calls_per_day:,})")
    live.add_argument("--live-time-scale", type=float, default=d.time_scale, metavar="S",
                      help=f"real seconds per emulated second of the calls' lifecycles ({d.time_scale:g}: real time)")
    return p.parse_args(argv)


def _split(text: str, allowed: tuple[str, ...] | None, what: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if allowed is not None:
        for x in items:
            if x not in allowed:
                raise SystemExit(f"bench/run.py: {what}: expected one of {', '.join(allowed)}, got {x!r}")
    if not items:
        raise SystemExit(f"bench/run.py: {what}: empty")
    return items


def plan(args: argparse.Namespace) -> tuple[list[Case], list[str]]:
    """The batch rows (live rows: see ``live_plan``)."""
    modes = _split(args.modes or ("task" if args.smoke else ",".join(MODES)), MODES, "--modes")
    profiles = _split(args.profile or ("raw" if args.smoke else "real,raw"), PROFILES, "--profile")
    profiles = [p for p in profiles if p in BATCH_PROFILES]
    if args.calls:
        try:
            numbers = [int(x.replace("_", "")) for x in _split(args.calls, None, "--calls")]
        except ValueError:
            raise SystemExit("bench/run.py: --calls: expected whole numbers, e.g. 10000,100000") from None
        if any(n < 1 for n in numbers):
            raise SystemExit("bench/run.py: --calls: numbers must be positive")
        calls = {p: numbers for p in profiles}
    elif args.smoke:
        calls = {p: [SMOKE_CALLS] for p in profiles}
    else:
        calls = DEFAULT_CALLS
    cases = [Case(p, m, n) for p in profiles for n in calls[p] for m in modes]
    return cases, profiles


def live_plan(args: argparse.Namespace) -> tuple[list[str], live_profile.LiveConfig | None]:
    """The live profile's modes and settings (no modes: the profile was not asked for)."""
    if "live" not in _split(args.profile or "raw", PROFILES, "--profile"):
        return [], None
    modes = _split(args.modes or "task", MODES, "--modes")
    if args.smoke:
        # A tiny row for CI: checks the whole loop runs, measures nothing worth keeping.
        cfg = live_profile.LiveConfig(calls=6, rate=120, burst=10, posts=200, clients=4, calls_per_day=600,
                                      time_scale=0.02, talk=(10, 20), syncs=1, phase_timeout=60, latency_ms=0)
    else:
        cfg = live_profile.LiveConfig(rate=args.live_rate, burst=args.live_burst, posts=args.live_posts,
                                      clients=args.live_clients, calls_per_day=args.live_calls_per_day,
                                      time_scale=args.live_time_scale, latency_ms=args.latency_ms)
    if args.calls:
        try:
            cfg.calls = int(args.calls.split(",")[0].replace("_", ""))
        except ValueError:
            raise SystemExit("bench/run.py: --calls: expected whole numbers, e.g. 300") from None
    cfg.seed = args.seed
    if min(cfg.calls, cfg.burst, cfg.posts, cfg.clients, cfg.calls_per_day) < 1 or not cfg.rate > 0 \
            or not 0.001 <= cfg.time_scale <= 10:
        raise SystemExit("bench/run.py: --calls, --live-burst, --live-posts, --live-clients, --live-calls-per-day "
                         "and --live-rate must be positive, --live-time-scale within 0.001..10")
    return modes, cfg


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    cases, profiles = plan(args)
    live_modes, live_config = live_plan(args)
    config = Config(latency_ms=args.latency_ms, aircall_rpm=args.aircall_rpm, front_rpm=args.front_rpm,
                    days=args.days, pool=args.pool, seed=args.seed, max_floor_minutes=args.max_floor_minutes,
                    timeout=args.timeout, cprofile=args.cprofile, keep=args.keep)
    if min(args.aircall_rpm, args.front_rpm, args.repeat) < 1 or args.days < 1 or args.latency_ms < 0:
        raise SystemExit("bench/run.py: --aircall-rpm, --front-rpm, --days and --repeat must be positive, "
                         "--latency-ms >= 0")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    began = time.monotonic()
    started, load_before = datetime.now(UTC), _load()
    # Each mode once on a tiny raw sandbox: a mode the tool refuses is not worth a 100k sandbox.
    available: dict[str, Result] = {}
    for mode in dict.fromkeys(c.mode for c in cases):
        probe = Case("raw", mode, PROBE_CALLS)
        log(f"probe: mode {mode} on {PROBE_CALLS} calls")
        available[mode] = run_case(probe, config, log=lambda _m: None)
        if available[mode].status != "ok":
            log(f"  mode {mode}: {available[mode].status}: {available[mode].note}")

    done: dict[Case, Result] = {}
    runnable: list[Case] = []
    for case in cases:
        probe = available[case.mode]
        floor = floor_for(case, config)
        if probe.status != "ok":
            done[case] = Result(case, probe.status, note=probe.note, floor=floor)
        elif case.profile == "real" and floor.seconds > config.max_floor_minutes * 60:
            done[case] = Result(case, "skipped", floor=floor,
                                note=f"rate-limit floor {floor.seconds / 60:.0f} min ({floor.binding}) > "
                                     f"--max-floor-minutes {config.max_floor_minutes:g}")
        else:
            runnable.append(case)

    def measure(case: Case) -> Result:
        runs: list[Result] = []
        for _ in range(args.repeat):
            log(f"run: {case.profile} {case.mode} {case.calls:,} calls (floor {floor_for(case, config).seconds:.0f}s)")
            result = run_case(case, config, log=log)
            log(f"  -> {case.profile} {case.mode} {case.calls:,}: {result.status}"
                + (f" in {result.wall:.1f}s" if result.wall is not None else "")
                + (f": {result.note}" if result.note and result.status != "ok" else ""))
            if result.status != "ok":
                return result
            runs.append(result)
        runs.sort(key=lambda r: r.wall)
        chosen = runs[len(runs) // 2]
        if len(runs) > 1:
            chosen.note = (chosen.note + "; " if chosen.note else "") + (
                f"the median of {len(runs)} runs, whose wall times were "
                + ", ".join(f"{r.wall:.1f}" for r in runs) + " s")
        return chosen

    # Real rows wait on the rate limits (their CPU is a few seconds in minutes): unless --sequential they
    # run side by side, and alongside the raw rows, which run one at a time.
    background = [] if args.sequential else [c for c in runnable if c.profile == "real"]
    with ThreadPoolExecutor(max_workers=max(1, len(background))) as pool:
        futures = {case: pool.submit(measure, case) for case in background}
        for case in runnable:
            if case not in futures:
                done[case] = measure(case)
        for case, future in futures.items():
            done[case] = future.result()
    results = [done[case] for case in cases]

    text = table(results) if results else ""
    extra = notes(results)
    if text:
        print(text)
    for line in extra:
        print(line)

    live_results: list[live_profile.LiveResult] = []
    for mode in live_modes:
        assert live_config is not None
        log(f"run: live {mode}: {live_config.calls:,} calls at {live_config.rate:g}/min, a burst of "
            f"{live_config.burst:,}, {live_config.posts:,} POSTs from {live_config.clients} clients")
        row = live_profile.run_live(mode, live_config, log=log, endpoint=_endpoint, servers=_servers,
                                    steal=_steal_seconds, keep=args.keep)
        log(f"  -> live {mode}: {row.status}" + (f": {'; '.join(row.problems)}" if row.problems else ""))
        live_results.append(row)
    live_text = ""
    if live_results:
        assert live_config is not None
        live_text = (f"```\n{live_profile.delay_table(live_results, live_config)}\n```\n\n"
                     f"```\n{live_profile.ack_table(live_results)}\n```\n\n"
                     f"```\n{live_profile.day_table(live_results, live_config)}\n```\n\n"
                     + "\n".join(live_profile.live_notes(live_results, live_config)) + "\n")
        print(("\n" if results else "") + live_text.replace("```\n", ""), end="")
    elapsed = time.monotonic() - began
    log(f"benchmark finished in {elapsed:.0f}s")
    ran = (f"The whole run took {elapsed / 60:.1f} min (sandboxes included); "
           + ("one row at a time" if args.sequential or not background
              else "the real rows ran alongside the raw rows, which ran one at a time")
           + f"; {load_before} at the start, {_load()} at the end.")
    setting_lines = ([settings_line(config, profiles)] if results else []) + (
        [live_profile.settings_line(live_config)] if live_results and live_config is not None else [])

    target = None if args.no_results else (args.results or (None if args.smoke else RESULTS))
    if target is not None:
        fresh = not target.exists()
        with open(target, "a", encoding="utf-8") as out:
            if fresh:
                out.write(PREAMBLE)
            out.write(f"\n{header(argv, started)}\n\n{' '.join(setting_lines)} {ran}\n\n")
            if text:
                out.write(f"```\n{text}\n```\n\n")
            if extra:
                out.write("\n".join(extra) + "\n")
            if live_text:
                out.write(("\n" if extra else "") + live_text)
        log(f"appended to {target}")
    return 0 if all(r.status in ("ok", "not available", "skipped") for r in results) and all(
        r.status == "ok" for r in live_results) else 1


if __name__ == "__main__":
    sys.exit(main())
