"""Front Core API client: the requests the Front target sends, under one retry contract.

Facts relied on (``../shared/reference/front-api.md``):

- §1 bearer token; ``GET /me`` needs no scope (the token check); the limit is
  per company and low (50–200/min): pace at ``front.requests_per_minute``. A
  429 carries ``retry-after`` in seconds, possibly fractional (parse it as a
  float), and may come as a burst limit while ``x-ratelimit-remaining`` is
  still positive: both are waited out the same way.
- §2 contacts by alias ``alt:phone:+E164``; a create whose handle exists is 409.
- §3 imported messages answer 202 with a ``message_uid`` resolved through
  ``GET /messages/alt:uid:{uid}``; comments 201; PATCH conversation 204; a
  merged conversation answers 301 to the one it was merged into (§7): followed.
- §4 lists are ``{_results, _pagination.next}``: ``next`` is followed as given.
- §6 errors are ``{"_error": {status, title, message, details?}}``, sometimes
  with only ``message``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx

from aircall_sync import __version__
from aircall_sync.errors import CredentialsError, ServiceError
from aircall_sync.http import Pacer, RetryPolicy, RetryStats, send


class FrontError(ServiceError):
    """Front refused a request; ``status`` is its HTTP status."""

    def __init__(self, message: str, status: int):
        self.status = status
        super().__init__(message)


def alias(source: str, handle: str) -> str:
    """A resource alias for a path segment (``alt:phone:+33…``); the ``+`` is percent-encoded once."""
    return quote(f"alt:{source}:{handle}", safe=":@")


class FrontClient:
    def __init__(
        self,
        base_url: str,
        api_token: str,
        *,
        requests_per_minute: float | None = 50,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        verify: Any = True,
    ):
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.pacer = Pacer(requests_per_minute, sleep=self.retry.sleep)
        self.stats = RetryStats()
        self.by_kind: dict[str, int] = {}
        self._http = httpx.Client(
            headers={"Authorization": f"Bearer {api_token}", "Accept": "application/json",
                     "User-Agent": f"aircall-sync/{__version__}"},
            timeout=timeout, transport=transport, verify=verify,
            follow_redirects=False,  # 301s (merged conversations, §7) are followed in _call
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FrontClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ plumbing

    @staticmethod
    def _retry_after(response: httpx.Response) -> float:
        value = response.headers.get("retry-after")
        try:
            wait = float(value) if value is not None else None
        except ValueError:
            wait = None
        if wait is None:
            reset = response.headers.get("x-ratelimit-reset")
            try:
                wait = float(reset) - time.time() if reset else 1.0
            except ValueError:
                wait = 1.0
        # Burst limits ask for fractions of a second; never spin, never sleep for ages.
        return min(max(wait, 0.05), 120.0)

    def _call(self, method: str, path: str, *, kind: str, expect: tuple[int, ...] = (200,), **kwargs) -> httpx.Response:
        url = path if path.startswith("http") else f"{self.base_url}{path}"
        for _ in range(3):
            self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
            response = send(self._http, method, url, service="Front", pacer=self.pacer, policy=self.retry,
                            stats=self.stats, rate_limit_wait=self._retry_after, **kwargs)
            # A merged conversation answers 301 (§7). httpx would turn a redirected POST into a GET,
            # so the same request is sent again, as it was, to where the conversation now lives.
            if response.status_code in (301, 302, 307, 308) and response.headers.get("location"):
                url = str(response.url.join(response.headers["location"]))
                continue
            break
        if response.status_code in expect:
            return response
        message = _error_message(response)
        if response.status_code == 401:
            raise CredentialsError(f"Front refused the API token (HTTP 401: {message}); check front.api_token "
                                   "(Settings > Developers > API tokens)")
        raise FrontError(f"Front answered HTTP {response.status_code} for {method} {_path(url)}: {message}",
                         response.status_code)

    def _json(self, method: str, path: str, *, kind: str, expect=(200,), **kwargs) -> Any:
        response = self._call(method, path, kind=kind, expect=expect, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ServiceError(f"Front answered {method} {_path(path)} with a body that is not JSON") from None

    def _list(self, path: str, *, kind: str, params: dict | None = None) -> Iterator[dict]:
        body = self._json("GET", path, kind=kind, params={"limit": 100, **(params or {})})
        while True:
            yield from body.get("_results", []) or []
            next_url = (body.get("_pagination") or {}).get("next")
            if not next_url:
                return
            body = self._json("GET", next_url, kind=kind)

    # ------------------------------------------------------------ API

    def me(self) -> dict:
        return self._json("GET", "/me", kind="me")

    def inboxes(self) -> list[dict]:
        return list(self._list("/inboxes", kind="inboxes"))

    def teammates(self) -> list[dict]:
        return list(self._list("/teammates", kind="teammates"))

    def create_contact(self, e164: str, name: str | None) -> tuple[int, dict | None]:
        """(201, contact) when created; (409, {"id"} or None) when the handle already has a contact.

        Front's 409 names the contact ("…conflict with the contact(s): crd_123", reference §2):
        its id is taken from there, sparing a lookup; None when the message does not say.
        """
        body: dict[str, Any] = {"handles": [{"source": "phone", "handle": e164}]}
        if name:
            body["name"] = name
        response = self._call("POST", "/contacts", kind="contacts", expect=(200, 201, 409), json=body)
        if response.status_code == 409:
            found = re.search(r"\b(crd_[A-Za-z0-9]+)", _error_message(response))
            return 409, ({"id": found.group(1)} if found else None)
        return response.status_code, response.json()

    def get_contact(self, e164: str) -> dict | None:
        response = self._call("GET", f"/contacts/{alias('phone', e164)}", kind="contacts", expect=(200, 404))
        return response.json() if response.status_code == 200 else None

    def contact_conversations(self, contact: str) -> list[dict]:
        return list(self._list(f"/contacts/{contact}/conversations", kind="conversations"))

    def conversation(self, conversation_id: str) -> dict | None:
        response = self._call("GET", f"/conversations/{conversation_id}", kind="conversations", expect=(200, 404))
        return response.json() if response.status_code == 200 else None

    def update_conversation(self, conversation_id: str, **fields: Any) -> None:
        self._call("PATCH", f"/conversations/{conversation_id}", kind="conversations", expect=(200, 204), json=fields)

    def import_message(self, inbox_id: str, message: dict) -> str | None:
        body = self._json("POST", f"/inboxes/{inbox_id}/imported_messages", kind="imports", expect=(200, 201, 202),
                          json=message)
        return (body or {}).get("message_uid")

    def message_by_uid(self, uid: str) -> dict | None:
        response = self._call("GET", f"/messages/{quote('alt:uid:' + uid, safe=':')}", kind="messages",
                              expect=(200, 404))
        return response.json() if response.status_code == 200 else None

    def comments(self, conversation_id: str) -> list[dict]:
        return list(self._list(f"/conversations/{conversation_id}/comments", kind="comments"))

    def add_comment(self, conversation_id: str, body: str, author_id: str | None) -> dict:
        payload: dict[str, Any] = {"body": body}
        if author_id:
            payload["author_id"] = author_id
        return self._json("POST", f"/conversations/{conversation_id}/comments", kind="comments",
                          expect=(200, 201), json=payload)


def conversation_id_of(message: dict) -> str | None:
    """The conversation a message belongs to, from ``_links.related.conversation`` (§3a)."""
    link = (((message or {}).get("_links") or {}).get("related") or {}).get("conversation") or ""
    return link.rstrip("/").rsplit("/", 1)[-1] or None


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or "no details"
    error = body.get("_error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        text = error.get("message") or error.get("title") or ""
        details = error.get("details")
        if isinstance(details, list) and details:
            text += " (" + "; ".join(str(d) for d in details[:3]) + ")"
        return text[:500] or response.reason_phrase
    return response.reason_phrase or "no details"


def _path(url: str) -> str:
    return httpx.URL(url).path
