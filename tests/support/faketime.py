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

A Python process the suite starts inherits the faked clock, and so the broken
``time.sleep``: :func:`with_sleep_repaired` puts ``faketime_child/`` on its
``PYTHONPATH``, whose ``sitecustomize`` makes the same repair when the child starts
(a daemon's own waits, and its libraries' retry back-offs, such as botocore's).

libfaketime also re-reads ``FAKETIME`` from other threads while tests change the
environment: :mod:`tests.support.environ` keeps that safe.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

# Holds the sitecustomize a child Python under libfaketime runs at its start.
CHILD_HOOKS = Path(__file__).with_name("faketime_child")


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


def without_faketime(env: dict[str, str]) -> dict[str, str]:
    """``env`` with libfaketime and its settings removed: a child on the real clock (a real
    server), or one given a fake clock of its own afresh."""
    return {k: v for k, v in env.items() if not k.startswith("FAKETIME") and k != "LD_PRELOAD"}


def with_sleep_repaired(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a child Python: when it preloads libfaketime, with the start-up hook
    that repairs its ``time.sleep`` on its path; otherwise ``env`` unchanged."""
    if "faketime" not in env.get("LD_PRELOAD", ""):
        return env
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(CHILD_HOOKS) in paths:
        return env
    return {**env, "PYTHONPATH": os.pathsep.join([str(CHILD_HOOKS), *paths])}
