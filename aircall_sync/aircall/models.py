"""The Aircall call, as frozen dataclasses parsed tolerantly from the API's JSON.

Field list: ``../shared/reference/aircall-api.md`` §5 (Call) and §6 (nested
objects). Tolerance, because the docs and the wire disagree (§10):

- unknown keys are ignored, missing keys take a neutral default;
- ``transferred_*`` (live JSON) and ``transfered_*`` (the TS DTO) are both read;
- timestamps may be UNIX ints, numeric strings or ISO-8601 strings
  (``posted_at`` is documented as a string but arrives as an int);
- a nested user/contact/number may be ``null`` or ``{}`` (webhooks send ``{}``);
- ``conference_participants`` (REST) and ``participants`` (webhooks) are both read.

Only a call without a usable ``id`` or ``started_at`` is unusable: it raises
``CallParseError`` carrying whatever id could be read, so it can be reported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


class CallParseError(ValueError):
    """A call payload we cannot use; ``call_id`` is set when the id was readable."""

    def __init__(self, message: str, call_id: int | None = None):
        self.call_id = call_id
        super().__init__(message)


# ---------------------------------------------------------------- coercions


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
    return None


def _str(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value)
    return text if text else None


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def parse_timestamp(value: Any) -> datetime | None:
    """UNIX seconds (int, float or numeric string) or ISO-8601 text, as aware UTC."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            seconds = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                return None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return parsed.astimezone(UTC)
    else:
        return None
    if not math.isfinite(seconds):
        return None
    # Milliseconds sent where seconds are expected land in the year ~55000
    # (aircall-api.md §7): read them as milliseconds rather than fail.
    if seconds > 1e11:
        seconds /= 1000.0
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _obj(value: Any) -> Mapping[str, Any] | None:
    # Webhooks send ``{}`` for an absent user/contact/number: treat it as absent.
    if isinstance(value, Mapping) and value:
        return value
    return None


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


# ---------------------------------------------------------------- nested objects


@dataclass(frozen=True, slots=True)
class User:
    id: int | None
    name: str | None
    email: str | None
    created_at: datetime | None = None
    time_zone: str | None = None
    language: str | None = None
    available: bool | None = None
    availability_status: str | None = None

    @classmethod
    def parse(cls, value: Any) -> User | None:
        data = _obj(value)
        if data is None:
            return None
        return cls(
            id=_int(data.get("id")),
            name=_str(data.get("name")),
            email=_str(data.get("email")),
            created_at=parse_timestamp(data.get("created_at")),
            time_zone=_str(data.get("time_zone")),
            language=_str(data.get("language")),
            available=data.get("available") if isinstance(data.get("available"), bool) else None,
            availability_status=_str(data.get("availability_status")),
        )


@dataclass(frozen=True, slots=True)
class Number:
    """The Aircall line a call went through."""

    id: int | None
    name: str | None
    digits: str | None
    e164_digits: str | None = None
    country: str | None = None
    time_zone: str | None = None
    availability_status: str | None = None

    @classmethod
    def parse(cls, value: Any) -> Number | None:
        data = _obj(value)
        if data is None:
            return None
        return cls(
            id=_int(data.get("id")),
            name=_str(data.get("name")),
            digits=_str(data.get("digits")),
            e164_digits=_str(data.get("e164_digits")),
            country=_str(data.get("country")),
            time_zone=_str(data.get("time_zone")),
            availability_status=_str(data.get("availability_status")),
        )


@dataclass(frozen=True, slots=True)
class ContactPhone:
    label: str | None
    value: str | None


@dataclass(frozen=True, slots=True)
class Contact:
    """A shared Aircall contact (only present with ``fetch_contact=true``)."""

    id: int | None
    first_name: str | None
    last_name: str | None
    company_name: str | None
    phone_numbers: tuple[ContactPhone, ...] = ()
    emails: tuple[str, ...] = ()

    @property
    def full_name(self) -> str | None:
        name = " ".join(p for p in (self.first_name, self.last_name) if p)
        return name or None

    @classmethod
    def parse(cls, value: Any) -> Contact | None:
        data = _obj(value)
        if data is None:
            return None
        phones = tuple(
            ContactPhone(label=_str(p.get("label")), value=_str(p.get("value")))
            for p in _list(data.get("phone_numbers"))
            if isinstance(p, Mapping)
        )
        emails = tuple(
            e
            for e in (_str(x.get("value")) if isinstance(x, Mapping) else None for x in _list(data.get("emails")))
            if e
        )
        return cls(
            id=_int(data.get("id")),
            first_name=_str(data.get("first_name")),
            last_name=_str(data.get("last_name")),
            company_name=_str(data.get("company_name")),
            phone_numbers=phones,
            emails=emails,
        )


@dataclass(frozen=True, slots=True)
class Comment:
    id: int | None
    content: str
    posted_at: datetime | None
    #: ``None`` when the comment was posted through the API (no author).
    posted_by: User | None

    @classmethod
    def parse(cls, value: Any) -> Comment | None:
        if not isinstance(value, Mapping):
            return None
        content = value.get("content")
        return cls(
            id=_int(value.get("id")),
            content=content if isinstance(content, str) else ("" if content is None else str(content)),
            posted_at=parse_timestamp(value.get("posted_at")),
            posted_by=User.parse(value.get("posted_by")),
        )


@dataclass(frozen=True, slots=True)
class Tag:
    id: int | None
    name: str
    color: str | None = None
    description: str | None = None

    @classmethod
    def parse(cls, value: Any) -> Tag | None:
        if not isinstance(value, Mapping):
            return None
        name = _str(value.get("name"))
        if name is None:
            return None
        return cls(
            id=_int(value.get("id")),
            name=name,
            color=_str(value.get("color")),
            description=_str(value.get("description")),
        )


@dataclass(frozen=True, slots=True)
class Team:
    id: int | None
    name: str | None

    @classmethod
    def parse(cls, value: Any) -> Team | None:
        data = _obj(value)
        if data is None:
            return None
        return cls(id=_int(data.get("id")), name=_str(data.get("name")))


@dataclass(frozen=True, slots=True)
class Participant:
    """A conference party: ``user``, ``contact`` or ``external`` (no id/name)."""

    type: str | None
    id: int | None = None
    name: str | None = None
    phone_number: str | None = None

    @classmethod
    def parse(cls, value: Any) -> Participant | None:
        if not isinstance(value, Mapping):
            return None
        return cls(
            type=_str(value.get("type")),
            id=_int(value.get("id")),
            name=_str(value.get("name")),
            phone_number=_str(value.get("phone_number")),
        )


# ---------------------------------------------------------------- the call


def _parsed(items: list[Any], parse) -> tuple:
    return tuple(x for x in (parse(i) for i in items) if x is not None)


@dataclass(frozen=True, slots=True)
class Call:
    id: int
    started_at: datetime
    direction: str | None
    status: str | None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    duration: int | None = None
    sid: str | None = None
    direct_link: str | None = None
    missed_call_reason: str | None = None
    raw_digits: str | None = None
    asset: str | None = None
    recording: str | None = None
    recording_short_url: str | None = None
    voicemail: str | None = None
    voicemail_short_url: str | None = None
    archived: bool = False
    cost: str | None = None
    number: Number | None = None
    user: User | None = None
    contact: Contact | None = None
    assigned_to: User | None = None
    transferred_by: User | None = None
    transferred_to: User | None = None
    teams: tuple[Team, ...] = ()
    tags: tuple[Tag, ...] = ()
    comments: tuple[Comment, ...] = ()
    participants: tuple[Participant, ...] = ()
    country_code_a2: str | None = None
    pricing_type: str | None = None
    hangup_cause: str | None = None

    @classmethod
    def parse(cls, payload: Any) -> Call:
        """Parse one call object; raise ``CallParseError`` only if it is unusable."""
        if not isinstance(payload, Mapping):
            raise CallParseError(f"expected a call object, got {type(payload).__name__}")
        call_id = _int(payload.get("id"))
        if call_id is None or call_id <= 0:
            raise CallParseError(f"call has no usable id (got {payload.get('id')!r:.40})")
        started_at = parse_timestamp(payload.get("started_at"))
        if started_at is None:
            raise CallParseError(
                f"call {call_id} has no usable started_at (got {payload.get('started_at')!r:.40})", call_id
            )
        direction = _str(payload.get("direction"))
        participants = payload.get("conference_participants")
        if not isinstance(participants, list):
            participants = payload.get("participants")
        return cls(
            id=call_id,
            started_at=started_at,
            direction=direction.lower() if direction else None,
            status=_str(payload.get("status")),
            answered_at=parse_timestamp(payload.get("answered_at")),
            ended_at=parse_timestamp(payload.get("ended_at")),
            duration=_int(payload.get("duration")),
            sid=_str(payload.get("sid")) or _str(payload.get("call_uuid")),
            direct_link=_str(payload.get("direct_link")),
            missed_call_reason=_str(payload.get("missed_call_reason")),
            raw_digits=_str(payload.get("raw_digits")),
            asset=_str(payload.get("asset")),
            recording=_str(payload.get("recording")),
            recording_short_url=_str(payload.get("recording_short_url")),
            voicemail=_str(payload.get("voicemail")),
            voicemail_short_url=_str(payload.get("voicemail_short_url")),
            archived=_bool(payload.get("archived")),
            cost=_str(payload.get("cost")),
            number=Number.parse(payload.get("number")),
            user=User.parse(payload.get("user")),
            contact=Contact.parse(payload.get("contact")),
            assigned_to=User.parse(payload.get("assigned_to")),
            transferred_by=User.parse(_either(payload, "transferred_by", "transfered_by")),
            transferred_to=User.parse(_either(payload, "transferred_to", "transfered_to")),
            teams=_parsed(_list(payload.get("teams")), Team.parse),
            tags=_parsed(_list(payload.get("tags")), Tag.parse),
            comments=_parsed(_list(payload.get("comments")), Comment.parse),
            participants=_parsed(_list(participants), Participant.parse),
            country_code_a2=_str(payload.get("country_code_a2")),
            pricing_type=_str(payload.get("pricing_type")),
            hangup_cause=_str(payload.get("hangup_cause")),
        )


def _either(payload: Mapping[str, Any], name: str, misspelt: str) -> Any:
    value = payload.get(name)
    return value if value else payload.get(misspelt)
