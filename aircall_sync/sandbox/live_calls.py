"""One live call's lifecycle: its REST record over time and the webhook events it sends.

:func:`plan_call` turns a :class:`CallSpec` into the call's first REST record
(as ``GET /v1/calls/:id`` shows it when it starts) and a list of timed
:class:`Step`: each changes some fields of that record and, most of the time,
sends one webhook event carrying the call *as of that moment*.
:mod:`.live_traffic` runs the steps on the emulated clock. The call is built
from the generator's building blocks (its company's lines, agents, teams,
tags, caller pool and media links), so a placed call looks like a generated
one and its caller matches the CRM records seeded from
``CallStore.external_numbers()``.

Lifecycle, from ``shared/reference/aircall-live.md`` §1.2 and the recorded
deliveries ``aircall/recorded/webhook-events-37.json`` (cited as "rec."):

- ``call.created`` (status ``initial``; outbound calls name their agent,
  inbound calls have no ``user`` yet: rec. #19/#20);
- inbound: ``call.ringing_on_agent`` with the rung agent as ``user``
  (rec. #21), even when nobody then answers;
- answered calls: ``call.answered`` (status ``answered``, ``answered_at``);
  optionally ``call.transferred`` (``transferred_by`` / ``transferred_to``
  appear only from then on, rec. #28); conference participants join;
- ``call.hungup`` at once (status ``done``, ``ended_at``, ``duration``;
  unanswered inbound calls lose ``user`` and get ``missed_call_reason``,
  rec. #30);
- ``call.ended`` about 30 s later, "once all data (duration…) is ready"
  (§1.2; rec. #29→#32: 31 s); a voicemail is already on it (rec. #33);
- voicemails: ``call.voicemail_left`` 3 s after ``call.ended`` (rec. #35);
- ``call.comm_assets_generated`` only when a recording or a voicemail exists,
  after ``call.ended`` (§1.2): the recording link is not on ``call.ended``;
- ``call.tagged`` / ``call.commented`` when the agent leaves the after-call
  view: 2 to 90 s after the hang-up, so before or after ``call.ended``
  (§1.2; rec. #31 +2 s, #34 +87 s); one event per tag or note;
- optionally ``call.assigned`` and ``call.archived``;
- no event: about 20 minutes after the end, Aircall rewrites the call
  (``cost``, ``pricing_type``, ``duration``, sometimes ``started_at`` + 1 s;
  wire-formats.md Aircall §1), visible through the REST API only.

The webhook form of a call (:func:`webhook_call`, §1.3 and rec.):
``call_uuid`` instead of ``sid``, ``participants`` instead of
``conference_participants``, ``number.e164_digits``, ``hangup_cause``; keys
absent (not null) where the recordings show them absent: ``user`` on an
unanswered inbound call, ``transferred_*`` before a transfer, ``assigned_to``
before an assignment, ``contact``; and none of the REST-only keys
(``*_short_url``, ``country_code_a2``, ``pricing_type``). Decisions are
listed in :data:`AMBIGUITIES`.
"""

from __future__ import annotations

import bisect
import random
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import phonenumbers

from aircall_sync.sandbox.generator import (
    EXT_ANONYMOUS,
    KINDS,
    MISSED_CALL_REASONS,
    World,
    _digits,
    _hex,
    _talk,
)

__all__ = [
    "AMBIGUITIES",
    "CALLER_CLASSES",
    "ENDED_DELAY_S",
    "FINALIZE_DELAY_S",
    "KINDS",
    "CallSpec",
    "Plan",
    "Step",
    "background_specs",
    "plan_call",
    "resolve_caller",
    "webhook_call",
]

ENDED_DELAY_S = 30          # §1.2: call.ended ~30 s after the hang-up
VOICEMAIL_LEFT_DELAY_S = 3  # rec. #33 → #35
FINALIZE_DELAY_S = 20 * 60  # wire-formats.md Aircall §1: rewritten ~20 min after the call

#: What ``CallSpec.external_number`` may name instead of a number.
CALLER_CLASSES = ("pool", "unknown", "anonymous")

_INBOUND = frozenset({"inbound_answered", "missed", "voicemail"})
_ANSWERED = frozenset({"outbound_answered", "inbound_answered"})
# Reasons for which agents were rung (§7 meanings, UNCONFIRMED): they send call.ringing_on_agent.
_RANG = frozenset({"agents_did_not_answer", "abandoned_in_classic"})
_VOICEMAIL_REASONS = ("agents_did_not_answer", "no_available_agent", "out_of_opening_hours")
_MISSED_SPAN = {
    "short_abandoned": (1, 4), "abandoned_in_ivr": (8, 60), "abandoned_in_classic": (10, 120),
    "no_available_agent": (1, 8), "agents_did_not_answer": (20, 60), "out_of_opening_hours": (2, 15),
}

AMBIGUITIES: tuple[str, ...] = (
    "Webhook call payloads carry the recorded 2022 keys plus call_uuid (§1.3, hookdeck sample); "
    "participants only on calls that have conference_participants in REST; contact is left out "
    "(absent from the 2022 recordings; the hookdeck sample's {} is a placeholder), as are the REST-only "
    "sid, *_short_url, country_code_a2 and pricing_type. hangup_cause is always null (values UNCONFIRMED).",
    "Nested user and number objects are the REST ones (the generator's), plus number.e164_digits: a "
    "superset of the 2022 recording's keys.",
    "Each step's data is the REST record at that moment, so duration on call.hungup/call.ended is the "
    "not-yet-finalized one (ended_at - started_at + 1, as the generator and the live REST sample show); the "
    "~20 min rewrite sets it to ended_at - started_at and moves started_at by +1 s on about one call in three.",
    "The recording link appears with call.comm_assets_generated, 1 to 60 s after call.ended, never on "
    "call.ended itself; a voicemail is already on call.ended (rec. #33), then call.voicemail_left (+3 s) "
    "and call.comm_assets_generated (+1 to 10 s).",
    "Tags added by the agent carry tagged_by (the agent) and tagged_at as in the recorded call.tagged, "
    "on top of the generator's tag keys; notes carry posted_by (the agent, as app notes do).",
    "After a transfer `user` stays the agent who transferred (as in the generator); transferred_to is the "
    "other agent, or a team's first user for a team transfer (aircall-api.md §5).",
    "Inbound calls ring an agent (call.ringing_on_agent) when answered, and when missed with "
    "agents_did_not_answer or abandoned_in_classic (voicemails included); the other missed reasons never "
    "reach an agent. The rung agent is `user` during the ringing only (rec. #21 vs #30).",
    "call.created fires at started_at; outbound calls have no ringing_on_agent (rec. #19 → #22).",
    "Notes and tags added through the REST API (POST /v1/calls/:id/comments|tags) show in later events' data "
    "but send no call.commented / call.tagged of their own: the reference does not say whether changes "
    "made through the API fire events, and the emulator does not invent one.",
    "A number given explicitly is formatted as Aircall displays raw_digits (international format with "
    "spaces); 'unknown' numbers are valid numbers drawn past the generator's pool, so no CRM seeded from "
    "CallStore.external_numbers() has them.",
)


@dataclass(frozen=True, slots=True)
class CallSpec:
    """What to place. ``kind`` is one of :data:`KINDS` (RULES.md R-CALL-2 names).

    ``external_number``: ``"pool"`` (a caller of the generator's pool, as in
    the CRM seeded from it), ``"unknown"`` (a valid number outside the pool,
    in no CRM), ``"anonymous"`` (inbound only) or a phone number.
    ``line`` / ``agent`` index the generator's lines and agents (None: drawn).
    ``tags`` are company tag names or ids; ``comments`` are notes by the agent.
    ``transfer`` is ``"user"`` or ``"team"`` (answered calls); ``conference``
    adds participants (answered calls). ``recording`` None follows the line's
    live-recording setting. ``talk_s`` / ``wrap_up_s`` override the drawn
    talk time and after-call-work time (emulated seconds).
    """

    kind: str = "inbound_answered"
    external_number: str = "pool"
    line: int | None = None
    agent: int | None = None
    missed_call_reason: str | None = None
    transfer: str | None = None
    conference: bool = False
    tags: tuple[int | str, ...] = ()
    comments: tuple[str, ...] = ()
    assign: bool = False
    archive: bool = False
    recording: bool | None = None
    talk_s: int | None = None
    wrap_up_s: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        answered = self.kind in _ANSWERED
        if self.external_number == "anonymous" and self.kind not in _INBOUND:
            raise ValueError("only inbound calls come from an anonymous number")
        if self.transfer not in (None, "user", "team"):
            raise ValueError("transfer must be None, 'user' or 'team'")
        if (self.transfer or self.conference) and not answered:
            raise ValueError("transfers and conferences need an answered call")
        if self.transfer == "team" and self.kind != "inbound_answered":
            raise ValueError("team transfers are for inbound calls")
        if self.missed_call_reason is not None:
            if self.kind not in ("missed", "voicemail"):
                raise ValueError("missed_call_reason is for missed and voicemail calls")
            allowed = _VOICEMAIL_REASONS if self.kind == "voicemail" else MISSED_CALL_REASONS
            if self.missed_call_reason not in allowed:
                raise ValueError(f"missed_call_reason must be one of {', '.join(allowed)}")
        if self.talk_s is not None and self.talk_s < 5:
            raise ValueError("talk_s is at least 5 seconds")
        if isinstance(self.tags, str) or isinstance(self.comments, str):
            raise ValueError("tags and comments are sequences")


@dataclass(frozen=True, slots=True)
class Step:
    """At emulated time ``at``: apply ``fields`` to the call, then send ``event`` (if any).

    ``finalize`` marks the late REST-only rewrite.
    """

    at: int
    event: str | None
    fields: Mapping[str, Any] = field(default_factory=dict)
    finalize: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    """A call's first REST record, its steps (time order), and what the test may want to know."""

    call: dict[str, Any]
    steps: tuple[Step, ...]
    caller: str            # "pool" | "unknown" | "anonymous" | "explicit"
    in_pool: bool          # the number is one of CallStore.external_numbers()

    @property
    def events(self) -> list[tuple[int, str]]:
        return [(s.at, s.event) for s in self.steps if s.event is not None]


@dataclass(frozen=True, slots=True)
class Caller:
    raw: str
    country: str | None
    code: int | None       # the pool code (for the contact), None otherwise
    caller: str
    in_pool: bool


def _e164(digits: str) -> str:
    return "+" + _digits(digits)


def webhook_call(rest: Mapping[str, Any]) -> dict[str, Any]:
    """The webhook form of a REST call (see the module doc and AMBIGUITIES)."""
    src = dict(rest)
    src["call_uuid"] = rest.get("sid")
    src["participants"] = rest.get("conference_participants")
    src.setdefault("hangup_cause", None)
    number = rest.get("number")
    if number:
        src["number"] = {**number, "e164_digits": _e164(number.get("digits") or "")}
    out: dict[str, Any] = {}
    for key in _WEBHOOK_KEYS:
        value = src.get(key)
        if key in _ABSENT_WHEN_NULL and value is None:
            continue
        out[key] = value
    return out


# Recorded order (rec. #19), with call_uuid and participants where the hookdeck sample has them.
_WEBHOOK_KEYS = (
    "id", "direct_link", "direction", "call_uuid", "status", "missed_call_reason", "started_at",
    "answered_at", "ended_at", "duration", "cost", "hangup_cause", "voicemail", "recording", "asset",
    "raw_digits", "participants", "user", "number", "archived", "teams", "comments", "tags",
    "assigned_to", "transferred_to", "transferred_by",
)
_ABSENT_WHEN_NULL = frozenset({"participants", "user", "assigned_to", "transferred_to", "transferred_by"})


def resolve_caller(world: World, spec_number: str, n: int, pool: set[str]) -> Caller:
    """The external party of the ``n``-th placed call (``pool`` = the pool's E.164 numbers)."""
    rng = random.Random(f"live-caller:{world.seed}:{n}")
    if spec_number == "anonymous":
        return Caller("anonymous", None, EXT_ANONYMOUS, "anonymous", False)
    if spec_number == "pool":
        # The generator's repeat-caller weights: a few numbers call often.
        code = world.pick_caller(rng)
        ext = world.ext(code)
        return Caller(ext.raw, ext.country, code, "pool", "+" + ext.digits in pool)
    if spec_number == "unknown":
        # Codes past the pool are valid numbers no CRM was seeded with.
        code = world.pool_size + 1000 + n
        while True:
            ext = world.ext(code)
            if "+" + ext.digits not in pool:
                return Caller(ext.raw, ext.country, None, "unknown", False)
            code += 7919
    try:
        parsed = phonenumbers.parse(spec_number, None)
        raw = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
        country = phonenumbers.region_code_for_number(parsed)
    except phonenumbers.NumberParseException:
        raw, country = spec_number, None
    return Caller(raw, country, None, "explicit", _e164(raw) in pool)


def plan_call(world: World, spec: CallSpec, *, call_id: int, started_at: int, base: str,
              caller: Caller, rng: random.Random) -> Plan:
    """Everything that will happen to one placed call (deterministic for a given ``rng``)."""
    nested = world.nested(base)
    kind = spec.kind
    inbound = kind in _INBOUND
    answered = kind in _ANSWERED
    t0 = started_at

    line_i = spec.line if spec.line is not None else _weighted_line(world, rng)
    if not 0 <= line_i < len(world.lines):
        raise ValueError(f"line must be within 0..{len(world.lines) - 1}")
    L = world.lines[line_i]
    if spec.agent is not None:
        if not 0 <= spec.agent < len(world.agents):
            raise ValueError(f"agent must be within 0..{len(world.agents) - 1}")
        agent_i = spec.agent
    else:
        eligible = [u for u in L.users if world.agents[u].created_ts <= t0] or [L.users[0]]
        agent_i = rng.choice(eligible)
    agent = nested["users"][agent_i]
    author = nested["users_short"][agent_i]

    reason = None
    if kind == "missed":
        reason = spec.missed_call_reason or rng.choice(MISSED_CALL_REASONS)
    elif kind == "voicemail":
        reason = spec.missed_call_reason or rng.choice(_VOICEMAIL_REASONS)

    sid = "CA" + _hex("sid", call_id)
    contact = world.contact(caller.code, base) if caller.code is not None and caller.code >= 0 else None
    call: dict[str, Any] = {
        "id": call_id,
        "sid": sid,
        "direct_link": f"{base}/v1/calls/{call_id}",
        "direction": "inbound" if inbound else "outbound",
        "status": "initial",
        "missed_call_reason": None,
        "started_at": t0,
        "answered_at": None,
        "ended_at": None,
        "duration": 0,
        "archived": False,
        "cost": "0.0",
        "voicemail": None,
        "recording": None,
        "asset": None,
        "raw_digits": caller.raw,
        "user": None if inbound else agent,
        "contact": contact,
        "assigned_to": None,
        "transferred_by": None,
        "transferred_to": None,
        "comments": [],
        "number": nested["numbers"][line_i],
        # aircall-api.md §5: teams on inbound calls only.
        "teams": [nested["teams"][L.team]] if inbound else [],
        "tags": [],
        "recording_short_url": None,
        "voicemail_short_url": None,
        "country_code_a2": caller.country,
        "pricing_type": None,
    }

    steps: list[Step] = [Step(t0, "call.created")]
    t_ans: int | None = None
    if inbound:
        ring_at = t0 + rng.randint(1, 4) + (rng.randint(5, 20) if L.is_ivr else 0)
        if answered or reason in _RANG:
            steps.append(Step(ring_at, "call.ringing_on_agent", {"user": agent}))
        if answered:
            t_ans = ring_at + rng.randint(2, 20)
        elif kind == "voicemail":
            t_end = ring_at + rng.randint(15, 40) + rng.randint(8, 90)
        else:
            lo, hi = _MISSED_SPAN[reason or "agents_did_not_answer"]
            t_end = max(t0 + rng.randint(lo, hi), ring_at + 5 if reason in _RANG else t0 + 1)
    elif answered:
        t_ans = t0 + rng.randint(3, 25)
    else:
        t_end = t0 + rng.randint(8, 45)

    if t_ans is not None:
        steps.append(Step(t_ans, "call.answered", {"status": "answered", "answered_at": t_ans, "user": agent}))
        talk = spec.talk_s if spec.talk_s is not None else _talk(rng)
        t_end = t_ans + talk
        if spec.conference:
            steps.append(Step(t_ans + max(1, talk // 3), None,
                              {"conference_participants": _participants(world, rng, agent_i, caller.raw, base)}))
        if spec.transfer:
            other = _transfer_target(world, rng, L, agent_i, t0, team=spec.transfer == "team")
            steps.append(Step(t_ans + max(2, talk // 2), "call.transferred",
                              {"transferred_by": agent, "transferred_to": nested["users"][other]}))

    hangup: dict[str, Any] = {"status": "done", "ended_at": t_end, "duration": t_end - t0 + 1}
    if not answered and inbound:
        hangup.update(user=None, missed_call_reason=reason)
    steps.append(Step(t_end, "call.hungup", hangup))

    t_ended = t_end + ENDED_DELAY_S
    ended: dict[str, Any] = {}
    if kind == "voicemail":
        ended = {
            "voicemail": f"{base}/voicemails/{sid}.mp3",
            "asset": f"{base}/assets/calls/{call_id}/voicemail",
            "voicemail_short_url": f"{base}/short-urls/v1/{uuid.UUID(_hex('vm', call_id))}",
        }
    steps.append(Step(t_ended, "call.ended", ended))
    if kind == "voicemail":
        t_vm = t_ended + VOICEMAIL_LEFT_DELAY_S
        steps.append(Step(t_vm, "call.voicemail_left"))
        steps.append(Step(t_vm + rng.randint(1, 10), "call.comm_assets_generated"))
    record = spec.recording if spec.recording is not None else (L.live_recording and rng.random() >= 0.03)
    if answered and record:
        steps.append(Step(t_ended + rng.randint(1, 60), "call.comm_assets_generated", {
            "recording": f"{base}/recordings/{sid}.mp3",
            "asset": f"{base}/assets/calls/{call_id}/recording",
            "recording_short_url": f"{base}/short-urls/v1/{uuid.UUID(_hex('rec', call_id))}",
        }))

    # After-call work: tags and notes land when the agent leaves the view (§1.2).
    t = t_end + (spec.wrap_up_s if spec.wrap_up_s is not None else rng.randint(2, 90))
    tags: list[dict[str, Any]] = []
    for tag in spec.tags:
        k = _tag_index(world, tag)
        if any(x["id"] == world.tags[k].id for x in tags):
            continue
        tags = [*tags, nested["tags"][k] | {"tagged_by": author, "tagged_at": t}]
        steps.append(Step(t, "call.tagged", {"tags": tags}))
        t += rng.randint(1, 15)
    comments: list[dict[str, Any]] = []
    for j, content in enumerate(spec.comments):
        comments = [*comments, {"id": call_id * 10 + j, "content": content, "posted_at": t, "posted_by": author}]
        steps.append(Step(t, "call.commented", {"comments": comments}))
        t += rng.randint(1, 15)
    if spec.assign:
        steps.append(Step(t_ended + rng.randint(10, 120), "call.assigned",
                          {"assigned_to": nested["users"][rng.choice(L.users)]}))

    # The late rewrite (REST only).
    shift = 1 if rng.random() < 1 / 3 else 0
    final: dict[str, Any] = {
        "duration": t_end - (t0 + shift),
        "pricing_type": "in_bundle",
        "cost": f"{rng.randint(1, 30)}.0" if kind == "outbound_answered" else "0.0",
    }
    if shift:
        final["started_at"] = t0 + shift
    steps.append(Step(t_end + FINALIZE_DELAY_S, None, final, finalize=True))
    if spec.archive:
        last = max(s.at for s in steps if not s.finalize)
        steps.append(Step(last + rng.randint(60, 600), "call.archived", {"archived": True}))

    ordered = tuple(sorted(steps, key=lambda s: s.at))  # stable: same-time steps keep their logical order
    return Plan(call=call, steps=ordered, caller=caller.caller, in_pool=caller.in_pool)


def _weighted_line(world: World, rng: random.Random) -> int:
    return bisect.bisect_right(world.line_cum, rng.random() * world.line_cum[-1])


def _tag_index(world: World, tag: int | str) -> int:
    if isinstance(tag, int) or (isinstance(tag, str) and tag.isdigit()):
        k = world.tag_index.get(int(tag))
    else:
        k = world.tag_by_name.get(str(tag).strip().casefold())
    if k is None:
        raise ValueError(f"unknown tag {tag!r}: use one of {', '.join(t.name for t in world.tags)}")
    return k


def _transfer_target(world: World, rng: random.Random, line: Any, agent_i: int, t0: int, *, team: bool) -> int:
    if team:
        # aircall-api.md §5: to a team, transferred_to is the team's first user.
        teams = [t for k, t in enumerate(world.teams) if k != line.team]
        chosen = rng.choice(teams)
        return chosen.users[0] if chosen.users[0] != agent_i else chosen.users[-1]
    others = [u for u in range(len(world.agents)) if u != agent_i and world.agents[u].created_ts <= t0]
    return rng.choice(others or [u for u in range(len(world.agents)) if u != agent_i])


def _participants(world: World, rng: random.Random, agent_i: int, raw: str, base: str) -> list[dict[str, Any]]:
    """More than two parties (R-CALL-3), built as the generator builds its conferences."""
    a = world.agents[agent_i]
    parts: list[dict[str, Any]] = [
        {"type": "user", "id": a.id, "name": a.name},
        {"type": "external", "phone_number": raw},
    ]
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.4:
            mate = world.agents[rng.choice([u for u in range(len(world.agents)) if u != agent_i])]
            parts.append({"type": "user", "id": mate.id, "name": mate.name})
        else:
            other = world.pick_caller(rng)
            contact = world.contact(other, base)
            if contact is not None:
                parts.append({"type": "contact", "id": contact["id"],
                              "name": f"{contact['first_name']} {contact['last_name']}",
                              "phone_number": world.ext(other).raw})
            else:
                parts.append({"type": "external", "phone_number": world.ext(other).raw})
    return parts


def background_specs(seed: int, tags: Sequence[str]) -> Iterator[CallSpec]:
    """The endless, seeded sequence of calls the background mode places.

    First one call of each case the tool distinguishes, then a random mix
    weighted like the generator's (business-hours weights).
    """
    cover = (
        CallSpec("outbound_answered", tags=(tags[0],), comments=("Sent the pricing sheet by email.",)),
        CallSpec("inbound_answered"),
        CallSpec("outbound_unanswered"),
        CallSpec("missed", missed_call_reason="agents_did_not_answer", assign=True),
        CallSpec("voicemail", missed_call_reason="no_available_agent"),
        CallSpec("inbound_answered", transfer="user"),
        CallSpec("inbound_answered", transfer="team"),
        CallSpec("outbound_answered", conference=True),
        CallSpec("inbound_answered", external_number="anonymous"),
        CallSpec("missed", missed_call_reason="short_abandoned", external_number="anonymous"),
        CallSpec("inbound_answered", external_number="unknown"),
        CallSpec("outbound_answered", external_number="unknown"),
        CallSpec("missed", missed_call_reason="out_of_opening_hours"),
        CallSpec("voicemail", missed_call_reason="agents_did_not_answer"),
        CallSpec("inbound_answered", tags=tuple(tags[1:3]), comments=("Kunde wünscht Rückruf.",)),
    )
    yield from cover
    rng = random.Random(f"live-background:{seed}")
    weights = (0.30, 0.15, 0.33, 0.14, 0.08)
    while True:
        kind = rng.choices(KINDS, weights)[0]
        inbound = kind in _INBOUND
        answered = kind in _ANSWERED
        r = rng.random()
        number = ("anonymous" if inbound and r < 0.03 else "unknown" if r < 0.13 else "pool")
        transfer = None
        r = rng.random()
        if answered and r < 0.05:
            transfer = "user"
        elif kind == "inbound_answered" and r < 0.08:
            transfer = "team"
        conference = answered and transfer is None and rng.random() < 0.03
        chosen_tags = tuple(rng.sample(list(tags), rng.randint(1, 2))) if rng.random() < 0.25 else ()
        comments = ("Customer asked for a callback tomorrow morning.",) if rng.random() < 0.10 else ()
        assign = kind in ("missed", "voicemail") and rng.random() < 0.3
        yield CallSpec(kind, external_number=number, transfer=transfer, conference=conference,
                       tags=chosen_tags, comments=comments, assign=assign)
