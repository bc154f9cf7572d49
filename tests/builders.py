"""Hand-made Aircall call payloads for the unit tests (shapes from aircall-api.md §5-6)."""

from __future__ import annotations

import copy
from typing import Any

T0 = 1_790_603_050  # 2026-09-28T13:44:10Z, a Monday


def user(uid: int = 2078847, name: str = "Alex Martin", email: str = "alex.martin@example.com") -> dict:
    return {
        "id": uid,
        "direct_link": f"https://api.aircall.io/v1/users/{uid}",
        "name": name,
        "email": email,
        "available": True,
        "availability_status": "available",
        "created_at": "2026-01-28T10:21:09.000Z",
        "time_zone": "Etc/UTC",
        "language": "en-US",
    }


NUMBER = {
    "id": 1389850,
    "direct_link": "https://api.aircall.io/v1/numbers/1389850",
    "name": "Support US",
    "digits": "+1 984-314-0278",
    "country": "US",
    "time_zone": "America/Chicago",
}

BASE: dict[str, Any] = {
    "id": 4186780376,
    "sid": "CA2384f2d631dfb2d1bf831a227605ee91",
    "direct_link": "https://api.aircall.io/v1/calls/4186780376",
    "direction": "inbound",
    "status": "done",
    "missed_call_reason": None,
    "started_at": T0,
    "answered_at": T0 + 12,
    "ended_at": T0 + 100,
    "duration": 100,
    "archived": False,
    "cost": "0.0",
    "voicemail": None,
    "recording": None,
    "asset": None,
    "recording_short_url": None,
    "voicemail_short_url": None,
    "raw_digits": "+1 617-610-5413",
    "user": user(),
    "contact": None,
    "assigned_to": None,
    "transferred_by": None,
    "transferred_to": None,
    "comments": [],
    "number": NUMBER,
    "teams": [],
    "tags": [],
}


def call_payload(**overrides: Any) -> dict:
    payload = copy.deepcopy(BASE)
    payload.update(overrides)
    return payload
