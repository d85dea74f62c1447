"""Python children the suite starts under libfaketime keep a working ``time.sleep``.

libfaketime 0.9.10 with ``FAKETIME_DONT_FAKE_MONOTONIC=1`` makes Python 3.11's
``time.sleep`` fail with ``EINVAL`` (see :mod:`tests.support.faketime`). A daemon the
suite starts inherits the faked clock, and its waits and its libraries' retry back-offs
(botocore's, among them) sleep: each child gets the repair at its start.
"""

from __future__ import annotations

import subprocess
import sys

from tests.support.daemon import exporter_env, faketime_env
from tests.support.faketime import CHILD_HOOKS, with_sleep_repaired
from tests.support.instants import INSTANTS
from tests.support.paths import REPO_ROOT

SLEEPS = "import time; time.sleep(0.01); print(time.strftime('%Y-%m-%d', time.gmtime()))"


def test_a_child_on_a_faked_clock_sleeps_and_reads_the_faked_date() -> None:
    env = faketime_env(INSTANTS["first-of-month"], exporter_env())
    child = subprocess.run(
        [sys.executable, "-c", SLEEPS], env=env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert (child.returncode, child.stdout, child.stderr) == (0, "2027-03-01\n", "")


def test_the_hook_is_added_once_and_only_for_children_that_preload_libfaketime() -> None:
    plain = {"PYTHONPATH": "/repo"}
    assert with_sleep_repaired(plain) is plain
    faked = with_sleep_repaired({"LD_PRELOAD": "/usr/lib/faketime/libfaketime.so.1", **plain})
    assert faked["PYTHONPATH"] == f"{CHILD_HOOKS}:/repo"
    assert with_sleep_repaired(faked) == faked
