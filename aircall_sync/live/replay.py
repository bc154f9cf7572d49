"""``replay``: the stored webhook events of a range, processed again through the same plan (DESIGN §10).

After a settings change, or a target enabled later, the events live mode kept
(``live.keep_events``; messages exist nowhere else) are read back and planned
like a batch: per call its newest stored snapshot (envelope timestamp, then
arrival), per message what all its events say together (``live.messages``),
in the order live mode logs them (calls by the arrival of their first finished
snapshot, messages by their first event's). Records already as they should be
cost nothing (their fingerprint is unchanged): nothing is written twice. The
events are left as they are: replay reads the inbox, it does not consume it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta

from aircall_sync import rules
from aircall_sync.aircall.client import BadCall
from aircall_sync.aircall.messages import MessageParseError
from aircall_sync.aircall.models import Call, CallParseError
from aircall_sync.live.inbox import Inbox
from aircall_sync.live.messages import NumberNames, message_from_events
from aircall_sync.message_rules import assess_message

__all__ = ["KINDS", "replay_items"]

log = logging.getLogger("aircall_sync")

KINDS = ("calls", "messages", "all")
_REMEMBER_EVERY = 500  # message ids written to the state's id table in groups, not one transaction each


def replay_items(settings, inbox: Inbox, client, start: datetime, end: datetime, kind: str, now: datetime,
                 unreadable: list[BadCall], *, dry_run: bool = False) -> Iterator:
    """The calls and messages whose stored events fall in ``[start, end)``, assessed, in live mode's order.

    Each object's events are read when its turn comes, so memory holds one object's events at a time.
    What cannot be read goes to ``unreadable`` (calls) or the log (messages), as in batch runs.
    """
    order: list[tuple[int, str, str]] = []
    if kind in ("calls", "all"):
        calls = inbox.objects_in("call", start, end)
        finished = inbox.first_finished(c for c, _ in calls)
        order += [(finished.get(c, first), "call", c) for c, first in calls]
    if kind in ("messages", "all"):
        order += [(first, "message", m) for m, first in inbox.objects_in("message", start, end)]
    order.sort()
    names = NumberNames(client)
    remembered: list[tuple] = []
    for _seq, object_kind, object_id in order:
        events = inbox.events_of(object_kind, object_id)
        if not events:  # pruned meanwhile
            continue
        if object_kind == "call":
            newest = max(events, key=lambda e: e.order)
            try:
                call = Call.parse(newest.body.get("data"))
            except CallParseError as exc:
                unreadable.append(BadCall(int(object_id), f"its stored {newest.event} event: {exc}"))
                continue
            # As in live mode: a stored finished snapshot is logged whatever its age (no sync.lag).
            yield rules.assess(call, settings, max(now, call.ended_at or now), lag=timedelta(0))
            continue
        try:
            message = message_from_events(events)
        except MessageParseError as exc:
            log.warning("message %s: its stored events cannot be read (%s)", object_id, exc)
            continue
        assessment = assess_message(message, settings, number_names=names)
        if not dry_run:  # a dry run writes nothing, not even the id table
            remembered.append((assessment.key, assessment.message_id, message.created_at))
        if len(remembered) >= _REMEMBER_EVERY:
            inbox.state.remember_messages(remembered)
            remembered = []
        yield assessment
    if remembered:
        inbox.state.remember_messages(remembered)
