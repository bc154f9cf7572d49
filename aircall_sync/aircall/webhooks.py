"""The Aircall webhook that feeds ``serve``: install, list, check, repair, remove (DESIGN §10).

Facts relied on (``../shared/reference/aircall-live.md`` §1.1, and the recorded
``aircall/recorded/{create,list}-webhooks.json``):

- ``POST /v1/webhooks`` ``{custom_name, url, events}`` answers ``{"webhook": {...,
  token}}`` (201, or 200 as recorded through a proxy: any 2xx). ``events``
  omitted or empty subscribes to **all** events, so it is always sent.
- ``GET /v1/webhooks`` lists ``{"webhooks": [...], "meta": {...}}`` with no
  link keys; each item has ``webhook_id`` (a UUID) and the deprecated int ``id``.
- ``PUT /v1/webhooks/{webhook_id}`` **without ``events`` resets a webhook to all
  events**: every PUT here carries the full list.
- ``DELETE /v1/webhooks/{webhook_id}``.

"Our" webhook is the one whose ``url`` is ``live.public_url`` (or ``--url``).
Its token is a secret: it is printed once by ``install`` and never otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from aircall_sync.aircall.client import AircallApiError, AircallClient
from aircall_sync.errors import ServiceError

__all__ = ["AI_EVENTS", "AircallApiError", "CALL_EVENTS", "MESSAGE_EVENTS", "Webhook", "WebhookCheck", "check", "create", "find_ours", "list_webhooks",
           "logs_messages", "needed_events", "remove", "repair"]

# DESIGN §10: what serve needs to log a call and what changes on it after it ends.
CALL_EVENTS = (
    "call.hungup",
    "call.ended",
    "call.tagged",
    "call.untagged",
    "call.commented",
    "call.assigned",
    "call.transferred",
    "call.voicemail_left",
    "call.comm_assets_generated",
)

# RULES §7: messages reach the tool only as these events (reference aircall-live.md §1.2, §2).
MESSAGE_EVENTS = (
    "message.sent",
    "message.received",
    "message.status_updated",
    "group_message.sent",
    "group_message.received",
    "group_message.status_updated",
)

# RULES §8: an AI insight of a call exists (reference aircall-live.md §3.5), subscribed when aircall.ai.enabled.
AI_EVENTS = (
    "transcription.created",
    "summary.created",
    "topics.created",
    "sentiment.created",
    "action_item.created",
)

CUSTOM_NAME = "aircall-sync"


def logs_messages(settings) -> bool:
    """Whether an enabled target logs messages (``[salesforce.messages]`` / ``[front.messages]`` ``log``)."""
    return any(getattr(settings, target).messages.log != "none" for target in settings.enabled_targets())


def needed_events(settings) -> tuple[str, ...]:
    """The events ``serve`` needs with these settings, in a stable order: the call events, the message
    events when a target logs messages, the five AI events when ``aircall.ai.enabled`` (DESIGN §10)."""
    return (CALL_EVENTS + (MESSAGE_EVENTS if logs_messages(settings) else ())
            + (AI_EVENTS if settings.aircall.ai.enabled else ()))


@dataclass(frozen=True)
class Webhook:
    webhook_id: str
    url: str
    active: bool
    events: tuple[str, ...]
    created_at: str | None
    token: str | None  # a secret: only `install` shows it, once

    @classmethod
    def parse(cls, item: dict) -> Webhook | None:
        if not isinstance(item, dict):
            return None
        webhook_id = item.get("webhook_id") or item.get("id")
        if webhook_id is None or isinstance(webhook_id, bool):
            return None
        events = item.get("events")
        return cls(
            webhook_id=str(webhook_id),
            url=str(item.get("url") or ""),
            active=item.get("active") is not False,
            events=tuple(str(e) for e in events) if isinstance(events, list) else (),
            created_at=str(item["created_at"]) if item.get("created_at") else None,
            token=item.get("token") if isinstance(item.get("token"), str) else None,
        )


def _same_url(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def list_webhooks(client: AircallClient) -> Iterator[Webhook]:
    page = 1
    while True:
        body = client.request("GET", "/webhooks", params={"page": page, "per_page": 50})
        items = body.get("webhooks")
        if not isinstance(items, list):
            raise ServiceError("Aircall answered the webhook list without a 'webhooks' array")
        for item in items:
            hook = Webhook.parse(item)
            if hook is not None:
                yield hook
        meta = body.get("meta") if isinstance(body.get("meta"), dict) else {}
        total, per_page = meta.get("total"), meta.get("per_page") or 50
        if not items or not isinstance(total, int) or page * per_page >= total:
            return
        page += 1


def find_ours(client: AircallClient, url: str) -> list[Webhook]:
    return [hook for hook in list_webhooks(client) if _same_url(hook.url, url)]


def create(client: AircallClient, url: str, events: tuple[str, ...]) -> Webhook:
    """Create the webhook; sent once (a second POST would make a second webhook)."""
    try:
        body = client.request("POST", "/webhooks", json={"custom_name": CUSTOM_NAME, "url": url,
                                                         "events": list(events)}, once=True)
    except AircallApiError as exc:
        if exc.status in (400, 422):
            raise ServiceError(f"{exc}; Aircall accepts only an https:// URL with a valid certificate, and at "
                               "most 100 webhooks per account") from None
        raise
    except ServiceError as exc:
        raise ServiceError(f"{exc}. The webhook may have been created: see `aircall-sync webhooks list` before "
                           "installing again") from None
    hook = Webhook.parse(body.get("webhook") or {})
    if hook is None:
        raise ServiceError("Aircall answered the webhook creation without a webhook")
    return hook


def repair(client: AircallClient, hook: Webhook, events: tuple[str, ...]) -> Webhook:
    """Re-enable a webhook and subscribe it to ``events`` (the full list: a PUT without ``events``
    would subscribe it to everything)."""
    body = client.request("PUT", f"/webhooks/{hook.webhook_id}", json={"active": True, "events": list(events)})
    return Webhook.parse(body.get("webhook") or {}) or hook


def remove(client: AircallClient, webhook_id: str) -> None:
    client.request("DELETE", f"/webhooks/{webhook_id}", expect_body=False)


@dataclass(frozen=True)
class WebhookCheck:
    url: str
    hook: Webhook | None
    problems: tuple[str, ...]
    duplicates: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def check(client: AircallClient, url: str, events: tuple[str, ...]) -> WebhookCheck:
    """Ours exists, is active, and is subscribed to every event ``serve`` needs."""
    ours = find_ours(client, url)
    if not ours:
        return WebhookCheck(url, None, (f"no Aircall webhook points at {url}: run `aircall-sync webhooks install "
                                        f"--url {url}`",))
    hook = next((h for h in ours if h.active), ours[0])
    problems = []
    if not hook.active:
        problems.append(f"the webhook {hook.webhook_id} is disabled (Aircall disables one after repeated failed "
                        "deliveries): `serve` re-enables it, or run `aircall-sync webhooks install` again")
    missing = [e for e in events if e not in hook.events]
    if missing:
        problems.append(f"the webhook {hook.webhook_id} is not subscribed to {', '.join(missing)}: `serve` "
                        "subscribes it at start")
    return WebhookCheck(url, hook, tuple(problems), duplicates=len(ours) - 1)
