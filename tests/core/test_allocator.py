"""The daemon fixes the C allocator's mmap threshold, so that a render's large buffers
are unmapped when freed instead of staying in the heap as resident memory."""

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


def test_a_c_library_without_mallopt_is_left_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoMallopt:
        pass

    monkeypatch.setattr(ctypes, "CDLL", lambda name: NoMallopt())
    assert allocator.unmap_large_blocks() is False


def test_off_linux_nothing_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert allocator.unmap_large_blocks() is False
