"""Aircall REST API v1 client: credentials check and calls by date range.

Facts relied on (``../shared/reference/aircall-api.md``):

- §1 Basic auth with API ID / API token; ``GET /v1/ping`` is the cheapest check.
- §2 ``from``/``to`` filter ``started_at ∈ (from, to]`` (from exclusive, to
  inclusive, observed), so ``[S, E)`` is asked as ``from=S-1&to=E-1`` and two
  windows ``(a, m]`` and ``(m, b]`` never share or drop a call.
- §3 a query never yields more than 10,000 items and ``page*per_page > 10000``
  is an HTTP 400: a window is split until it holds fewer than ``SPLIT_AT``
  calls; one second that alone holds 10,000 or more cannot be split and is
  reported (``WindowTooDenseError``), never truncated.
- §4 the rate limit is company-wide and its headers only come with a 429: pace
  on the client side; on 429 wait ``X-AircallApi-Reset`` (below 10⁹: seconds to
  wait; above: a UNIX time, DESIGN §2), else ``Retry-After``, else 60 s.

Everything is yielded lazily: one page of calls is in memory at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from aircall_sync import __version__
from aircall_sync.aircall.models import Call, CallParseError
from aircall_sync.errors import CredentialsError, ServiceError
from aircall_sync.http import Pacer, RetryPolicy, RetryStats, send

PER_PAGE = 50  # the documented maximum (§2); more is silently clamped
MAX_ITEMS = 10_000  # §3
MAX_PAGE = MAX_ITEMS // PER_PAGE
SPLIT_AT = 9_000  # margin under the cap: calls keep arriving while we page
DEFAULT_RATE_LIMIT_WAIT = 60.0  # "blocks your access for 60 seconds" (§4)


class AircallApiError(ServiceError):
    """Aircall refused a request (a 4xx other than 401/403/429); ``status`` says which."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class ContactsForbiddenError(AircallApiError):
    """Aircall answered 403 to a contacts request: this API key may not read or write contacts (RULES §9)."""


class WindowTooDenseError(ServiceError):
    """One second holds more calls than one Aircall query can return."""


@dataclass(frozen=True, slots=True)
class Window:
    """``started_at ∈ (after, until]`` in UNIX seconds, exactly as Aircall filters."""

    after: int
    until: int

    @property
    def seconds(self) -> int:
        return self.until - self.after


@dataclass(frozen=True, slots=True)
class BadCall:
    """A call payload that could not be used, reported with whatever id it had."""

    call_id: int | None
    reason: str


@dataclass
class FetchStats:
    pages: int = 0
    windows: int = 0
    splits: int = 0
    calls: int = 0
    duplicates_dropped: int = 0


def window_for(start: datetime, end: datetime) -> Window:
    """The Aircall window holding the calls that started in ``[start, end)``."""
    return Window(int(start.timestamp()) - 1, int(end.timestamp()) - 1)


class AircallClient:
    def __init__(
        self,
        base_url: str,
        api_id: str,
        api_token: str,
        *,
        requests_per_minute: float | None = 60,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        verify: bool | str = True,
        fetch_short_urls: bool = False,
    ):
        self.base_url = base_url.rstrip("/")
        # Short URLs only come when asked for (aircall-api.md §2); asked only when a setting writes them.
        self.fetch_short_urls = fetch_short_urls
        self.retry = retry or RetryPolicy()
        self.pacer = Pacer(requests_per_minute, sleep=self.retry.sleep)
        self.stats = RetryStats()
        self.fetch = FetchStats()
        #: Set once Aircall answered 403 to a contacts request (RULES §9): no more are sent by this client.
        self.contacts_forbidden = False
        self._clock = clock
        self._http = httpx.Client(
            auth=httpx.BasicAuth(api_id, api_token),
            timeout=timeout,
            transport=transport,
            verify=verify,
            headers={"User-Agent": f"aircall-sync/{__version__}", "Accept": "application/json"},
        )

    # -------------------------------------------------------------- plumbing

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AircallClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _rate_limit_wait(self, response: httpx.Response) -> float:
        reset = response.headers.get("X-AircallApi-Reset")
        if reset:
            try:
                value = float(reset)
            except ValueError:
                value = None
            if value is not None:
                wait = value - self._clock() if value >= 1e9 else value
                # A reset in the past (clock skew) still deserves a short pause.
                return min(max(wait, 1.0), 3600.0)
        retry_after = response.headers.get("Retry-After")
        if retry_after:
            try:
                return min(max(float(retry_after), 1.0), 3600.0)
            except ValueError:
                pass
        return DEFAULT_RATE_LIMIT_WAIT

    def _get(self, path: str, params: dict | None = None) -> dict:
        return self.request("GET", path, params=params)

    def request(self, method: str, path: str, *, params: dict | None = None, json: dict | None = None,
                once: bool = False, expect_body: bool = True) -> dict:
        """One API request under the retry contract, its JSON object back (``{}`` for a 204).

        ``once``: not sent again after a timeout or a 5xx, for a write that must not happen twice
        (creating a webhook): the caller looks before it tries again.
        """
        policy = RetryPolicy(max_attempts=1, sleep=self.retry.sleep) if once else self.retry
        response = send(
            self._http,
            method,
            f"{self.base_url}{path}",
            params=params,
            json=json,
            service="Aircall",
            pacer=self.pacer,
            policy=policy,
            stats=self.stats,
            rate_limit_wait=self._rate_limit_wait,
        )
        if response.status_code in (401, 403):
            raise CredentialsError(
                f"Aircall refused the credentials (HTTP {response.status_code}): check aircall.api_id and "
                "aircall.api_token (Dashboard > Integrations & API > API Keys)"
            )
        if response.status_code >= 400:
            raise AircallApiError(
                f"Aircall answered HTTP {response.status_code} for {method} {path}: {_error_text(response)}",
                response.status_code)
        if response.status_code == 204 or not response.content or not expect_body:
            return {}
        try:
            body = response.json()
        except ValueError:
            raise ServiceError(f"Aircall answered {method} {path} with a body that is not JSON") from None
        if not isinstance(body, dict):
            raise ServiceError(f"Aircall answered {method} {path} with unexpected JSON ({type(body).__name__})")
        return body

    # -------------------------------------------------------------- API

    def ping(self) -> None:
        """Raise ``CredentialsError`` or ``ServiceError`` unless Aircall accepts us."""
        self._get("/ping")

    def get_call(self, call_id: int) -> dict:
        params = {"fetch_contact": "true", **({"fetch_short_urls": "true"} if self.fetch_short_urls else {})}
        return self._get(f"/calls/{int(call_id)}", params).get("call") or {}

    def get_insight(self, call_id: int, endpoint: str) -> tuple[int, Any]:
        """``GET /v1/calls/:id/{endpoint}``, one of the five AI insights (reference aircall-live.md §3.1),
        paced and retried as every other request: ``(200, body)``, ``(404, None)`` (no such content for this
        call, §3.4) or ``(403, None)`` (the company has no AI package: not a credentials problem here).
        Any other refusal raises ``AircallApiError``; 401 is the credentials' ``CredentialsError``."""
        path = f"/calls/{int(call_id)}/{endpoint}"
        response = send(self._http, "GET", f"{self.base_url}{path}", service="Aircall", pacer=self.pacer,
                        policy=self.retry, stats=self.stats, rate_limit_wait=self._rate_limit_wait)
        status = response.status_code
        if status in (403, 404):
            return status, None
        if status == 401:
            raise CredentialsError("Aircall refused the credentials (HTTP 401): check aircall.api_id and "
                                   "aircall.api_token (Dashboard > Integrations & API > API Keys)")
        if status >= 400:
            raise AircallApiError(f"Aircall answered HTTP {status} for GET {path}: {_error_text(response)}", status)
        try:
            body = response.json()
        except ValueError:
            raise ServiceError(f"Aircall answered GET {path} with a body that is not JSON") from None
        return status, body

    def get_number(self, number_id: int) -> dict:
        """``GET /v1/numbers/:id``: an Aircall number (its ``name`` titles message Tasks, R-MSG-4)."""
        return self._get(f"/numbers/{int(number_id)}").get("number") or {}

    # -------------------------------------------------------------- contacts (aircall-api.md §12, RULES §9)

    def _contacts(self, method: str, path: str, *, params: dict | None = None, json: dict | None = None,
                  once: bool = False) -> tuple[int, dict]:
        """A ``/v1/contacts…`` request under the retry contract: ``(status, body)``; a 404 is ``(404, {})``.

        403 raises ``ContactsForbiddenError`` (a key that may not write contacts is not a credentials problem:
        the calls are still read); 401 the credentials' ``CredentialsError``; any other refusal
        ``AircallApiError``. ``once``: a write not sent again after a timeout or a 5xx (it may have landed).
        """
        policy = RetryPolicy(max_attempts=1, sleep=self.retry.sleep) if once else self.retry
        response = send(self._http, method, f"{self.base_url}{path}", params=params, json=json, service="Aircall",
                        pacer=self.pacer, policy=policy, stats=self.stats, rate_limit_wait=self._rate_limit_wait)
        status = response.status_code
        if status == 401:
            raise CredentialsError("Aircall refused the credentials (HTTP 401): check aircall.api_id and "
                                   "aircall.api_token (Dashboard > Integrations & API > API Keys)")
        if status == 403:
            raise ContactsForbiddenError(f"Aircall answered HTTP 403 for {method} {_contact_path(path)}: "
                                         f"{_error_text(response)}", 403)
        if status == 404:
            return 404, {}
        if status >= 400:
            raise AircallApiError(f"Aircall answered HTTP {status} for {method} {_contact_path(path)}: "
                                  f"{_error_text(response)}", status)
        if status == 204 or not response.content:
            return status, {}
        try:
            body = response.json()
        except ValueError:
            raise ServiceError(f"Aircall answered {method} {_contact_path(path)} with a body that is not JSON") from None
        return status, body if isinstance(body, dict) else {}

    def get_contact(self, contact_id: int) -> dict | None:
        """``GET /v1/contacts/:id``: the contact, or None when Aircall has no such contact (deleted)."""
        status, body = self._contacts("GET", f"/contacts/{int(contact_id)}")
        return None if status == 404 else (body.get("contact") or None)

    def search_contacts(self, *, phone_number: str | None = None, email: str | None = None) -> list[dict]:
        """``GET /v1/contacts/search`` by an E.164 number (or an e-mail): the first page, newest change first."""
        params = {"per_page": PER_PAGE, "order": "desc", "order_by": "updated_at",
                  **({"phone_number": phone_number} if phone_number else {}), **({"email": email} if email else {})}
        status, body = self._contacts("GET", "/contacts/search", params=params)
        contacts = body.get("contacts") if status != 404 else None
        return [c for c in contacts if isinstance(c, dict)] if isinstance(contacts, list) else []

    def recent_contacts(self, page: int = 1) -> tuple[list[dict], bool]:
        """``GET /v1/contacts``, one page of 50 of the contacts created last first, and whether more follow:
        where a create whose answer was lost is (a search may lag a create, §12). Aircall's order, not our clock."""
        status, body = self._contacts("GET", "/contacts", params={"order": "desc", "order_by": "created_at",
                                                                 "per_page": PER_PAGE, "page": int(page)})
        contacts = body.get("contacts") if status != 404 else None
        if not isinstance(contacts, list):
            return [], False
        return [c for c in contacts if isinstance(c, dict)], _has_next(body, page, len(contacts))

    def create_contact(self, body: dict) -> dict:
        """``POST /v1/contacts``, sent once (no upsert: a repeat would make a second contact)."""
        _status, answer = self._contacts("POST", "/contacts", json=body, once=True)
        contact = answer.get("contact")
        if not isinstance(contact, dict) or not isinstance(contact.get("id"), int):
            raise ServiceError("Aircall answered POST /v1/contacts without the contact it created")
        return contact

    def update_contact(self, contact_id: int, fields: dict) -> dict | None:
        """``POST /v1/contacts/:id`` with the scalar fields to change (not a PUT, §12); None: no such contact."""
        status, body = self._contacts("POST", f"/contacts/{int(contact_id)}", json=fields)
        return None if status == 404 else (body.get("contact") or {})

    def add_contact_detail(self, contact_id: int, kind: str, label: str, value: str) -> bool:
        """``POST /v1/contacts/:id/{phone,email}_details``, sent once (a repeat would add it twice);
        False when the contact is gone."""
        status, _ = self._contacts("POST", f"/contacts/{int(contact_id)}/{_detail(kind)}",
                                   json={"label": label, "value": value}, once=True)
        return status != 404

    def update_contact_detail(self, contact_id: int, kind: str, detail_id: int, label: str, value: str) -> bool:
        status, _ = self._contacts("PUT", f"/contacts/{int(contact_id)}/{_detail(kind)}/{int(detail_id)}",
                                   json={"label": label, "value": value})
        return status != 404

    def delete_contact_detail(self, contact_id: int, kind: str, detail_id: int) -> None:
        """A 404 is fine: the number (or the contact) is gone already."""
        self._contacts("DELETE", f"/contacts/{int(contact_id)}/{_detail(kind)}/{int(detail_id)}")

    def may_write_contacts(self) -> bool:
        """Whether this key may write contacts, asked without changing anything (``check``, RULES §9).

        An update of contact 0 (no contact has that id) with nothing in it: a key that may write gets 404 (or a
        validation error), one that may not gets 403. **decision**: no test contact is created and deleted,
        which other integrations would see (``contact.*`` webhooks) and a failure halfway would leave behind.
        """
        try:
            self._contacts("POST", "/contacts/0", json={})
        except ContactsForbiddenError:
            return False
        except AircallApiError:
            pass
        return True

    def _page(self, window: Window, page: int, per_page: int = PER_PAGE) -> dict:
        if page * per_page > MAX_ITEMS:  # §3: Aircall would answer 400
            raise ServiceError(f"refusing to ask Aircall for page {page}: beyond its 10,000-item cap")
        self.fetch.pages += 1
        return self._get(
            "/calls",
            {
                "from": window.after,
                "to": window.until,
                "order": "asc",
                "per_page": per_page,
                "page": page,
                "fetch_contact": "true",
                **({"fetch_short_urls": "true"} if self.fetch_short_urls else {}),
            },
        )

    def iter_payloads(self, start: datetime, end: datetime) -> Iterator[dict]:
        """Raw call objects that started in ``[start, end)``, each exactly once."""
        if end <= start:
            return
        yield from self._iter_window(window_for(start, end))

    def iter_calls(self, start: datetime, end: datetime, on_bad: Callable[[BadCall], None] | None = None) -> Iterator[Call]:
        """Parsed calls in ``[start, end)``; unusable payloads go to ``on_bad``."""
        for payload in self.iter_payloads(start, end):
            try:
                call = Call.parse(payload)
            except CallParseError as exc:
                if on_bad is not None:
                    on_bad(BadCall(exc.call_id, str(exc)))
                continue
            self.fetch.calls += 1
            yield call

    def _iter_window(self, window: Window) -> Iterator[dict]:
        # Depth-first, so windows are probed only as the caller consumes calls
        # and memory holds one page plus the stack of pending halves.
        pending = [window]
        while pending:
            current = pending.pop()
            first = self._page(current, 1)
            total = _meta_int(first, "total")
            if total is not None and total >= SPLIT_AT:
                if current.seconds <= 1:
                    if total >= MAX_ITEMS:
                        raise WindowTooDenseError(
                            f"{total} calls started in the single second ending at {_iso(current.until)}; "
                            "Aircall returns at most 10,000 per query, so this second cannot be read completely"
                        )
                else:
                    self.fetch.splits += 1
                    middle = current.after + current.seconds // 2
                    pending.append(Window(middle, current.until))
                    pending.append(Window(current.after, middle))
                    continue
            self.fetch.windows += 1
            yield from self._pages_of(current, first)

    def _pages_of(self, window: Window, first: dict) -> Iterator[dict]:
        seen: set[int] = set()
        page, body = 1, first
        while True:
            calls = body.get("calls")
            if not isinstance(calls, list):
                raise ServiceError("Aircall answered the call list without a 'calls' array")
            for payload in calls:
                call_id = payload.get("id") if isinstance(payload, dict) else None
                # A call whose started_at Aircall rewrote while we paged can
                # slide onto the next page: never yield it twice.
                if isinstance(call_id, int):
                    if call_id in seen:
                        self.fetch.duplicates_dropped += 1
                        continue
                    seen.add(call_id)
                yield payload
            if not _has_next(body, page, len(calls)):
                return
            page += 1
            if page > MAX_PAGE:
                raise ServiceError(
                    f"the window {_iso(window.after)}..{_iso(window.until)} grew past Aircall's 10,000-call cap "
                    "while it was being read; run again"
                )
            body = self._page(window, page)


def _detail(kind: str) -> str:
    if kind not in ("phone", "email"):
        raise ValueError(f"unknown contact detail {kind!r}")
    return f"{kind}_details"


def _contact_path(path: str) -> str:
    return "/v1" + path


def _has_next(body: dict, page: int, count: int) -> bool:
    meta = body.get("meta") if isinstance(body.get("meta"), dict) else {}
    if count == 0:
        return False
    if "next_page_link" in meta:
        return bool(meta["next_page_link"])
    # Without the link (as on /v1/webhooks), compare the position with the total.
    total = _meta_int(body, "total")
    per_page = _meta_int(body, "per_page") or PER_PAGE
    return total is not None and page * per_page < total


def _meta_int(body: dict, key: str) -> int | None:
    meta = body.get("meta")
    if isinstance(meta, dict):
        value = meta.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or "no details"
    if isinstance(body, dict):
        for key in ("errors", "message", "error", "troubleshoot"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value[:300]
    return response.reason_phrase or "no details"
