"""Reading the dates users type (DESIGN §3), and the UTC text the state store keeps."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, tzinfo

from aircall_sync.errors import UsageError

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_bound(value: str, option: str, zone: tzinfo, *, end: bool) -> datetime:
    """``YYYY-MM-DD`` (a whole day; as ``--to`` it includes that day) or an ISO-8601 date-time.

    A date-time without an offset is read in ``zone`` (``sync.timezone``).
    """
    text = value.strip()
    try:
        if _DAY.match(text):
            day = date.fromisoformat(text)
            if end:
                day += timedelta(days=1)
            return datetime(day.year, day.month, day.day, tzinfo=zone)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise UsageError(
            f'{option}: expected a date (YYYY-MM-DD) or an ISO-8601 date-time (2026-03-01T09:00), got "{value}"'
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment


def parse_range(start: str, end: str, zone: tzinfo) -> tuple[datetime, datetime]:
    """The half-open range ``[start, end)`` meant by ``--from`` and ``--to``."""
    lower = parse_bound(start, "--from", zone, end=False)
    upper = parse_bound(end, "--to", zone, end=True)
    if lower >= upper:
        raise UsageError(f'--from ({start}) must be before --to ({end}); swap them')
    return lower, upper


def utc_text(moment: datetime) -> str:
    """Fixed-width ISO-8601 UTC text (``2026-11-21T10:00:00.000000Z``): reads well in the ``sqlite3``
    shell and sorts as it should when compared as text."""
    # isoformat pads the year to four digits, unlike strftime("%Y") on glibc, which keeps the text
    # fixed-width and therefore sortable.
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_utc_text(text: str) -> datetime:
    """The moment :func:`utc_text` wrote."""
    return datetime.fromisoformat(text.removesuffix("Z")).replace(tzinfo=UTC)
