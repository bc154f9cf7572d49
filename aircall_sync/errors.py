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
