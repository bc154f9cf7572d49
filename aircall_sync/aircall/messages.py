"""The Aircall message (SMS, MMS, WhatsApp), parsed tolerantly from a webhook event's ``data``.

Reference: ``../shared/reference/aircall-live.md`` §2.3–2.4 and RULES §7. The
documents and the samples disagree, so:

- ``id`` is a string, but an integer is read too (as its decimal text);
- timestamps come as epoch milliseconds, epoch seconds or ISO-8601 text;
- every key may be absent; ``user``, ``contact`` and ``number`` may be ``{}``;
- ``channel`` is ``null`` for SMS/MMS and ``"whatsapp"`` for WhatsApp (any
  other value is kept as it is, lower-cased);
- media come as ``media_details[].presigned_url`` (inbound) or ``media_url[]``
  (send responses): both are read, in that order, without repeats;
- ``external_number`` (webhooks, display format) else ``raw_digits``;
- a group message (``group_message.*``) lists ``participants[]``: it is logged
  once, against its first external participant (R-MSG-1).

A message without a usable id is unusable (``MessageParseError``). A message
without any readable time takes the event's envelope timestamp (``fallback``).

Identity (R-MSG-1): the message id string is the key in every target. The
state store keys its tables by a 64-bit integer; :func:`message_key` maps a
message id to a *negative* integer, so it never meets a call id (positive).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aircall_sync.aircall.models import Contact, Number, User, _list, _str, parse_timestamp

__all__ = ["FAILED_STATUSES", "Message", "MessageParseError", "message_key"]

#: R-MSG-6: a final status that means the message did not reach its recipient.
FAILED_STATUSES = frozenset({"failed", "undelivered"})


def message_key(message_id: str) -> int:
    """The state store's integer key of a message: negative, 63 bits, from sha256("message:" + id).

    Call ids are positive, so the two never collide; the same id always gives the same key.
    """
    digest = hashlib.sha256(("message:" + str(message_id)).encode("utf-8")).digest()
    return -(int.from_bytes(digest[:8], "big") >> 1) - 1


class MessageParseError(ValueError):
    """A message payload we cannot use."""


def _message_id(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (str, int)):
        text = str(value).strip()
        return text or None
    return None


@dataclass(frozen=True, slots=True)
class Participant:
    """A party of a group message: a phone number, and whether it is one of ours (a user)."""

    phone_number: str | None
    type: str | None = None

    @classmethod
    def parse(cls, value: Any) -> Participant | None:
        if isinstance(value, str):
            return cls(phone_number=value.strip() or None)
        if not isinstance(value, Mapping):
            return None
        number = (_str(value.get("phone_number")) or _str(value.get("external_number"))
                  or _str(value.get("raw_digits")) or _str(value.get("number")) or _str(value.get("digits")))
        return cls(phone_number=number, type=(_str(value.get("type")) or "").lower() or None)

    @property
    def external(self) -> bool:
        return bool(self.phone_number) and self.type not in ("user", "agent", "teammate")


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    created_at: datetime
    direction: str  # "inbound" | "outbound"
    status: str | None = None
    body: str = ""
    channel: str | None = None  # None (SMS/MMS) or "whatsapp"
    external_number: str | None = None
    raw_digits: str | None = None
    number: Number | None = None
    user: User | None = None
    contact: Contact | None = None
    attachments: tuple[str, ...] = ()
    group: bool = False
    participants: tuple[Participant, ...] = ()
    direct_link: str | None = None
    sent_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def key(self) -> int:
        return message_key(self.id)

    @property
    def whatsapp(self) -> bool:
        return self.channel == "whatsapp"

    @property
    def failed(self) -> bool:
        """R-MSG-6: the (final) status is a failure."""
        return (self.status or "").lower() in FAILED_STATUSES

    @property
    def customer_digits(self) -> str | None:
        """R-MSG-2 (and R-MSG-1 for groups): the raw text of the customer's number, before R-CALL-4 reads it."""
        if self.group:
            first = next((p for p in self.participants if p.external), None)
            if first is not None:
                return first.phone_number
        return self.external_number or self.raw_digits

    @classmethod
    def parse(cls, payload: Any, *, event: str | None = None, fallback: datetime | None = None) -> Message:
        """Parse a message object; ``event`` (its webhook name) gives the direction and the group flag when
        the object does not say; ``fallback`` is the time used when it carries none."""
        if not isinstance(payload, Mapping):
            raise MessageParseError(f"expected a message object, got {type(payload).__name__}")
        message_id = _message_id(payload.get("id"))
        if message_id is None:
            raise MessageParseError(f"message has no usable id (got {payload.get('id')!r:.40})")
        created = (parse_timestamp(payload.get("created_at")) or parse_timestamp(payload.get("sent_at"))
                   or parse_timestamp(payload.get("updated_at")) or fallback)
        if created is None:
            raise MessageParseError(f"message {message_id} has no usable created_at")
        name = (event or "").lower()
        direction = (_str(payload.get("direction")) or "").lower()
        if direction not in ("inbound", "outbound"):
            direction = "outbound" if name.endswith(".sent") else "inbound"
        channel = _str(payload.get("channel"))
        body = payload.get("body")
        if body is None:
            body = payload.get("text") if isinstance(payload.get("text"), str) else None
        participants = tuple(p for p in (Participant.parse(v) for v in _list(payload.get("participants"))) if p)
        return cls(
            id=message_id,
            created_at=created,
            direction=direction,
            status=_str(payload.get("status")),
            body=body if isinstance(body, str) else ("" if body is None else str(body)),
            channel=channel.strip().lower() if channel and channel.strip() else None,
            external_number=_str(payload.get("external_number")),
            raw_digits=_str(payload.get("raw_digits")),
            number=Number.parse(payload.get("number")),
            user=User.parse(payload.get("user")),
            contact=Contact.parse(payload.get("contact")),
            attachments=_attachments(payload),
            group=name.startswith("group_message.") or bool(payload.get("group_conversation_id")),
            participants=participants,
            direct_link=_str(payload.get("direct_link")),
            sent_at=parse_timestamp(payload.get("sent_at")),
            updated_at=parse_timestamp(payload.get("updated_at")),
        )


def _url(value: Any) -> str | None:
    text = _str(value)
    return text.strip() if text and text.strip().lower().startswith(("https://", "http://")) else None


def _attachments(payload: Mapping[str, Any]) -> tuple[str, ...]:
    """Media links (an MMS is an SMS with attachments, R-MSG-1); anything that is not a URL is ignored."""
    urls: list[str] = []
    for item in _list(payload.get("media_details")):
        if isinstance(item, Mapping):
            url = _url(item.get("presigned_url")) or _url(item.get("url"))
        else:
            url = _url(item)
        if url and url not in urls:
            urls.append(url)
    media = payload.get("media_url")
    for item in (media if isinstance(media, list) else [media] if isinstance(media, str) else []):
        url = _url(item.get("url")) if isinstance(item, Mapping) else _url(item)
        if url and url not in urls:
            urls.append(url)
    return tuple(urls)
