"""The Call model parses the reference payloads and tolerates the wire's quirks (aircall-api.md §5-6, §10)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from builders import T0, call_payload, user

from aircall_sync.aircall.models import Call, CallParseError, parse_timestamp

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "aircall"
SAMPLES = Path(__file__).resolve().parent / "data"


def test_parses_api_reference_example():
    call = Call.parse(json.loads((SAMPLES / "call-api-reference-example.json").read_text()))
    assert call.id == 812
    assert call.direction == "outbound"
    assert call.number.name == "French Office" and call.number.time_zone == "Europe/Paris"
    assert call.comments[0].content == "Please call back this customer!"
    assert call.comments[0].posted_at == datetime.fromtimestamp(1587994808, UTC)
    assert call.user.email == "john.doe@aircall.io"
    assert call.user.created_at == datetime(2019, 12, 29, 10, 3, 18, tzinfo=UTC)


def test_parses_live_shape_sample():
    body = json.loads((SAMPLES / "call-list-response-live-shape.json").read_text())
    call = Call.parse(body["calls"][0])
    assert call.id == 4186780376
    assert call.asset == "https://assets.aircall.io/calls/4186780376/recording"
    assert call.country_code_a2 == "US"
    assert call.contact is None and call.tags == () and call.teams == ()


def test_parses_webhook_payload_with_empty_objects():
    body = json.loads((SAMPLES / "webhook-call-created.json").read_text())
    call = Call.parse(body["data"])
    # Webhooks send {} for user/contact/number: read as absent, not as empty objects.
    assert call.user is None and call.contact is None and call.number is None
    assert call.sid == "CAed058bba60a84d62c77cee898a852b05"  # call_uuid in webhooks
    assert [p.type for p in call.participants] == ["external", "user"]


def test_samples_are_the_reference_copies():
    # tests/data holds copies so the suite runs without ../shared; keep them honest.
    if not REFERENCE.is_dir():
        pytest.skip("../shared/reference not beside this checkout")
    for name in ("call-api-reference-example.json", "call-list-response-live-shape.json", "webhook-call-created.json"):
        assert json.loads((SAMPLES / name).read_text()) == json.loads((REFERENCE / name).read_text())


@pytest.mark.parametrize(
    "overrides, check",
    [
        ({"transfered_to": user(7, "Bo"), "transferred_to": None}, lambda c: c.transferred_to.name == "Bo"),
        ({"transferred_to": user(8, "Cy")}, lambda c: c.transferred_to.name == "Cy"),
        ({"user": None}, lambda c: c.user is None),
        ({"raw_digits": "anonymous"}, lambda c: c.raw_digits == "anonymous"),
        ({"started_at": str(T0)}, lambda c: c.started_at == datetime.fromtimestamp(T0, UTC)),
        ({"started_at": "2026-09-28T13:44:10Z"}, lambda c: c.started_at == datetime.fromtimestamp(T0, UTC)),
        ({"started_at": T0 * 1000}, lambda c: c.started_at == datetime.fromtimestamp(T0, UTC)),
        ({"answered_at": "soon"}, lambda c: c.answered_at is None),
        ({"comments": [{"id": 1, "content": "hi", "posted_at": "1587994808", "posted_by": None}]},
         lambda c: c.comments[0].posted_by is None and c.comments[0].posted_at.year == 2020),
        ({"comments": [{"content": "x", "posted_at": "2020-04-27T13:40:08.000Z"}]},
         lambda c: c.comments[0].posted_at == datetime(2020, 4, 27, 13, 40, 8, tzinfo=UTC)),
        ({"comments": ["junk", None, {"content": None}]}, lambda c: len(c.comments) == 1 and c.comments[0].content == ""),
        ({"tags": [{"id": 1, "name": "vip"}, {"id": 2}, "x"]}, lambda c: [t.name for t in c.tags] == ["vip"]),
        ({"conference_participants": [{"type": "user"}] * 3}, lambda c: len(c.participants) == 3),
        ({"number": "not an object"}, lambda c: c.number is None),
        ({"direction": "INBOUND"}, lambda c: c.direction == "inbound"),
        ({"unknown_key": {"deep": 1}}, lambda c: c.id == 4186780376),
        ({"archived": "true"}, lambda c: c.archived is True),
        ({"id": "4186780376"}, lambda c: c.id == 4186780376),
    ],
)
def test_tolerant_parsing(overrides, check):
    assert check(Call.parse(call_payload(**overrides)))


@pytest.mark.parametrize(
    "payload, call_id",
    [
        (call_payload(id=None), None),
        (call_payload(id="abc"), None),
        (call_payload(id=True), None),
        (call_payload(started_at=None), 4186780376),
        (call_payload(started_at="yesterday"), 4186780376),
        ([1, 2], None),
    ],
)
def test_unusable_payload_reports_its_id(payload, call_id):
    with pytest.raises(CallParseError) as err:
        Call.parse(payload)
    assert err.value.call_id == call_id


@pytest.mark.parametrize(
    "value, expected",
    [
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        ("", None),
        (None, None),
        (True, None),
        (float("nan"), None),
        ("2026-09-28T15:44:10+02:00", datetime.fromtimestamp(T0, UTC)),
        ("2026-09-28T13:44:10", datetime.fromtimestamp(T0, UTC)),
        (1e300, None),
    ],
)
def test_parse_timestamp(value, expected):
    assert parse_timestamp(value) == expected
