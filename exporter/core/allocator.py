"""The C allocator's setting for a long-running daemon: large blocks go back to the system.

glibc serves a request of at least ``M_MMAP_THRESHOLD`` (128 KiB) with a mapping of its
own and unmaps it when freed, but after freeing such a block it raises the threshold
to that block's size (up to 32 MiB), so that later blocks of that size come from the
heap instead. A render's exposition buffers (megabytes each, freed once the snapshot is
assembled) then stay in the heap, fragmented, as resident memory between renders.
Setting the threshold explicitly turns that adjustment off (``mallopt(3)``): the buffers
are mapped and unmapped each render, a few system calls per refresh.
"""

from __future__ import annotations

import ctypes
import sys

M_MMAP_THRESHOLD = -3  # <malloc.h>
THRESHOLD = 128 * 1024  # glibc's own starting value


def unmap_large_blocks(threshold: int = THRESHOLD) -> bool:
    """Fix the C allocator's mmap threshold at ``threshold`` bytes; False where the C
    library has no such setting (not Linux, or not glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library the interpreter runs on
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))
