"""The suite's guard against ``setenv`` moving ``environ`` under another thread."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from tests.support.environ import c_getenv, environ_address, pin_environ


def test_adding_and_removing_variables_keeps_the_environ_array_in_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The conftest pinned the environment: additions never reallocate the array."""
    before = environ_address()
    for i in range(300):
        monkeypatch.setenv(f"PKE_TEST_ADDED_{i}", "x")
    for i in range(0, 300, 2):
        monkeypatch.delenv(f"PKE_TEST_ADDED_{i}")
    assert environ_address() == before
    assert os.environ["PKE_TEST_ADDED_299"] == "x"


def test_c_code_and_children_see_what_os_environ_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PKE_TEST_SEEN", "one")
    monkeypatch.setenv("PKE_TEST_SEEN", "two")
    monkeypatch.setenv("PKE_TEST_GONE", "x")
    monkeypatch.delenv("PKE_TEST_GONE")
    assert c_getenv("PKE_TEST_SEEN") == "two"
    assert c_getenv("PKE_TEST_GONE") is None
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os; print(os.environ.get('PKE_TEST_SEEN'), 'PKE_TEST_GONE' in os.environ)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.split() == ["two", "False"]


def test_a_reader_thread_sees_a_whole_environment_while_the_main_thread_edits_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A C ``getenv`` loop in another thread never reads freed memory (it would crash the
    process) and always finds a variable nobody touches."""
    monkeypatch.setenv("PKE_TEST_STEADY", "kept")
    seen: list[str | None] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.append(c_getenv("PKE_TEST_STEADY"))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(2000):
            monkeypatch.setenv(f"PKE_TEST_CHURN_{i % 50}", str(i))
            if i % 3 == 0:
                monkeypatch.delenv(f"PKE_TEST_CHURN_{i % 50}")
    finally:
        stop.set()
        reader.join()
    assert seen and set(seen) == {"kept"}


def test_c_code_calling_glibcs_setenv_is_adopted_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """glibc's own ``setenv`` copies the array away; the next edit points ``environ`` back."""
    import ctypes

    pinned = pin_environ()
    monkeypatch.setenv("PKE_TEST_BY_C", "placeholder")
    ctypes.CDLL(None).setenv(b"PKE_TEST_BY_C_NEW", b"c", 1)
    assert environ_address() != ctypes.addressof(pinned.array)
    monkeypatch.setenv("PKE_TEST_AFTER_C", "py")
    assert environ_address() == ctypes.addressof(pinned.array)
    assert c_getenv("PKE_TEST_BY_C_NEW") == "c" and c_getenv("PKE_TEST_AFTER_C") == "py"
    monkeypatch.delenv("PKE_TEST_AFTER_C")
    os.unsetenv("PKE_TEST_BY_C_NEW")
    assert c_getenv("PKE_TEST_BY_C_NEW") is None


def test_an_illegal_name_is_refused_as_the_real_putenv_refuses_it() -> None:
    pin_environ()
    with pytest.raises(ValueError):
        os.putenv("A=B", "x")
    with pytest.raises(ValueError):
        os.putenv("", "x")
