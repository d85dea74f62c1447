"""The daemon fixes the C allocator's mmap threshold and arenas, and trims its heaps
after each render, so that a render's freed memory is not kept resident."""

from __future__ import annotations

import ctypes
import platform
import sys

import pytest

from exporter.core import allocator


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt(M_MMAP_THRESHOLD) is glibc's",
)
def test_glibc_takes_the_threshold() -> None:
    assert allocator.unmap_large_blocks() is True


GLIBC = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt(M_ARENA_MAX) and malloc_trim are glibc's",
)


@GLIBC
def test_glibc_takes_the_arena_cap() -> None:
    assert allocator.limit_arenas(8) is True  # glibc's own cap on 1 core: harmless here


@GLIBC
def test_free_pages_go_back_after_a_large_free() -> None:
    # Blocks from the heap (under the mmap threshold), every other one freed: holes below
    # the heap's top that free() itself never returns, and malloc_trim does.
    blocks = [ctypes.create_string_buffer(8000) for _ in range(4_000)]
    del blocks[::2]
    assert allocator.release_free_memory() is True
    del blocks


def test_a_c_library_without_mallopt_is_left_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoMallopt:
        pass

    monkeypatch.setattr(ctypes, "CDLL", lambda name: NoMallopt())
    assert allocator.unmap_large_blocks() is False
    assert allocator.limit_arenas() is False
    assert allocator.release_free_memory() is False


def test_off_linux_nothing_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert allocator.unmap_large_blocks() is False
    assert allocator.release_free_memory() is False
