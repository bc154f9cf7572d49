"""Messages in live mode (RULES §7): a message rebuilt from its stored events, and the names of numbers.

Aircall's API lists no messages (reference aircall-live.md §2.2): the inbox
holds the only copy of each, so the worker, ``explain``, ``retry`` (and later
``replay``) all read a message from its stored events, the same way:

- its events are taken oldest to newest (envelope timestamp, then arrival:
  DESIGN §10) and their ``data`` merged, each newer snapshot's values winning,
  so the newest snapshot decides (a ``message.status_updated`` that carries
  only the status keeps the body of the ``message.sent`` before it; a
  ``number`` reduced to ``{id, digits}`` keeps the name and time zone an
  older event gave) and any
  event carrying the message is enough to log it (R-MSG-1);
- a message event names its direction in its name when ``direction`` is
  absent (``.sent``: outbound, ``.received``: inbound), and a ``group_message.*``
  event makes it a group message;
- with no time in the message, the envelope timestamp is its ``created_at``.

``NumberNames`` reads an Aircall number's name once per number and process
(``GET /v1/numbers/:id``, paced with every other Aircall request), for the
events whose ``number`` has no name (R-MSG-4).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from aircall_sync.aircall.messages import Message
from aircall_sync.errors import CredentialsError, ServiceError
from aircall_sync.live.inbox import Event

__all__ = ["NumberNames", "merged_data", "message_from_events"]

log = logging.getLogger("aircall_sync.live")


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def merged_data(events: Iterable[Event]) -> dict[str, Any]:
    """The message as its events describe it together: oldest first, each newer non-empty value winning."""
    data: dict[str, Any] = {}
    for event in sorted(events, key=lambda e: e.order):
        snapshot = event.body.get("data")
        if not isinstance(snapshot, Mapping):
            continue
        _merge(data, snapshot)
    return data


def _merge(into: dict[str, Any], newer: Mapping[str, Any]) -> None:
    """Newer non-empty values win, key by key, nested objects too: an event whose ``number`` is only
    ``{id, digits}`` keeps the name, country and time zone an older event carried."""
    for key, value in newer.items():
        current = into.get(key)
        if isinstance(value, Mapping) and isinstance(current, dict) and value:
            merged = dict(current)
            _merge(merged, value)
            into[key] = merged
        elif not _empty(value) or key not in into:
            into[key] = dict(value) if isinstance(value, Mapping) else value


def message_from_events(events: list[Event]) -> Message:
    """The message its stored events describe (``MessageParseError`` when none can be read)."""
    ordered = sorted(events, key=lambda e: e.order)
    names = [e.event for e in ordered]
    # The event that says the direction (sent/received) wins over a status update; a group event marks a group.
    named = next((n for n in reversed(names) if n.endswith((".sent", ".received"))), names[-1])
    if any(n.startswith("group_message.") for n in names) and not named.startswith("group_message."):
        named = "group_" + named
    newest = ordered[-1]
    fallback = datetime.fromtimestamp(newest.event_ms / 1000, UTC)
    return Message.parse(merged_data(ordered), event=named, fallback=fallback)


class NumberNames:
    """An Aircall number's name by id, asked once per number and process (R-MSG-4)."""

    def __init__(self, client):
        self.client = client
        self._names: dict[int, str | None] = {}
        self.requests = 0

    def __call__(self, number_id: int) -> str | None:
        if number_id in self._names:
            return self._names[number_id]
        self.requests += 1
        try:
            number = self.client.get_number(number_id)
        except CredentialsError:
            raise
        except ServiceError as exc:
            if getattr(exc, "status", None) == 404:
                self._names[number_id] = None  # gone: its E.164 titles the Task, and it is not asked again
            else:
                log.warning("the name of Aircall number %s could not be read (%s); its number is used", number_id,
                            exc)
            return None
        name = number.get("name") if isinstance(number, Mapping) else None
        self._names[number_id] = name if isinstance(name, str) and name.strip() else None
        return self._names[number_id]
