"""What the user sees: tables on a terminal, plain text for cron mail, JSON for scripts.

Output that can be long is streamed line by line (never collected into one rich
table), so listing a month of calls uses as little memory as listing a day.
"""

from __future__ import annotations

import json
from datetime import UTC, tzinfo
from typing import IO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from aircall_sync.plan import Action, Change, item_label
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


# ---------------------------------------------------------------- plans and runs


_VERB = {Action.CREATE: "Would create", Action.UPDATE: "Would update", Action.NOOP: "Unchanged",
         Action.SKIP: "Would skip"}
_STYLE = {Action.CREATE: "green", Action.UPDATE: "yellow", Action.NOOP: "dim", Action.SKIP: "dim"}


def console(out: IO[str]) -> Console:
    # Colour and width only on a terminal: cron mail and pipes get plain text.
    return Console(file=out, highlight=False, soft_wrap=True)


def _show(value, limit: int = 160) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class PlanPrinter:
    """The dry run in words: one block per change, "Would …" first (the pip-tools habit)."""

    def __init__(self, out: IO[str], *, show_unchanged: bool = False, limit: int | None = None):
        self.console = console(out)
        self.show_unchanged = show_unchanged
        self.limit = limit
        self.printed = 0
        self.hidden = 0

    def __call__(self, change: Change) -> None:
        if change.action is Action.NOOP and not self.show_unchanged:
            return
        if self.limit is not None and self.printed >= self.limit:
            self.hidden += 1
            return
        self.printed += 1
        head = Text(f"{_VERB[change.action]} ", style=_STYLE[change.action])
        if change.action is Action.SKIP:
            head.append(f"{item_label(change.call_id, change.message_id)} in {change.target}: {change.reason}")
            self.console.print(head)
            return
        what = change.object + (f" {change.record_id}" if change.record_id else "")
        head.append(f"{what} for {item_label(change.call_id, change.message_id)}")
        if change.note:
            head.append(f"  ({change.note})", style="dim")
        self.console.print(head)
        if change.action is Action.UPDATE and change.diff:
            for name, (old, new) in change.diff.items():
                self.console.print(f"    {name}: {_show(old)} -> {_show(new)}", markup=False)
        elif change.action is Action.CREATE or change.action is Action.UPDATE:
            # An update whose current values are not read by a preview (an Aircall contact): what it holds.
            for name, value in change.fields.items():
                self.console.print(f"    {name} = {_show(value)}", markup=False)
        for warning in change.warnings:
            self.console.print(Text(f"    warning: {warning}", style="yellow"))


    def close(self) -> None:
        if self.hidden:
            self.console.print(f"… and {self.hidden} more change(s) (the full plan: --dry-run without a limit, "
                               "or --format json)", markup=False)


def plan_table(out: IO[str], summary: dict) -> None:
    """The dry run's totals: creates / updates / unchanged / skips per target and object."""
    table = Table(title="Plan", show_edge=False, pad_edge=False)
    for column in ("target", "object", "create", "update", "unchanged", "skip"):
        table.add_column(column, justify="left" if column in ("target", "object") else "right")
    for target, objects in sorted(summary.get("changes", {}).items()):
        for obj, actions in sorted(objects.items()):
            table.add_row(target, obj, *(str(actions.get(a, 0)) for a in ("create", "update", "noop", "skip")))
    c = console(out)
    c.print(table)
    c.print(f"{summary.get('calls', 0)} settled call(s) planned; {summary.get('unsettled', 0)} not settled yet "
            "(left for a later run). Nothing was written.")
    ai = summary.get("ai")
    if ai is not None:
        c.print(ai_plan_line(ai), markup=False)
    contacts = summary.get("contacts")
    if contacts is not None:
        c.print(contacts_plan_line(contacts), markup=False)


def duration_words(seconds: int) -> str:
    """``45 s``, ``12 min``, ``3 h 20 min``: how long requests take, in words."""
    if seconds < 60:
        return f"{seconds} s"
    minutes = -(-seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h" + (f" {minutes} min" if minutes else "")


def ai_plan_line(ai: dict) -> str:
    """R-AI-2: what AI insights would cost, before anything is spent (a dry run fetches none)."""
    return (f"AI insights: {ai['eligible_calls']} eligible call(s); a run would make {ai['requests']} more Aircall "
            f"request(s) for them (at most 5 per call, none for an insight known), about "
            f"{duration_words(ai['seconds'])} at aircall.requests_per_minute = {ai['requests_per_minute']}. "
            "None was fetched now.")


def ai_run_line(ai: dict) -> str:
    """The AI insights part of a run's summary (RULES §8)."""
    line = (f"AI insights: {ai['eligible_calls']} eligible call(s), {ai['requests']} Aircall request(s): "
            f"{ai.get('found', 0)} found, {ai.get('none', 0)} known not to exist, {ai.get('later', 0)} not there "
            "yet (asked again by a later run)")
    if ai.get("forbidden"):
        line += ("; Aircall answered 403 (no Aircall AI package): nothing more was asked in this run")
    elif ai.get("error"):
        line += f"; stopped asking: {ai['error']}"
    return line + "."


def contacts_plan_line(contacts: dict) -> str:
    """RULES §9 in a dry run: the contacts a run would save and what that costs, before anything is spent."""
    return (f"Aircall contacts: {contacts['records']} matched record(s): {contacts['create']} would be created and "
            f"{contacts['update']} updated in Aircall (only what differs), {contacts['unchanged']} unchanged since "
            f"saved, {contacts['skipped']} not saved; about {contacts['requests']} Aircall request(s), "
            f"{duration_words(contacts['seconds'])} at aircall.requests_per_minute = "
            f"{contacts['requests_per_minute']} (a contact found by its number is updated instead of created).")


def contacts_run_line(contacts: dict) -> str:
    """The Aircall contacts part of a run's summary (RULES §9)."""
    line = (f"Aircall contacts: {contacts.get('created', 0)} created, {contacts.get('updated', 0)} updated, "
            f"{contacts.get('unchanged', 0)} unchanged, {contacts.get('skipped', 0)} not saved, "
            f"{contacts.get('failed', 0)} failed; {contacts['requests']} Aircall request(s)")
    if contacts.get("forbidden"):
        line += ("; Aircall answered 403 (this API key may not write contacts): none more was saved in this run "
                 "(set aircall.contacts.save_matched = false, or use a key that may)")
    elif contacts.get("error"):
        line += f"; stopped saving: {contacts['error']} (the records wait for the next run)"
    return line + "."


def run_summary(out: IO[str], summary) -> None:
    """The end of a real run: what happened per target, the requests it took, the failures."""
    c = console(out)
    parts = []
    for target in sorted({t for t, _ in summary.outcomes} | set(summary.stopped)):
        counts = [f"{n} {o}" for (t, o), n in sorted(summary.outcomes.items()) if t == target]
        if target in summary.stopped:  # its error follows on stderr
            counts.append("stopped before the end")
        parts.append(f"{target}: {', '.join(counts)}")
    c.print(f"{summary.command.capitalize()} finished in {summary.seconds:.1f}s: {summary.calls} call(s)"
            + (f" and {summary.messages} message(s)" if getattr(summary, "messages", 0) else "")
            + (f"; {'; '.join(parts)}" if parts else "") + ".", markup=False)
    requests = ", ".join(f"{k} {v}" for k, v in summary.requests.items())
    retries = ", ".join(f"{k} {v}" for k, v in summary.retries.items() if v)
    c.print(f"Requests: {requests}" + (f" (retries: {retries})" if retries else "") + ".", markup=False)
    if getattr(summary, "ai", None) is not None:
        c.print(ai_run_line(summary.ai), markup=False)
    if getattr(summary, "contacts", None) is not None:
        c.print(contacts_run_line(summary.contacts), markup=False)
    if summary.unsettled:
        c.print(f"{summary.unsettled} call(s) not settled yet were left for a later run.", markup=False)
    for bad in summary.unreadable:
        c.print(f"Unreadable call {bad.call_id}: {bad.reason}", markup=False)
    if summary.failures:
        c.print(Text(f"{len(summary.failures)} record(s) failed (see `aircall-sync status`; fix, then "
                     "`aircall-sync retry`):", style="red"))
        for failure in summary.failures[:20]:
            err = failure.get("error") or {}
            who = f"message {failure['message_id']}" if "message_id" in failure else f"call {failure['call_id']}"
            c.print(f"  {who} ({failure['target']}): {err.get('code')}: {err.get('message')}",
                    markup=False)
        if len(summary.failures) > 20:
            c.print(f"  … and {len(summary.failures) - 20} more", markup=False)


class Progress:
    """Progress of a long run: a live line on a terminal, a plain line per chunk otherwise."""

    def __init__(self, err: IO[str], label: str, quiet: bool = False):
        self.err = err
        self.label = label
        self.quiet = quiet
        self.done = 0
        self.tty = hasattr(err, "isatty") and err.isatty()
        self._live = None
        if self.tty and not quiet:
            from rich.progress import Progress as RichProgress
            from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

            self._live = RichProgress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                      console=Console(file=err), transient=True)
            self._task = self._live.add_task(f"{label}: 0 calls")
            self._live.start()

    def __call__(self, verb: str, n: int) -> None:
        self.done += n
        if self.quiet:
            return
        if self._live is not None:
            self._live.update(self._task, description=f"{self.label}: {self.done} calls {verb}")
        elif n:
            self.err.write(f"{self.label}: {self.done} calls {verb}\n")
            self.err.flush()

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
