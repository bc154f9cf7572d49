"""The Aircall source: the API client and the Call model."""

from aircall_sync.aircall.client import AircallClient, BadCall, WindowTooDenseError
from aircall_sync.aircall.models import Call, CallParseError

__all__ = ["AircallClient", "BadCall", "Call", "CallParseError", "WindowTooDenseError"]
