"""Emulated Aircall AI (Conversation Intelligence): when insights exist, the five endpoints, the events.

Behaviour follows ``shared/reference/aircall-live.md`` §3 (cited as §3.N):

- ``GET /v1/calls/:id/transcription`` (``?mode=async`` accepted),
  ``/summary``, ``/topics``, ``/sentiments``, ``/action_items``, answered
  with the envelopes of §3.2: ``{"transcription": …}``, ``{"summary": …}``,
  ``{"topic": …}`` (singular), ``{"sentiment": …}``; action items, whose
  shape is UNCONFIRMED, as ``{"action_items": [...]}`` (see AMBIGUITIES).
- Which calls have insights: answered calls (``answered_at`` set, status
  ``done``) whose talk time (``ended_at - answered_at``) is at least
  :attr:`AiOptions.min_talk_s` (60 s by default: Attio's "a call of less
  than 60 seconds … gets no summary", §3.4). Others answer **404**, the
  practical "no such content for this call" of §3.4, as does an insight not
  produced yet.
- When: asynchronously after the call (§3.5, "seconds to minutes after the
  call depending on the call length"): the transcription first, then the
  summary, topics, sentiment and action items derived from it, each at its
  own time, all on the emulated clock and within 15 minutes of the hang-up.
  Generated (historical) calls follow the same rule, so a backfill finds
  the insights of every eligible call that ended long enough ago.
- A company without the AI package (``package=False``) gets **403**, the
  documented code for a company that may not use the API (§3.3, §3.4), on
  every one of the five endpoints, and no AI event.
- Events (§3.5): ``transcription.created``, ``summary.created``,
  ``topics.created``, ``sentiment.created`` and one ``action_item.created``
  per action item, each at the moment its insight becomes readable, with
  ``data`` ``{id, call_id (a string), call_uuid, created_at, …}`` and the
  ``content`` in some events and not in others (seeded), so a client must
  be ready to fetch it. :mod:`.live_traffic` publishes them for live calls.

The text itself comes from :mod:`.aircall_ai_content`. Decisions where the
reference is silent or conflicting are listed in :data:`AMBIGUITIES`.
"""

from __future__ import annotations

import hashlib
import random
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aircall_sync.sandbox.aircall_ai_content import CallInsights, build_insights
from aircall_sync.sandbox.aircall_common import error_body
from aircall_sync.sandbox.generator import CallStore
from aircall_sync.sandbox.server import Request, Response

__all__ = [
    "AMBIGUITIES",
    "EVENT_OF",
    "INSIGHTS",
    "AiInsights",
    "AiOptions",
]

#: The five insights, named as their endpoint's last path segment (§3.1).
INSIGHTS = ("transcription", "summary", "topics", "sentiments", "action_items")
#: The key of each endpoint's JSON envelope (§3.2: topics answer "topic", sentiments "sentiment").
ENVELOPE_OF = {"transcription": "transcription", "summary": "summary", "topics": "topic",
               "sentiments": "sentiment", "action_items": "action_items"}
#: The webhook event that says an insight exists (§1.2, §3.5).
EVENT_OF = {"transcription": "transcription.created", "summary": "summary.created", "topics": "topics.created",
            "sentiments": "sentiment.created", "action_items": "action_item.created"}

AMBIGUITIES: tuple[str, ...] = (
    "Eligibility: answered calls (answered_at set, status done) with at least min_talk_s of talk time "
    "(ended_at - answered_at; default 60 s, Attio's 'less than 60 seconds gets no summary'; configurable). "
    "Unanswered calls and voicemails get no insight (the reference's voicemail transcription type is not "
    "emulated), every line has transcription enabled, and every language is covered (the reference says "
    "'not available for all plans and languages' without a list).",
    "Missing content is a 404 (what third parties observe, §3.4) whatever the reason: unknown call, call "
    "too short or unanswered, insight not produced yet, no action items. The reference's open question "
    "'not ready vs no add-on' is answered: no add-on is a 403 (its documented code), not a 404.",
    "Without the AI package every one of the five endpoints answers 403 for any numeric call id, known or "
    "not (the company is refused before the call is looked up); a non-numeric id is the documented 400 "
    "'invalid call_id'. ?mode=realtime needs AI Assist Pro, which the emulated company lacks: 403; any "
    "other mode than async is a 400.",
    "Timing (undocumented beyond 'seconds to minutes depending on the call length'): the transcription is "
    "ready 20 s + 0.1 s per second of talk (capped at 10 min) after the hang-up, times a seeded factor "
    "in [0.8, 1.2]; the other four insights follow it by 5 to 90 s each. The *.created event of an insight "
    "fires exactly when the endpoint starts to serve it. All of it comes before the ~20 min REST rewrite.",
    "Action items (envelope and shape UNCONFIRMED): {\"action_items\": [{id, call_id, content (the text), "
    "created_at, created_by: null, updated_at, updated_by: null, ai_generated: true}]}, the fields Riprock's "
    "model adds to the common Conversation Intelligence object. About three eligible calls in four have "
    "1 to 3 items; the others have none, which is a 404 and no action_item.created event.",
    "Events: one action_item.created per item (the event name is singular; its data is that item); the other "
    "four fire once per call. Whether events carry `content` is UNCONFIRMED: each event carries it with "
    "probability p_event_content (seeded per call and insight, default 0.5), else the key is absent. For "
    "sentiment.created the content is `participants`; its `id` is the call id (§3.5 'id == call_id'), "
    "an int next to the string call_id. number_id is on transcription.created only, type 'call' too.",
    "REST bodies follow the §3.2 samples: call_id is an int there (events make it a string); the "
    "transcription has call_created_at (the call's started_at) and no created_at; summary and topic have "
    "created_at = when the insight was produced; the sentiment's id is the call id. Ids are stable, "
    "derived from the seed, the call and the insight.",
    "One external participant in the sentiment and the transcript: the call's external party, as "
    "'+digits' from raw_digits (the sample shows E.164), or 'anonymous'. Conference guests are not "
    "transcribed. The agent speaking is the call's user (the one who answered or placed it).",
    "Utterance times and call_created_at count from the call's start as it was when the call happened: "
    "Aircall's late rewrite of started_at (+1 s on some calls, wire-formats.md Aircall §1) does not move "
    "them, so an insight read before and after the rewrite is the same (live traffic pins each placed "
    "call's original start).",
)


@dataclass(frozen=True, slots=True)
class AiOptions:
    """How the emulated Aircall AI behaves. Durations are emulated seconds."""

    #: Talk time (ended_at - answered_at) a call needs for any insight (Attio: under 60 s, none).
    min_talk_s: int = 60
    #: Probability that an AI event carries its content (UNCONFIRMED whether they do).
    p_event_content: float = 0.5
    #: Share of eligible calls with action items.
    p_action_items: float = 0.75
    #: The transcription is ready this long after the hang-up, plus per_talk_s per second of talk...
    transcription_delay_s: float = 20.0
    transcription_per_talk_s: float = 0.1
    #: ...at most this long (then times a seeded factor in [0.8, 1.2]).
    transcription_max_delay_s: float = 600.0
    #: Each other insight follows the transcription by a seeded delay in this range.
    followup_delay_s: tuple[float, float] = (5.0, 90.0)

    def __post_init__(self) -> None:
        for name in ("p_event_content", "p_action_items"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if self.min_talk_s < 0 or self.followup_delay_s[0] > self.followup_delay_s[1]:
            raise ValueError("min_talk_s must be >= 0 and followup_delay_s a (low, high) range")


def _iso(ts: float) -> str:
    # §3.2 samples: "2024-08-27T10:54:16.000Z".
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _stable_id(*parts: object) -> int:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return 10_000_000 + int.from_bytes(digest, "big") % 890_000_000


def _external_phone(raw: str | None) -> str:
    digits = re.sub(r"\D", "", raw or "")
    return "+" + digits if digits and raw != "anonymous" else "anonymous"


class AiInsights:
    """The company's Aircall AI: which calls have which insight from when, their content, events and HTTP side.

    ``clock`` gives the emulated now (the sandbox's live clock), against
    which "produced yet?" is decided. ``package=False``: the company has no
    AI package (403, no events).
    """

    def __init__(self, *, seed: int = 1, clock: Callable[[], float], package: bool = True,
                 options: AiOptions | None = None) -> None:
        self.seed = seed
        self.clock = clock
        self.package = package
        self.options = options or AiOptions()
        self._starts: dict[int, int] = {}
        self._lock = threading.Lock()

    def pin_start(self, call_id: int, started_at: int) -> None:
        """Remember a live call's original start: insights keep it after Aircall rewrites ``started_at``."""
        with self._lock:
            self._starts[call_id] = int(started_at)

    def _started_at(self, call: Mapping[str, Any]) -> int:
        with self._lock:
            return self._starts.get(int(call["id"]), int(call["started_at"]))

    # -- when ---------------------------------------------------------------------

    def ready_times(self, call_id: int, answered_at: int | None, ended_at: int | None) -> dict[str, int]:
        """``{insight: emulated time it becomes readable}`` for a call; empty when it gets none."""
        o = self.options
        if not self.package or answered_at is None or ended_at is None or ended_at - answered_at < o.min_talk_s:
            return {}
        talk = ended_at - answered_at
        rng = random.Random(f"ai-timing:{self.seed}:{call_id}")
        delay = min(o.transcription_max_delay_s, o.transcription_delay_s + o.transcription_per_talk_s * talk)
        t_transcription = ended_at + round(delay * rng.uniform(0.8, 1.2))
        out = {"transcription": t_transcription}
        for kind in INSIGHTS[1:]:
            out[kind] = t_transcription + round(rng.uniform(*o.followup_delay_s))
        if self.action_item_count(call_id) == 0:
            del out["action_items"]
        return out

    def schedule(self, call: Mapping[str, Any]) -> dict[str, int]:
        """:meth:`ready_times` of a call as the REST API shows it (only finished calls have insights)."""
        if call.get("status") != "done":
            return {}
        return self.ready_times(int(call["id"]), call.get("answered_at"), call.get("ended_at"))

    def action_item_count(self, call_id: int) -> int:
        rng = random.Random(f"ai-actions:{self.seed}:{call_id}")
        return rng.randint(1, 3) if rng.random() < self.options.p_action_items else 0

    # -- what ---------------------------------------------------------------------------

    def insights(self, call: Mapping[str, Any]) -> CallInsights:
        user = call.get("user") or {}
        number = call.get("number") or {}
        return build_insights(
            self.seed, call_id=int(call["id"]), started_at=self._started_at(call),
            answered_at=int(call["answered_at"]), ended_at=int(call["ended_at"]), country=number.get("country"),
            agent_id=user.get("id"), agent_name=user.get("name"),
            external_phone=_external_phone(call.get("raw_digits")),
            action_items=self.action_item_count(int(call["id"])),
        )

    def rest_body(self, call: Mapping[str, Any], kind: str, *, now: float | None = None) -> dict[str, Any] | None:
        """What ``GET /v1/calls/:id/{kind}`` answers for a call, or ``None`` for a 404."""
        ready = self.schedule(call).get(kind)
        if ready is None or (self.clock() if now is None else now) < ready:
            return None
        cid = int(call["id"])
        ins = self.insights(call)
        key = ENVELOPE_OF[kind]
        if kind == "transcription":
            return {key: {"id": _stable_id(self.seed, cid, kind), "call_id": cid,
                          "call_created_at": _iso(self._started_at(call)), "type": "call",
                          "content": {"language": ins.language, "utterances": list(ins.utterances)}}}
        if kind == "sentiments":
            return {key: {"id": cid, "call_id": cid, "participants": self._participants(call, ins)}}
        if kind == "action_items":
            return {key: [self._action_item(cid, k, text, ready) for k, text in enumerate(ins.action_items)]}
        content: Any = ins.summary if kind == "summary" else list(ins.topics)
        return {key: {"id": _stable_id(self.seed, cid, kind), "call_id": cid, "created_at": _iso(ready),
                      "content": content}}

    def event_data(self, call: Mapping[str, Any], kind: str) -> list[dict[str, Any]]:
        """The ``data`` of the event(s) saying ``kind`` exists (one per action item), §3.5."""
        ready = self.schedule(call).get(kind)
        if ready is None:
            return []
        cid = int(call["id"])
        ins = self.insights(call)
        with_content = random.Random(f"ai-event-content:{self.seed}:{cid}:{kind}").random() \
            < self.options.p_event_content
        base = {"call_id": str(cid), "call_uuid": call.get("sid") or call.get("call_uuid"), "created_at": _iso(ready)}
        if kind == "action_items":
            out = []
            for k, text in enumerate(ins.action_items):
                item = {"id": _stable_id(self.seed, cid, kind, k), **base, "ai_generated": True}
                if with_content:
                    item["content"] = text
                out.append(item)
            return out
        data: dict[str, Any] = {"id": cid if kind == "sentiments" else _stable_id(self.seed, cid, kind), **base}
        if kind == "transcription":
            data["number_id"] = (call.get("number") or {}).get("id")
            data["type"] = "call"
        if with_content:
            if kind == "transcription":
                data["content"] = {"language": ins.language, "utterances": list(ins.utterances)}
            elif kind == "sentiments":
                data["participants"] = self._participants(call, ins)
            else:
                data["content"] = ins.summary if kind == "summary" else list(ins.topics)
        return [data]

    def _participants(self, call: Mapping[str, Any], ins: CallInsights) -> list[dict[str, Any]]:
        return [{"phone_number": _external_phone(call.get("raw_digits")), "value": ins.sentiment, "type": "external"}]

    def _action_item(self, cid: int, k: int, text: str, ready: int) -> dict[str, Any]:
        return {"id": _stable_id(self.seed, cid, "action_items", k), "call_id": cid, "content": text,
                "created_at": _iso(ready), "created_by": None, "updated_at": _iso(ready), "updated_by": None,
                "ai_generated": True}

    # -- the HTTP side --------------------------------------------------------------------

    def respond(self, request: Request, store: CallStore, raw_id: str, kind: str) -> Response:
        """``GET /v1/calls/{raw_id}/{kind}`` (the router checked the method and that ``kind`` is one of INSIGHTS)."""
        if not raw_id.isdigit():
            return _error(400, "Invalid call_id.")
        if not self.package:
            return _error(403, "The Aircall AI package is not enabled for this company.")
        if kind == "transcription":
            mode = (request.query.get("mode") or "async").strip().lower()
            if mode == "realtime":
                return _error(403, "Realtime transcription needs AI Assist Pro.")
            if mode != "async":
                return _error(400, "mode must be async or realtime.")
        with store.lock:
            pos = store.position(int(raw_id))
            call = None if pos is None else store.render_at(pos, base=request.base_url, fetch_contact=False,
                                                             fetch_short_urls=False)
        if call is None:
            return _error(404, "Call not found.")
        body = self.rest_body(call, kind)
        if body is None:
            return _error(404, f"No {kind.replace('_', ' ')} for this call.")
        return Response.json(body)


def _error(status: int, message: str) -> Response:
    return Response.json(error_body(status, message), status=status)
