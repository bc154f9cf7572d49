"""Loopback HTTP(S) server that hosts the emulated APIs, with fault injection.

This module knows nothing about any vendor. It accepts connections on
127.0.0.1, turns each HTTP request into a :class:`Request`, hands it to the
*app* mounted for that path, and writes back the app's :class:`Response`.
An app is any object with ``handle(request) -> Response``; it may also define
``fault_response(fault, request) -> Response`` so that injected errors carry
the vendor's own error body and headers (DESIGN.md §7: "Aircall 429 with
headers", "Front ``_error`` bodies", "Salesforce error arrays").

What the tests and benchmarks read from here:

- ``server.requests``: a log of every request (api, method, path, query,
  status, fault kind), faulted ones included;
- ``server.count(api=..., path_prefix=..., ...)``: counters over that log;
- ``server.errors``: tracebacks of exceptions raised by an app (a bug in the
  emulator must fail a test, not hide behind a 500).

Fault injection (:class:`Faults`) is generic too: seeded probabilities of
429, 5xx, slow responses and dropped connections, a fixed latency for
benchmarks, and scripted queues ("the next three matching requests fail with
429, 503, then a dropped connection").

TLS: pass an ``ssl.SSLContext`` (server side, with a certificate loaded) and
the same server speaks HTTPS; the handshake runs in the connection's own
thread so a slow or broken client cannot stall the accept loop.
"""

from __future__ import annotations

import json
import random
import socket
import ssl
import threading
import time
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, Self, runtime_checkable
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "App",
    "Fault",
    "Faults",
    "LoopbackServer",
    "Request",
    "RequestRecord",
    "Response",
]


# --------------------------------------------------------------------------
# Request / response
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request as an app sees it.

    ``path`` is relative to the app's mount prefix and excludes the query
    string. ``base_url`` is the absolute URL of the mount point
    (``http://127.0.0.1:PORT`` + prefix): apps build every absolute link they
    return (pagination links, ``direct_link``) from it, so that a client
    following them stays on the emulator.
    """

    method: str
    path: str
    query: dict[str, str]
    query_items: tuple[tuple[str, str], ...]
    headers: dict[str, str]
    body: bytes
    base_url: str
    api: str

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def query_all(self, name: str) -> list[str]:
        """Every value of a repeated parameter (``tags[]=1&tags[]=2``)."""
        return [v for k, v in self.query_items if k == name]

    def json(self) -> Any:
        """The body parsed as JSON; ``None`` for an empty body.

        Raises ``ValueError`` on malformed JSON so the app can answer 400.
        """
        if not self.body:
            return None
        return json.loads(self.body.decode("utf-8"))


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(
        cls,
        payload: Any,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        # Compact separators: real APIs send compact JSON, and at 100k calls
        # the whitespace is measurable in the benchmarks.
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        all_headers = {"Content-Type": "application/json; charset=utf-8"}
        if headers:
            all_headers.update(headers)
        return cls(status=status, body=body, headers=all_headers)


@runtime_checkable
class App(Protocol):
    def handle(self, request: Request) -> Response: ...


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One line of the request log. ``status`` is ``None`` for a dropped connection."""

    api: str
    method: str
    path: str
    query: dict[str, str]
    status: int | None
    fault: str | None
    at: float
    elapsed_ms: float


# --------------------------------------------------------------------------
# Fault injection
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fault:
    """What to do to one request instead of (or before) serving it.

    ``kind`` is ``"drop"``, ``"slow"`` or an HTTP status as text (``"429"``,
    ``"503"``…). For status faults ``status`` is that code. ``delay_ms`` is
    the extra delay of a ``"slow"`` fault (the request is then served
    normally). ``retry_after_s`` tells the app how far in the future to put
    its reset / retry-after hint, so tests do not sleep for a real minute.
    """

    kind: str
    status: int | None = None
    delay_ms: float = 0.0
    retry_after_s: float = 1.0


_RANDOM_5XX = (500, 502, 503)


@dataclass(slots=True)
class _Script:
    kinds: list[str]
    path_prefix: str | None
    api: str | None
    method: str | None

    def matches(self, api: str, method: str, path: str) -> bool:
        return (
            (self.api is None or self.api == api)
            and (self.method is None or self.method == method)
            and (self.path_prefix is None or path.startswith(self.path_prefix))
        )


class Faults:
    """Seeded, deterministic fault injection shared by every mounted app.

    Probabilities apply independently to each request that matches
    ``path_prefix`` / ``api`` (when given). One random number is drawn per
    eligible request, so the same seed and the same request order give the
    same faults: benchmark and test runs are repeatable.

    Scripted faults (:meth:`script`) take precedence: the next matching
    requests get exactly the listed kinds, in order. A kind is ``"429"``,
    ``"500"``, ``"502"``, ``"503"`` (any 4xx/5xx code), ``"drop"`` (the
    connection is closed without a response), ``"slow"`` or ``"slow:MS"``
    (served after a delay), or ``"ok"`` (served normally; lets a script say
    "let one through, then fail").

    ``latency_ms`` is added to every request, faulted or not, to model a
    far-away API in benchmarks.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        p_429: float = 0.0,
        p_5xx: float = 0.0,
        p_slow: float = 0.0,
        p_drop: float = 0.0,
        slow_ms: float = 1500.0,
        latency_ms: float = 0.0,
        retry_after_s: float = 1.0,
        path_prefix: str | None = None,
        api: str | None = None,
    ) -> None:
        for name, p in (("p_429", p_429), ("p_5xx", p_5xx), ("p_slow", p_slow), ("p_drop", p_drop)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {p}")
        if p_429 + p_5xx + p_slow + p_drop > 1.0:
            raise ValueError("the fault probabilities add up to more than 1")
        self.p_429 = p_429
        self.p_5xx = p_5xx
        self.p_slow = p_slow
        self.p_drop = p_drop
        self.slow_ms = slow_ms
        self.latency_ms = latency_ms
        self.retry_after_s = retry_after_s
        self.path_prefix = path_prefix
        self.api = api
        self._rng = random.Random(seed)
        self._scripts: list[_Script] = []
        self._lock = threading.Lock()

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind in ("drop", "slow", "ok"):
            return
        if kind.startswith("slow:"):
            float(kind[5:])
            return
        if kind.isdigit() and 400 <= int(kind) <= 599:
            return
        raise ValueError(f"unknown fault kind {kind!r}: use an HTTP error code, 'drop', 'slow[:ms]' or 'ok'")

    def script(
        self,
        kinds: Iterable[str | int],
        *,
        path_prefix: str | None = None,
        api: str | None = None,
        method: str | None = None,
    ) -> None:
        """Make the next matching requests fail with ``kinds``, in order."""
        items = [str(k) for k in kinds]
        for k in items:
            self._check_kind(k)
        with self._lock:
            self._scripts.append(_Script(items, path_prefix, api, method.upper() if method else None))

    def pending(self) -> int:
        """How many scripted faults have not fired yet."""
        with self._lock:
            return sum(len(s.kinds) for s in self._scripts)

    def clear(self) -> None:
        """Forget every scripted fault (the probabilities stay)."""
        with self._lock:
            self._scripts.clear()

    def _make(self, kind: str) -> Fault | None:
        if kind == "ok":
            return None
        if kind == "drop":
            return Fault("drop", retry_after_s=self.retry_after_s)
        if kind == "slow":
            return Fault("slow", delay_ms=self.slow_ms, retry_after_s=self.retry_after_s)
        if kind.startswith("slow:"):
            return Fault("slow", delay_ms=float(kind[5:]), retry_after_s=self.retry_after_s)
        return Fault(kind, status=int(kind), retry_after_s=self.retry_after_s)

    def decide(self, api: str, method: str, path: str) -> Fault | None:
        """The fault for this request, or ``None`` to serve it normally."""
        with self._lock:
            for s in self._scripts:
                if s.kinds and s.matches(api, method, path):
                    kind = s.kinds.pop(0)
                    self._scripts = [x for x in self._scripts if x.kinds]
                    return self._make(kind)
            if (self.api is not None and api != self.api) or (
                self.path_prefix is not None and not path.startswith(self.path_prefix)
            ):
                return None
            if not (self.p_429 or self.p_5xx or self.p_slow or self.p_drop):
                return None
            r = self._rng.random()
            edge = self.p_drop
            if r < edge:
                return self._make("drop")
            edge += self.p_429
            if r < edge:
                return self._make("429")
            edge += self.p_5xx
            if r < edge:
                return self._make(str(self._rng.choice(_RANDOM_5XX)))
            edge += self.p_slow
            if r < edge:
                return self._make("slow")
            return None


_REASONS = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 422: "Unprocessable Entity",
    429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}


def _default_fault_response(fault: Fault, request: Request) -> Response:
    assert fault.status is not None
    headers: dict[str, str] = {}
    if fault.status in (429, 503):
        headers["Retry-After"] = str(max(1, round(fault.retry_after_s)))
    return Response.json(
        {"error": _REASONS.get(fault.status, "Error"), "injected_fault": fault.kind},
        status=fault.status,
        headers=headers,
    )


# --------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Mount:
    prefix: str
    api: str
    app: App


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: LoopbackServer

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        # Headers and body go out in two writes: without this, each keep-alive
        # response waits ~40 ms on the client's delayed ACK (Nagle).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ctx = self.owner.ssl_context
        if ctx is not None:
            # Deferred handshake: done in the handler thread (see _Handler.setup).
            sock = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up, time out or fail the TLS handshake are normal
        # in fault tests; anything else is an emulator bug worth keeping.
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, ssl.SSLError, TimeoutError)):
            return
        self.owner._record_error(traceback.format_exc())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    # Idle keep-alive connections must not pin a thread for ever.
    timeout = 30

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        # Quiet: the request log is the record; stderr noise would drown test output.
        return

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Trailers end with an empty line.
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        owner = self.server.owner
        t0 = time.perf_counter()
        at = time.time()
        body = self._read_body()
        split = urlsplit(self.path)
        raw_path = split.path or "/"
        items = tuple(parse_qsl(split.query, keep_blank_values=True))
        query: dict[str, str] = {}
        for k, v in items:
            query.setdefault(k, v)

        mount = owner._find_mount(raw_path)
        if mount is None:
            # Logged before answering: a test reading the log right after its
            # response must find the request there.
            owner._log(RequestRecord("", self.command, raw_path, query, 404, None, at, _ms(t0)))
            self._send(Response.json({"error": "Not Found"}, status=404), head=self.command == "HEAD")
            return

        path = raw_path[len(mount.prefix):] or "/"
        request = Request(
            method=self.command,
            path=path,
            query=query,
            query_items=items,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            base_url=owner.url + mount.prefix,
            api=mount.api,
        )

        faults = owner.faults
        fault = faults.decide(mount.api, self.command, path) if faults is not None else None
        latency = faults.latency_ms if faults is not None else 0.0
        if latency > 0:
            time.sleep(latency / 1000.0)

        if fault is not None and fault.kind == "drop":
            # Closing without a status line is what a reset proxy or a crashed
            # upstream looks like to the client: it must retry, not parse.
            self.close_connection = True
            owner._log(RequestRecord(mount.api, self.command, path, query, None, "drop", at, _ms(t0)))
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return

        if fault is not None and fault.kind == "slow":
            time.sleep(fault.delay_ms / 1000.0)

        if fault is not None and fault.status is not None:
            hook = getattr(mount.app, "fault_response", None)
            response = hook(fault, request) if hook is not None else _default_fault_response(fault, request)
        else:
            try:
                response = mount.app.handle(request)
            except Exception:
                owner._record_error(traceback.format_exc())
                response = Response.json({"error": "Internal Server Error", "emulator_bug": True}, status=500)

        owner._log(
            RequestRecord(
                mount.api, self.command, path, query, response.status,
                fault.kind if fault is not None else None, at, _ms(t0),
            )
        )
        self._send(response, head=self.command == "HEAD")

    def _send(self, response: Response, *, head: bool) -> None:
        self.send_response(response.status, _REASONS.get(response.status))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if not head and response.body:
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


class LoopbackServer:
    """A threaded HTTP(S) server on loopback hosting one or more apps.

    ``LoopbackServer(app, api="aircall")`` mounts ``app`` at the root;
    :meth:`mount` adds more apps under path prefixes. ``port=0`` (default)
    takes a free ephemeral port; read :attr:`url` after :meth:`start`.
    """

    def __init__(
        self,
        app: App | None = None,
        *,
        api: str = "api",
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.faults = faults
        self._mounts: list[_Mount] = []
        self._log_lock = threading.Lock()
        self._log_list: list[RequestRecord] = []
        self._errors: list[str] = []
        self._conns: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        if app is not None:
            self.mount(app, api=api)

    # -- configuration ----------------------------------------------------

    def mount(self, app: App, *, api: str, prefix: str = "") -> None:
        """Serve ``app`` for paths under ``prefix`` ("" = everything else).

        The prefix is stripped from ``Request.path`` and included in
        ``Request.base_url``; the longest matching prefix wins.
        """
        prefix = prefix.rstrip("/")
        if prefix and not prefix.startswith("/"):
            raise ValueError("a mount prefix starts with '/'")
        if any(m.prefix == prefix for m in self._mounts):
            raise ValueError(f"prefix {prefix!r} is already mounted")
        self._mounts.append(_Mount(prefix, api, app))
        self._mounts.sort(key=lambda m: len(m.prefix), reverse=True)

    def _find_mount(self, path: str) -> _Mount | None:
        for m in self._mounts:
            if not m.prefix or path == m.prefix or path.startswith(m.prefix + "/"):
                return m
        return None

    # -- lifecycle --------------------------------------------------------

    def start(self) -> Self:
        if self._httpd is not None:
            return self
        httpd = _HTTPServer((self.host, self.port), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        # Keep-alive connections would otherwise linger in their threads
        # until the client goes away.
        with self._log_lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` with an ssl_context)."""
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def url_for(self, api: str) -> str:
        """The base URL of the app mounted as ``api``."""
        for m in self._mounts:
            if m.api == api:
                return self.url + m.prefix
        raise KeyError(api)

    # -- request log --------------------------------------------------------

    def _log(self, record: RequestRecord) -> None:
        with self._log_lock:
            self._log_list.append(record)

    def _record_error(self, text: str) -> None:
        with self._log_lock:
            self._errors.append(text)

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._log_lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of the request log, oldest first."""
        with self._log_lock:
            return list(self._log_list)

    @property
    def errors(self) -> list[str]:
        """Tracebacks of exceptions raised inside apps (emulator bugs)."""
        with self._log_lock:
            return list(self._errors)

    def count(
        self,
        *,
        api: str | None = None,
        path_prefix: str | None = None,
        method: str | None = None,
        status: int | None = None,
        fault: str | None = None,
    ) -> int:
        """How many logged requests match every filter given."""
        method = method.upper() if method else None
        with self._log_lock:
            return sum(
                1
                for r in self._log_list
                if (api is None or r.api == api)
                and (path_prefix is None or r.path.startswith(path_prefix))
                and (method is None or r.method == method)
                and (status is None or r.status == status)
                and (fault is None or r.fault == fault)
            )

    def clear_log(self) -> None:
        with self._log_lock:
            self._log_list.clear()
            self._errors.clear()
