"""What every emulated Aircall endpoint shares: the error body and list paging.

Split out of :mod:`.aircall_api` so that the webhook endpoints
(:mod:`.aircall_webhooks`) answer errors and page lists exactly like the call
endpoints do, without the two modules importing each other.
References: ``shared/reference/aircall-api.md`` (§N below).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

if TYPE_CHECKING:
    from aircall_sync.sandbox.server import Request

__all__ = [
    "CAP_ERROR_BODY",
    "DEFAULT_PER_PAGE",
    "MAX_PER_PAGE",
    "MAX_RECORDS",
    "error_body",
    "int_or",
    "list_meta",
    "page_link",
    "page_params",
]

DEFAULT_PER_PAGE = 20     # §2
MAX_PER_PAGE = 50         # §2, §3: larger values are clamped, not refused
MAX_RECORDS = 10_000      # §3: "the cap also applies to /v1/tags and every other list"

# §3 / aircall/error-10k-cap-400.json, byte for byte in content.
CAP_ERROR_BODY: dict[str, Any] = {
    "error": "Bad Request",
    "data": None,
    "message": "BAD_REQUEST",
    "errors": "Your query is limited to 10k results and pagination is out of bound, please use timestamps or other filters.",
    "troubleshoot": "BAD_REQUEST",
    "success": False,
}


def error_body(status: int, errors: str) -> dict[str, Any]:
    """An error in the one shape observed on the wire (§1, the 400 of the cap).

    Only the 400 body was captured; other statuses reuse its keys with the
    matching reason phrase, which is what clients that read ``message`` /
    ``error`` / ``errors`` need.
    """
    reason = {
        400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
        405: "Method Not Allowed", 422: "Unprocessable Entity", 429: "Too Many Requests",
        500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
        504: "Gateway Timeout",
    }.get(status, "Error")
    code = reason.upper().replace(" ", "_")
    return {"error": reason, "data": None, "message": code, "errors": errors,
            "troubleshoot": code, "success": False}


def int_or(value: str | None, default: int) -> int:
    """Lenient integer parsing for page / per_page, as Rails-style ``to_i`` does."""
    if value is None:
        return default
    try:
        return int(value.strip())
    except ValueError:
        return default


def page_params(query: dict[str, str]) -> tuple[int, int, bool]:
    """``(page, per_page, over_cap)`` of a list request (§2, §3).

    ``per_page`` defaults to 20 and is clamped to 50 silently; ``over_cap``
    is true when ``page * per_page > 10000``, which Aircall refuses with
    :data:`CAP_ERROR_BODY` before looking at anything else.
    """
    page = max(1, int_or(query.get("page"), 1))
    per_page = int_or(query.get("per_page"), DEFAULT_PER_PAGE)
    if per_page < 1:
        per_page = DEFAULT_PER_PAGE
    per_page = min(per_page, MAX_PER_PAGE)
    return page, per_page, page * per_page > MAX_RECORDS


def page_link(request: Request, path: str, page: int, per_page: int) -> str:
    """An absolute page link that keeps the caller's parameters in their order,
    with ``page`` and ``per_page`` set to the effective values (§3 example:
    ``?page=2&per_page=20``)."""
    items: list[tuple[str, str]] = []
    seen_page = seen_pp = False
    for k, v in request.query_items:
        if k == "page":
            if not seen_page:
                items.append(("page", str(page)))
            seen_page = True
        elif k == "per_page":
            if not seen_pp:
                items.append(("per_page", str(per_page)))
            seen_pp = True
        else:
            items.append((k, v))
    if not seen_page:
        items.insert(0, ("page", str(page)))
    if not seen_pp:
        items.insert(1 if not seen_page else len(items), ("per_page", str(per_page)))
    return f"{request.base_url}{path}?{urlencode(items)}"


def list_meta(request: Request, path: str, *, count: int, total: int, page: int, per_page: int) -> dict[str, Any]:
    """``meta`` of a call or contact list (§3): counts and absolute links, ``null`` past either end."""
    last_page = max(1, -(-total // per_page))
    return {
        "count": count,
        "total": total,
        "current_page": page,
        "per_page": per_page,
        "next_page_link": page_link(request, path, page + 1, per_page) if page < last_page else None,
        "previous_page_link": page_link(request, path, page - 1, per_page) if page > 1 else None,
    }
