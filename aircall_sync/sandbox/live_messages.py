"""One live SMS, MMS or WhatsApp message: the message object over time and the webhook events it sends.

:func:`plan_message` turns a :class:`MessageSpec` into timed
:class:`MessageStep`: each one is a webhook event carrying the message *as
of that moment*. :mod:`.live_traffic` publishes them on the emulated clock.
Messages exist only as these pushes: Aircall has no endpoint that lists or
returns past messages (``shared/reference/aircall-live.md`` §2.2), so the
emulator keeps none to serve.

Behaviour from ``aircall-live.md`` §2 (cited as §2.N) and §1.3:

- events: ``message.received`` for an inbound message; ``message.sent`` then
  ``message.status_updated`` (delivered, or ``failed`` / ``undelivered``)
  for an outbound one; ``group_message.*`` twins for group conversations,
  whose message adds ``group_conversation_id`` and ``participants[]``
  (§2.3). Envelope ``resource``: ``message`` (§1.3);
- the message object (§2.3, Riprock's model, the samples of §2.4): a string
  ``id`` (``abcdSM…`` as in the samples), ``direct_link`` under the line,
  ``direction``, ``external_number`` in display format (webhooks only,
  ``"+44 7474 626067"``), ``body`` (≤ 1,600 characters), ``status``,
  ``raw_digits`` (digits only, as both samples show them),
  ``media_details[]`` ``{file_name, file_type, presigned_url}`` on inbound
  MMS, ``media_url[]`` on outbound ones, ``created_at`` / ``updated_at`` /
  ``sent_at`` in **mixed formats** (epoch milliseconds in some events, ISO
  strings in others: "parse both"), ``channel`` (``null`` or
  ``"whatsapp"``, with the WhatsApp-only fields), ``number``, ``contact``;
- a share of envelopes carry a millisecond ``timestamp``, as the
  third-party ``message.received`` sample does (§1.3, §2.4);
- ``number`` is sometimes the full object and sometimes only ``{id,
  digits}`` or ``{id, direct_link}`` as in the two samples (no ``name``:
  the tool then reads it with ``GET /v1/numbers/:id``, RULES.md R-MSG-4);
- outbound messages name their agent (``user``) only some of the time:
  whether events carry one is UNCONFIRMED (§2.3).

Everything is seeded: the n-th message with the same spec and time is the
same. Decisions are listed in :data:`AMBIGUITIES`.
"""

from __future__ import annotations

import bisect
import mimetypes
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aircall_sync.sandbox.generator import World, _digits, _hex
from aircall_sync.sandbox.live_calls import resolve_caller

__all__ = [
    "AMBIGUITIES",
    "FAIL_STATUSES",
    "MAX_BODY",
    "MessagePlan",
    "MessageSpec",
    "MessageStep",
    "background_message_specs",
    "message_id",
    "plan_message",
]

MAX_BODY = 1600  # §2.3
FAIL_STATUSES = ("failed", "undelivered")  # RULES.md R-MSG-6's failures; the full enum is UNCONFIRMED (§2.3)
# Callers of messages get their own index space in resolve_caller's seeds, so that a message never
# changes which number the n-th placed call has.
_CALLER_SPACE = 1_000_000

AMBIGUITIES: tuple[str, ...] = (
    "Statuses (the enum is UNCONFIRMED; pending and received are the ones seen): inbound messages are "
    "'received' in their one event; outbound ones are 'sent' on message.sent, then 'delivered', 'failed' "
    "or 'undelivered' on message.status_updated 1 to 20 s later; a delivered WhatsApp message is 'read' "
    "in a second status_updated half of the time. 'pending' (the send response's status) is never on an "
    "event: Aircall sends message.sent once the message has left. A failed message still had its "
    "message.sent.",
    "Timestamps: each event draws (seeded) whether created_at/updated_at/sent_at are epoch milliseconds "
    "(ints) or ISO 8601 strings with milliseconds and Z; the three keys of one event share the format, two "
    "events of one message may not. A third of message envelopes carry timestamp in milliseconds. "
    "Inbound: sent_at = created_at (the customer's send); outbound: sent_at is set from message.sent on.",
    "raw_digits is the external number's digits without '+' (both samples of §2.4); external_number, the "
    "same number in Aircall's display format, is on every message event, inbound or outbound.",
    "Media: inbound MMS carry media_details [{file_name, file_type (MIME, from the name), presigned_url}] "
    "with an S3-style presigned link (X-Amz-Expires=600, like recordings: it expires) and media_url []; "
    "outbound ones carry media_url [plain URLs, what the agent sent] and media_details []. Both keys are on "
    "every message. The sandbox does not serve these URLs.",
    "number: two in three events carry the full Number object (as nested in a call, plus e164_digits); the "
    "others only {id, digits} (the message.received sample) or {id, direct_link} (the send response), "
    "without name.",
    "user: only outbound messages may carry one (the full user as nested in a call); half of them do (seeded "
    "per message, every event of that message alike), the others have no user key. Inbound never.",
    "contact: the caller's shared Aircall contact (REST form, as nested in calls) when the number has one; "
    "the key is absent otherwise (optional means absent, wire-formats.md Aircall §3).",
    "WhatsApp (channel 'whatsapp') adds Riprock's WhatsApp-only keys: type ('text', or 'image' / 'video' / "
    "'audio' / 'document' from the first attachment), whatsapp_message_category ('utility' or 'marketing' "
    "outbound, null inbound), whatsapp_message_type 'regular', recipient_country (ISO alpha-2 of the "
    "recipient), template_content, metadata and parent_id null. SMS/MMS messages have none of these keys.",
    "Group messages are SMS only (group_message.* events): the message object keeps its own id and adds "
    "group_conversation_id ('GC' + 32 hex, stable per line and set of participants) and participants, the "
    "external numbers in display format, the message's external_number first. WhatsApp groups are not "
    "emulated.",
    "Ids: 4 lowercase letters per company then 'SM' and 32 hex digits, as the samples ('abcdSM…'); the same "
    "form for MMS and WhatsApp. direct_link is {base}/v1/numbers/{line id}/messages/{id}, a link the "
    "emulator answers 404 (whether a GET on it works is UNCONFIRMED, §2.2).",
    "Messages need a number: 'anonymous' is refused; 'pool' and 'unknown' callers are drawn as for calls.",
)


@dataclass(frozen=True, slots=True)
class MessageSpec:
    """What to send or receive.

    ``direction``: ``"inbound"`` (``message.received``) or ``"outbound"``
    (``message.sent`` + ``message.status_updated``). ``channel``: ``None``
    (SMS/MMS) or ``"whatsapp"``. ``external_number``: ``"pool"`` (a caller
    the CRM seed has), ``"unknown"`` or a phone number. ``body``: ``None``
    draws one. ``media``: attachment file names (an MMS). ``line`` /
    ``user``: indexes of the generator's lines and agents (``None``: drawn;
    ``user`` is for outbound messages). ``names_user``: whether outbound
    events carry ``user`` (``None``: seeded, about half). ``fail``: an
    outbound message that fails (``True`` draws ``failed`` or
    ``undelivered``, or name one). ``group``: a group conversation
    (``True``: three participants, or their number, at least 2).
    """

    direction: str = "inbound"
    channel: str | None = None
    external_number: str = "pool"
    body: str | None = None
    media: tuple[str, ...] = ()
    line: int | None = None
    user: int | None = None
    names_user: bool | None = None
    fail: bool | str = False
    group: bool | int = False

    def __post_init__(self) -> None:
        if self.direction not in ("inbound", "outbound"):
            raise ValueError("direction must be 'inbound' or 'outbound'")
        if self.channel not in (None, "whatsapp"):
            raise ValueError("channel must be None (SMS/MMS) or 'whatsapp'")
        if self.external_number == "anonymous":
            raise ValueError("a message needs a number: anonymous is for calls only")
        if self.body is not None and len(self.body) > MAX_BODY:
            raise ValueError(f"a message body has at most {MAX_BODY} characters")
        if isinstance(self.media, str) or not all(isinstance(m, str) and m for m in self.media):
            raise ValueError("media is a sequence of file names")
        if self.fail not in (False, True, *FAIL_STATUSES):
            raise ValueError(f"fail must be a bool or one of {', '.join(FAIL_STATUSES)}")
        if self.fail and self.direction != "outbound":
            raise ValueError("only outbound messages fail")
        if self.direction == "inbound" and (self.user is not None or self.names_user):
            raise ValueError("inbound messages have no agent")
        if self.group is not False and self.group is not True and (not isinstance(self.group, int) or self.group < 2):
            raise ValueError("group is a bool or a participant count of at least 2")
        if self.group and self.channel == "whatsapp":
            raise ValueError("group messages are SMS only")

    @property
    def participants(self) -> int:
        if self.group is True:
            return 3
        return int(self.group) if self.group else 1


@dataclass(frozen=True, slots=True)
class MessageStep:
    """At emulated time ``at``, send ``event`` with ``data`` (the message then); ``timestamp_ms``: the
    envelope's timestamp in milliseconds."""

    at: float
    event: str
    data: Mapping[str, Any]
    timestamp_ms: bool


@dataclass(frozen=True, slots=True)
class MessagePlan:
    id: str
    steps: tuple[MessageStep, ...]
    external_number: str   # display format
    raw_digits: str
    caller: str            # "pool" | "unknown" | "explicit"
    in_pool: bool
    number_id: int
    status: str            # the last status

    @property
    def events(self) -> list[tuple[float, str]]:
        return [(s.at, s.event) for s in self.steps]


_BODIES = {
    "en": {
        "inbound": ("Hi, can you call me back about my order?", "Is the office open on Saturday?",
                    "Thanks, the invoice is paid.", "I'm running 10 minutes late for our appointment.",
                    "Please stop sending me promotions.", "Here's the photo of the damaged package."),
        "outbound": ("Your appointment is confirmed for tomorrow at 10:00.", "We tried to reach you, call us back "
                     "at your convenience.", "Your refund has been processed.", "Here is the link to sign the "
                     "contract: https://example.com/sign", "Your order has shipped!"),
    },
    "fr": {
        "inbound": ("Bonjour, pouvez-vous me rappeler ?", "Le bureau est-il ouvert samedi ?",
                    "Merci, la facture est réglée.", "Voici la photo du colis abîmé."),
        "outbound": ("Votre rendez-vous est confirmé demain à 10h.", "Nous avons essayé de vous joindre, "
                     "rappelez-nous quand vous voulez.", "Votre remboursement a été effectué."),
    },
    "de": {
        "inbound": ("Hallo, können Sie mich zurückrufen?", "Ist das Büro am Samstag geöffnet?",
                    "Danke, die Rechnung ist bezahlt."),
        "outbound": ("Ihr Termin ist für morgen 10 Uhr bestätigt.", "Wir haben versucht, Sie zu erreichen.",
                     "Ihre Erstattung wurde veranlasst."),
    },
}
_LANG = {"FR": "fr", "DE": "de"}


def message_id(seed: int, n: int) -> str:
    """The n-th message's id: a company prefix, 'SM' and 32 hex digits, like ``abcdSMc6Dc8e…`` (§2.4)."""
    prefix = "".join(chr(ord("a") + int(c, 16) % 26) for c in _hex("msg-company", seed, n=2))
    return f"{prefix}SM{_hex('msg', seed, n)}"


def _stamp(t: float, ms: bool) -> int | str:
    millis = int(round(t * 1000))
    if ms:
        return millis
    dt = datetime.fromtimestamp(millis / 1000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis % 1000:03d}Z"


def _media_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def plan_message(world: World, spec: MessageSpec, *, n: int, at: float, base: str, pool: set[str]) -> MessagePlan:
    """Everything that will happen to the ``n``-th message (deterministic for a given world, ``n`` and ``at``)."""
    rng = random.Random(f"live-message:{world.seed}:{n}")
    nested = world.nested(base)
    outbound = spec.direction == "outbound"

    line_i = spec.line if spec.line is not None else bisect.bisect_right(
        world.line_cum, rng.random() * world.line_cum[-1])
    if not 0 <= line_i < len(world.lines):
        raise ValueError(f"line must be within 0..{len(world.lines) - 1}")
    L = world.lines[line_i]
    number_full = {**nested["numbers"][line_i], "e164_digits": "+" + _digits(L.digits)}
    agent_i = spec.user if spec.user is not None else rng.choice(L.users)
    if not 0 <= agent_i < len(world.agents):
        raise ValueError(f"user must be within 0..{len(world.agents) - 1}")
    names_user = outbound and (spec.names_user if spec.names_user is not None else rng.random() < 0.5)

    caller = resolve_caller(world, spec.external_number, _CALLER_SPACE + n, pool)
    mid = message_id(world.seed, n)
    media_base = f"{base}/media/messages/{mid}"
    lang = _LANG.get(L.country, "en")
    if spec.body is not None:
        body = spec.body
    elif spec.media and rng.random() < 0.3:
        body = ""  # a picture sent without text
    else:
        body = rng.choice(_BODIES[lang][spec.direction])
    files = list(spec.media)
    if outbound:
        media_url = [f"{media_base}/{name}" for name in files]
        media_details: list[dict[str, str]] = []
    else:
        media_url = []
        media_details = [{
            "file_name": name, "file_type": _media_type(name),
            "presigned_url": (f"{media_base}/{name}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=600"
                              f"&X-Amz-SignedHeaders=host&X-Amz-Signature={_hex('media', mid, name, n=32)}"),
        } for name in files]

    participants: list[str] = []
    if spec.group:
        participants = [caller.raw]
        while len(participants) < spec.participants:
            other = world.ext(world.pick_caller(rng)).raw
            if other not in participants:
                participants.append(other)
    contact = world.contact(caller.code, base) if caller.code is not None and caller.code >= 0 else None

    whatsapp: dict[str, Any] = {}
    if spec.channel == "whatsapp":
        first = _media_type(files[0]).split("/")[0] if files else None
        whatsapp = {
            "type": "text" if first is None else first if first in ("image", "video", "audio") else "document",
            "template_content": None,
            "metadata": None,
            "parent_id": None,
            "whatsapp_message_category": rng.choice(("utility", "marketing")) if outbound else None,
            "whatsapp_message_type": "regular",
            "recipient_country": caller.country if outbound else L.country,
        }

    prefix = "group_message" if spec.group else "message"
    steps: list[MessageStep] = []
    state: dict[str, Any] = {"created": float(at), "updated": float(at), "sent": None, "status": None}

    def emit(t: float, event: str) -> None:
        # Per event, in a fixed order: timestamp format, envelope unit, number form.
        ms, env_ms, r_number, r_short = rng.random() < 0.5, rng.random() < 1 / 3, rng.random(), rng.random()
        if r_number < 2 / 3:
            number = number_full
        elif r_short < 0.5:
            number = {"id": L.id, "digits": L.digits}
        else:
            number = {"id": L.id, "direct_link": number_full["direct_link"]}
        data: dict[str, Any] = {
            "id": mid,
            "direct_link": f"{base}/v1/numbers/{L.id}/messages/{mid}",
            "direction": spec.direction,
            "external_number": caller.raw,
            "body": body,
            "status": state["status"],
            "raw_digits": _digits(caller.raw),
            "media_details": media_details,
            "media_url": media_url,
            "created_at": _stamp(state["created"], ms),
            "updated_at": _stamp(state["updated"], ms),
            "sent_at": None if state["sent"] is None else _stamp(state["sent"], ms),
            "channel": spec.channel,
            **whatsapp,
            "number": number,
        }
        if contact is not None:
            data["contact"] = contact
        if names_user:
            data["user"] = nested["users"][agent_i]
        if spec.group:
            data["group_conversation_id"] = "GC" + _hex("group", world.seed, L.id, *sorted(participants))
            data["participants"] = list(participants)
        steps.append(MessageStep(t, event, data, env_ms))

    t = float(at)
    if not outbound:
        state.update(status="received", sent=t)
        emit(t, f"{prefix}.received")
    else:
        t_sent = t + rng.uniform(0.3, 3.0)
        t_final = t_sent + rng.uniform(1.0, 20.0)
        t_read = t_final + rng.uniform(10.0, 600.0)
        read = spec.channel == "whatsapp" and rng.random() < 0.5
        final = spec.fail if isinstance(spec.fail, str) else rng.choice(FAIL_STATUSES) if spec.fail else "delivered"
        state.update(status="sent", sent=t_sent, updated=t_sent)
        emit(t_sent, f"{prefix}.sent")
        state.update(status=final, updated=t_final)
        emit(t_final, f"{prefix}.status_updated")
        if read and final == "delivered":
            state.update(status="read", updated=t_read)
            emit(t_read, f"{prefix}.status_updated")
    return MessagePlan(
        id=mid, steps=tuple(steps), external_number=caller.raw, raw_digits=_digits(caller.raw),
        caller=caller.caller, in_pool=caller.in_pool, number_id=L.id, status=state["status"],
    )


def background_message_specs(seed: int) -> Iterator[MessageSpec]:
    """The endless, seeded sequence of messages the background mode sends.

    First one of each case the tool distinguishes, then a random mix.
    """
    yield from (
        MessageSpec("inbound"),
        MessageSpec("outbound", names_user=True),
        MessageSpec("outbound", names_user=False),
        MessageSpec("inbound", media=("photo.jpg",)),
        MessageSpec("outbound", channel="whatsapp"),
        MessageSpec("inbound", channel="whatsapp"),
        MessageSpec("outbound", fail=True),
        MessageSpec("inbound", external_number="unknown"),
        MessageSpec("inbound", group=True),
        MessageSpec("outbound", group=True),
    )
    rng = random.Random(f"live-message-background:{seed}")
    while True:
        direction = "inbound" if rng.random() < 0.55 else "outbound"
        channel = "whatsapp" if rng.random() < 0.2 else None
        number = "unknown" if rng.random() < 0.15 else "pool"
        media = ("photo.jpg",) if rng.random() < 0.08 else ()
        fail = direction == "outbound" and rng.random() < 0.05
        group = channel is None and rng.random() < 0.04
        yield MessageSpec(direction, channel=channel, external_number=number, media=media, fail=fail, group=group)
