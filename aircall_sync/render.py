"""What the user sees: tables on a terminal, plain text for cron mail, JSON for scripts.

Output that can be long is streamed line by line (never collected into one rich
table), so listing a month of calls uses as little memory as listing a day.
"""

from __future__ import annotations

import json
from datetime import UTC, tzinfo
from typing import IO

from aircall_sync.rules import Assessment


def iso_utc(moment) -> str | None:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def call_json(a: Assessment) -> dict:
    """One ``calls --format jsonl`` object (DESIGN §3: the keys are part of the contract)."""
    call = a.call
    return {
        "id": call.id,
        "kind": a.kind.value,
        "direction": call.direction,
        "started_at": iso_utc(call.started_at),
        "external_number": a.external.e164 if a.external else None,
        "talk_seconds": a.talk_seconds,
        "wait_seconds": a.wait_seconds,
        "settled": a.settled,
        "decisions": {t: d.flow.value for t, d in a.decisions.items()},
        "skip_reasons": {t: d.reason for t, d in a.decisions.items() if d.skipped},
        "conference": a.conference,
        "number": call.number.name if call.number else None,
        "agent": call.user.name if call.user else None,
    }


class CallsTable:
    """Fixed-width rows written as they come: readable on a terminal and in mail."""

    def __init__(self, out: IO[str], targets: list[str], zone: tzinfo):
        self.out = out
        self.targets = targets
        self.zone = zone
        self.columns = [
            ("ID", 11), ("STARTED", 16), ("KIND", 19), ("EXTERNAL", 16), ("TALK", 5), ("WAIT", 5),
        ] + [(t.upper(), 24) for t in targets] + [("NOTE", 0)]

    def header(self) -> None:
        self._line([name for name, _ in self.columns])

    def row(self, a: Assessment) -> None:
        cells = [
            str(a.call.id),
            a.call.started_at.astimezone(self.zone).strftime("%Y-%m-%d %H:%M"),
            a.kind.value + (" (conf)" if a.conference else ""),
            a.external.e164 if a.external else "-",
            str(a.talk_seconds),
            str(a.wait_seconds),
        ]
        for target in self.targets:
            d = a.decisions[target]
            cells.append("-" if not a.settled else f"skip: {d.reason}" if d.skipped else d.flow.value)
        cells.append("" if a.settled else f"not logged yet: {a.unsettled_reason}")
        self._line(cells)

    def _line(self, cells: list[str]) -> None:
        parts = [c.ljust(w) for c, (_, w) in zip(cells[:-1], self.columns, strict=False)] + [cells[-1]]
        self.out.write("  ".join(parts).rstrip() + "\n")


def jsonl(out: IO[str], obj: dict) -> None:
    out.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
