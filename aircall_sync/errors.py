"""Typed errors raised by the core.

The CLI maps each class to an exit code in one table (``cli.EXIT_CODES``); the
message of every error here is shown to the user as one line, so it must name
the problem and the fix and never contain a secret.
"""

from __future__ import annotations


class AircallSyncError(Exception):
    """Base class: an expected failure with a message meant for the user."""


class UsageError(AircallSyncError):
    """Bad command-line input (exit 2)."""


class SettingsError(AircallSyncError):
    """The settings file is unusable (exit 2). Carries every problem found."""

    def __init__(self, problems: list[str], path: str | None = None):
        self.problems = list(problems)
        self.path = path
        where = f" in {path}" if path else ""
        head = f"{len(self.problems)} problem(s){where}:"
        super().__init__("\n".join([head, *("  " + p for p in self.problems)]))


class OrgMismatchError(AircallSyncError):
    """The CRM lacks what the settings ask for (exit 2)."""


class CredentialsError(AircallSyncError):
    """A service refused the credentials (exit 5)."""


class LockHeldError(AircallSyncError):
    """Another run holds the state lock (exit 4)."""


class ServiceError(AircallSyncError):
    """A service could not be reached or answered in a way we cannot use (exit 1)."""


class StateError(AircallSyncError):
    """The state file is unreadable, corrupted or from a newer version (exit 1)."""


class RecordsFailedError(AircallSyncError):
    """The run finished but some records failed (exit 3)."""


class TargetsStoppedError(AircallSyncError):
    """A target met a run-stopping error and ended for the run while the others went on.

    ``errors`` maps each stopped target to its error. The exit code is the worst
    of theirs (``cli.exit_code_for``), and at least 3 when records failed too.
    """

    def __init__(self, errors: dict[str, BaseException], *, finished: list[str], records_failed: int = 0):
        self.errors = dict(errors)
        self.finished = list(finished)
        self.records_failed = records_failed
        lines = [f"{name} stopped: {stop_message(exc)}" for name, exc in self.errors.items()]
        went_on = f"{', '.join(self.finished)} finished; " if self.finished else ""
        lines.append(f"{went_on}the calls {' and '.join(self.errors)} did not log are left for the next run"
                     + (f"; {records_failed} record(s) failed (`aircall-sync status` lists them)"
                        if records_failed else ""))
        super().__init__("\n".join(lines))


def stop_message(exc: BaseException) -> str:
    """One line for an error that stopped a target: ours say what to do; anything else is a bug."""
    if isinstance(exc, AircallSyncError):
        return str(exc)
    return (f"unexpected {type(exc).__name__}; this is a bug in aircall-sync (run again with --verbose for the "
            "traceback and report it)")
