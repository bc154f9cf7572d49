"""Emulated Aircall public REST API v1, served by :class:`~.server.LoopbackServer`.

Behaviour follows ``shared/reference/aircall-api.md`` (cited as §N below) and
the payloads in ``shared/reference/aircall/``:

- Basic auth with the API ID and token; anything else is 401 (§1).
- ``GET /v1/ping`` → ``{"ping": "pong"}`` (§1).
- ``GET /v1/calls`` and ``GET /v1/calls/search`` (§2, §3): ``page`` (default
  1), ``per_page`` (default 20, above 50 silently clamped to 50), ``from`` /
  ``to`` as UNIX seconds filtering ``started_at ∈ (from, to]``, ``order``
  asc/desc, ``fetch_contact``, ``fetch_short_urls``; search adds
  ``direction``, ``user_id``, ``phone_number`` and ``tags[]``. ``meta`` carries
  absolute page links built from the emulator's own URL.
- The 10,000-item cap: ``page * per_page > 10000`` → HTTP 400 with the body of
  ``aircall/error-10k-cap-400.json``, whatever the total (§3).
- ``GET /v1/calls/:id`` → ``{"call": …}``; ``POST /v1/calls/:id/comments`` and
  ``POST /v1/calls/:id/tags`` mutate the call (§2).
- ``GET /v1/numbers/:id`` → ``{"number": …}``: the Number object of §6 (the
  keys a call's ``number`` has, plus ``users``); 404 for an unknown id. The
  tool reads a line's name there when a message event does not carry it
  (RULES.md R-MSG-4). There is no message endpoint at all, under
  ``/v1/numbers/:id/messages`` or elsewhere (aircall-live.md §2.2).
- ``GET /v1/calls/:id/{transcription,summary,topics,sentiments,action_items}``
  (aircall-live.md §3), served by :mod:`.aircall_ai`.
- ``/v1/webhooks`` and ``/v1/webhooks/:webhook_id`` (aircall-live.md §1.1),
  served by :mod:`.aircall_webhooks`; this module only routes to them.
- ``/v1/contacts`` (list, search, get, create, update, delete, and the
  ``phone_details`` / ``email_details`` of a contact; §12), served by
  :mod:`.aircall_contacts` over the company's :class:`~.aircall_contacts.ContactBook`,
  which starts with the contacts the generated calls carry.
- An optional leaky-bucket rate limit: 429 with ``X-AircallApi-Limit``,
  ``-Remaining`` and ``-Reset`` (UNIX epoch seconds), headers that are absent
  from every other response (§4).

Anything not listed here answers 404 (or 405 for a known path with another
method): the tool must not depend on endpoints the emulator does not have.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from aircall_sync.sandbox.aircall_ai import INSIGHTS, AiInsights
from aircall_sync.sandbox.aircall_common import CAP_ERROR_BODY, list_meta, page_params
from aircall_sync.sandbox.aircall_contacts import ContactBook, ContactEndpoints
from aircall_sync.sandbox.aircall_common import error_body as _error_body
from aircall_sync.sandbox.aircall_webhooks import WebhookEndpoints, WebhookRegistry
from aircall_sync.sandbox.generator import CallStore, TimeLike, generate
from aircall_sync.sandbox.server import Fault, Faults, LoopbackServer, Request, Response

__all__ = [
    "AMBIGUITIES",
    "AircallApp",
    "CAP_ERROR_BODY",
    "DEFAULT_API_ID",
    "DEFAULT_API_TOKEN",
    "LeakyBucket",
    "start_aircall_sandbox",
]

DEFAULT_API_ID = "sandbox-api-id"
DEFAULT_API_TOKEN = "sandbox-api-token"

AMBIGUITIES: tuple[str, ...] = (
    "GET /v1/numbers/:id: the reference documents the Number object's fields (aircall-api.md §6) but no "
    "response of this endpoint. The emulator answers {\"number\": …} like GET /v1/calls/:id answers "
    "{\"call\": …}, with exactly the keys a call's nested number has (no e164_digits: webhook events only) "
    "plus users[], the line's agents in the short form nested in teams. An unknown or non-numeric id is a 404.",
    "GET /v1/numbers (the list) and every path under /v1/numbers/:id (messages, configuration, send) answer "
    "404: the tool needs only the one number, and the reference has no message list or get (§2.2), so the "
    "emulator does not offer one a client could come to depend on.",
)


class LeakyBucket:
    """Aircall's rate limit as a leaky bucket (§4).

    Holds ``capacity`` requests and drains at ``capacity / window_s`` per
    second: a burst of ``capacity`` passes, then one request per
    ``window_s / capacity`` seconds. Refused requests do not fill the bucket.
    """

    def __init__(self, capacity: int, window_s: float = 60.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1:
            raise ValueError("requests_per_minute must be at least 1")
        self.capacity = capacity
        self.rate = capacity / window_s
        self._clock = clock
        self._level = 0.0
        self._last = clock()
        self._lock = threading.Lock()

    def take(self) -> tuple[bool, int, float]:
        """``(allowed, remaining, seconds until one request fits again)``."""
        with self._lock:
            now = self._clock()
            self._level = max(0.0, self._level - (now - self._last) * self.rate)
            self._last = now
            if self._level + 1.0 <= self.capacity + 1e-9:
                self._level += 1.0
                return True, int(self.capacity - self._level), 0.0
            wait = (self._level + 1.0 - self.capacity) / self.rate
            return False, 0, wait


def _flag(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("true", "1", "yes")


class AircallApp:
    """The Aircall v1 API over a :class:`CallStore`.

    ``requests_per_minute=None`` disables the rate limit; tests that need a
    429 use a tiny ``rate_window_seconds`` instead of waiting a minute.
    ``history_days`` hides calls older than that many days, as Aircall's
    history window does (§2; unset by default because the 3-vs-6 months
    figure is unconfirmed and tests use fixed past dates).
    ``webhooks`` is the company's webhook registry (a fresh one by default).
    ``ai`` is the company's Aircall AI (by default: with the AI package,
    default options, "now" read from ``clock``).
    ``contacts`` is the company's contacts (by default the store's world's
    book, made on first use with ``clock``; see :mod:`.aircall_contacts`).
    """

    def __init__(
        self,
        store: CallStore,
        *,
        api_id: str = DEFAULT_API_ID,
        api_token: str = DEFAULT_API_TOKEN,
        requests_per_minute: int | None = None,
        rate_window_seconds: float = 60.0,
        history_days: float | None = None,
        clock: Callable[[], float] = time.time,
        webhooks: WebhookRegistry | None = None,
        ai: AiInsights | None = None,
        contacts: ContactBook | None = None,
    ) -> None:
        self.store = store
        self.contacts = contacts if contacts is not None else ContactBook.for_world(store.world, clock=clock)
        if self.contacts.world is not store.world:
            raise ValueError("the contact book belongs to another store's world")
        self._contact_endpoints = ContactEndpoints(self.contacts)
        self.ai = ai if ai is not None else AiInsights(seed=store.world.seed, clock=clock)
        self.webhooks = webhooks if webhooks is not None else WebhookRegistry()
        self._webhook_endpoints = WebhookEndpoints(self.webhooks)
        self._expected = "Basic " + base64.b64encode(f"{api_id}:{api_token}".encode()).decode()
        self._credentials = (api_id, api_token)
        self.requests_per_minute = requests_per_minute
        self.rate_window_seconds = rate_window_seconds
        self.bucket = LeakyBucket(requests_per_minute, rate_window_seconds) if requests_per_minute else None
        self.history_days = history_days
        self._clock = clock
        self._selection_cache: OrderedDict[tuple[Any, ...], list[int]] = OrderedDict()
        self._cache_lock = threading.Lock()

    # -- server hooks -----------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if not self._authorized(request):
            return Response.json(_error_body(401, "Authentication failed: check the API ID and API token."),
                                 status=401)
        if self.bucket is not None:
            ok, _, wait = self.bucket.take()
            if not ok:
                return self._too_many(wait)
        return self._route(request)

    def fault_response(self, fault: Fault, request: Request) -> Response:
        """Injected errors look like Aircall's own (§1 error body, §4 headers on 429)."""
        assert fault.status is not None
        if fault.status == 429:
            return self._too_many(fault.retry_after_s)
        return Response.json(_error_body(fault.status, "Injected fault (sandbox)."), status=fault.status)

    # -- pieces -------------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        header = request.header("authorization") or ""
        if not header.lower().startswith("basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        api_id, _, token = decoded.partition(":")
        # Constant-time on both parts: the emulator is also a model for the tool's tests.
        return hmac.compare_digest(api_id, self._credentials[0]) & hmac.compare_digest(token, self._credentials[1])

    def _too_many(self, wait_s: float) -> Response:
        # §4: the three headers only on a 429; Reset read as UNIX epoch seconds.
        limit = self.requests_per_minute or 60
        reset = math.ceil(time.time() + max(wait_s, 0.0))
        return Response.json(
            _error_body(429, "Rate limit reached, please retry later."),
            status=429,
            headers={
                "X-AircallApi-Limit": str(limit),
                "X-AircallApi-Remaining": "0",
                "X-AircallApi-Reset": str(reset),
            },
        )

    def _route(self, request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        parts = path.strip("/").split("/")
        method = request.method
        if parts[:1] != ["v1"]:
            return self._not_found()
        rest = parts[1:]

        routes: list[tuple[bool, str, Callable[[], Response]]] = []
        if rest == ["ping"]:
            routes = [(True, "GET", lambda: Response.json({"ping": "pong"}))]
        elif rest == ["calls"]:
            routes = [(True, "GET", lambda: self._list(request, search=False))]
        elif rest == ["calls", "search"]:
            routes = [(True, "GET", lambda: self._list(request, search=True))]
        elif len(rest) == 2 and rest[0] == "calls" and rest[1].isdigit():
            routes = [(True, "GET", lambda: self._show(request, int(rest[1])))]
        elif len(rest) == 3 and rest[0] == "calls" and rest[1].isdigit() and rest[2] in ("comments", "tags"):
            action = self._comment if rest[2] == "comments" else self._tag
            routes = [(True, "POST", lambda: action(request, int(rest[1])))]
        elif len(rest) == 3 and rest[0] == "calls" and rest[2] in INSIGHTS:
            routes = [(True, "GET", lambda: self.ai.respond(request, self.store, rest[1], rest[2]))]
        elif len(rest) == 2 and rest[0] == "numbers":
            routes = [(True, "GET", lambda: self._number(request, rest[1]))]
        elif rest[:1] == ["contacts"]:
            routes = [(True, m, fn) for m, fn in self._contact_endpoints.routes(request, rest[1:])]
        elif rest[:1] == ["webhooks"]:
            routes = [(True, m, fn) for m, fn in self._webhook_endpoints.routes(request, rest[1:])]
        if not routes:
            return self._not_found()
        for _, m, fn in routes:
            if m == method or (m == "GET" and method == "HEAD"):
                return fn()
        return Response.json(_error_body(405, f"{method} is not allowed on {request.path}."), status=405,
                             headers={"Allow": ", ".join(m for _, m, _ in routes)})

    @staticmethod
    def _not_found(what: str = "Resource not found.") -> Response:
        return Response.json(_error_body(404, what), status=404)

    @staticmethod
    def _bad_request(errors: str) -> Response:
        return Response.json(_error_body(400, errors), status=400)

    # -- GET /v1/calls, /v1/calls/search -------------------------------------------

    def _list(self, request: Request, *, search: bool) -> Response:
        q = request.query
        page, per_page, over_cap = page_params(q)  # §3: per_page clamped silently
        # §3: checked on the requested position, before anything else, even
        # when nothing matches.
        if over_cap:
            return Response.json(CAP_ERROR_BODY, status=400)

        try:
            from_ts = int(q["from"]) if q.get("from", "") != "" else None
            to_ts = int(q["to"]) if q.get("to", "") != "" else None
        except ValueError:
            return self._bad_request("from and to must be UNIX timestamps (seconds).")
        if self.history_days is not None:
            horizon = int(self._clock() - self.history_days * 86400)
            from_ts = horizon if from_ts is None else max(from_ts, horizon)
        desc = (q.get("order") or "asc").strip().lower() == "desc"

        filters: dict[str, Any] = {}
        if search:
            try:
                filters = self._search_filters(request)
            except ValueError as exc:
                return self._bad_request(str(exc))

        fetch_contact = _flag(q.get("fetch_contact"))
        fetch_short = _flag(q.get("fetch_short_urls"))
        # Positions shift when calls are inserted: select and render under one lock.
        with self.store.lock:
            positions = self._select(from_ts, to_ts, filters)
            total = len(positions)
            first = (page - 1) * per_page
            if desc:
                idx = range(total - 1 - first, max(total - 1 - first - per_page, -1), -1) if first < total else range(0)
            else:
                idx = range(first, min(first + per_page, total))
            calls = [
                self.store.render_at(positions[k], base=request.base_url, fetch_contact=fetch_contact,
                                     fetch_short_urls=fetch_short)
                for k in idx
            ]
        path = "/v1/calls/search" if search else "/v1/calls"
        meta = list_meta(request, path, count=len(calls), total=total, page=page, per_page=per_page)
        return Response.json({"calls": calls, "meta": meta})

    def _search_filters(self, request: Request) -> dict[str, Any]:
        q = request.query
        filters: dict[str, Any] = {}
        if q.get("direction"):
            filters["direction"] = q["direction"].strip().lower()
        if q.get("user_id"):
            try:
                filters["user_id"] = int(q["user_id"])
            except ValueError:
                raise ValueError("user_id must be an integer.") from None
        if q.get("phone_number"):
            digits = "".join(c for c in q["phone_number"] if c.isdigit())
            filters["phone_digits"] = digits
        tag_values = request.query_all("tags[]") + request.query_all("tags")
        if tag_values:
            try:
                filters["tag_ids"] = frozenset(int(v) for raw in tag_values for v in raw.split(",") if v)
            except ValueError:
                raise ValueError("tags must be tag IDs.") from None
        return filters

    def _select(self, from_ts: int | None, to_ts: int | None, filters: dict[str, Any]) -> Sequence[int]:
        window = self.store.window(from_ts, to_ts)
        if not filters:
            return window
        # Paging through a filtered search re-applies the same filter on every
        # page: keep the last few results until the store changes.
        key = (from_ts, to_ts, tuple(sorted(filters.items())), self.store.version)
        with self._cache_lock:
            hit = self._selection_cache.get(key)
            if hit is not None:
                self._selection_cache.move_to_end(key)
                return hit
        found = [p for p in window if self.store.matches(p, **filters)]
        with self._cache_lock:
            self._selection_cache[key] = found
            while len(self._selection_cache) > 16:
                self._selection_cache.popitem(last=False)
        return found

    # -- GET /v1/calls/:id -----------------------------------------------------------

    def _show(self, request: Request, call_id: int) -> Response:
        with self.store.lock:
            pos = self.store.position(call_id)
            if pos is None:
                return self._not_found("Call not found.")
            call = self.store.render_at(
                pos, base=request.base_url,
                fetch_contact=_flag(request.query.get("fetch_contact")),
                fetch_short_urls=_flag(request.query.get("fetch_short_urls")),
            )
        return Response.json({"call": call})

    # -- GET /v1/numbers/:id -----------------------------------------------------------

    def _number(self, request: Request, raw_id: str) -> Response:
        number = self.store.world.number(int(raw_id), request.base_url) if raw_id.isdigit() else None
        if number is None:
            return self._not_found("Number not found.")
        return Response.json({"number": number})

    # -- POST /v1/calls/:id/comments, /tags ------------------------------------------

    def _json_body(self, request: Request) -> dict[str, Any] | Response:
        try:
            body = request.json()
        except (ValueError, UnicodeDecodeError):
            return self._bad_request("The body is not valid JSON.")
        if not isinstance(body, dict):
            return self._bad_request("The body must be a JSON object.")
        return body

    def _comment(self, request: Request, call_id: int) -> Response:
        if self.store.position(call_id) is None:
            return self._not_found("Call not found.")
        body = self._json_body(request)
        if isinstance(body, Response):
            return body
        content = body.get("content")
        if not isinstance(content, str) or not content.strip():
            return self._bad_request("content is required.")
        # §6: a comment posted through the API has no author.
        self.store.add_comment(call_id, content, posted_at=int(self._clock()), posted_by=None)
        return self._created(request, call_id)

    def _tag(self, request: Request, call_id: int) -> Response:
        if self.store.position(call_id) is None:
            return self._not_found("Call not found.")
        body = self._json_body(request)
        if isinstance(body, Response):
            return body
        tags = body.get("tags")
        if not isinstance(tags, list) or not tags:
            return self._bad_request("tags must be a non-empty array.")
        try:
            self.store.add_tags(call_id, tags, base=request.base_url)
        except LookupError as exc:
            return Response.json(_error_body(422, f"Unknown tag: {exc.args[0]!r}."), status=422)
        return self._created(request, call_id)

    def _created(self, request: Request, call_id: int) -> Response:
        with self.store.lock:
            pos = self.store.position(call_id)
            assert pos is not None
            call = self.store.render_at(pos, base=request.base_url, fetch_contact=True, fetch_short_urls=False)
        return Response.json({"call": call}, status=201)


def start_aircall_sandbox(
    calls: int = 500,
    seed: int = 1,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    api_id: str = DEFAULT_API_ID,
    api_token: str = DEFAULT_API_TOKEN,
    requests_per_minute: int | None = None,
    rate_window_seconds: float = 60.0,
    faults: Faults | None = None,
    store: CallStore | None = None,
) -> tuple[LoopbackServer, CallStore]:
    """Generate (or reuse) a store and serve it; returns the *started* server.

    The API base URL to configure in the tool is ``server.url + "/v1"``.
    Stop with ``server.stop()`` (or use the server as a context manager).
    """
    if store is None:
        store = generate(calls=calls, seed=seed, start=start, end=end)
    app = AircallApp(store, api_id=api_id, api_token=api_token,
                     requests_per_minute=requests_per_minute, rate_window_seconds=rate_window_seconds)
    server = LoopbackServer(app, api="aircall", host=host, port=port, faults=faults)
    server.start()
    return server, store
