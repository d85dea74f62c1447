"""What a verified webhook delivery says: the records it brings, or why it brings none.

A delivery's body is parsed into the delivery domain's own records
(:class:`~exporter.domains.delivery.records.Deployment`,
:class:`~exporter.domains.delivery.records.PipelineRun`) through the same mapping the
pollers use, so an event and the poll of the same object yield the same key and the
store counts it once. A body that is not the event it says it is raises
:class:`~exporter.core.webhooks.Malformed` (answered 400, nothing stored); an event about something the
config does not read (another repo, a run still going) is *ignored*: accepted, and
nothing stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from exporter.core.errors import MalformedResponse
from exporter.core.webhooks import Malformed, json_body
from exporter.domains.delivery.records import Deployment, PipelineRun
from exporter.domains.delivery.settings import DeliveryConfig

Record = Deployment | PipelineRun


@dataclass(frozen=True)
class Hook:
    """One upstream's webhook: the source kind it feeds, the header naming the event, the
    parser, and the headers naming the delivery (the first one present is its id)."""

    kind: str
    event_header: str
    parse: Callable[[str, bytes, Scope], Event]
    delivery_headers: tuple[str, ...]


@dataclass(frozen=True)
class Event:
    """The records of one delivery; ``ignored`` says why there are none."""

    records: tuple[Record, ...] = ()
    ignored: str | None = None


def ignored(reason: str) -> Event:
    return Event((), reason)


class Scope(Protocol):
    """What the parsers need of the config and the store (see :mod:`.scope`)."""

    rules: DeliveryConfig

    def unit(self, kind: str, name: str) -> tuple[str, str] | None:
        """(the poll's name of a repo or project the ``kind`` source reads, its service),
        or None when that source does not read it."""

    def deploy_workflows(self, kind: str) -> list[str]:
        """Name patterns of the workflows whose runs are deployments (GitHub)."""

    def uses_deployments(self, kind: str, name: str) -> bool | None:
        """Whether the poll found the repo to use GitHub Deployments (None: not polled yet)."""


def json_object(body: bytes) -> dict[str, Any]:
    """The JSON object of a body, or :class:`~exporter.core.webhooks.Malformed`."""
    value = json_body(body)
    if not isinstance(value, dict):
        raise Malformed("the body is not a JSON object")
    return value


def parsed(what: str, build: Callable[[], Event]) -> Event:
    """``build()``, with a missing or mistyped field of the body as ``Malformed``."""
    try:
        return build()
    except Malformed:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, MalformedResponse) as exc:
        raise Malformed(f"unexpected {what} body: {type(exc).__name__}: {exc}") from None
