"""Which messages are logged, and how a message is read: RULES.md §7 (R-MSG-2, R-MSG-3, R-MSG-6), pure.

Like ``rules`` for calls: every function takes the message and plain settings
values and returns a value; :func:`assess_message` puts it together into a
:class:`MessageAssessment`, which the targets plan beside the calls'
``rules.Assessment`` (both have ``key``, ``external`` and ``decisions``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import time
from zoneinfo import ZoneInfo

import phonenumbers

from aircall_sync import rules
from aircall_sync.aircall.messages import Message
from aircall_sync.rules import Decision, ExternalNumber, Flow

__all__ = ["LOG_CHOICES", "MessageAssessment", "assess_message", "decide_message", "external_number",
           "line_e164", "number_name"]

LOG_CHOICES = ("all", "inbound", "outbound", "none")


# ---------------------------------------------------------------- R-MSG-2


def _region(message: Message) -> str | None:
    """The region hint of R-CALL-4: the Aircall number's ``country``, else the country of its digits."""
    number = message.number
    if number is None:
        return None
    if number.country:
        return number.country.upper()
    return _region_of(number.e164_digits or number.digits)


@functools.lru_cache(maxsize=1024)
def _region_of(digits: str | None) -> str | None:
    if not digits:
        return None
    try:
        parsed = phonenumbers.parse(digits if digits.startswith("+") else "+" + digits, None)
    except phonenumbers.NumberParseException:
        return None
    return phonenumbers.region_code_for_number(parsed) or None


def external_number(message: Message) -> ExternalNumber | None:
    """R-MSG-2: ``external_number`` (webhooks) else ``raw_digits``, read as R-CALL-4.

    A group message (R-MSG-1) is read from its first external participant.
    ``anonymous``, empty, unparseable or impossible ⇒ ``None``.
    """
    raw = (message.customer_digits or "").strip()
    if not raw or raw.lower() == "anonymous":
        return None
    if raw.startswith("+"):
        return rules._external(raw, None)
    return rules._external(raw, _region(message))


def line_e164(message: Message) -> str | None:
    """The Aircall number of the message in E.164 (``+`` included)."""
    number = message.number
    if number is None:
        return None
    return rules._line_e164(number.e164_digits, number.digits, _region(message))


def number_name(message: Message, looked_up: str | None = None) -> str:
    """R-MSG-4 ``{number_name}``: the event's ``number.name``, else the name read from Aircall, else E.164."""
    if message.number is not None and message.number.name:
        return message.number.name
    if looked_up:
        return looked_up
    return line_e164(message) or (message.number.digits if message.number and message.number.digits else "")


# ---------------------------------------------------------------- R-MSG-3


def decide_message(
    message: Message,
    external: ExternalNumber | None,
    *,
    target: str,
    log: str,
    log_messages: str,
    days: Collection[str],
    start: time,
    end: time,
    default_zone: ZoneInfo,
) -> Decision:
    """R-MSG-3 (per-target ``log`` filter and ``sync.log_messages``) and R-MSG-2 for one target."""
    if log == "none":
        return Decision(Flow.SKIP, f"messages not logged ({target}.messages.log = \"none\")")
    if log in ("inbound", "outbound") and message.direction != log:
        return Decision(Flow.SKIP, f"{message.direction} message ({target}.messages.log = \"{log}\")")
    if log_messages == "business_hours":
        zone = rules.number_zone(message.number, default_zone)
        reason = rules.outside_hours(message.created_at, zone, days, start, end)
        if reason:
            return Decision(Flow.SKIP, reason)
    if external is None:
        return Decision(Flow.SKIP, "no external number (R-MSG-2)")
    return Decision(Flow.COMPLETED)


# ---------------------------------------------------------------- all of it


@dataclass(frozen=True, slots=True)
class MessageAssessment:
    """Everything RULES §7 says about one message, for each enabled target."""

    message: Message
    external: ExternalNumber | None
    #: R-MSG-4 ``{number_name}``, resolved (the event's, Aircall's, or the line's E.164).
    number_name: str
    decisions: dict[str, Decision]
    #: A message is logged as soon as an event carries it (R-MSG-1): nothing to wait for.
    settled: bool = True
    unsettled_reason: str | None = None

    #: Not a call: targets tell the two kinds apart with ``item.call is None``.
    call = None

    @property
    def key(self) -> int:
        """The state store's key of the message (``messages.message_key``: negative, never a call id)."""
        return self.message.key

    @property
    def message_id(self) -> str:
        return self.message.id

    @property
    def failed(self) -> bool:
        """R-MSG-6."""
        return self.message.failed


def assess_message(message: Message, settings, *, number_names: Callable[[int], str | None] | None = None
                   ) -> MessageAssessment:
    """Apply RULES §7 with the user's settings; ``number_names(number id)`` is the Aircall number's name
    read from Aircall (R-MSG-4), asked only when the event's number has no name."""
    sync = settings.sync
    hours = sync.business_hours
    external = external_number(message)
    looked_up = None
    if (message.number is None or not message.number.name) and number_names is not None and message.number \
            and message.number.id is not None:
        looked_up = number_names(message.number.id)
    decisions = {
        target: decide_message(
            message, external, target=target, log=getattr(settings, target).messages.log,
            log_messages=sync.log_messages, days=hours.days, start=hours.start, end=hours.end,
            default_zone=sync.tzinfo,
        )
        for target in settings.enabled_targets()
    }
    return MessageAssessment(message=message, external=external, number_name=number_name(message, looked_up),
                             decisions=decisions)
