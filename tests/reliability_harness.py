"""Reliability harness: sandboxes served from their own process, the CLI run as a subprocess.

DESIGN §6 promises that a run killed at *any* point and started again ends in the
same CRM state as one clean run. To test that for real, the CLI must be a process
that can be SIGKILLed, and the emulated org must outlive it: so the sandboxes live
in this separate *harness* process, and the test talks to it over a tiny loopback
JSON endpoint (the *control* endpoint).

Server side (``python tests/reliability_harness.py``): prints one JSON line
``{"control": "http://127.0.0.1:PORT"}`` and serves until ``POST /shutdown`` or
until its standard input closes (the test process died: nothing is left behind).

Control API, all JSON:

``POST /boxes``
    start a sandbox: ``{"name", "calls", "seed", "days", "end", "pool_size",
    "aircall_faults": {Faults kwargs, "script": [{"kinds", "path_prefix"}]},
    "salesforce_http_faults": {Faults kwargs, "script": [...], "exclude": [path prefixes]},
    "salesforce_faults": {SalesforceFaults kwargs},
    "salesforce_auth": {AuthConfig kwargs}, "aircall_credentials": [id, token],
    "aircall_contacts": {ContactOptions kwargs}}``;
    answers ``{"settings", "aircall_url", "salesforce_url", "seed_ids"}``.
``GET /boxes/NAME/records/OBJECT``
    every record of one sObject in the emulated org.
``GET /boxes/NAME/calls``
    every Aircall call (id, status, started_at, ended_at, raw_digits).
``GET /boxes/NAME/requests``
    the request log of both emulators, oldest first.
``GET /boxes/NAME/contacts``
    every Aircall contact the API can see (``ContactBook.all``), and ``changes``: what the API changed.
``GET /boxes/NAME/stats``
    requests served per API, injected faults per API and kind, UNABLE_TO_LOCK_ROW
    injected, Salesforce write requests that succeeded, token requests, emulator
    errors (tracebacks: an emulator bug must fail the test).
``POST /boxes/NAME/trap``
    arm a kill point: ``{"api", "method", "path", "nth", "phase"}``. The ``nth``
    request (counted from now) whose API, method and path (a substring, or a
    suffix when it ends with ``$``) match is
    held: ``phase = "before"`` holds it before the emulator serves it (it is
    never served); ``"after"`` serves it (a write lands in the org) and holds the
    response. The test sees ``triggered`` and SIGKILLs the CLI, which therefore
    dies exactly there; then it calls ``release``. ``"lost"`` serves it and then
    drops the connection instead of answering (nothing is held, nobody is killed):
    the client's request landed but its answer was lost.
``GET /boxes/NAME/trap``
    ``{"armed", "seen", "triggered", "request"}``.
``POST /boxes/NAME/release``
    let a held request go (its client is dead by then).
``DELETE /boxes/NAME``, ``POST /shutdown``.

Client side: :class:`Harness` (start, boxes, records, traps) and :func:`run_cli`,
:func:`start_cli`, :func:`kill_at` used by ``tests/test_reliability.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CLI = [sys.executable, "-m", "aircall_sync"]

#: Record fields that depend on when a record was written, not on what was written.
VOLATILE_FIELDS = frozenset({"Id", "CreatedDate", "LastModifiedDate", "SystemModstamp", "CompletedDateTime",
                             "LastActivityDate", "LastViewedDate", "LastReferencedDate"})
#: Fields that hold record ids (compared through what they point at, see normalize()).
REFERENCE_FIELDS = frozenset({"WhoId", "WhatId", "AccountId", "OwnerId", "ContactId", "CreatedById",
                              "LastModifiedById", "ConvertedAccountId", "ConvertedContactId",
                              "ConvertedOpportunityId", "PersonContactId", "ParentId", "MasterRecordId"})


# ============================================================================ server side


@dataclass
class _Trap:
    api: str | None
    method: str | None
    path: str | None
    nth: int
    phase: str
    seen: int = 0
    triggered: bool = False
    request: dict | None = None
    release: threading.Event = field(default_factory=threading.Event)

    def matches(self, api: str, method: str, path: str) -> bool:
        return request_matches(self.api, self.method, self.path, api, method, path)


def request_matches(want_api: str | None, want_method: str | None, want_path: str | None, api: str, method: str,
                    path: str) -> bool:
    """A trap's filter: API and method equal, path a substring (or a suffix when it ends with ``$``)."""
    if want_path is None:
        where = True
    elif want_path.endswith("$"):  # "/composite$": the path ends there
        where = path.rstrip("/").endswith(want_path[:-1])
    else:
        where = want_path in path
    return (want_api is None or want_api == api) and (want_method is None or want_method == method) and where


class _Box:
    """One sandbox and the traps armed on it."""

    def __init__(self, spec: Mapping[str, Any]):
        from aircall_sync.sandbox.aircall_api import AircallApp
        from aircall_sync.sandbox.aircall_contacts import ContactOptions
        from aircall_sync.sandbox.salesforce_api import AuthConfig, SalesforceFaults
        from aircall_sync.sandbox.server import Faults, LoopbackServer
        from aircall_sync.sandbox.stack import Sandbox, SandboxOptions

        self.name = spec["name"]
        end = datetime.fromisoformat(spec["end"]) if spec.get("end") else None
        http_spec = dict(spec.get("salesforce_http_faults") or {})
        sf_scripts = http_spec.pop("script", [])
        exclude = tuple(http_spec.pop("exclude", ()))
        sf_http = _ExcludingFaults(exclude, **http_spec) if http_spec or sf_scripts else None
        aircall_spec = dict(spec.get("aircall_faults") or {})
        aircall_scripts = aircall_spec.pop("script", [])
        aircall_faults = Faults(**aircall_spec) if aircall_spec or aircall_scripts else None
        # Scripted faults ("the next matching requests fail with ...") come first, then the odds.
        for faults, scripts in ((aircall_faults, aircall_scripts), (sf_http, sf_scripts)):
            for item in scripts:
                faults.script(item["kinds"], path_prefix=item.get("path_prefix"), method=item.get("method"))
        options = SandboxOptions(
            calls=int(spec.get("calls", 500)), seed=int(spec.get("seed", 1)), days=int(spec.get("days", 7)),
            end=end, pool_size=spec.get("pool_size"),
            aircall_faults=aircall_faults,
            salesforce_faults=SalesforceFaults(**spec["salesforce_faults"]) if spec.get("salesforce_faults") else None,
            salesforce_http_faults=sf_http,
            salesforce_auth=AuthConfig(**spec["salesforce_auth"]) if spec.get("salesforce_auth") else None,
            **({"aircall_contacts": ContactOptions(**spec["aircall_contacts"])} if spec.get("aircall_contacts")
               else {}),
        )
        self.box = Sandbox(options).start()
        self.extra_server = None
        credentials = spec.get("aircall_credentials")
        if credentials:
            # The stack's Aircall app takes the sandbox's fixed credentials; serve the same
            # store again with the ones the test chose (e.g. fake secrets).
            app = AircallApp(self.box.aircall_store, api_id=credentials[0], api_token=credentials[1])
            self.extra_server = LoopbackServer(app, api="aircall", faults=options.aircall_faults).start()
        self.lock = threading.Lock()
        self.trap: _Trap | None = None
        self.served = {"aircall": 0, "salesforce": 0}
        self._wrap(self._aircall_app(), "aircall")
        self._wrap(self.box.salesforce.app, "salesforce")
        self.seed_ids = sorted(self._all_ids())

    # -- plumbing

    def _aircall_server(self):
        return self.extra_server or self.box.aircall_server

    def _aircall_app(self):
        server = self._aircall_server()
        return next(m.app for m in server._mounts if m.api == "aircall")

    def _all_ids(self) -> set[str]:
        store = self.box.sf_store
        ids = set()
        for obj in store.schema:
            for rec in store.records(obj):
                ids.add(rec["Id"])
        return ids

    def _wrap(self, app, api: str) -> None:
        original = app.handle
        from aircall_sync.sandbox.server import Response

        def handle(request):
            with self.lock:
                self.served[api] += 1
                trap = self.trap
                fire = False
                if trap is not None and not trap.triggered and trap.matches(api, request.method, request.path):
                    trap.seen += 1
                    if trap.seen >= trap.nth:
                        fire = True
            if not fire:
                return original(request)
            info = {"api": api, "method": request.method, "path": request.path, "phase": trap.phase}
            if trap.phase == "lost":
                # Served (a write lands), then the connection drops before the answer: the
                # client cannot know whether its request did anything.
                response = original(request)
                info["status"] = response.status
                _LOCAL.drop_response = True
                with self.lock:
                    trap.request = info
                    trap.triggered = True
                return response
            if trap.phase == "after":
                response = original(request)
                info["status"] = response.status
            else:
                response = Response.json([{"errorCode": "SERVER_UNAVAILABLE", "message": "held by the harness"}],
                                         status=503)
            with self.lock:
                trap.request = info
                trap.triggered = True
            # The test kills the client now; hold until it says so (or give up after a while).
            trap.release.wait(120)
            return response

        app.handle = handle  # an instance attribute: the server calls mount.app.handle

    # -- API

    def info(self) -> dict:
        settings = self.box.settings("STATE_PATH")
        if self.extra_server is not None:
            settings["aircall"]["base_url"] = self.extra_server.url + "/v1"
        return {"settings": settings, "aircall_url": settings["aircall"]["base_url"].removesuffix("/v1"),
                "salesforce_url": self.box.salesforce.url, "seed_ids": self.seed_ids}

    def records(self, obj: str) -> list[dict]:
        return self.box.sf_store.records(obj)

    def calls(self) -> list[dict]:
        out = []
        for call in self.box.aircall_store.iter_calls(0, 2**40):
            out.append({k: call.get(k) for k in ("id", "status", "started_at", "ended_at", "raw_digits",
                                                  "direction", "answered_at")})
        return out

    def stats(self) -> dict:
        out: dict[str, Any] = {"served": dict(self.served), "requests": {}, "faults": {}, "errors": []}
        for api, server in (("aircall", self._aircall_server()), ("salesforce", self.box.salesforce.server)):
            log = server.requests
            out["requests"][api] = len(log)
            faults: dict[str, int] = {}
            for rec in log:
                if rec.fault:
                    faults[rec.fault] = faults.get(rec.fault, 0) + 1
            out["faults"][api] = faults
            out["errors"].extend(server.errors)
        out["errors"].extend(self.box.salesforce.app.bulk_errors)
        out["token_requests"] = self.box.salesforce.server.count(path_prefix="/services/oauth2/token")
        out["writes"] = sum(1 for rec in self.box.salesforce.server.requests
                            if rec.method in ("POST", "PATCH", "PUT", "DELETE") and rec.status is not None
                            and rec.status < 300 and ("/composite/sobjects" in rec.path or "/jobs/ingest" in rec.path
                                                      or "/sobjects/" in rec.path))
        out["locks_injected"] = self.box.salesforce.app.faults.locks_injected
        return out

    def contacts(self) -> dict:
        book = self.box.aircall_contacts
        return {"contacts": book.all(), "changes": [[c.op, c.contact_id, c.changed] for c in book.changes("api")]}

    def request_log(self) -> list[list]:
        out = []
        for api, server in (("aircall", self._aircall_server()), ("salesforce", self.box.salesforce.server)):
            out.extend([rec.at, api, rec.method, rec.path, rec.status, rec.fault] for rec in server.requests)
        return [row[1:] for row in sorted(out)]

    def arm(self, spec: Mapping[str, Any]) -> None:
        with self.lock:
            if self.trap is not None:
                self.trap.release.set()
            self.trap = _Trap(api=spec.get("api"), method=spec.get("method"), path=spec.get("path"),
                              nth=int(spec.get("nth", 1)), phase=spec.get("phase", "before"))

    def trap_state(self) -> dict:
        with self.lock:
            t = self.trap
            if t is None:
                return {"armed": False, "seen": 0, "triggered": False, "request": None}
            return {"armed": True, "seen": t.seen, "triggered": t.triggered, "request": t.request}

    def release(self) -> None:
        with self.lock:
            if self.trap is not None:
                self.trap.release.set()
                self.trap = None

    def stop(self) -> None:
        self.release()
        if self.extra_server is not None:
            self.extra_server.stop()
        self.box.stop()


_LOCAL = threading.local()


def _install_drop_hook() -> None:
    """Let a trap drop the connection instead of sending a response it served (phase "lost")."""
    import socket

    from aircall_sync.sandbox import server as srv

    original = srv._Handler._send

    def _send(handler, response, *, head):
        if getattr(_LOCAL, "drop_response", False):
            _LOCAL.drop_response = False
            handler.close_connection = True
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        original(handler, response, head=head)

    srv._Handler._send = _send


def _excluding_faults_class():
    from aircall_sync.sandbox.server import Faults

    class ExcludingFaults(Faults):
        """Faults that spare some paths (e.g. the token endpoint, to test it on its own)."""

        def __init__(self, exclude: tuple[str, ...] = (), **kwargs):
            super().__init__(**kwargs)
            self.exclude = exclude

        def decide(self, api, method, path):
            if any(path.startswith(p) for p in self.exclude):
                return None
            return super().decide(api, method, path)

    return ExcludingFaults


def _ExcludingFaults(exclude, **kwargs):  # noqa: N802 - a factory standing in for the class
    return _excluding_faults_class()(exclude, **kwargs)


class _Control(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    boxes: dict[str, _Box] = {}

    def log_message(self, *args) -> None:
        return

    def _reply(self, payload: Any, status: int = 200) -> None:
        body = json.dumps(payload, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    def _dispatch(self) -> None:
        parts = [p for p in self.path.split("?")[0].split("/") if p]
        try:
            if self.command == "POST" and parts == ["shutdown"]:
                self._reply({"ok": True})
                threading.Thread(target=_shutdown, daemon=True).start()
                return
            if self.command == "POST" and parts == ["boxes"]:
                spec = self._body()
                if spec["name"] in self.boxes:
                    self.boxes.pop(spec["name"]).stop()
                box = _Box(spec)
                self.boxes[spec["name"]] = box
                self._reply(box.info())
                return
            if len(parts) >= 2 and parts[0] == "boxes":
                box = self.boxes[parts[1]]
                rest = parts[2:]
                if self.command == "DELETE" and not rest:
                    self.boxes.pop(parts[1]).stop()
                    self._reply({"ok": True})
                elif self.command == "GET" and rest[:1] == ["records"]:
                    self._reply(box.records(rest[1]))
                elif self.command == "GET" and rest == ["calls"]:
                    self._reply(box.calls())
                elif self.command == "GET" and rest == ["stats"]:
                    self._reply(box.stats())
                elif self.command == "GET" and rest == ["requests"]:
                    self._reply(box.request_log())
                elif self.command == "GET" and rest == ["contacts"]:
                    self._reply(box.contacts())
                elif self.command == "POST" and rest == ["trap"]:
                    box.arm(self._body())
                    self._reply({"ok": True})
                elif self.command == "GET" and rest == ["trap"]:
                    self._reply(box.trap_state())
                elif self.command == "POST" and rest == ["release"]:
                    box.release()
                    self._reply({"ok": True})
                else:
                    self._reply({"error": "no such route"}, 404)
                return
            self._reply({"error": "no such route"}, 404)
        except Exception as exc:  # a harness bug: say it to the test
            import traceback

            self._reply({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}, 500)

    do_GET = do_POST = do_DELETE = _dispatch


_SERVER: ThreadingHTTPServer | None = None


def _shutdown() -> None:
    for box in list(_Control.boxes.values()):
        try:
            box.stop()
        except Exception:
            pass
    os._exit(0)


def serve() -> None:
    global _SERVER
    sys.path.insert(0, str(REPO))
    _install_drop_hook()
    _SERVER = ThreadingHTTPServer(("127.0.0.1", 0), _Control)
    _SERVER.daemon_threads = True
    port = _SERVER.server_address[1]
    print(json.dumps({"control": f"http://127.0.0.1:{port}"}), flush=True)

    def watch_stdin() -> None:
        # The test process owns our stdin: when it goes away, so do we.
        try:
            while sys.stdin.buffer.read(1):
                pass
        finally:
            _shutdown()

    threading.Thread(target=watch_stdin, daemon=True).start()
    _SERVER.serve_forever(poll_interval=0.1)


# ============================================================================ client side


class HarnessError(RuntimeError):
    pass


class Harness:
    """The harness process, seen from the test."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve())], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        line = self.proc.stdout.readline()
        if not line:
            raise HarnessError("the harness process did not start")
        self.url = json.loads(line)["control"]

    def call(self, method: str, path: str, payload: Any = None, timeout: float = 120) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise HarnessError(exc.read().decode(errors="replace")) from None

    def box(self, name: str, **spec: Any) -> BoxHandle:
        spec = {"name": name, **spec}
        if isinstance(spec.get("end"), datetime):
            spec["end"] = spec["end"].isoformat()
        return BoxHandle(self, name, self.call("POST", "/boxes", spec))

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("POST", "/shutdown", {}, timeout=10)
            except Exception:
                pass
            try:
                self.proc.stdin.close()
            except Exception:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class BoxHandle:
    harness: Harness
    name: str
    info: dict

    @property
    def seed_ids(self) -> set[str]:
        return set(self.info["seed_ids"])

    def settings(self, state_path: Path, **sections: Any) -> dict:
        settings = json.loads(json.dumps(self.info["settings"]))
        settings["sync"]["state_path"] = str(state_path)
        settings["aircall"]["requests_per_minute"] = 60000
        for section, values in sections.items():
            target = settings
            for part in section.split("."):
                target = target.setdefault(part, {})
            target.update(values)
        return settings

    def write_settings(self, path: Path, state_path: Path, **sections: Any) -> Path:
        import tomli_w

        path.write_text(tomli_w.dumps(self.settings(state_path, **sections)), encoding="utf-8")
        return path

    def records(self, obj: str) -> list[dict]:
        return self.harness.call("GET", f"/boxes/{self.name}/records/{obj}")

    def calls(self) -> list[dict]:
        return self.harness.call("GET", f"/boxes/{self.name}/calls")

    def stats(self) -> dict:
        return self.harness.call("GET", f"/boxes/{self.name}/stats")

    def contacts(self) -> dict:
        """The emulated Aircall's contacts (``contacts``) and the API's changes (``changes``: [op, id, changed])."""
        return self.harness.call("GET", f"/boxes/{self.name}/contacts")

    def request_log(self) -> list[list]:
        """Every request served, oldest first: [api, method, path, status, fault]."""
        return self.harness.call("GET", f"/boxes/{self.name}/requests")

    def arm(self, api: str | None = None, method: str | None = None, path: str | None = None, nth: int = 1,
            phase: str = "before") -> None:
        self.harness.call("POST", f"/boxes/{self.name}/trap",
                          {"api": api, "method": method, "path": path, "nth": nth, "phase": phase})

    def trap(self) -> dict:
        return self.harness.call("GET", f"/boxes/{self.name}/trap")

    def release(self) -> None:
        self.harness.call("POST", f"/boxes/{self.name}/release", {})

    def stop(self) -> None:
        self.harness.call("DELETE", f"/boxes/{self.name}")


# ---------------------------------------------------------------- the CLI as a subprocess


@dataclass
class CliResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRCALL_SYNC_", "COLUMNS"))}
    env.update({"PYTHONPATH": str(REPO), "NO_COLOR": "1", "TERM": "dumb", "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


def start_cli(config: Path, *args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None,
              global_args: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "--config", str(config), *global_args, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, cwd=str(cwd or REPO),
                            env=cli_env(env), start_new_session=True)


def run_cli(config: Path, *args: str, timeout: float = 300, **kwargs: Any) -> CliResult:
    proc = start_cli(config, *args, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise
    return CliResult(list(args), proc.returncode, out, err)


@dataclass
class Kill:
    """Where the harness held the request when the CLI was SIGKILLed."""

    request: dict
    returncode: int
    stdout: str
    stderr: str


def kill_at(box: BoxHandle, config: Path, *args: str, api: str | None = None, method: str | None = None,
            path: str | None = None, nth: int = 1, phase: str = "before", timeout: float = 120) -> Kill:
    """Run the CLI until the ``nth`` matching request, SIGKILL it there, release the request.

    Raises ``AssertionError`` if the run ends before it reaches that request.
    """
    box.arm(api=api, method=method, path=path, nth=nth, phase=phase)
    proc = start_cli(config, *args)
    deadline = time.monotonic() + timeout
    try:
        while True:
            state = box.trap()
            if state["triggered"]:
                break
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(
                    f"the run ended (exit {proc.returncode}) before request {nth} matching "
                    f"{api} {method} {path} (saw {state['seen']}):\n{out}\n{err}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for the kill point {api} {method} {path} #{nth}")
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        box.release()
    return Kill(state["request"], proc.returncode, out, err)


# ---------------------------------------------------------------- comparing org states


def normalize(value: Any, ids: Mapping[str, Any], aircall_url: str) -> Any:
    """A field value made comparable across sandboxes: ids of records created by a run are named by
    what they are (``ids``), and the Aircall sandbox's address is replaced by a placeholder."""
    if isinstance(value, str):
        if value in ids:
            return ids[value]
        return value.replace(aircall_url, "<aircall>")
    return value


def created_key(obj: str, rec: Mapping[str, Any]) -> tuple:
    """What identifies a record a run created, whichever sandbox it is in."""
    if obj in ("Lead", "Contact", "Account"):
        return ("new", obj, rec.get("Phone"))
    if obj == "Case":
        return ("new", obj, rec.get("ContactId"), rec.get("Subject"))
    return ("new", obj, rec.get("CallObject"))


@dataclass
class OrgState:
    """What the tool wrote into one sandbox, in a form comparable with another sandbox's."""

    tasks: dict[str, list[dict]]  # CallObject -> normalized Task(s)
    created: dict[str, dict[Any, list[dict]]]  # object -> key -> normalized records the runs created

    def task_duplicates(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.tasks.items() if len(v) > 1}

    def task_fields(self) -> dict[str, dict]:
        return {k: v[0] for k, v in self.tasks.items()}


CREATED_OBJECTS = ("Lead", "Contact", "Account", "Case")


def org_state(box: BoxHandle) -> OrgState:
    seeded = box.seed_ids
    aircall_url = box.info["aircall_url"]
    raw: dict[str, list[dict]] = {obj: [r for r in box.records(obj) if r["Id"] not in seeded]
                                  for obj in CREATED_OBJECTS}
    ids: dict[str, Any] = {}
    for obj, recs in raw.items():
        for rec in recs:
            ids[rec["Id"]] = created_key(obj, rec)
            if len(rec["Id"]) == 18:
                ids[rec["Id"][:15]] = ids[rec["Id"]]

    def norm(rec: Mapping[str, Any]) -> dict:
        return {k: normalize(v, ids, aircall_url) for k, v in sorted(rec.items()) if k not in VOLATILE_FIELDS}

    tasks: dict[str, list[dict]] = {}
    for task in box.records("Task"):
        tasks.setdefault(str(task.get("CallObject")), []).append(norm(task))
    created: dict[str, dict[Any, list[dict]]] = {}
    for obj, recs in raw.items():
        for rec in recs:
            created.setdefault(obj, {}).setdefault(created_key(obj, rec), []).append(norm(rec))
    return OrgState(tasks, created)


def settled_call_ids(box: BoxHandle, start: datetime, end: datetime, now: datetime | None = None,
                     lag_seconds: int = 1800) -> set[str]:
    """Ids of the calls a backfill of [start, end) must log (RULES R-CALL-5, every flow logged)."""
    now = now or datetime.now(UTC)
    lo, hi = start.timestamp(), end.timestamp()
    out = set()
    for call in box.calls():
        if not (lo <= call["started_at"] < hi):
            continue
        if call["status"] == "done" and call["ended_at"] and call["ended_at"] <= now.timestamp() - lag_seconds:
            out.add(str(call["id"]))
    return out


def diff_states(expected: OrgState, got: OrgState, limit: int = 5) -> list[str]:
    """Human-readable differences in Tasks and created records (empty: the same CRM state)."""
    problems: list[str] = []

    want, have = expected.task_fields(), got.task_fields()
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    if missing:
        problems.append(f"{len(missing)} Task(s) missing, e.g. CallObject {missing[:limit]}")
    if extra:
        problems.append(f"{len(extra)} unexpected Task(s), e.g. CallObject {extra[:limit]}")
    dups = got.task_duplicates()
    if dups:
        problems.append(f"{len(dups)} call(s) with more than one Task, e.g. {dict(list(dups.items())[:limit])}")
    changed: dict[str, dict] = {}
    for k in sorted(set(want) & set(have)):
        fields = {f: (want[k].get(f), have[k].get(f)) for f in sorted(set(want[k]) | set(have[k]))
                  if want[k].get(f) != have[k].get(f)}
        if fields:
            changed[k] = fields
    if changed:
        counts: dict[str, int] = {}
        for fields in changed.values():
            for f in fields:
                counts[f] = counts.get(f, 0) + 1
        problems.append(f"{len(changed)} Task(s) differ; fields that differ (Tasks): {counts}")
        for k in list(changed)[:limit]:
            problems.append(f"Task of call {k} differs: {changed[k]}")
    for obj in CREATED_OBJECTS:
        a = expected.created.get(obj, {})
        b = got.created.get(obj, {})
        if set(a) != set(b):
            problems.append(f"created {obj}s differ: only in the clean run {sorted(set(a) - set(b), key=str)[:limit]}, "
                            f"only here {sorted(set(b) - set(a), key=str)[:limit]}")
        for key in sorted(set(a) & set(b), key=str):
            wa = _distinct(a[key])
            wb = _distinct(b[key])
            if wa != wb:
                if len(wa) == len(wb) == 1:
                    fields = {f: (wa[0].get(f), wb[0].get(f)) for f in sorted(set(wa[0]) | set(wb[0]))
                              if wa[0].get(f) != wb[0].get(f)}
                    problems.append(f"created {obj} {key} differs: {fields}")
                else:
                    problems.append(f"created {obj} {key} differs: clean {wa} vs here {wb}")
                break
    return problems


def _distinct(records: list[dict]) -> list[dict]:
    out: list[dict] = []
    for rec in records:
        if rec not in out:
            out.append(rec)
    return sorted(out, key=lambda r: json.dumps(r, sort_keys=True, default=str))


if __name__ == "__main__":
    serve()
