"""Aircall AI insights: the five responses and events read tolerantly, and the text of each (RULES §8).

Facts relied on (``../shared/reference/aircall-live.md`` §3):

- ``GET /v1/calls/:id/{summary,topics,sentiments,action_items,transcription}``
  answer envelopes named ``summary``, ``topic`` (singular), ``sentiment``
  (singular), ``transcription``; the action items' envelope and shape are
  UNCONFIRMED (``action_items``, a list of items with ``content``, is read,
  and so are the plural/singular twins of every envelope: R-AI-1);
- a summary's and topics' ``content`` is a string and a list of strings; a
  sentiment lists ``participants`` with ``value`` ``POSITIVE`` / ``NEUTRAL``
  / ``NEGATIVE`` and ``type`` ``external`` for the customer; a transcription's
  ``content.utterances`` have ``start_time``, ``text`` and
  ``participant_type`` ``internal`` (the agent, ``user_id``) or ``external``;
- the ``*.created`` events carry ``call_id`` as a string and the content maybe
  (``content``; ``participants`` for a sentiment): absent means "fetch it".

Everything here is pure. A response or an event that says nothing usable gives
``None`` (the insight does not exist, or must be fetched), never an error: a
best-effort insight must not stop a call from being logged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ENDPOINT_OF",
    "EVENT_KIND",
    "KINDS",
    "Insights",
    "description_part",
    "event_text",
    "response_text",
    "text_of",
]

#: The five insights, in the order of RULES §8 (and of R-AI-4's ``ai_*`` keys).
KINDS: tuple[str, ...] = ("summary", "topics", "sentiment", "action_items", "transcription")
#: The endpoint of each (``GET /v1/calls/:id/{endpoint}``, reference §3.1).
ENDPOINT_OF: dict[str, str] = {"summary": "summary", "topics": "topics", "sentiment": "sentiments",
                               "action_items": "action_items", "transcription": "transcription"}
#: The event that says an insight exists (reference §3.5); ``action_item.created`` is one item.
EVENT_KIND: dict[str, str] = {"summary.created": "summary", "topics.created": "topics",
                              "sentiment.created": "sentiment", "action_item.created": "action_items",
                              "transcription.created": "transcription"}
#: Envelope keys read for each insight, the documented one first (R-AI-1).
_ENVELOPES: dict[str, tuple[str, ...]] = {
    "summary": ("summary", "summaries"),
    "topics": ("topic", "topics"),
    "sentiment": ("sentiment", "sentiments"),
    "action_items": ("action_items", "action_item"),
    "transcription": ("transcription", "transcriptions"),
}
_SENTIMENT_WORDS = {"positive": "Positive", "neutral": "Neutral", "negative": "Negative"}
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Insights:
    """The text (R-AI-3) of each insight known for a call; ``None`` = not known (or none)."""

    summary: str | None = None
    topics: str | None = None
    sentiment: str | None = None
    action_items: str | None = None
    transcription: str | None = None

    @classmethod
    def of(cls, texts: Mapping[str, str | None]) -> Insights:
        return cls(**{k: texts.get(k) for k in KINDS})

    def get(self, kind: str) -> str | None:
        return getattr(self, kind)

    def known(self) -> dict[str, str]:
        """Kind -> text, for the insights known, in RULES order."""
        return {k: v for k in KINDS if (v := getattr(self, k))}

    def __bool__(self) -> bool:
        return any(getattr(self, k) for k in KINDS)


# ---------------------------------------------------------------- R-AI-3: the text of each insight


def _one_line(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def _str(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    return None


def _first_text(item: Any, keys: Iterable[str]) -> str | None:
    """A string item, or the first non-empty string under ``keys`` of a mapping item."""
    if isinstance(item, str):
        return item.strip() or None
    if isinstance(item, Mapping):
        for key in keys:
            text = _str(item.get(key))
            if text:
                return text
    return None


def _items(value: Any, keys: Iterable[str]) -> list[Any]:
    """A list, or the list under the first of ``keys`` of a mapping, or a single item as a list."""
    if isinstance(value, list):
        return value
    if isinstance(value, Mapping):
        for key in keys:
            inner = value.get(key)
            if isinstance(inner, list):
                return inner
        return [value]
    if value is None:
        return []
    return [value]


def summary_text(obj: Any) -> str | None:
    """R-AI-3: the summary is its content."""
    if isinstance(obj, list):  # several summaries: the first that says something
        return next((t for t in (summary_text(o) for o in obj) if t), None)
    if isinstance(obj, Mapping):
        content = obj.get("content")
        if isinstance(content, Mapping):
            return _first_text(content, ("text", "summary", "content"))
        return _first_text(obj, ("content", "summary", "text"))
    return _str(obj)


def topics_text(obj: Any) -> str | None:
    """R-AI-3: topic names joined by ``", "`` (in Aircall's order, each once)."""
    if isinstance(obj, Mapping) and "content" not in obj and not any(k in obj for k in ("topics", "names")):
        obj = [obj]  # a single topic object
    names: list[str] = []
    for item in _items(obj, ("content", "topics", "names")):
        if isinstance(item, Mapping) and isinstance(item.get("content"), list):
            candidates = item["content"]  # a list of topic objects, each with a list
        else:
            candidates = [item]
        for candidate in candidates:
            name = _first_text(candidate, ("name", "label", "topic", "content", "text"))
            if name and _one_line(name) not in names:
                names.append(_one_line(name))
    return ", ".join(names) or None


def _sentiment_word(value: Any) -> str | None:
    text = _str(value)
    if text is None:
        return None
    return _SENTIMENT_WORDS.get(text.lower(), text[:1].upper() + text[1:].lower())


def sentiment_text(obj: Any) -> str | None:
    """R-AI-3: the external participant's value in words (``Positive``, ``Neutral``, ``Negative``).

    The first participant of type ``external``; failing a type, the first with a phone number rather than a
    user; failing both, the only value there is.
    """
    participants: list[Mapping[str, Any]] = []
    for item in _items(obj, ("participants",)):
        if isinstance(item, Mapping) and isinstance(item.get("participants"), list):
            participants.extend(p for p in item["participants"] if isinstance(p, Mapping))
        elif isinstance(item, Mapping):
            participants.append(item)
    external = [p for p in participants if str(p.get("type") or p.get("participant_type") or "").lower() == "external"]
    if not external:
        typed = [p for p in participants if p.get("type") or p.get("participant_type")]
        external = [p for p in participants if p.get("phone_number") and not p.get("user_id")] or (
            participants if not typed else [])
    for participant in external:
        word = _sentiment_word(participant.get("value", participant.get("sentiment")))
        if word:
            return word
    return None


def action_items_text(obj: Any) -> str | None:
    """R-AI-3: one ``- {text}`` line per action item, in Aircall's order."""
    lines = []
    for item in _items(obj, ("action_items", "items", "content")):
        text = _first_text(item, ("content", "text", "title", "description", "name"))
        if text:
            lines.append(f"- {_one_line(text)}")
    return "\n".join(lines) or None


def _utterances(obj: Any) -> list[Any]:
    if isinstance(obj, Mapping):
        content = obj.get("content", obj)
        if isinstance(content, Mapping):
            content = content.get("utterances")
        elif "utterances" in obj:
            content = obj["utterances"]
        return content if isinstance(content, list) else []
    return obj if isinstance(obj, list) else []


def _speaker(utterance: Mapping[str, Any]) -> str:
    kind = str(utterance.get("participant_type") or utterance.get("type") or "").lower()
    if kind in ("internal", "agent", "user"):
        return "Agent"
    if kind in ("external", "customer", "contact"):
        return "Customer"
    return "Agent" if utterance.get("user_id") is not None else "Customer"


def transcription_text(obj: Any) -> str | None:
    """R-AI-3: one ``{Agent|Customer}: {text}`` line per utterance, oldest first."""
    found: list[tuple[float, int, str]] = []
    for index, utterance in enumerate(_utterances(obj)):
        if not isinstance(utterance, Mapping):
            continue
        text = _str(utterance.get("text"))
        if not text:
            continue
        start = utterance.get("start_time")
        at = float(start) if isinstance(start, (int, float)) and not isinstance(start, bool) else None
        found.append((at, index, f"{_speaker(utterance)}: {_one_line(text)}"))
    if all(at is not None for at, _, _ in found):
        found.sort(key=lambda u: (u[0], u[1]))  # sorted() is stable: equal times keep Aircall's order
    return "\n".join(line for _, _, line in found) or None


_TEXT_OF = {"summary": summary_text, "topics": topics_text, "sentiment": sentiment_text,
            "action_items": action_items_text, "transcription": transcription_text}


def text_of(kind: str, obj: Any) -> str | None:
    """R-AI-3: the text of an insight object (the envelope's value), or ``None`` when it says nothing."""
    return _TEXT_OF[kind](obj)


# ---------------------------------------------------------------- R-AI-1: the responses and the events


def response_text(kind: str, body: Any) -> str | None:
    """The text of ``GET /v1/calls/:id/{endpoint}``'s body (its envelope read tolerantly, R-AI-1)."""
    if not isinstance(body, Mapping):
        return text_of(kind, body) if isinstance(body, list) else None
    for key in _ENVELOPES[kind]:
        if key in body:
            return text_of(kind, body[key])
    # No known envelope: the object itself, if it looks like one (it has the content).
    if any(k in body for k in ("content", "participants", "utterances")):
        return text_of(kind, body)
    return None


def event_text(kind: str, data: Any) -> str | None:
    """The text an insight's ``*.created`` event carries, or ``None`` when it carries none (then fetched).

    An ``action_item.created`` event is one action item: its text is that item's ``- …`` line.
    """
    if not isinstance(data, Mapping):
        return None
    if kind == "sentiment":
        return sentiment_text(data) if isinstance(data.get("participants"), list) else None
    if "content" not in data or data.get("content") in (None, "", [], {}):
        return None
    if kind == "action_items":
        return action_items_text([data])
    return text_of(kind, data)


# ---------------------------------------------------------------- R-AI-4: the Task Description's part


def description_part(insights: Insights | None) -> str | None:
    """R-AI-4, mode task: ``AI insights:`` then ``Summary: …``, ``Topics: …``, ``Sentiment: …``, ``Action
    items:`` and its ``- …`` lines, each present insight on its own line; never the transcription."""
    if not insights:
        return None
    lines = []
    if insights.summary:
        lines.append(f"Summary: {insights.summary}")
    if insights.topics:
        lines.append(f"Topics: {insights.topics}")
    if insights.sentiment:
        lines.append(f"Sentiment: {insights.sentiment}")
    if insights.action_items:
        lines.append("Action items:\n" + insights.action_items)
    return "AI insights:\n" + "\n".join(lines) if lines else None
