"""Emulated Aircall webhooks: the event catalogue, the registry and its endpoints.

Behaviour follows ``shared/reference/aircall-live.md`` §1 (cited as §1.N) and
the recorded answers in ``shared/reference/aircall/recorded/``
(``create-webhook.json``, ``list-webhooks.json``):

- ``POST /v1/webhooks`` ``{custom_name?, url, events?}`` → 201
  ``{"webhook": {webhook_id, direct_link, created_at, url, active, events,
  token}}`` (§1.1). ``events`` omitted, null or empty subscribes to every
  event of :data:`WEBHOOK_EVENTS`. 400 for a missing or refused ``url``, an
  unknown event name, or a 101st webhook (§1.1 "Limits": 100 per account).
- ``GET /v1/webhooks`` → ``{"webhooks": [...], "meta": {count, total,
  current_page, per_page}}``: items carry ``id`` (the deprecated int) *and*
  ``webhook_id``; ``meta`` has no link keys; ``page`` / ``per_page`` as on
  every Aircall list, 10k cap included (list-webhooks.json; aircall-api.md §3).
- ``GET|PUT|DELETE /v1/webhooks/{webhook_id}`` (a UUID); unknown → 404.
  ``PUT`` may carry ``url``, ``custom_name``, ``active`` and ``events``; **a
  PUT without ``events`` re-subscribes the webhook to ALL events**;
  ``?events_action=add|remove`` adds or removes the listed events instead;
  ``{"active": true}`` re-enables a disabled webhook (§1.1). ``DELETE`` → 204.

The registry also keeps what delivery needs (``active``, the count of
consecutive failures, who disabled the webhook); the delivery engine lives in
:mod:`.webhook_delivery`. Where the reference is silent, the decision taken is
listed in :data:`AMBIGUITIES`.
"""

from __future__ import annotations

import random
import string
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from aircall_sync.sandbox.aircall_common import CAP_ERROR_BODY, error_body, page_params
from aircall_sync.sandbox.server import Request, Response

__all__ = [
    "AI_EVENTS",
    "AMBIGUITIES",
    "CALL_EVENTS",
    "LOOPBACK_HOSTS",
    "MAX_WEBHOOKS",
    "MESSAGE_EVENTS",
    "WEBHOOK_EVENTS",
    "Webhook",
    "WebhookEndpoints",
    "WebhookError",
    "WebhookRegistry",
    "event_resource",
    "render_webhook",
]

# §1.2, family by family, in the reference's order. The table lists 59 names
# plus "the V1 names without .v2", which are deprecated but still accepted:
# 59 + 8 = the 67 the reference counts (and the recorded 2022 deliveries use
# the V1 names, e.g. user.connected).
CALL_EVENTS: tuple[str, ...] = (
    "call.created", "call.ringing_on_agent", "call.agent_declined", "call.answered",
    "call.transferred", "call.external_transferred", "call.unsuccessful_transfer",
    "call.hungup", "call.ended", "call.hold", "call.unhold", "call.ivr_option_selected",
    "call.comm_assets_generated", "call.voicemail_left", "call.assigned", "call.archived",
    "call.tagged", "call.untagged", "call.commented",
)
#: §1.2 "message": SMS, MMS and WhatsApp, one-to-one and group (aircall-live.md §2).
MESSAGE_EVENTS: tuple[str, ...] = (
    "message.sent", "message.received", "message.status_updated",
    "group_message.sent", "group_message.received", "group_message.status_updated",
)
#: §1.2 "conversation intelligence": the five insights the AI endpoints serve (aircall-live.md §3.5).
AI_EVENTS: tuple[str, ...] = (
    "transcription.created", "summary.created", "topics.created", "sentiment.created", "action_item.created",
)
_USER_ACTIONS = ("created", "deleted", "connected", "disconnected", "opened", "closed", "wut_start", "wut_end")
WEBHOOK_EVENTS: tuple[str, ...] = (
    *CALL_EVENTS,
    *(f"user.{a}.v2" for a in _USER_ACTIONS),
    *(f"user.{a}" for a in _USER_ACTIONS),
    "number.created", "number.opened", "number.closed", "number.deleted",
    "contact.created", "contact.updated", "contact.deleted",
    *MESSAGE_EVENTS,
    *AI_EVENTS,
    "playbook_result.created", "playbook_result.updated",
    "realtime_transcription.utterances_received", "custom_summary.result_created",
    "custom_summary.result_updated", "call_evaluation.created", "call_evaluation.updated",
    "ai_voice_agent.started", "ai_voice_agent.ended", "ai_voice_agent.escalated", "ai_voice_agent.summary",
    "analytics.report_created", "analytics.report_failed",
    "integration.deleted",
)
assert len(WEBHOOK_EVENTS) == 67 and len(set(WEBHOOK_EVENTS)) == 67
_EVENT_SET = frozenset(WEBHOOK_EVENTS)

MAX_WEBHOOKS = 100  # §1.1 "Limits"

#: Hosts a plain ``http://`` webhook URL may name (see AMBIGUITIES).
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})

_CI_FAMILIES = frozenset({
    "transcription", "summary", "topics", "sentiment", "action_item", "playbook_result",
    "realtime_transcription", "custom_summary", "call_evaluation",
})

AMBIGUITIES: tuple[str, ...] = (
    "URL scheme: Aircall requires HTTPS with a valid certificate (§1.1). The sandbox accepts https:// for "
    "any host, and http:// only for a loopback host (127.0.0.1, ::1, localhost) so that a receiver on this "
    "machine can be tested without TLS; any other URL is a 400. Certificates are checked at delivery time.",
    "Event list: the reference counts 67 events; its table names 59 plus the deprecated V1 user.* names. "
    "The 67 of WEBHOOK_EVENTS are exactly those; any other name is a 400 (UNCONFIRMED message wording).",
    "Returned `events` order: the recorded create sent [call.created, contact.updated] and got them back "
    "reversed. The emulator returns the stored list reversed, so a client comparing lists in order fails "
    "here rather than in production; compare them as sets.",
    "`custom_name` is stored but never returned: neither the recorded create nor the recorded list carries it.",
    "GET /v1/webhooks/{id} and PUT answer {\"webhook\": item} with the list item's keys (id and webhook_id); "
    "only the create answer lacks the deprecated int id, as recorded. POST answers 201 (documented; one "
    "capture through a proxy recorded 200).",
    "PUT ?events_action=add|remove needs a non-empty `events` (400 otherwise): a bare PUT would silently "
    "re-subscribe to ALL events, so the emulator refuses the ambiguous half-way request. Removing every "
    "event is a 400 too (an empty list means ALL at creation; the emulator does not guess).",
    "An unknown events_action value is a 400. Unknown body keys are ignored (Aircall ignores unknown "
    "parameters elsewhere, aircall-api.md §12).",
    "PUT {active: false} disables the webhook on request: its pending deliveries are dropped and it gets "
    "nothing until PUT {active: true}. Auto-disabling after failures behaves as §1.5 says instead "
    "(failed events still retried, a success re-enables); see webhook_delivery.AMBIGUITIES.",
    "Bad credentials answer 401 like every other sandbox endpoint (the webhook page says 403, "
    "aircall-api.md §1 says 401/403).",
    "Tokens are 20 lowercase letters and digits, like the documented samples; the deprecated int id is "
    "a random 7–8 digit number; both, and the UUID, come from the sandbox seed.",
)


class WebhookError(Exception):
    """A refused webhook request: HTTP ``status`` and the ``errors`` text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class Webhook:
    """One registered webhook, with the delivery state kept next to it.

    ``disabled_by`` is ``"failures"`` after N consecutive failed deliveries
    (§1.5) or ``"api"`` after ``PUT {active: false}``; ``None`` while active.
    """

    webhook_id: str
    legacy_id: int
    url: str
    events: list[str]
    token: str
    created_at: str
    custom_name: str | None = None
    active: bool = True
    consecutive_failures: int = 0
    disabled_by: str | None = None

    def subscribed(self, event: str) -> bool:
        return event in self.events


def event_resource(event: str) -> str:
    """The envelope's ``resource`` for an event (§1.3: route on ``event``)."""
    family = event.split(".", 1)[0]
    if family == "group_message":
        return "message"
    if family in _CI_FAMILIES:
        return "conversation_intelligence"
    return family


def _iso_millis(ts: float) -> str:
    # Webhook created_at is ISO with milliseconds (wire-formats.md Aircall §2).
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def render_webhook(w: Webhook, base: str, *, legacy_id: bool = True) -> dict[str, Any]:
    """The JSON of a webhook: list/GET items carry ``id``; the create answer does not."""
    out: dict[str, Any] = {"id": w.legacy_id} if legacy_id else {}
    out.update({
        "webhook_id": w.webhook_id,
        "direct_link": f"{base}/v1/webhooks/{w.webhook_id}",
        "created_at": w.created_at,
        "url": w.url,
        "active": w.active,
        "token": w.token,
        "events": list(reversed(w.events)),  # see AMBIGUITIES: order is not meaningful
    })
    return out


def _parse_url(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise WebhookError(400, "url is required.")
    url = value.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise WebhookError(400, "url is not a valid URL.") from None
    host = (parts.hostname or "").lower()
    if not host:
        raise WebhookError(400, "url must be an absolute URL.")
    scheme = parts.scheme.lower()
    if scheme == "https" or (scheme == "http" and host in LOOPBACK_HOSTS):
        return url
    raise WebhookError(400, "url must use HTTPS (sandbox: http:// is accepted for loopback hosts only).")


def _parse_events(value: Any) -> list[str] | None:
    """The listed events, deduplicated; ``None`` when omitted or null."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(e, str) for e in value):
        raise WebhookError(400, "events must be an array of event names.")
    unknown = [e for e in value if e not in _EVENT_SET]
    if unknown:
        raise WebhookError(400, f"Unknown event(s): {', '.join(unknown)}.")
    return list(dict.fromkeys(value))


def _parse_name(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise WebhookError(400, "custom_name must be a string.")
    return value


class WebhookRegistry:
    """The company's webhooks, thread-safe, ids and tokens drawn from ``seed``.

    ``clock`` gives the emulated time of ``created_at``. Listeners added with
    :meth:`on_change` are called (outside the registry lock) after every
    change, so the delivery engine can drop work for deleted webhooks.
    """

    def __init__(self, *, seed: int = 1, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or time.time
        self._rng = random.Random(f"webhooks:{seed}")
        self._lock = threading.Lock()
        self._hooks: dict[str, Webhook] = {}  # insertion order = creation order
        self._legacy_ids: set[int] = set()
        self._listeners: list[Callable[[], None]] = []

    # -- CRUD (raise WebhookError) ---------------------------------------------

    def create(self, body: Mapping[str, Any]) -> Webhook:
        url = _parse_url(body.get("url"))
        events = _parse_events(body.get("events"))
        name = _parse_name(body.get("custom_name"))
        with self._lock:
            if len(self._hooks) >= MAX_WEBHOOKS:
                raise WebhookError(400, f"An account can have at most {MAX_WEBHOOKS} webhooks.")
            legacy = self._rng.randint(1_000_000, 99_999_999)
            while legacy in self._legacy_ids:
                legacy = self._rng.randint(1_000_000, 99_999_999)
            self._legacy_ids.add(legacy)
            hook = Webhook(
                webhook_id=str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
                legacy_id=legacy,
                url=url,
                events=events or list(WEBHOOK_EVENTS),  # omitted or empty: ALL (§1.1)
                token="".join(self._rng.choice(string.ascii_lowercase + string.digits) for _ in range(20)),
                created_at=_iso_millis(self._clock()),
                custom_name=name,
            )
            self._hooks[hook.webhook_id] = hook
            out = _copy(hook)
        self._changed()
        return out

    def get(self, webhook_id: str) -> Webhook:
        with self._lock:
            hook = self._hooks.get(webhook_id)
            if hook is None:
                raise WebhookError(404, "Webhook not found.")
            return _copy(hook)

    def all(self) -> list[Webhook]:
        """Every webhook, oldest first."""
        with self._lock:
            return [_copy(h) for h in self._hooks.values()]

    def update(self, webhook_id: str, body: Mapping[str, Any], *, events_action: str | None = None) -> Webhook:
        # Validate everything first: a refused PUT changes nothing.
        url = _parse_url(body["url"]) if "url" in body else None
        name = _parse_name(body.get("custom_name"))
        active = body.get("active")
        if active is not None and not isinstance(active, bool):
            raise WebhookError(400, "active must be a boolean.")
        events = _parse_events(body.get("events"))
        if events_action is not None:
            events_action = events_action.strip().lower()
            if events_action not in ("add", "remove"):
                raise WebhookError(400, "events_action must be add or remove.")
            if not events:
                raise WebhookError(400, f"events_action={events_action} needs a non-empty events array.")
        with self._lock:
            hook = self._hooks.get(webhook_id)
            if hook is None:
                raise WebhookError(404, "Webhook not found.")
            if events_action == "add":
                assert events is not None
                new_events = hook.events + [e for e in events if e not in hook.events]
            elif events_action == "remove":
                assert events is not None
                new_events = [e for e in hook.events if e not in events]
                if not new_events:
                    raise WebhookError(400, "A webhook must keep at least one event.")
            else:
                # §1.1: a PUT without events (or with an empty list) means ALL events.
                new_events = events or list(WEBHOOK_EVENTS)
            hook.events = new_events
            if url is not None:
                hook.url = url
            if "custom_name" in body:
                hook.custom_name = name
            if active is True:
                hook.active, hook.disabled_by, hook.consecutive_failures = True, None, 0
            elif active is False:
                hook.active, hook.disabled_by = False, "api"
            out = _copy(hook)
        self._changed()
        return out

    def delete(self, webhook_id: str) -> None:
        with self._lock:
            if self._hooks.pop(webhook_id, None) is None:
                raise WebhookError(404, "Webhook not found.")
        self._changed()

    # -- what the delivery engine uses ------------------------------------------

    def find(self, webhook_id: str) -> Webhook | None:
        """A copy of the webhook, or ``None`` once deleted."""
        with self._lock:
            hook = self._hooks.get(webhook_id)
            return _copy(hook) if hook is not None else None

    def targets(self, event: str) -> tuple[list[Webhook], int]:
        """``(active webhooks subscribed to event, number of inactive ones that are)``."""
        with self._lock:
            subscribed = [h for h in self._hooks.values() if h.subscribed(event)]
            return [_copy(h) for h in subscribed if h.active], sum(1 for h in subscribed if not h.active)

    def record_result(self, webhook_id: str, ok: bool, max_consecutive_failures: int) -> str | None:
        """Count one delivery attempt; ``"disabled"`` / ``"reenabled"`` when that flips ``active`` (§1.5)."""
        change = None
        with self._lock:
            hook = self._hooks.get(webhook_id)
            if hook is None:
                return None
            if ok:
                hook.consecutive_failures = 0
                if hook.disabled_by == "failures":
                    hook.active, hook.disabled_by = True, None
                    change = "reenabled"
            else:
                hook.consecutive_failures += 1
                if hook.active and hook.consecutive_failures >= max_consecutive_failures:
                    hook.active, hook.disabled_by = False, "failures"
                    change = "disabled"
        if change:
            self._changed()
        return change

    def on_change(self, fn: Callable[[], None]) -> None:
        with self._lock:
            self._listeners.append(fn)

    def _changed(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for fn in listeners:
            fn()


def _copy(hook: Webhook) -> Webhook:
    return replace(hook, events=list(hook.events))


class WebhookEndpoints:
    """The HTTP side of the registry; :class:`~.aircall_api.AircallApp` routes to it."""

    def __init__(self, registry: WebhookRegistry) -> None:
        self.registry = registry

    def routes(self, request: Request, rest: list[str]) -> list[tuple[str, Callable[[], Response]]]:
        """``(method, handler)`` pairs for ``/v1/webhooks`` + ``rest``; empty when no such path."""
        if not rest:
            return [("GET", lambda: self._list(request)), ("POST", lambda: self._create(request))]
        if len(rest) == 1 and rest[0]:
            wid = rest[0]
            return [
                ("GET", lambda: self._guard(lambda: self._one(request, self.registry.get(wid)))),
                ("PUT", lambda: self._update(request, wid)),
                ("DELETE", lambda: self._guard(lambda: self._deleted(wid))),
            ]
        return []

    @staticmethod
    def _error(status: int, message: str) -> Response:
        return Response.json(error_body(status, message), status=status)

    def _guard(self, fn: Callable[[], Response]) -> Response:
        try:
            return fn()
        except WebhookError as exc:
            return self._error(exc.status, exc.message)

    @staticmethod
    def _one(request: Request, hook: Webhook, status: int = 200) -> Response:
        return Response.json({"webhook": render_webhook(hook, request.base_url)}, status=status)

    def _body(self, request: Request) -> dict[str, Any]:
        try:
            body = request.json()
        except (ValueError, UnicodeDecodeError):
            raise WebhookError(400, "The body is not valid JSON.") from None
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise WebhookError(400, "The body must be a JSON object.")
        return body

    def _list(self, request: Request) -> Response:
        page, per_page, over_cap = page_params(request.query)
        if over_cap:
            return Response.json(CAP_ERROR_BODY, status=400)
        hooks = self.registry.all()
        chunk = hooks[(page - 1) * per_page: page * per_page]
        # list-webhooks.json: meta without next/previous_page_link.
        return Response.json({
            "webhooks": [render_webhook(h, request.base_url) for h in chunk],
            "meta": {"count": len(chunk), "total": len(hooks), "current_page": page, "per_page": per_page},
        })

    def _create(self, request: Request) -> Response:
        def go() -> Response:
            hook = self.registry.create(self._body(request))
            # create-webhook.json: the create answer has no deprecated int id.
            return Response.json({"webhook": render_webhook(hook, request.base_url, legacy_id=False)}, status=201)
        return self._guard(go)

    def _update(self, request: Request, wid: str) -> Response:
        def go() -> Response:
            self.registry.get(wid)  # 404 before 400, as for a missing call
            hook = self.registry.update(wid, self._body(request), events_action=request.query.get("events_action"))
            return self._one(request, hook)
        return self._guard(go)

    def _deleted(self, wid: str) -> Response:
        self.registry.delete(wid)
        return Response(status=204)
