"""The ASGI app of ``serve``: the webhook receiver and the operations endpoints (DESIGN §10).

Routes are a table; the lifespan starts and stops the worker and the
reconciler; nothing lives at module level. A delivery is checked in this
order: a body over ``live.max_body_bytes`` is 413; not JSON, 400; a ``token``
missing or not equal (constant time) to ``live.webhook_token``, 401; not an
envelope (an ``event`` string and a ``data`` object), 400. A refused body
stores nothing. An accepted event is committed to the inbox without its token,
and only then answered 200 (Aircall times out after 5 s: this takes
milliseconds). A CRM outage never turns into an error answer, since Aircall
disables a webhook that keeps failing: only a state store that cannot be
written answers 503, so that Aircall delivers again.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from aircall_sync.errors import StateError
from aircall_sync.live.inbox import Inbox
from aircall_sync.live.metrics import CONTENT_TYPE, Metrics

__all__ = ["Components", "create_app"]

log = logging.getLogger("aircall_sync.live")


@dataclass
class Components:
    """What the app serves with; built by ``live.serve`` (tests build their own)."""

    inbox: Inbox  # the receiver's own connection to the state store
    worker: Any  # .start(), .stop(drain_seconds), .notify(), .alive
    metrics: Metrics
    token: bytes
    path: str
    max_body_bytes: int
    background: list[Any]  # started after the worker, stopped before it: .start(), .stop()
    drain_seconds: float = 30.0


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(parts: Components) -> Starlette:
    async def receive(request: Request) -> Response:
        try:
            raw = await _read_body(request, parts.max_body_bytes)
        except _TooLarge:
            parts.metrics.refused.labels("too_large").inc()
            return PlainTextResponse(f"body over {parts.max_body_bytes} bytes (live.max_body_bytes)\n", 413)
        try:
            envelope = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            parts.metrics.refused.labels("not_json").inc()
            return PlainTextResponse("the body is not JSON\n", 400)
        token = envelope.get("token") if isinstance(envelope, dict) else None
        if not isinstance(token, str) or not hmac.compare_digest(token.encode("utf-8"), parts.token):
            parts.metrics.refused.labels("token").inc()
            return PlainTextResponse("token missing or wrong\n", 401)
        if not isinstance(envelope.get("event"), str) or not isinstance(envelope.get("data"), dict):
            parts.metrics.refused.labels("not_envelope").inc()
            return PlainTextResponse("not an Aircall webhook envelope (event, data)\n", 400)
        del envelope["token"]  # never stored, logged or echoed (DESIGN §3)
        try:
            fresh = await run_in_threadpool(parts.inbox.put, envelope)
        except StateError as exc:
            parts.metrics.refused.labels("store").inc()
            log.error("webhook event not stored, answered 503 so that Aircall delivers it again: %s", exc)
            return PlainTextResponse("the state store cannot be written; deliver again later\n", 503)
        parts.metrics.delivered(envelope["event"], duplicate=not fresh)
        if fresh:
            parts.worker.notify()
        return PlainTextResponse("ok\n")

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        writable = await run_in_threadpool(_writable, parts.inbox)
        stats = await run_in_threadpool(parts.inbox.stats)
        age = (datetime.now(UTC) - stats.oldest).total_seconds() if stats.oldest else 0.0
        body = {"state_writable": writable, "worker_alive": bool(parts.worker.alive), "inbox_depth": stats.depth,
                "oldest_pending_seconds": round(max(age, 0.0), 3), "failing": stats.failing}
        return JSONResponse(body, 200 if writable and parts.worker.alive else 503)

    async def metrics(request: Request) -> Response:
        return Response(await run_in_threadpool(parts.metrics.render), media_type=CONTENT_TYPE)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        parts.worker.start()
        for part in parts.background:
            part.start()
        log.info("serve: receiving Aircall webhooks on %s", parts.path)
        try:
            yield
        finally:
            # Receiving has stopped (uvicorn closed the socket): drain what is due, then stop.
            for part in parts.background:
                part.stop()
            drained = await run_in_threadpool(parts.worker.stop, parts.drain_seconds)
            depth = (await run_in_threadpool(parts.inbox.stats)).depth
            log.info("serve: stopped%s; %d event(s) wait in the inbox for the next start",
                     "" if drained else f" (the last batch was still running after {parts.drain_seconds:g} s)",
                     depth)

    routes = [
        Route(parts.path, receive, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _writable(inbox: Inbox) -> bool:
    try:
        with inbox.state.sql(write=True):
            pass  # BEGIN IMMEDIATE takes the write lock: the store can be written
        return True
    except StateError:
        return False

