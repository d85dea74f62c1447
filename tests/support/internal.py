"""The suite's guard on reason ``internal``: it is kept for real bugs, so no test may
see it unless it says so (``@pytest.mark.internal_reason``, for a test that provokes a
bug on purpose to check how it is reported).

In this process every poll's verdict goes through ``SourceHealth.poll_failed``, which the
guard watches; an exporter run as a subprocess (``DaemonProcess``, ``DemoProcess``,
``run_cli``) logs ``poll failed (internal)`` for each, which the helpers hand to
:func:`note_log` when they are done with it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from exporter.core.health import SourceHealth

_LINE = re.compile(r"poll failed \(internal\)")

# One list per open watch; only the innermost records (the guard's own test opens one).
_active: list[list[str]] = []


def _record(entry: str) -> None:
    if _active:
        _active[-1].append(entry)


def note_log(what: str, text: str) -> None:
    """Record every ``poll failed (internal)`` line of a subprocess's log."""
    for line in text.splitlines():
        if _LINE.search(line):
            _record(f"{what}: {line.strip()[:500]}")


_original: Callable[..., None] = SourceHealth.poll_failed


def _poll_failed(self: SourceHealth, reason: str, message: str, duration: float) -> None:
    if reason == "internal":
        _record(f"source {self.source}: {message[:500]}")
    _original(self, reason, message, duration)


@contextmanager
def watch() -> Iterator[list[str]]:
    """Within the block, record every poll that fails with reason ``internal``."""
    seen: list[str] = []
    _active.append(seen)
    SourceHealth.poll_failed = _poll_failed  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        _active.remove(seen)
        if not _active:
            SourceHealth.poll_failed = _original  # type: ignore[method-assign]
