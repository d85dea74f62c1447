"""Log records that say which poll they belong to, and the ``--log-format json`` formatter.

:func:`per_poll` wraps the daemon's poll of one source: while it runs, every record
logged in its task (the source's own, httpx's, the store's, threads it starts) carries
the source's name and kind and a poll id, fresh for each poll, so the lines of one
slow poll can be picked out of many. :class:`JsonFormatter` writes each record as one
JSON object on one line::

    {"time": "2027-03-01T00:05:00.123Z", "level": "ERROR", "logger": "exporter.daemon",
     "message": "source github: poll failed (timeout): ...", "source": "github",
     "kind": "github", "poll_id": "3f2a9c61d0b47e85", "duration_seconds": 10.004}

It formats what the redaction filter (:mod:`exporter.core.redact`, on every handler)
left: the message and traceback are already redacted, escaped and capped; the fields
it adds are redacted here too.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from functools import wraps
from typing import Any, Protocol, TypeVar

from exporter.core.clock import utc_datetime
from exporter.core.redact import REDACTOR

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")
# Fields a record may carry through ``extra=``, written when present.
EXTRA_FIELDS = ("duration_seconds",)


@dataclass(frozen=True)
class PollTag:
    """The poll a record was logged in."""

    source: str
    kind: str
    poll_id: str


CURRENT_POLL: ContextVar[PollTag | None] = ContextVar("current_poll", default=None)


class NamedSource(Protocol):
    """What a poll wrapper reads of a source: its name and kind."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...


S = TypeVar("S")
R = TypeVar("R")
Src = TypeVar("Src", bound=NamedSource)


def per_poll(
    poll: Callable[[S, Src], Awaitable[R]],
) -> Callable[[S, Src], Awaitable[R]]:
    """Decorate ``poll(self, source)``: records logged while it runs carry a fresh poll id."""

    @wraps(poll)
    async def tagged(self: S, src: Src) -> R:
        token = CURRENT_POLL.set(PollTag(src.name, src.kind, secrets.token_hex(8)))
        try:
            return await poll(self, src)
        finally:
            CURRENT_POLL.reset(token)

    return tagged


class PollFilter(logging.Filter):
    """A handler filter that copies the current poll's tag onto the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        tag = CURRENT_POLL.get()
        if tag is not None and not hasattr(record, "poll_id"):
            record.source, record.kind, record.poll_id = tag.source, tag.kind, tag.poll_id
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": utc_datetime(record.created)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("source", "kind", "poll_id"):
            value = getattr(record, key, None)
            if isinstance(value, str):
                out[key] = REDACTOR.text(value)
        for key in EXTRA_FIELDS:
            value = getattr(record, key, None)
            if isinstance(value, int | float):
                out[key] = round(value, 6)
        if record.exc_info and not record.exc_text:
            # The redaction filter fills exc_text; a handler without it still gets no secret.
            record.exc_text = REDACTOR.text(self.formatException(record.exc_info))
        if record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


def configure(handler: logging.Handler, log_format: str) -> None:
    """Give ``handler`` the formatter of ``log_format`` and the poll tags."""
    if log_format not in FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {', '.join(FORMATS)}")
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    if not any(isinstance(f, PollFilter) for f in handler.filters):
        handler.addFilter(PollFilter())
