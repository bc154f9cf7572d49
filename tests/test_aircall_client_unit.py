"""The Aircall client's contract, on a scripted transport (the sandbox tests cover it over HTTP)."""

from __future__ import annotations

import bisect
from datetime import UTC, datetime
from urllib.parse import parse_qs

import httpx
import pytest

from aircall_sync.aircall.client import AircallClient, Window, WindowTooDenseError, window_for
from aircall_sync.errors import CredentialsError, ServiceError
from aircall_sync.http import RetryPolicy


class Recorder:
    def __init__(self):
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def client_for(handler, recorder: Recorder | None = None, now: float = 1_800_000_000.0) -> AircallClient:
    recorder = recorder or Recorder()
    policy = RetryPolicy(max_attempts=4, base_delay=0.5, sleep=recorder.sleep)
    return AircallClient(
        "https://aircall.test/v1", "id", "s3cr3t-T0KEN", requests_per_minute=None, retry=policy,
        transport=httpx.MockTransport(handler), clock=lambda: now,
    )


def fake_calls(started: list[int]):
    """A handler listing calls at the given (sorted) start seconds with Aircall's (from, to] filter and 10k cap."""
    seen_pages = []

    def handler(request: httpx.Request) -> httpx.Response:
        q = {k: v[0] for k, v in parse_qs(request.url.query.decode()).items()}
        page, per_page = int(q["page"]), min(int(q["per_page"]), 50)
        if page * per_page > 10_000:
            return httpx.Response(400, json={"errors": "Your query is limited to 10k results"})
        seen_pages.append(page)
        lo, hi = bisect.bisect_right(started, int(q["from"])), bisect.bisect_right(started, int(q["to"]))
        first = lo + (page - 1) * per_page
        calls = [{"id": 1000 + i, "started_at": started[i], "direction": "inbound", "status": "done"}
                 for i in range(first, min(first + per_page, hi))]
        total = hi - lo
        more = page * per_page < total
        return httpx.Response(200, json={"calls": calls, "meta": {
            "total": total, "count": len(calls), "current_page": page, "per_page": per_page,
            "next_page_link": "https://next" if more else None, "previous_page_link": None}})

    handler.pages = seen_pages
    return handler


def test_window_for_asks_the_exclusive_from_and_inclusive_to():
    start, end = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)
    w = window_for(start, end)
    assert (w.after, w.until) == (int(start.timestamp()) - 1, int(end.timestamp()) - 1)


def test_calls_on_both_edges_of_a_range_are_read_once():
    start = datetime(2026, 3, 1, tzinfo=UTC)
    s = int(start.timestamp())
    starts = [s - 1, s, s + 1, s + 86399, s + 86400]
    client = client_for(fake_calls(starts))
    got = [c.started_at for c in client.iter_calls(start, datetime(2026, 3, 2, tzinfo=UTC))]
    assert [int(g.timestamp()) for g in got] == [s, s + 1, s + 86399]


def test_a_large_range_is_split_until_each_window_is_under_the_cap():
    s = 1_790_000_000
    starts = sorted(s + (i * 7) % 86400 for i in range(23_000))
    handler = fake_calls(starts)
    client = client_for(handler)
    start = datetime.fromtimestamp(s, UTC)
    ids = [c.id for c in client.iter_calls(start, datetime.fromtimestamp(s + 86400, UTC))]
    assert len(ids) == len(starts)
    assert max(handler.pages) <= 200
    assert client.fetch.splits >= 2


def test_a_single_second_over_the_cap_is_reported_not_truncated():
    s = 1_790_000_000
    handler = fake_calls([s + 5] * 10_001)
    client = client_for(handler)
    with pytest.raises(WindowTooDenseError) as err:
        list(client.iter_payloads(datetime.fromtimestamp(s, UTC), datetime.fromtimestamp(s + 60, UTC)))
    assert "10001 calls started in the single second ending at 2026-09-21T14:13:25Z" in str(err.value)


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({"X-AircallApi-Reset": "1800000030"}, 30.0),  # a UNIX time
        ({"X-AircallApi-Reset": "12"}, 12.0),  # seconds to wait
        ({"X-AircallApi-Reset": "1799999000"}, 1.0),  # in the past: a short pause, not a negative one
        ({"Retry-After": "7"}, 7.0),
        ({"X-AircallApi-Reset": "garbage"}, 60.0),
        ({}, 60.0),
    ],
)
def test_429_waits_what_aircall_says(headers, expected):
    responses = iter([httpx.Response(429, headers=headers), httpx.Response(200, json={"ping": "pong"})])
    recorder = Recorder()
    client = client_for(lambda r: next(responses), recorder)
    client.ping()
    assert recorder.sleeps == [expected]
    assert client.stats.rate_limited == 1


def test_5xx_and_dropped_connections_back_off_then_succeed():
    script = [httpx.Response(503), httpx.ConnectError("reset"), httpx.Response(500), httpx.Response(200, json={})]

    def handler(request):
        item = script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    recorder = Recorder()
    client = client_for(handler, recorder)
    client.ping()
    assert len(recorder.sleeps) == 3
    assert all(0 <= d <= 0.5 * 2 ** i for i, d in enumerate(recorder.sleeps))
    assert client.stats.server_errors == 2 and client.stats.transport_errors == 1


def test_5xx_retries_are_bounded():
    client = client_for(lambda r: httpx.Response(502))
    with pytest.raises(ServiceError) as err:
        client.ping()
    assert str(err.value) == "Aircall answered HTTP 502 4 times in a row for GET /v1/ping; try again later"


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials(status):
    client = client_for(lambda r: httpx.Response(status, json={"error": "Unauthorized"}))
    with pytest.raises(CredentialsError) as err:
        client.ping()
    assert "s3cr3t-T0KEN" not in str(err.value)
    assert str(err.value).startswith(f"Aircall refused the credentials (HTTP {status})")


def test_other_4xx_is_final_with_aircalls_message():
    client = client_for(lambda r: httpx.Response(422, json={"message": "UNPROCESSABLE", "errors": "bad from"}))
    with pytest.raises(ServiceError) as err:
        client.ping()
    assert str(err.value) == "Aircall answered HTTP 422 for GET /ping: bad from"


def test_a_call_repeated_on_the_next_page_is_yielded_once():
    pages = {
        1: [{"id": 1, "started_at": 10}, {"id": 2, "started_at": 11}],
        2: [{"id": 2, "started_at": 12}, {"id": 3, "started_at": 13}],
    }

    def handler(request):
        page = int(request.url.params["page"])
        return httpx.Response(200, json={"calls": pages[page], "meta": {
            "total": 4, "next_page_link": "x" if page == 1 else None}})

    client = client_for(handler)
    ids = [p["id"] for p in client._iter_window(Window(0, 100))]
    assert ids == [1, 2, 3]
    assert client.fetch.duplicates_dropped == 1


def test_unusable_calls_are_reported_with_their_id():
    def handler(request):
        return httpx.Response(200, json={"calls": [
            {"id": 5, "started_at": 10}, {"id": 6, "started_at": "never"}, {"started_at": 12}],
            "meta": {"total": 3, "next_page_link": None}})

    bad = []
    client = client_for(handler)
    calls = list(client.iter_calls(datetime.fromtimestamp(0, UTC), datetime.fromtimestamp(100, UTC), bad.append))
    assert [c.id for c in calls] == [5]
    assert [b.call_id for b in bad] == [6, None]


# ---------------------------------------------------------------- contacts (RULES §9, aircall-api.md §12)


def test_contact_requests_share_the_pacer_with_the_call_reads():
    """DESIGN §5: Aircall's limit is company-wide, so contact requests wait their turn like the call pages."""
    recorder = Recorder()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/contacts/search"):
            return httpx.Response(200, json={"contacts": [], "meta": {"total": 0}})
        return httpx.Response(200, json={"calls": [], "meta": {"total": 0, "next_page_link": None}})

    client = AircallClient("https://aircall.test/v1", "id", "t", requests_per_minute=60,
                           retry=RetryPolicy(sleep=recorder.sleep), transport=httpx.MockTransport(handler))
    client.pacer._clock = lambda: 0.0  # no time passes between requests
    client.pacer._sleep = recorder.sleep
    list(client.iter_payloads(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)))
    client.search_contacts(phone_number="+16176105413")
    client.may_write_contacts()
    assert recorder.sleeps == [1.0, 2.0]  # each one a second (60/min) after the one before, whatever its kind
    assert client.stats.requests == 3


def test_contact_answers_403_404_and_refusals():
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/contacts/0":
            return httpx.Response(403, json={"message": "Forbidden"})
        if path == "/v1/contacts/7":
            return httpx.Response(404, json={"message": "Not Found"})
        if path == "/v1/contacts/search":
            assert request.url.query.decode().count("phone_number=%2B33176111111") == 1  # + sent as %2B (§12)
            return httpx.Response(200, json={"contacts": [{"id": 9}], "meta": {"total": 1}})
        if path == "/v1/contacts" and request.method == "POST":
            return httpx.Response(400, json={"error": "Bad Request", "errors": "phone_numbers can't be blank"})
        return httpx.Response(500)

    from aircall_sync.aircall.client import AircallApiError, ContactsForbiddenError

    client = client_for(handler)
    assert client.may_write_contacts() is False
    with pytest.raises(ContactsForbiddenError, match="HTTP 403 for POST /v1/contacts/0"):
        client.update_contact(0, {"first_name": "x"})
    assert client.get_contact(7) is None
    assert client.search_contacts(phone_number="+33176111111") == [{"id": 9}]
    with pytest.raises(AircallApiError, match="phone_numbers can't be blank") as refused:
        client.create_contact({"first_name": "x"})
    assert refused.value.status == 400


def test_a_contact_create_is_sent_once_even_after_a_5xx():
    """Aircall has no upsert (§12): a create whose answer is a 5xx or lost is not sent again by the client."""
    sent = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.method)
        return httpx.Response(502)

    client = client_for(handler)
    with pytest.raises(ServiceError):
        client.create_contact({"phone_numbers": [{"label": "Work", "value": "+33176111111"}]})
    assert sent == ["POST"]
    with pytest.raises(ServiceError):
        client.add_contact_detail(5, "phone", "Work", "+33176111111")
    assert sent == ["POST", "POST"]
    with pytest.raises(ServiceError):
        client.get_contact(5)  # a read is retried as usual
    assert sent.count("GET") == 4
