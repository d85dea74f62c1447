"""The C allocator's settings for a long-running daemon: freed memory goes back to the system.

glibc serves a request of at least ``M_MMAP_THRESHOLD`` (128 KiB) with a mapping of its
own and unmaps it when freed, but after freeing such a block it raises the threshold
to that block's size (up to 32 MiB), so that later blocks of that size come from the
heap instead. A render's exposition buffers (megabytes each, freed once the snapshot is
assembled) then stay in the heap, fragmented, as resident memory between renders.
Setting the threshold explicitly turns that adjustment off (``mallopt(3)``): the buffers
are mapped and unmapped each render, a few system calls per refresh.

Two more, for the same reason. glibc gives each thread that contends for the heap an
arena of its own (up to 8 per core), and a render, a page or a commit in a worker
thread leaves its arena's freed memory resident: ``M_ARENA_MAX`` caps them at 2.
Python's small objects come from pools inside those heaps; what a render frees there
is kept by glibc below the heap's top until ``malloc_trim(3)`` hands the free pages
back, which the daemon calls after each render.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from typing import Any

M_MMAP_THRESHOLD = -3  # <malloc.h>
M_ARENA_MAX = -8
THRESHOLD = 128 * 1024  # glibc's own starting value
ARENAS = 2


def _libc(name: str) -> Callable[..., Any] | None:
    """The C library's function ``name``; None off Linux or where it has none (not glibc)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the C library the interpreter runs on
    except OSError:
        return None
    function: Callable[..., Any] | None = getattr(libc, name, None)
    return function


def unmap_large_blocks(threshold: int = THRESHOLD) -> bool:
    """Fix the C allocator's mmap threshold at ``threshold`` bytes; False where the C
    library has no such setting (not Linux, or not glibc)."""
    mallopt = _libc("mallopt")
    return mallopt is not None and bool(mallopt(M_MMAP_THRESHOLD, threshold))


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap the C allocator's arenas at ``arenas`` (before threads start, so that none
    makes its own); False where the C library has no such setting."""
    mallopt = _libc("mallopt")
    return mallopt is not None and bool(mallopt(M_ARENA_MAX, arenas))


def release_free_memory() -> bool:
    """Hand the free pages of every arena back to the system (``malloc_trim(0)``); True
    if some were. A few milliseconds; the daemon calls it after each render."""
    trim = _libc("malloc_trim")
    return trim is not None and bool(trim(0))
