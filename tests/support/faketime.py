"""Running the suite with the machine's clock faked by libfaketime (``faketime``).

The suite must pass on any date, and is checked by running it under
``FAKETIME_DONT_FAKE_MONOTONIC=1 TZ=UTC faketime '2027-03-01 00:05:00' ...``.
With that setting, libfaketime 0.9.10 (Debian 12) breaks Python 3.11's
``time.sleep``, which sleeps with an absolute ``clock_nanosleep`` on
``CLOCK_MONOTONIC``: libfaketime shifts the deadline as if the monotonic clock
were faked and the kernel answers ``EINVAL``
(https://github.com/wolfcw/libfaketime/issues/426). A lock's timeout
(``sem_clockwait``) is left alone, so :func:`repair_sleep` replaces
``time.sleep`` with one when, and only when, sleeping fails.

libfaketime also re-reads ``FAKETIME`` with ``getenv`` from whichever thread
asks the time once its cache expires, while tests add variables with
``monkeypatch.setenv`` on the main thread. glibc's ``setenv`` grows the
``environ`` array with ``realloc`` and may free the old one under a reader, a
crash seen as a segmentation fault in a server thread.
:func:`reserve_environ` grows the array once, before any thread starts, so
later additions fit in place.
"""

from __future__ import annotations

import os
import threading
import time

# Room for this many variables added by tests at once, beyond the process's own.
ENVIRON_HEADROOM = 512


def lock_sleep(seconds: float) -> None:
    """Sleep ``seconds`` by waiting on a lock nobody releases."""
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    lock = threading.Lock()
    lock.acquire()
    lock.acquire(timeout=seconds)


def sleep_is_broken() -> bool:
    try:
        time.sleep(0.0001)
    except OSError:
        return True
    return False


def repair_sleep() -> bool:
    """Make ``time.sleep`` work in this process if libfaketime broke it; True if it did."""
    if not sleep_is_broken():
        return False
    time.sleep = lock_sleep
    return True


def reserve_environ(headroom: int = ENVIRON_HEADROOM) -> None:
    """Grow the C ``environ`` array by ``headroom`` slots; call it before threads start.

    Adding and then removing variables leaves the array at its grown size
    (``unsetenv`` shifts entries down and never shrinks it), so a later
    ``setenv`` that adds a name reallocates in place rather than moving it.
    """
    names = [f"PKE_ENVIRON_RESERVE_{i}" for i in range(headroom)]
    for name in names:
        os.environ[name] = "1"
    for name in names:
        del os.environ[name]


def without_faketime(env: dict[str, str]) -> dict[str, str]:
    """``env`` with libfaketime and its settings removed: a child on the real clock (a real
    server), or one given a fake clock of its own afresh."""
    return {k: v for k, v in env.items() if not k.startswith("FAKETIME") and k != "LD_PRELOAD"}
