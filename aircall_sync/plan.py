"""The plan: what would change in a CRM, as data (the pip-tools habit).

``diff(desired, current)`` is pure; a dry run renders the plan and a real run
applies the very same ``Change`` objects, so the preview cannot drift from
what is done.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    NOOP = "noop"
    SKIP = "skip"


@dataclass
class Change:
    """One record of one call in one target (DESIGN §3 lists the JSON keys)."""

    call_id: int
    target: str
    object: str
    action: Action
    fields: dict[str, Any] = field(default_factory=dict)
    diff: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    reason: str | None = None
    record_id: str | None = None
    #: Why this record, in words, for ``explain`` and the dry run (e.g. "matched Contact by MobilePhone").
    note: str | None = None
    warnings: list[str] = field(default_factory=list)
    #: A message's id (RULES §7); ``call_id`` then holds its state key (negative), which JSON never shows.
    message_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **_identity(self.call_id, self.message_id),
            "target": self.target,
            "object": self.object,
            "action": self.action.value,
            "fields": self.fields,
        }
        if self.action is Action.UPDATE:
            out["diff"] = {k: [old, new] for k, (old, new) in self.diff.items()}
        if self.reason is not None:
            out["reason"] = self.reason
        if self.record_id is not None:
            out["record_id"] = self.record_id
        if self.note:
            out["note"] = self.note
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


@dataclass
class Outcome:
    """One call in one target, as the report and the state see it (DESIGN §3)."""

    call_id: int
    target: str
    outcome: str  # created | updated | unchanged | skipped | failed
    records: dict[str, str] = field(default_factory=dict)
    reason: str | None = None
    error: dict[str, str] | None = None
    warnings: list[str] = field(default_factory=list)
    fingerprint: str | None = None
    #: A message's id (RULES §7); ``call_id`` then holds its state key (negative), which JSON never shows.
    message_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {**_identity(self.call_id, self.message_id), "target": self.target,
                               "outcome": self.outcome, "records": self.records}
        if self.reason:
            out["reason"] = self.reason
        if self.error:
            out["error"] = self.error
        if self.warnings:
            out["warnings"] = self.warnings
        return out


def _identity(call_id: int, message_id: str | None) -> dict[str, Any]:
    """DESIGN §3: ``call_id`` (an integer) for a call, ``message_id`` (a string) for a message."""
    if message_id is not None:
        return {"message_id": message_id}
    return {"call_id": call_id}


def item_label(call_id: int, message_id: str | None) -> str:
    """``call 123`` or ``message SM…``, for text output."""
    return f"message {message_id}" if message_id is not None else f"call {call_id}"


def same_value(current: Any, desired: Any) -> bool:
    """Equality as Salesforce stores values: "" is null, 5 is 5.0, dates are text."""
    if current in (None, "") and desired in (None, ""):
        return True
    if isinstance(current, bool) or isinstance(desired, bool):
        # A checkbox is true/false, never 1/0: True == 1 in Python must not hide a change.
        return isinstance(current, bool) and isinstance(desired, bool) and current is desired
    if isinstance(current, (int, float)) and isinstance(desired, (int, float)):
        return math.isclose(float(current), float(desired), rel_tol=0, abs_tol=1e-9)
    if isinstance(desired, (int, float)) and isinstance(current, str):
        # A number written to a text field comes back as text ("16").
        try:
            return math.isclose(float(current), float(desired), rel_tol=0, abs_tol=1e-9)
        except ValueError:
            return False
    if isinstance(current, str) and isinstance(desired, str):
        # Salesforce normalises line endings in long text fields.
        return current.replace("\r\n", "\n") == desired.replace("\r\n", "\n")
    return current == desired


def diff(
    desired: Mapping[str, Any],
    current: Mapping[str, Any] | None,
    *,
    create_only: Iterable[str] = (),
) -> tuple[Action, dict[str, Any], dict[str, tuple[Any, Any]]]:
    """Compare the record we want with the one in the CRM.

    Returns the action, the fields to send and, for an update, field → (old, new).
    ``current is None`` means no record exists yet. Fields in ``create_only``
    (e.g. Task ``TaskSubtype``) are sent on create and never compared after.
    """
    if current is None:
        return Action.CREATE, dict(desired), {}
    skip = set(create_only)
    changed = {
        name: (current.get(name), value)
        for name, value in desired.items()
        if name not in skip and not same_value(current.get(name), value)
    }
    if not changed:
        return Action.NOOP, {}, {}
    return Action.UPDATE, {name: new for name, (_, new) in changed.items()}, changed


def summarize(changes: Iterable[Change]) -> dict[str, Any]:
    """Counts per target, object and action (the ``summary`` of ``--format json``)."""
    summary: dict[str, dict[str, dict[str, int]]] = {}
    for change in changes:
        per_object = summary.setdefault(change.target, {}).setdefault(change.object, {})
        per_object[change.action.value] = per_object.get(change.action.value, 0) + 1
    return summary
