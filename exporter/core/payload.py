"""Reading an upstream's JSON answer: its body and its timestamps.

A body or a timestamp that cannot be read is the upstream's fault, so both raise
:class:`~exporter.core.errors.MalformedResponse`, which marks the source down as
``malformed`` without crashing the poll's caller.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from exporter.core.errors import MalformedResponse


def parse_time(value: Any) -> float:
    """Unix seconds from an ISO 8601 timestamp (``Z`` or an offset)."""
    if not isinstance(value, str) or not value:
        raise MalformedResponse(f"expected an ISO 8601 timestamp, got {value!r}")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise MalformedResponse(f"invalid timestamp {value!r}") from None


def body_of(response: httpx.Response) -> Any:
    """The JSON body, or :class:`MalformedResponse` naming the URL (without its query)."""
    try:
        return response.json()
    except ValueError as exc:
        url = response.request.url.copy_with(query=None)
        raise MalformedResponse(f"invalid JSON from {url}: {exc}") from None
