"""The ``aircall-sync`` command line (DESIGN §3).

Each command parses its options, calls the core, and prints. Failures come back
as typed exceptions (``aircall_sync.errors``) and are turned into one line and
an exit code by ``EXIT_CODES``, the only place exit codes are decided.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from aircall_sync import __version__, render, rules, runner
from aircall_sync.aircall.client import BadCall
from aircall_sync.runner import aircall_client
from aircall_sync.dates import parse_range
from aircall_sync.errors import (
    AircallSyncError,
    CredentialsError,
    LockHeldError,
    OrgMismatchError,
    RecordsFailedError,
    SettingsError,
    TargetsStoppedError,
    UsageError,
)
from aircall_sync.settings import Settings, default_config_path, load_settings, write_example

log = logging.getLogger("aircall_sync")

#: One table from failure to exit code; the first matching class wins.
EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (UsageError, 2),
    (SettingsError, 2),
    (OrgMismatchError, 2),
    (RecordsFailedError, 3),
    (LockHeldError, 4),
    (CredentialsError, 5),
    (AircallSyncError, 1),
]

EXIT_TABLE_HELP = (
    "Exit codes: 0 done; 1 unexpected error; 2 bad usage or settings; "
    "3 finished but some records failed; 4 another run holds the lock; "
    "5 a service refused the credentials."
)


#: When several things went wrong, the exit code is the first of these that applies.
WORST_FIRST = (1, 5, 2, 4, 3)


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, TargetsStoppedError):  # issue 11: the worse of the targets' outcomes
        codes = {exit_code_for(e) for e in exc.errors.values()} | ({3} if exc.records_failed else set())
        return next(code for code in WORST_FIRST if code in codes)
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return 1


app = typer.Typer(
    name="aircall-sync",
    help="Log Aircall calls into Salesforce and Front: backfill, scheduled sync and dry-run preview.\n\n"
    + EXIT_TABLE_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@dataclass
class Options:
    config: Path
    verbose: bool
    quiet: bool
    log_format: str
    _settings: Settings | None = None

    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config)
        return self._settings


def _options(ctx: typer.Context) -> Options:
    return ctx.find_root().obj


def _echo_err(message: str) -> None:
    typer.echo(message, err=True)


def handled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command body; turn our exceptions into one line and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = kwargs.get("ctx")
        # Typer 0.29 hands its vendored click Context, not typer.Context: duck-typed.
        options = ctx.find_root().obj if hasattr(ctx, "find_root") else None
        verbose = bool(options and options.verbose)
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except AircallSyncError as exc:
            if verbose:
                _echo_err(traceback.format_exc().rstrip())
            _echo_err(f"error: {exc}")
            raise typer.Exit(exit_code_for(exc)) from None
        except KeyboardInterrupt:
            _echo_err("interrupted")
            raise typer.Exit(130) from None
        except BrokenPipeError:
            # The reader (``| head``) has all it wanted: not a failure. Point
            # stdout at /dev/null so the interpreter's final flush stays quiet.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except Exception as exc:  # ours: say so, and show the traceback only when asked
            if verbose:
                _echo_err(traceback.format_exc().rstrip())
            _echo_err(
                f"error: unexpected {type(exc).__name__}; this is a bug in aircall-sync "
                "(run again with --verbose for the traceback and report it)"
            )
            raise typer.Exit(1) from None

    return wrapper


class _JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            },
            ensure_ascii=False,
        )


def _setup_logging(verbose: bool, quiet: bool, log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"aircall-sync {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Settings file. Default: $AIRCALL_SYNC_CONFIG, else ./settings.toml.",
            show_default=False,
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Say more; show tracebacks of our own errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
    log_format: Annotated[str, typer.Option("--log-format", help="Log lines as text or json.")] = "text",
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Log Aircall calls into Salesforce and Front."""
    if log_format not in ("text", "json"):
        _echo_err(f'error: --log-format: expected one of text, json, got "{log_format}"')
        raise typer.Exit(2)
    if verbose and quiet:
        _echo_err("error: --verbose and --quiet cannot be used together; pick one")
        raise typer.Exit(2)
    _setup_logging(verbose, quiet, log_format)
    ctx.obj = Options(config=config or default_config_path(), verbose=verbose, quiet=quiet, log_format=log_format)


# ---------------------------------------------------------------- init


@app.command()
@handled
def init(
    ctx: typer.Context,
    path: Annotated[
        Path | None,
        typer.Argument(help="Where to write it. Default: the --config path (./settings.toml).", show_default=False),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented settings file to start from."""
    target = path or _options(ctx).config
    written = write_example(target, force=force)
    typer.echo(f"Wrote {written} (every key is documented in it).")
    typer.echo("Next: export AIRCALL_API_ID and AIRCALL_API_TOKEN (or edit the file), then run: aircall-sync check")


# ---------------------------------------------------------------- check


@app.command()
@handled
def check(ctx: typer.Context) -> None:
    """Validate the settings (every problem at once), then reach each enabled service.

    With aircall.contacts.save_matched, also whether the Aircall key may write contacts: an update of contact
    0 (which does not exist) changes nothing; a read-only key (403) is a problem naming the setting.
    """
    settings = _options(ctx).settings()
    typer.echo(f"Settings: {settings.path} is valid.")
    problems: list[str] = []
    with aircall_client(settings) as client:
        client.ping()
        typer.echo(f"Aircall: credentials accepted at {settings.aircall.base_url}.")
        if settings.aircall.contacts.save_matched:
            # RULES §9: an update of a contact that cannot exist (id 0) changes nothing; 403 = a read-only key.
            if client.may_write_contacts():
                typer.echo("Aircall: the API key may write contacts (aircall.contacts.save_matched; checked with "
                           "an update of contact 0, which does not exist: nothing was changed).")
            else:
                problems.append("Aircall: this API key may not write contacts (HTTP 403 to a contact update), but "
                                "aircall.contacts.save_matched = true: use an API key that may write contacts, or set "
                                "aircall.contacts.save_matched = false")
            if "salesforce" not in settings.enabled_targets():
                problems.append("aircall.contacts.save_matched = true saves the Salesforce records calls are logged "
                                "against, but salesforce.enabled = false: enable Salesforce, or set "
                                "aircall.contacts.save_matched = false")
    for target in settings.enabled_targets():
        if target == "front":
            from aircall_sync.runner import front_client
            from aircall_sync.targets.front import check_front

            with front_client(settings) as client:
                infos, found = check_front(settings, client)
            for info in infos:
                typer.echo(info)
            problems.extend(found)
            continue
        from aircall_sync.runner import connect_org
        from aircall_sync.targets.salesforce_target import check_contact_fields, check_org, check_voice

        org = connect_org(settings)
        infos, found = (check_voice if settings.salesforce.mode == "voice" else check_org)(settings, org)
        infos = infos + check_contact_fields(settings, org)
        typer.echo(f"Salesforce: signed in to {settings.salesforce.instance_url} ({settings.salesforce.auth}); "
                   f"mode {settings.salesforce.mode}.")
        for info in infos:
            typer.echo(f"  {info}")
        problems.extend(found)
    if settings.live.public_url:
        # [live] is configured: the webhook that feeds serve is part of what must work (DESIGN §10).
        from aircall_sync.aircall import webhooks

        with aircall_client(settings) as client:
            result = webhooks.check(client, settings.live.public_url, webhooks.needed_events(settings))
        if result.ok:
            typer.echo(f"Webhook: {result.hook.webhook_id} at {settings.live.public_url} is active and subscribed "
                       f"to the {len(webhooks.needed_events(settings))} events serve needs.")
        problems.extend(result.problems)
        if not settings.live.webhook_token:
            problems.append("live.webhook_token is not set: serve needs it (the token `aircall-sync webhooks "
                            "install` printed; export AIRCALL_WEBHOOK_TOKEN)")
    if problems:
        raise OrgMismatchError("\n".join([f"{len(problems)} problem(s) to fix before logging:",
                                          *(f"  {p}" for p in problems)]))


# ---------------------------------------------------------------- calls

#: The date range of calls, backfill and replay (read like backfill's dates, DESIGN §3).
FromOption = Annotated[str, typer.Option("--from", help="First day (YYYY-MM-DD) or date-time, in sync.timezone.")]
ToOption = Annotated[str, typer.Option("--to", help="Last day (inclusive) or end date-time, in sync.timezone.")]


@app.command()
@handled
def calls(
    ctx: typer.Context,
    from_: FromOption,
    to: ToOption,
    format: Annotated[str, typer.Option("--format", help="table or jsonl.")] = "table",
) -> None:
    """List calls with their kind, talk and wait time, number and flow decision per target."""
    if format not in ("table", "jsonl"):
        raise UsageError(f'--format: expected one of table, jsonl, got "{format}"')
    settings = _options(ctx).settings()
    start, end = parse_range(from_, to, settings.sync.tzinfo)
    now = datetime.now(UTC)
    out = sys.stdout
    targets = settings.enabled_targets()
    table = render.CallsTable(out, targets, settings.sync.tzinfo) if format == "table" else None
    bad: list[BadCall] = []
    listed = unsettled = 0
    began = time.monotonic()
    with aircall_client(settings) as client:
        if table:
            table.header()
        for call in client.iter_calls(start, end, on_bad=bad.append):
            assessment = rules.assess(call, settings, now)
            listed += 1
            unsettled += not assessment.settled
            if table:
                table.row(assessment)
            else:
                render.jsonl(out, render.call_json(assessment))
        requests = client.stats.requests
    for item in bad:
        who = f"call {item.call_id}" if item.call_id is not None else "a call without an id"
        log.warning("%s could not be read and is not listed: %s", who, item.reason)
    log.info(
        "%d call(s) listed (%d not settled yet), %d unreadable, %d Aircall request(s), %.1fs",
        listed, unsettled, len(bad), requests, time.monotonic() - began,
    )


# ---------------------------------------------------------------- backfill, sync, retry

TargetOption = Annotated[str, typer.Option("--target", help="salesforce, front or all (the enabled ones).")]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Show what would be written; write nothing anywhere.")]
FormatOption = Annotated[str, typer.Option("--format", help="text, or json (with --dry-run).")]
ReportOption = Annotated[
    Path | None,
    typer.Option("--report", help="Write one JSON line per call and target with its outcome.", show_default=False),
]


def _run(ctx: typer.Context, command: str, **kwargs: Any) -> None:
    from aircall_sync.runner import execute

    options = _options(ctx)
    execute(options.settings(), command, out=sys.stdout, err=sys.stderr, quiet=options.quiet, **kwargs)


@app.command()
@handled
def backfill(
    ctx: typer.Context,
    from_: FromOption,
    to: ToOption,
    target: TargetOption = "all",
    dry_run: DryRunOption = False,
    format: FormatOption = "text",
    report: ReportOption = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Stop after N settled calls.", show_default=False)] = None,
) -> None:
    """Log the calls of a past date range; an interrupted run of the same range resumes.

    With AI insights on ([aircall.ai] enabled = true), each settled, answered call with at least
    aircall.ai.min_talk_seconds of talk costs up to 5 more Aircall requests (one per insight, never twice for
    one known), paced at aircall.requests_per_minute: --dry-run says how many and how long, and fetches none.

    With [aircall.contacts] save_matched = true, the Salesforce record each call is logged against is saved in
    the Aircall phone: about 2 Aircall requests per record saved (none for a record unchanged since it was
    saved), paced with the call reads; --dry-run says how many contacts would be created or updated, and how
    long that takes.
    """
    settings = _options(ctx).settings()
    start, end = parse_range(from_, to, settings.sync.tzinfo)
    _run(ctx, "backfill", which=target, dry_run=dry_run, fmt=format, report_path=report, limit=limit,
         start=start, end=end)


@app.command()
@handled
def sync(
    ctx: typer.Context,
    dry_run: DryRunOption = False,
    format: FormatOption = "text",
    report: ReportOption = None,
) -> None:
    """Log new and changed calls, from the watermark minus sync.revisit to now minus sync.lag (for cron).

    With AI insights on, the insights not known yet of eligible calls are asked for (up to 5 Aircall requests
    per call; an insight found, or known not to exist, is never asked again). With [aircall.contacts]
    save_matched = true, the records calls are logged against are saved in the Aircall phone (about 2 requests
    per record that changed since it was saved).
    """
    _run(ctx, "sync", dry_run=dry_run, fmt=format, report_path=report)


@app.command()
@handled
def retry(
    ctx: typer.Context,
    dry_run: DryRunOption = False,
    format: FormatOption = "text",
    report: ReportOption = None,
) -> None:
    """Write again the records that failed in earlier runs (after fixing their cause)."""
    _run(ctx, "retry", dry_run=dry_run, fmt=format, report_path=report)


@app.command()
@handled
def explain(
    ctx: typer.Context,
    call_id: Annotated[str, typer.Argument(
        metavar="ID", help="An Aircall call id, or the id of a message whose webhook events serve stored.")],
) -> None:
    """How the rules read one call or message, and exactly what would be written for it in each target (and, with
    aircall.contacts.save_matched, the Aircall contact its record would be saved as).

    Messages (SMS, MMS, WhatsApp) exist only as the webhook events `serve` keeps: a message id is explained
    from them.
    """
    from aircall_sync.runner import explain as explain_call

    explain_call(_options(ctx).settings(), call_id, out=sys.stdout)


@app.command()
@handled
def status(ctx: typer.Context) -> None:
    """The sync watermark, the last runs, unfinished backfills, the records that failed, and the Salesforce
    records saved as Aircall contacts (saved, waiting, failed)."""
    from aircall_sync.runner import status as show_status

    show_status(_options(ctx).settings(), out=sys.stdout)


# ---------------------------------------------------------------- live mode


@app.command()
@handled
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option("--host", help="Address to listen on. Default: live.host.",
                                             show_default=False)] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port to listen on (0: any free port, logged). "
                                                            "Default: live.port.", show_default=False)] = None,
) -> None:
    """Live mode: receive Aircall's webhooks, log each call within seconds, reconcile by polling.

    SMS, MMS and WhatsApp messages are logged here only (Aircall's API lists no messages): a Task in
    Salesforce, the message in the contact's Front conversation. With [aircall.ai] enabled = true, the AI
    insights' events update the call's records as they arrive (their content fetched when an event lacks it).

    Runs until stopped; SIGTERM stops receiving, finishes what is due (up to 30 s) and exits 0. A port
    another process listens on: exit 1, naming it; no live.webhook_token: exit 2.
    """
    from aircall_sync.live.serve import serve as run_serve

    if port is not None and not 0 <= port <= 65535:
        raise UsageError(f"--port: expected 0 to 65535, got {port}")
    run_serve(_options(ctx).settings(), host=host, port=port)


@app.command()
@handled
def replay(
    ctx: typer.Context,
    from_: FromOption,
    to: ToOption,
    kind: Annotated[str, typer.Option("--kind", help="calls, messages or all.")] = "all",
    dry_run: DryRunOption = False,
    format: FormatOption = "text",
    report: ReportOption = None,
) -> None:
    """Process again the webhook events serve kept, for calls started (messages created) in a range.

    After a settings change or a target enabled later; what is already as it should be is not written again.
    """
    from aircall_sync.live.replay import KINDS

    if kind not in KINDS:
        raise UsageError(f'--kind: expected one of {", ".join(KINDS)}, got "{kind}"')
    settings = _options(ctx).settings()
    if not Path(settings.sync.state_path).exists():
        raise UsageError(f"no state file at {settings.sync.state_path}: replay reads the webhook events serve "
                         "kept there, and none was kept with these settings")
    start, end = parse_range(from_, to, settings.sync.tzinfo)
    _run(ctx, "replay", dry_run=dry_run, fmt=format, report_path=report, start=start, end=end, kind=kind)


webhooks_app = typer.Typer(help="Manage the Aircall webhook that feeds `serve`.", no_args_is_help=True,
                           rich_markup_mode=None)
app.add_typer(webhooks_app, name="webhooks")


def _our_url(settings, url: str | None) -> str:
    chosen = url or settings.live.public_url
    if not chosen:
        raise UsageError("no webhook URL: pass --url https://... or set live.public_url (the URL Aircall calls)")
    from urllib.parse import urlsplit

    # Plain HTTP only for a receiver on this machine (the sandbox); Aircall itself refuses it.
    if not chosen.startswith("https://") and not (chosen.startswith("http://")
                                                  and _is_loopback(urlsplit(chosen).hostname or "")):
        raise UsageError(f'--url / live.public_url: Aircall delivers only to https:// URLs with a valid '
                         f'certificate, got "{chosen}"')
    return chosen.rstrip("/")


@webhooks_app.command("install")
@handled
def webhooks_install(
    ctx: typer.Context,
    url: Annotated[str, typer.Option("--url", help="The HTTPS URL Aircall will call (your proxy, with "
                                                   "live.path), e.g. https://hooks.example.com/aircall/webhook.")],
) -> None:
    """Create the webhook with exactly the events serve needs; print its token once."""
    from aircall_sync.aircall import webhooks

    settings = _options(ctx).settings()
    chosen = _our_url(settings, url)
    events = webhooks.needed_events(settings)
    with aircall_client(settings) as client:
        existing = webhooks.find_ours(client, chosen)
        if existing:
            raise UsageError(f"a webhook already points at {chosen} ({existing[0].webhook_id}); "
                             "`aircall-sync webhooks check` tells whether it is right, `aircall-sync webhooks "
                             "remove` deletes it")
        hook = webhooks.create(client, chosen, events)
    typer.echo(f"Created webhook {hook.webhook_id} for {chosen} ({len(events)} events: {', '.join(events)}).")
    if hook.token:
        typer.echo("Its token is shown this once. Put it in serve's environment, e.g.:")
        typer.echo(f"  export AIRCALL_WEBHOOK_TOKEN={hook.token}")
    else:
        typer.echo("Aircall did not return its token: read it in the Dashboard (Integrations & API > Webhooks) "
                   "and set AIRCALL_WEBHOOK_TOKEN for serve.")
    if chosen != settings.live.public_url:
        typer.echo(f'Set live.public_url = "{chosen}" so that check and serve look after this webhook.')


@webhooks_app.command("list")
@handled
def webhooks_list(ctx: typer.Context) -> None:
    """Every webhook of the Aircall account (never a token); ours is marked."""
    from aircall_sync.aircall import webhooks

    settings = _options(ctx).settings()
    ours = settings.live.public_url.rstrip("/")
    with aircall_client(settings) as client:
        hooks = list(webhooks.list_webhooks(client))
    if not hooks:
        typer.echo("No webhooks on this Aircall account.")
        return
    for hook in hooks:
        mark = "  (ours: live.public_url)" if ours and hook.url.rstrip("/") == ours else ""
        typer.echo(f"{hook.webhook_id}  {'active  ' if hook.active else 'DISABLED'}  {hook.url}  "
                   f"{len(hook.events) or 'all'} event(s){mark}")


@webhooks_app.command("check")
@handled
def webhooks_check(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option("--url", help="Default: live.public_url.", show_default=False)] = None,
) -> None:
    """Ours exists, is active, and is subscribed to every event serve needs (exit 2 otherwise)."""
    from aircall_sync.aircall import webhooks

    settings = _options(ctx).settings()
    chosen = _our_url(settings, url)
    with aircall_client(settings) as client:
        result = webhooks.check(client, chosen, webhooks.needed_events(settings))
    if result.ok:
        typer.echo(f"Webhook {result.hook.webhook_id}: active, subscribed to every event serve needs, at {chosen}.")
        if result.duplicates:
            typer.echo(f"  {result.duplicates} more webhook(s) point at the same URL: every event comes more than "
                       "once (harmless, but `aircall-sync webhooks remove ID` tidies it).")
        return
    raise OrgMismatchError("\n".join([f"{len(result.problems)} problem(s) with the webhook:",
                                      *(f"  {p}" for p in result.problems)]))


@webhooks_app.command("remove")
@handled
def webhooks_remove(
    ctx: typer.Context,
    webhook_id: Annotated[str | None, typer.Argument(help="The webhook to delete. Default: ours "
                                                           "(live.public_url).", show_default=False)] = None,
) -> None:
    """Delete our webhook (the one at live.public_url), or the one named."""
    from aircall_sync.aircall import webhooks

    settings = _options(ctx).settings()
    with aircall_client(settings) as client:
        if webhook_id is None:
            chosen = _our_url(settings, None)
            ours = webhooks.find_ours(client, chosen)
            if not ours:
                raise UsageError(f"no webhook points at {chosen}; `aircall-sync webhooks list` shows them all")
            ids = [hook.webhook_id for hook in ours]
        else:
            ids = [webhook_id]
        for one in ids:
            try:
                webhooks.remove(client, one)
            except webhooks.AircallApiError as exc:
                if exc.status == 404:
                    raise UsageError(f"Aircall has no webhook {one}; `aircall-sync webhooks list` shows them all") from None
                raise
            typer.echo(f"Removed webhook {one}.")


# ---------------------------------------------------------------- sandbox


@app.command()
@handled
def sandbox(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Loopback address to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Aircall's port; Salesforce and Front take the next two (0: any free ports).")] = 0,
    calls: Annotated[int, typer.Option("--calls", help="How many calls to generate.")] = 500,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the generated data (same seed, same data).")] = 1,
    days: Annotated[int, typer.Option("--days", help="Spread the calls over the last N days.")] = 7,
    write_settings: Annotated[
        Path | None,
        typer.Option("--write-settings", help="Also write the settings to this file (refuses to overwrite).",
                     show_default=False),
    ] = None,
    live: Annotated[bool, typer.Option("--live", help="Also place calls over time and deliver their webhook "
                                                      "events to `serve` (the settings point it at them).")] = False,
    calls_per_hour: Annotated[float, typer.Option("--calls-per-hour", help="With --live: calls placed per hour.")
                              ] = 60.0,
    serve_port: Annotated[int, typer.Option("--serve-port", help="With --live: the port serve will listen on; "
                                                                 "the sandbox's webhook points there.")] = 8080,
    time_scale: Annotated[float, typer.Option("--time-scale", help="With --live: real seconds per emulated second "
                                                                   "(0.1: calls and their events go 10 times faster)."
                                              )] = 1.0,
) -> None:
    """Serve the emulated APIs on loopback and print the settings that point at them."""
    from aircall_sync.sandbox.stack import BANNER, Sandbox, SandboxOptions

    if not _is_loopback(host):
        raise UsageError(f'--host: the sandbox serves on loopback only (127.0.0.1, localhost or ::1), got "{host}"')
    if not 0 <= port <= 65533:
        raise UsageError(f"--port: expected 0 to 65533 (Salesforce and Front take the next two ports), got {port}")
    if calls < 0 or days < 1:
        raise UsageError("--calls must be 0 or more and --days 1 or more")
    if live and not (0 < calls_per_hour <= 36000):
        raise UsageError(f"--calls-per-hour: expected more than 0 and at most 36000, got {calls_per_hour:g}")
    if live and not 1 <= serve_port <= 65535:
        raise UsageError(f"--serve-port: expected 1 to 65535, got {serve_port}")
    if live and not 0.001 <= time_scale <= 10:
        raise UsageError(f"--time-scale: expected 0.001 to 10, got {time_scale:g}")
    state_path = Path("aircall-sync-sandbox.sqlite3").resolve()
    options = SandboxOptions(calls=calls, seed=seed, days=days, host=host, port=port, live=live,
                             live_calls_per_hour=calls_per_hour if live else 0.0, time_scale=time_scale)
    with Sandbox(options) as box:
        from aircall_sync.sandbox.aircall_webhooks import AI_EVENTS, CALL_EVENTS, MESSAGE_EVENTS

        # Everything the live traffic sends: serve takes what its settings log (and trims the webhook to it).
        receiver = box.register_receiver(serve_port, events=CALL_EVENTS + MESSAGE_EVENTS + AI_EVENTS) if live else None
        text = box.settings_toml(state_path, targets=("salesforce", "front"), live=receiver)
        if write_settings is not None:
            try:
                with open(write_settings, "x", encoding="utf-8") as out:
                    out.write(text)
            except FileExistsError:
                raise UsageError(f"{write_settings} already exists; choose another --write-settings path") from None
        typer.echo(text, nl=False)
        _echo_err(f"{BANNER}. Aircall: {box.aircall_url} ({calls} calls over {days} days, seed {seed}); "
                  f"Salesforce: {box.salesforce.url} (TLS; its CA is in the settings); Front: {box.front_sandbox.url}.")
        if receiver is not None:
            _echo_err(f"Live: {calls_per_hour:g} calls an hour are placed; their webhook events go to "
                      f"{receiver['public_url']}: run `aircall-sync --config <these settings> serve` to log them.")
        _echo_err("Use the settings above (--config), e.g. aircall-sync calls --from ... --to ...; Ctrl-C stops.")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            _echo_err("sandbox stopped")


@app.command()
@handled
def demo(
    ctx: typer.Context,
    calls: Annotated[int, typer.Option("--calls", help="How many sandbox calls to log.")] = 300,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the generated data.")] = 1,
    mode: Annotated[str, typer.Option("--mode", help="task (a Task per call) or voice (Service Cloud Voice).")] = "task",
    live: Annotated[bool, typer.Option("--live", help="Live mode instead: calls placed in the sandbox are logged "
                                                      "by `serve` as they end, with the delay of each.")] = False,
    contacts: Annotated[bool, typer.Option("--contacts", help="Also save the matched Salesforce records in the "
                                                              "sandbox's Aircall phone ([aircall.contacts] "
                                                              "save_matched = true).")] = False,
) -> None:
    """Start the sandbox, preview a backfill, run it and show what landed (no credentials needed).

    With --contacts, the Salesforce records calls are logged against are saved as Aircall contacts too, and the
    demo shows a few of them.
    """
    import tempfile

    from aircall_sync.runner import execute
    from aircall_sync.sandbox.stack import BANNER, Sandbox, SandboxOptions

    if not 1 <= calls <= 20000:
        raise UsageError(f"--calls: expected 1 to 20000, got {calls}")
    if mode not in ("task", "voice"):
        raise UsageError(f'--mode: expected one of task, voice, got "{mode}"')
    if live:
        from aircall_sync.live.demo import run_live_demo

        run_live_demo(sys.stdout, seed=seed, mode=mode, calls=min(calls, 100))
        return
    options = _options(ctx)
    out = sys.stdout
    with tempfile.TemporaryDirectory(prefix="aircall-sync-demo-") as tmp, \
            Sandbox(SandboxOptions(calls=calls, seed=seed, days=3)) as box:
        path = Path(tmp) / "settings.toml"
        text = box.settings_toml(Path(tmp) / "state.sqlite3", mode=mode, targets=("salesforce", "front"))
        if contacts:
            text += "\n[aircall.contacts]\nsave_matched = true\n"
        path.write_text(text, encoding="utf-8")
        settings = load_settings(path)
        end = datetime.now(UTC)
        start = end - timedelta(days=3)
        typer.echo(f"{BANNER}.\nAircall: {calls} generated calls; Salesforce: a seeded org "
                   f"({len(box.sf_store.records('Contact'))} Contacts, {len(box.sf_store.records('Lead'))} Leads, "
                   f"{len(box.sf_store.records('Account'))} Accounts); Front: an \"Aircall Phone\" inbox. "
                   f"Settings: {path}\n")
        typer.echo("1. Preview: aircall-sync backfill --dry-run (nothing is written)\n")
        execute(settings, "backfill", out=out, err=sys.stderr, dry_run=True, start=start, end=end, quiet=True,
                sample=3)
        store = box.sf_store
        leads_before = len(store.records("Lead"))
        typer.echo("\n2. Backfill: aircall-sync backfill\n")
        execute(settings, "backfill", out=out, err=sys.stderr, start=start, end=end, quiet=options.quiet)
        new_leads = len(store.records("Lead")) - leads_before
        if mode == "voice":
            calls_logged = store.records("VoiceCall")
            voice_object = settings.salesforce.voice.aircall_voice_object
            typer.echo(f"\n3. What landed in the sandbox org: {len(calls_logged)} VoiceCalls, "
                       f"{len(store.records(voice_object))} {voice_object} records (with tags, comments and the "
                       f"assigned user) and {new_leads} new Leads. A few VoiceCalls:")
            for record in calls_logged[:3]:
                typer.echo(f"   {record['Id']}  {record.get('CallType')}  {record.get('FromPhoneNumber')} -> "
                           f"{record.get('ToPhoneNumber')}  {record.get('CallDurationInSeconds')}s  "
                           f"VendorCallKey={record.get('VendorCallKey')}")
        else:
            calls_logged = store.records("Task")
            typer.echo(f"\n3. What landed in the sandbox org: {len(calls_logged)} Tasks and {new_leads} new Leads "
                       "(one per unknown number). A few Tasks:")
            for task in calls_logged[:3]:
                typer.echo(f"   {task['Id']}  {task.get('Subject')}  [{task.get('Status')}]  "
                           f"CallObject={task.get('CallObject')}  WhoId={task.get('WhoId') or '-'}")
        front = box.front_store
        conversations = list(front.conversations.values())
        typer.echo(f"   Front: {len(front.contacts)} contacts, {len(conversations)} open conversations in "
                   f"\"Aircall Phone\", {sum(len(c.messages) for c in conversations)} call activities, "
                   f"{sum(len(c.comments) for c in conversations)} comments by the agents.")
        if contacts:
            _demo_contacts(box)
        typer.echo("\n4. The same backfill again: every call is already logged, so nothing is written.\n")
        execute(settings, "backfill", out=out, err=sys.stderr, start=start, end=end, quiet=True)
        kept = store.records("VoiceCall" if mode == "voice" else "Task")
        typer.echo(f"\nThe org still holds {len(kept)} {'VoiceCalls' if mode == 'voice' else 'Tasks'}. Next: "
                   "aircall-sync init, then aircall-sync check with your own credentials.")


def _demo_contacts(box) -> None:
    """``demo --contacts``: the Salesforce records saved in the sandbox's Aircall phone (RULES §9)."""
    changes = box.aircall_contacts.changes("api")
    created = {c.contact_id for c in changes if c.op == "create"}
    touched = {c.contact_id for c in changes} - created
    saved = [c for c in box.aircall_contacts.all() if any(line.startswith("Salesforce ") for line in
                                                          (c.get("information") or "").splitlines())]
    typer.echo(f"   Aircall phone: {len(saved)} contacts carry a Salesforce record ({len(created)} created, "
               f"{len(touched)} existing ones updated with what differed). A few:")
    for contact in sorted(saved, key=lambda c: c["id"] in created)[:2] + [c for c in saved if c["id"] in created][:2]:
        name = " ".join(p for p in (contact.get("first_name"), contact.get("last_name")) if p)
        numbers = ", ".join(p["value"] for p in contact.get("phone_numbers") or [])
        line = [x for x in (contact.get("information") or "").splitlines() if x.startswith("Salesforce ")][-1]
        company = f" ({contact['company_name']})" if contact.get("company_name") else ""
        typer.echo(f"   {contact['id']}  {name}{company}  {numbers}  [{line}]")


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main() -> None:
    """The program's entry point: one command per process."""
    import gc

    # A run allocates millions of short-lived objects and almost no cycles (reference
    # counting frees them), but with the default thresholds the cyclic collector walked
    # the long-lived ones (modules, org metadata) again and again: 8% or more of a raw
    # backfill's CPU. It now waits for 50,000 new objects instead of 700, and a run
    # freezes what is alive once it is connected (runner.FREEZE_AT_START). Only here:
    # in-process callers (tests) keep the interpreter's defaults.
    _, second, third = gc.get_threshold()
    gc.set_threshold(50_000, second, third)
    runner.FREEZE_AT_START = True
    app()
