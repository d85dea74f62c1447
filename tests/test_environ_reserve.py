"""The suite's guard against ``setenv`` moving ``environ`` under another thread."""

from __future__ import annotations

import ctypes
import os

import pytest

from tests.support.faketime import reserve_environ


def environ_address() -> int:
    libc = ctypes.CDLL(None)
    return ctypes.c_void_p.in_dll(libc, "environ").value or 0


def test_after_the_reserve_adding_variables_keeps_the_environ_array_in_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The conftest reserved room, so tests' additions never reallocate the array."""
    reserve_environ(64)
    before = environ_address()
    for i in range(32):
        monkeypatch.setenv(f"PKE_TEST_ADDED_{i}", "x")
    assert environ_address() == before
    assert os.environ["PKE_TEST_ADDED_31"] == "x"


def test_the_reserve_leaves_no_variable_behind() -> None:
    before = dict(os.environ)
    reserve_environ(16)
    assert dict(os.environ) == before
