"""Where a running exporter's resident memory is: a benchmark's reading, not the daemon's.

Two halves. The benchmark side reads ``/proc/<pid>/smaps`` of the exporter and sorts its
resident pages into the brk heap (glibc's main arena), other anonymous mappings (Python's
object arenas, glibc's other arenas, thread stacks, SQLite's and zlib's large blocks) and
mapped files. The child side is a wrapper the benchmark starts the exporter through
(``child_command``): it runs ``python -m exporter`` unchanged, but on ``SIGUSR1`` it
appends to a file what only the process itself can see: Python's allocator statistics
(``sys._debugmallocstats``), glibc's ``mallinfo2`` and ``malloc_info``, SQLite's
``sqlite3_memory_used`` and high water and each connection's page cache, schema and
prepared statements (``sqlite3_db_status``), the threads alive and, with
``PKE_BENCH_TRACEMALLOC`` set, the source lines whose Python objects grew.

    python3 benchmarks/probe_rss.py --seconds 600 --breakdown   # readings every 2 minutes
"""

from __future__ import annotations

import ctypes
import os
import re
import runpy
import signal
import sqlite3
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

DUMP_ENV = "PKE_BENCH_MEMORY_DUMP"
#: Set (to a frame count) to trace Python's allocations too: each reading then lists the
#: source lines whose live objects grew most since the first reading. It slows the
#: exporter and its traces take memory of their own, so its RSS is not the one to record.
TRACE_ENV = "PKE_BENCH_TRACEMALLOC"


# -- the benchmark's side -------------------------------------------------------------


@dataclass(frozen=True)
class Mapping:
    """One line of ``/proc/<pid>/smaps``: its range, what it maps, and its resident KiB."""

    start: int
    end: int
    perms: str
    name: str
    rss_kib: int
    anonymous_kib: int

    @property
    def size_kib(self) -> int:
        return (self.end - self.start) // 1024


_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$")


def mappings(pid: int) -> list[Mapping]:
    """The process's mappings with their resident and anonymous sizes."""
    out: list[Mapping] = []
    current: dict[str, object] = {}
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        header = _HEADER.match(line)
        if header:
            if current:
                out.append(Mapping(**current))  # type: ignore[arg-type]
            start, end, perms, name = header.groups()
            current = {"start": int(start, 16), "end": int(end, 16), "perms": perms,
                       "name": name, "rss_kib": 0, "anonymous_kib": 0}  # fmt: skip
        elif line.startswith("Rss:"):
            current["rss_kib"] = int(line.split()[1])
        elif line.startswith("Anonymous:"):
            current["anonymous_kib"] = int(line.split()[1])
    if current:
        out.append(Mapping(**current))  # type: ignore[arg-type]
    return out


def kind(m: Mapping) -> str:
    """What a mapping is, as far as its name and size tell: see the module's docstring."""
    if m.name == "[heap]":
        return "brk heap"
    if m.name == "[stack]":
        return "main stack"
    if m.name.startswith("/"):
        return "file"
    if m.name:
        return "kernel"  # [vdso], [vvar] and the like
    # glibc's other arenas live in 64 MiB-aligned heaps; a thread's stack is a mapping
    # of exactly 8 MiB (ulimit -s), its guard page apart; the rest are Python's object
    # arenas (1 MiB each, adjacent ones merged by the kernel) and large malloc blocks.
    if m.start % (64 << 20) == 0:
        return "glibc arena heap"
    if m.size_kib == 8192:
        return "thread stack"
    return "anon other"


def breakdown(pid: int) -> dict[str, float]:
    """Resident MiB of ``pid`` by kind of mapping, and the total."""
    totals: dict[str, float] = {}
    for m in mappings(pid):
        totals[kind(m)] = totals.get(kind(m), 0.0) + m.rss_kib / 1024
    totals["total"] = sum(totals.values())
    return totals


def anon_sizes(pid: int) -> dict[str, float]:
    """Resident MiB of the unnamed anonymous mappings, by mapping size class."""
    out: dict[str, float] = {}
    for m in mappings(pid):
        if m.name or not m.rss_kib:
            continue
        label = _size_class(m.size_kib / 1024)
        out[label] = out.get(label, 0.0) + m.rss_kib / 1024
    return out


def _size_class(mib: float) -> str:
    for bound, label in ((1, "<1 MiB"), (2.01, "1-2 MiB"), (8, "2-8 MiB")):
        if mib < bound:
            return label
    return ">=8 MiB"


def format_breakdown(pid: int) -> str:
    """One line: resident MiB by kind of mapping, and the unnamed ones by mapping size."""
    parts = " ".join(f"{k}={v:.1f}" for k, v in sorted(breakdown(pid).items()))
    sizes = " ".join(f"{k}:{v:.1f}" for k, v in sorted(anon_sizes(pid).items()))
    return f"{parts} | unnamed anon by mapping size: {sizes}"


def child_command(args: list[str]) -> list[str]:
    """The command that runs ``python -m exporter <args>`` with the ``SIGUSR1`` reading."""
    return [sys.executable, "-m", "benchmarks.memory_breakdown", *args]


def ask_reading(pid: int, dump: Path, label: str, timeout: float = 10.0) -> str:
    """Signal the child for a reading and return what it appended to ``dump``."""
    before = dump.stat().st_size if dump.exists() else 0
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = dump.read_text(errors="replace") if dump.exists() else ""
        if len(text) > before and text.endswith("== end ==\n"):
            return f"-- {label}\n" + text[before:]
        time.sleep(0.2)
    return f"-- {label}: no reading in {timeout:.0f} s"


def summary(reading: str) -> str:
    """The lines of a child reading worth printing: pymalloc's totals, glibc's, SQLite's."""
    keep = ("-- ", "# arenas", "# bytes in allocated", "# bytes in available", "# bytes lost",
            "Total ", "arenas allocated", "mallinfo2", "sqlite", "threads", "traced", "+", "<system type=\"",
            "<total type=")  # fmt: skip
    return "\n".join(line for line in reading.splitlines() if line.strip().startswith(keep))


# -- the child's side -----------------------------------------------------------------


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                 "uordblks", "fordblks", "keepcost")]  # fmt: skip


def _lines() -> Iterator[str]:
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _Mallinfo2
    info = libc.mallinfo2()
    mib = 1 << 20
    yield (f"mallinfo2: arenas={info.arena / mib:.1f} MiB mmapped={info.hblkhd / mib:.1f} MiB "
           f"({info.hblks} blocks) in use={info.uordblks / mib:.1f} MiB "
           f"free={info.fordblks / mib:.1f} MiB top={info.keepcost / mib:.1f} MiB")  # fmt: skip
    try:
        sqlite = ctypes.CDLL("libsqlite3.so.0")
        sqlite.sqlite3_memory_used.restype = ctypes.c_int64
        sqlite.sqlite3_memory_highwater.restype = ctypes.c_int64
    except OSError:
        yield "sqlite: no libsqlite3.so.0"
    else:
        yield (f"sqlite: used={sqlite.sqlite3_memory_used() / mib:.2f} MiB "
               f"high water={sqlite.sqlite3_memory_highwater(0) / mib:.2f} MiB")  # fmt: skip
        yield from _connections(sqlite)
    names = sorted(t.name for t in threading.enumerate())
    yield f"threads: {len(names)} {names}"


_first_trace: dict[str, int] = {}


def _traced_growth(top: int = 25) -> Iterator[str]:
    """The lines whose live objects grew most since the first reading (bytes by line)."""
    snapshot = tracemalloc.take_snapshot().filter_traces(
        (tracemalloc.Filter(False, tracemalloc.__file__),)
    )
    now = {str(s.traceback): s.size for s in snapshot.statistics("lineno")}
    current, peak = tracemalloc.get_traced_memory()
    yield f"traced: {current / (1 << 20):.1f} MiB, peak {peak / (1 << 20):.1f} MiB"
    if not _first_trace:
        _first_trace.update(now)
        return
    growth = sorted(((now.get(k, 0) - _first_trace.get(k, 0), k) for k in now | _first_trace),
                    reverse=True)  # fmt: skip
    yield f"traced growth since the first reading: {sum(g for g, _ in growth) / 1024:.0f} KiB"
    for grown, where in growth[:top]:
        yield f"  {grown / 1024:+8.0f} KiB  {where}"


_opened: list[sqlite3.Connection] = []


def _recording(connect: Callable[..., sqlite3.Connection]) -> Callable[..., sqlite3.Connection]:
    """``sqlite3.connect`` that also keeps each connection it opens, for the readings."""

    def opened(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        _opened.append(conn)
        return conn

    return opened


_DBSTATUS = {"cache": 1, "schema": 2, "statements": 3}  # SQLITE_DBSTATUS_*_USED


def _connections(sqlite: ctypes.CDLL) -> Iterator[str]:
    """Each open SQLite connection's page cache, schema and prepared statements."""
    for n, conn in enumerate(_opened):
        # CPython's connection object holds its ``sqlite3 *`` right after the object header.
        db = ctypes.c_void_p.from_address(id(conn) + 2 * ctypes.sizeof(ctypes.c_void_p))
        used = []
        for name, op in _DBSTATUS.items():
            current, high = ctypes.c_int(), ctypes.c_int()
            sqlite.sqlite3_db_status(db, op, ctypes.byref(current), ctypes.byref(high), 0)
            used.append(f"{name}={current.value / 1024:.0f} KiB")
        yield f"sqlite connection {n}: {' '.join(used)}"


def _read(path: Path) -> None:
    with path.open("a") as out:
        out.write(f"== reading at {time.time():.0f} ==\n")
        out.writelines(line + "\n" for line in _lines())
        if tracemalloc.is_tracing():
            out.writelines(line + "\n" for line in _traced_growth())
        out.flush()
        # Both of these write to C streams: pymalloc's to stderr, glibc's to a FILE.
        saved = os.dup(2)
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        libc = ctypes.CDLL(None)
        libc.fdopen.restype = ctypes.c_void_p
        stream = libc.fdopen(os.dup(out.fileno()), b"a")
        libc.malloc_info(0, ctypes.c_void_p(stream))
        libc.fclose(ctypes.c_void_p(stream))
        out.seek(0, 2)
        out.write("\n== end ==\n")


def _main() -> None:
    dump = Path(os.environ[DUMP_ENV])

    def on_signal(signum: int, frame: FrameType | None) -> None:
        _read(dump)

    signal.signal(signal.SIGUSR1, on_signal)
    sqlite3.connect = _recording(sqlite3.connect)  # type: ignore[assignment]
    if os.environ.get(TRACE_ENV):
        tracemalloc.start(int(os.environ[TRACE_ENV]))
    sys.argv = ["exporter", *sys.argv[1:]]
    runpy.run_module("exporter", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _main()
