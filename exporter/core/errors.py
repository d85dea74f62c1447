"""Errors a source raises, each with a bounded ``reason`` used as a metric label.

The daemon catches these around every poll: the source is marked down, the
reason is counted in ``platform_exporter_source_errors_total{reason}``, and the
other sources carry on.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager

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
    "state",
    "internal",
    "deadline",
)


class StartupError(Exception):
    """The daemon cannot start. ``str()`` is one line naming the field and the path.

    ``exit_code`` is 2 when the configuration names something unusable (a directory as
    the state file, a path on a kernel pseudo-filesystem, an address that is not one)
    and 1 when the environment is at fault (a read-only mount, a corrupt file, a state
    file from a newer release, a port already taken).
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class SourceError(Exception):
    """A poll failed for a reason the source understood."""

    reason = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)


class MissingExtra(SourceError):
    """The config asks for a feature whose optional dependency is not installed."""

    reason = "config"


@contextmanager
def needs_extra(extra: str, feature: str) -> Iterator[None]:
    """Around the import of an optional dependency: without it, the poll fails with reason
    ``config`` and a message naming the extra to install, not with a traceback."""
    try:
        yield
    except ImportError as exc:
        raise MissingExtra(
            f"{feature} needs {exc.name or 'an optional package'}: "
            f"pip install 'platform-kpi-exporter[{extra}]'"
        ) from None


class AuthError(SourceError):
    """The upstream refused our credentials (401, or 403 without a rate limit)."""

    reason = "auth"


class RateLimited(SourceError):
    """The upstream asked us to slow down; ``retry_after`` is in seconds if it said."""

    reason = "rate_limited"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(SourceError):
    """The poll was still running at its deadline and was cancelled (its commits stay)."""

    reason = "deadline"


class UpstreamStatusError(SourceError):
    """The upstream answered with an unexpected HTTP status."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.reason = "http_5xx" if status_code >= 500 else "http_4xx"


class MalformedResponse(SourceError):
    """The upstream answered 2xx but the body could not be understood."""

    reason = "malformed"


class StateError(SourceError):
    """The state database refused a write or a read (disk full, locked, I/O error).

    Nothing of the failed transaction was kept, on disk or in memory; the next poll
    starts again from the last committed cursors.
    """

    reason = "state"


class StoreBusy(StateError):
    """A write that asked not to wait found another write of this process in progress."""


# SQLite's primary result codes that say the database or its disk failed, not our SQL:
# full, busy or locked, I/O errors, read-only, corrupt, cannot open, not a database,
# out of memory, permission denied, locking protocol. Extended codes add bits above 8.
_ENVIRONMENT_CODES = frozenset({3, 5, 6, 7, 8, 10, 11, 13, 14, 15, 26})


def state_failure(exc: BaseException) -> bool:
    """True when ``exc`` is SQLite failing for its environment (disk full, locked, I/O).

    A syntax error, a missing table or a constraint violation is a bug and stays one.
    """
    if isinstance(exc, StateError):
        return True
    if not isinstance(exc, sqlite3.Error):
        # The PostgreSQL backend's failures (imported only when a store uses it).
        pg = sys.modules.get("exporter.core.backend_postgres")
        return pg is not None and bool(pg.state_failure(exc))
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and (code & 0xFF) in _ENVIRONMENT_CODES


def classify(exc: BaseException) -> str:
    """Map any exception raised during a poll to a bounded error reason."""
    if isinstance(exc, SourceError):
        return exc.reason
    if state_failure(exc):
        return "state"
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
