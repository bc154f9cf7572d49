"""What every emulated Aircall endpoint shares: the error body and list paging.

Split out of :mod:`.aircall_api` so that the webhook endpoints
(:mod:`.aircall_webhooks`) answer errors and page lists exactly like the call
endpoints do, without the two modules importing each other.
References: ``shared/reference/aircall-api.md`` (§N below).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CAP_ERROR_BODY",
    "DEFAULT_PER_PAGE",
    "MAX_PER_PAGE",
    "MAX_RECORDS",
    "error_body",
    "int_or",
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
