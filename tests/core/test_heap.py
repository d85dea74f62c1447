"""Setting aside what a daemon keeps for its lifetime, so collections stop walking it."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from exporter.core.heap import set_aside_long_lived


class Node:
    """A container the collector tracks, which may point at itself."""

    def __init__(self) -> None:
        self.next: Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # the suite's process goes on collecting as before


def walked(obj: object) -> bool:
    """Whether a collection walks ``obj`` (the frozen are in no generation)."""
    return any(o is obj for o in gc.get_objects())


def test_live_objects_are_frozen_and_the_garbage_before_is_collected(unfrozen: None) -> None:
    kept = Node()
    dropped = Node()
    dropped.next = dropped  # a cycle: only a collection frees it
    gone = weakref.ref(dropped)
    del dropped
    frozen = set_aside_long_lived()
    assert frozen == gc.get_freeze_count() > 0
    assert gone() is None  # collected, not frozen alive for good
    assert not walked(kept)


def test_what_is_allocated_afterwards_is_walked_and_collected(unfrozen: None) -> None:
    set_aside_long_lived()
    later = Node()
    assert walked(later)
    later.next = later
    gone = weakref.ref(later)
    del later
    gc.collect()
    assert gone() is None
