"""Errors a source raises, each with a bounded ``reason`` used as a metric label.

The daemon catches these around every poll: the source is marked down, the
reason is counted in ``platform_exporter_source_errors_total{reason}``, and the
other sources carry on.
"""

from __future__ import annotations

import httpx

# Every value the ``reason`` label of platform_exporter_source_errors_total can take.
ERROR_REASONS = (
    "auth",
    "rate_limited",
    "http_4xx",
    "http_5xx",
    "timeout",
    "connect",
    "malformed",
    "config",
    "internal",
)


class SourceError(Exception):
    """A poll failed for a reason the source understood."""

    reason = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)


class AuthError(SourceError):
    """The upstream refused our credentials (401, or 403 without a rate limit)."""

    reason = "auth"


class RateLimited(SourceError):
    """The upstream asked us to slow down; ``retry_after`` is in seconds if it said."""

    reason = "rate_limited"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamStatusError(SourceError):
    """The upstream answered with an unexpected HTTP status."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.reason = "http_5xx" if status_code >= 500 else "http_4xx"


class MalformedResponse(SourceError):
    """The upstream answered 2xx but the body could not be understood."""

    reason = "malformed"


def classify(exc: BaseException) -> str:
    """Map any exception raised during a poll to a bounded error reason."""
    if isinstance(exc, SourceError):
        return exc.reason
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return "timeout"
    if isinstance(exc, httpx.ConnectError | ConnectionError):
        return "connect"
    if isinstance(exc, httpx.HTTPStatusError):
        return "http_5xx" if exc.response.status_code >= 500 else "http_4xx"
    if isinstance(exc, httpx.DecodingError | ValueError):
        # json.JSONDecodeError is a ValueError: a truncated body lands here.
        return "malformed"
    if isinstance(exc, httpx.TransportError):
        return "connect"
    return "internal"
