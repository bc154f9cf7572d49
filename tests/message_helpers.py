"""Message webhook events built from the reference (aircall-live.md §2.3–2.4), for the message tests.

The envelope is ``{resource: "message", event, timestamp, token, data}``; ``data``
is the message object: a string ``id``, ``direction``, ``external_number`` in
display format (webhooks), ``raw_digits``, ``body``, ``status``, epoch-millisecond
times (the support article's sample), ``channel`` null or ``"whatsapp"``,
``media_details[]`` with ``presigned_url``, ``number``, and ``user`` only when
an agent sent it (unconfirmed in the reference: both shapes are used).
"""

from __future__ import annotations

from typing import Any

TOKEN = "live-test-webhook-token-4f2a"
T0_MS = 1793433600000  # 2026-10-31T08:00:00Z: a Saturday, 04:00 in New York (outside business hours)
WEEKDAY_MS = 1793109600000  # 2026-10-27T14:00:00Z: a Tuesday, 10:00 in New York (inside)
LINE = {"id": 1389843, "direct_link": "https://api.aircall.io/v1/numbers/1389843", "name": "Support US",
        "digits": "+1 212-734-7440", "country": "US", "time_zone": "America/New_York"}
ALEX = {"id": 5101, "name": "Alex Martin", "email": "Alex.Martin@example.com"}


def message(mid: str, *, direction: str = "inbound", external: str | None = "+33 6 12 34 56 78",
            body: str = "Hello, is my order on its way?", created_ms: int = T0_MS, status: str | None = None,
            channel: str | None = None, media: tuple[str, ...] = (), user: dict | None = None,
            number: dict | None = LINE, raw_digits: str | None = None, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": mid,
        "direct_link": f"https://api.aircall.io/v1/numbers/{(number or LINE)['id']}/messages/{mid}",
        "direction": direction,
        "status": status or ("received" if direction == "inbound" else "sent"),
        "body": body,
        "raw_digits": raw_digits if raw_digits is not None else (external or "").replace(" ", "").lstrip("+"),
        "created_at": created_ms,
        "sent_at": created_ms,
        "updated_at": created_ms,
        "channel": channel,
        "number": dict(number) if number else {},
        "contact": {},
    }
    if external is not None:
        data["external_number"] = external
    if media:
        data["media_details"] = [{"file_name": f"image{i}.jpg", "file_type": "image/jpeg", "presigned_url": url}
                                 for i, url in enumerate(media)]
    if user is not None:
        data["user"] = dict(user)
    data.update(extra)
    return data


def event(name: str, data: dict[str, Any], timestamp: int, token: str = TOKEN) -> dict[str, Any]:
    resource = "message"
    return {"resource": resource, "event": name, "timestamp": timestamp, "token": token, "data": dict(data)}


def lifecycle(data: dict[str, Any], *, final: str | None = None) -> list[dict[str, Any]]:
    """What Aircall sends for one message: sent or received, then (outbound) a status update."""
    seconds = data["created_at"] // 1000
    if data["direction"] == "inbound":
        events = [event("message.received", data, seconds)]
    else:
        events = [event("message.sent", data, seconds)]
    if final is not None:
        events.append(event("message.status_updated", dict(data, status=final, updated_at=data["created_at"] + 4000),
                            seconds + 4))
    return events
