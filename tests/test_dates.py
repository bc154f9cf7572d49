from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from aircall_sync.dates import parse_range
from aircall_sync.errors import UsageError

PARIS = ZoneInfo("Europe/Paris")


@pytest.mark.parametrize(
    "start, end, zone, expected",
    [
        ("2026-03-01", "2026-03-01", UTC, (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC))),
        ("2026-03-01", "2026-03-31", PARIS,
         (datetime(2026, 3, 1, tzinfo=PARIS), datetime(2026, 4, 1, tzinfo=PARIS))),
        ("2026-03-01T09:00", "2026-03-01T10:30", PARIS,
         (datetime(2026, 3, 1, 9, tzinfo=PARIS), datetime(2026, 3, 1, 10, 30, tzinfo=PARIS))),
        ("2026-03-01T09:00Z", "2026-03-01T10:00+01:00", PARIS,
         (datetime(2026, 3, 1, 9, tzinfo=UTC), datetime(2026, 3, 1, 9, tzinfo=UTC))),
    ],
)
def test_ranges(start, end, zone, expected):
    if expected[0] >= expected[1]:
        with pytest.raises(UsageError):
            parse_range(start, end, zone)
        return
    assert parse_range(start, end, zone) == expected


@pytest.mark.parametrize(
    "start, end, message",
    [
        ("2026-03-02", "2026-03-01", "--from (2026-03-02) must be before --to (2026-03-01); swap them"),
        ("yesterday", "2026-03-01",
         '--from: expected a date (YYYY-MM-DD) or an ISO-8601 date-time (2026-03-01T09:00), got "yesterday"'),
        ("2026-03-01", "2026-02-30",
         '--to: expected a date (YYYY-MM-DD) or an ISO-8601 date-time (2026-03-01T09:00), got "2026-02-30"'),
    ],
)
def test_bad_ranges(start, end, message):
    with pytest.raises(UsageError) as err:
        parse_range(start, end, UTC)
    assert str(err.value) == message
