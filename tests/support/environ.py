"""A C ``environ`` that never moves and never frees, for a suite whose threads read it.

libfaketime re-reads ``FAKETIME`` with ``getenv`` from whichever thread asks the
time once its cache expires, and glibc's resolver and ``tzset`` read the
environment too, while tests add variables with ``monkeypatch.setenv`` on the
main thread. glibc's ``setenv`` grows the ``environ`` array with ``realloc``,
which may move it and free the old one under a reader: a crash seen as a
segmentation fault in a server thread. Growing the array once beforehand does
not prevent it (the next ``realloc`` shrinks the array and hands its tail to
the allocator, and the one after may have to move).

:func:`pin_environ` copies the environment into an array this module owns, with
room to spare, points ``environ`` at it, and makes ``os.environ`` edit it in
place through :func:`os.putenv` and :func:`os.unsetenv`. An entry is one
pointer store, and no string an entry ever pointed to is freed, so a reader in
any thread sees either the old or the new environment, never freed memory.
Children started without ``env=`` inherit it as before.
"""

from __future__ import annotations

import ctypes
import os
import threading

# Room for this many variables in all; the suite's process has about 40 of its own.
SLOTS = 4096

_LIBC = ctypes.CDLL(None)
_ENVIRON = ctypes.c_void_p.in_dll(_LIBC, "environ")


class PinnedEnviron:
    """The owned array, and the ``putenv``/``unsetenv`` that edit it in place."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.array = (ctypes.c_void_p * (slots + 1))()
        # Every entry ever stored stays alive: a reader may still hold its pointer.
        self.kept: list[ctypes.Array[ctypes.c_char]] = []
        self.count = 0
        self.lock = threading.Lock()

    def adopt(self) -> None:
        """Copy the C environment as it is now into the array, and point ``environ`` at it."""
        current = ctypes.cast(_ENVIRON.value, ctypes.POINTER(ctypes.c_char_p))
        entries: list[bytes] = []
        while current and current[len(entries)] is not None:
            entries.append(current[len(entries)] or b"")
        if len(entries) > self.slots:
            raise MemoryError(f"{len(entries)} environment variables, room for {self.slots}")
        for i, entry in enumerate(entries):
            self.array[i] = self._keep(entry)
        for i in range(len(entries), self.count):
            self.array[i] = None
        self.count = len(entries)
        _ENVIRON.value = ctypes.addressof(self.array)

    def putenv(self, name: str | bytes, value: str | bytes) -> None:
        key, raw = os.fsencode(name), os.fsencode(value)
        if not key or b"=" in key or b"\0" in key + raw:
            raise ValueError(f"illegal environment variable name or value: {name!r}")
        with self.lock:
            self._reclaim()
            at = self._index(key)
            if at is None:
                if self.count == self.slots:
                    raise MemoryError(f"no room for another environment variable ({self.slots})")
                at = self.count
                self.count += 1  # slot count+1 is still None: the array stays terminated
            self.array[at] = self._keep(key + b"=" + raw)

    def unsetenv(self, name: str | bytes) -> None:
        key = os.fsencode(name)
        if not key or b"=" in key:
            raise ValueError(f"illegal environment variable name: {name!r}")
        with self.lock:
            self._reclaim()
            while (at := self._index(key)) is not None:
                # Shifting down, a reader sees an entry twice or the removed one: both valid.
                for i in range(at, self.count - 1):
                    self.array[i] = self.array[i + 1]
                self.count -= 1
                self.array[self.count] = None

    def _reclaim(self) -> None:
        """If C code called glibc's ``setenv`` (which copied the array away), adopt its copy."""
        if _ENVIRON.value != ctypes.addressof(self.array):
            self.adopt()

    def _index(self, key: bytes) -> int | None:
        prefix = key + b"="
        for i in range(self.count):
            entry = ctypes.cast(self.array[i], ctypes.c_char_p).value or b""
            if entry.startswith(prefix):
                return i
        return None

    def _keep(self, entry: bytes) -> int:
        buffer = ctypes.create_string_buffer(entry)
        self.kept.append(buffer)
        return ctypes.addressof(buffer)


_PINNED: PinnedEnviron | None = None


def pin_environ(slots: int = SLOTS) -> PinnedEnviron:
    """Pin the process's environment (once; later calls return the same pin)."""
    global _PINNED
    if _PINNED is None:
        pinned = PinnedEnviron(slots)
        pinned.adopt()
        os.putenv = pinned.putenv
        os.unsetenv = pinned.unsetenv
        _PINNED = pinned
    return _PINNED


def environ_address() -> int:
    """Where the C ``environ`` array is now."""
    return _ENVIRON.value or 0


def c_getenv(name: str) -> str | None:
    """``name`` as C code in this process reads it (glibc's ``getenv``)."""
    getenv = _LIBC.getenv
    getenv.restype = ctypes.c_char_p
    value: bytes | None = getenv(os.fsencode(name))
    return None if value is None else os.fsdecode(value)
