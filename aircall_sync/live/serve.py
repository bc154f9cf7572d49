"""``aircall-sync serve``: one process that receives, logs and reconciles (DESIGN §10).

Puts the pieces together: the run lock of kind ``serve`` (a second ``serve`` on
the same state exits 4), the targets signed in once, the worker and the
reconciler sharing them under the write lock, the receiver on a connection of
its own to the state store, and uvicorn serving the app. SIGTERM stops
receiving, drains the worker for up to 30 s and exits 0.
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
from datetime import UTC, datetime

from aircall_sync.errors import ServiceError, SettingsError, UsageError
from aircall_sync.live.app import Components, create_app
from aircall_sync.live.inbox import Inbox
from aircall_sync.live.metrics import Metrics
from aircall_sync.live.reconcile import Maintenance
from aircall_sync.live.worker import Worker
from aircall_sync.locks import acquire_lock
from aircall_sync.runner import aircall_client, connect_targets, target_names
from aircall_sync.state import State

__all__ = ["DRAIN_SECONDS", "require_serve_settings", "serve"]

log = logging.getLogger("aircall_sync.live")

DRAIN_SECONDS = 30.0  # DESIGN §10: SIGTERM drains the worker for up to 30 s


def require_serve_settings(settings) -> None:
    """What only ``serve`` needs, checked before anything starts (every problem at once)."""
    problems = []
    if not settings.live.webhook_token:
        problems.append("live.webhook_token: is required by serve (the token `aircall-sync webhooks install` "
                        "printed); export AIRCALL_WEBHOOK_TOKEN, or install the webhook first")
    if problems:
        raise SettingsError(problems, str(settings.path) if settings.path else None)


def _listen(host: str, port: int) -> socket.socket:
    """Bind before anything else starts, so a port in use is one clear line: exit 1 (issue 12: the machine's
    state, not the settings), naming the port; an address that cannot be used at all is exit 2."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"--host / live.host: cannot listen on {host!r} ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServiceError(f"--port / live.port: cannot listen on {host}:{port}: {exc.strerror} (another "
                               "process listens there: stop it, or choose another --port / live.port)") from None
        raise UsageError(f"--port / live.port: cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _route_uvicorn_logs() -> None:
    # uvicorn's own lines (startup, errors, one access line per request: path and status, never a
    # body, so never a token) go through the program's handler and format (--log-format json).
    ours = logging.getLogger("aircall_sync")
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = list(ours.handlers)
        logger.propagate = False
        logger.setLevel(ours.level if ours.level else logging.INFO)


def serve(settings, *, host: str | None = None, port: int | None = None) -> None:
    import prometheus_client
    import uvicorn

    # The *_created series (a timestamp per counter) only repeat the start time: noise on /metrics.
    prometheus_client.disable_created_metrics()

    require_serve_settings(settings)
    names = target_names(settings)
    host = host or settings.live.host
    port = settings.live.port if port is None else port
    state_path = settings.sync.state_path
    lock = acquire_lock(state_path, "serve")
    states: list[State] = []
    sock = None
    try:
        sock = _listen(host, port)
        port = sock.getsockname()[1]  # the one the system chose for port 0
        worker_state = State.open(state_path)
        states.append(worker_state)
        receiver_state = State.open(state_path)  # its own connection: a write never waits for the worker's
        states.append(receiver_state)
        with aircall_client(settings) as client:
            targets = connect_targets(settings, names, worker_state)
            inbox = Inbox(receiver_state)

            def requests() -> dict[str, int]:
                counts = {"aircall": client.stats.requests}
                counts.update({t.name: t.org.stats.requests for t in targets})
                return counts

            metrics = Metrics(inbox=inbox.stats, requests=requests, clock=lambda: datetime.now(UTC))
            worker = Worker(settings, worker_state, targets, client, metrics=metrics)
            maintenance = Maintenance(settings, worker_state, targets, client)
            if not settings.live.public_url:
                log.info("live.public_url is not set: the webhook is not checked (set it to the URL Aircall "
                         "calls, then `aircall-sync webhooks check`)")
            app = create_app(Components(inbox=inbox, worker=worker, metrics=metrics,
                                        token=settings.live.webhook_token.reveal().encode("utf-8"),
                                        path=settings.live.path, max_body_bytes=settings.live.max_body_bytes,
                                        background=[maintenance], drain_seconds=DRAIN_SECONDS))
            live = settings.live
            config = uvicorn.Config(
                app, log_config=None, lifespan="on", proxy_headers=False, server_header=False,
                ssl_certfile=str(live.tls_cert_file) if live.tls_cert_file else None,
                ssl_keyfile=str(live.tls_key_file) if live.tls_key_file else None,
                # Connections still open when SIGTERM comes get this long before the drain starts.
                timeout_graceful_shutdown=5,
            )
            _route_uvicorn_logs()
            scheme = "https" if live.tls_cert_file else "http"
            log.info("serve: listening on %s://%s:%d%s (targets: %s)", scheme, host, port, live.path,
                     ", ".join(names))
            server = uvicorn.Server(config)
            # uvicorn re-raises the SIGTERM it handled once it has shut down; with Python's default
            # handler that would kill the process (exit 143). Ours lets it end normally: exit 0.
            previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
            try:
                server.run(sockets=[sock])
            except SystemExit as exc:
                raise ServiceError(f"serve could not start (exit {exc.code}); the lines above say why") from None
            finally:
                signal.signal(signal.SIGTERM, previous)
    finally:
        if sock is not None:
            sock.close()
        for state in states:
            state.close()
        lock.release()
