"""A provider whose render fails: its previous part is served, and the log says why once.

The state unreadable (a database outage, a disk error) is the environment, not a bug: it
is one warning line when it starts (no traceback), nothing more for each refresh while
it lasts, and one line when the provider renders again. Any other failure is a bug and
is logged with its traceback every time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.core.errors import StateError
from exporter.core.provider import ProviderSpec, RenderContext
from exporter.core.snapshot import Parts


class Flaky:
    """A provider that fails with ``error`` while ``failing`` is set."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.failing = False

    def __call__(self, ctx: Any) -> Iterator[Metric]:
        if self.failing:
            raise self.error
        gauge = GaugeMetricFamily("platform_test_value", "A value.")
        gauge.add_metric([], 1.0)
        yield gauge


CTX = cast(RenderContext, SimpleNamespace(now=1_000_000.0, min_refresh=15.0))


def render(parts: Parts, spec: ProviderSpec) -> bytes | None:
    part = parts.part(spec, CTX, {})
    return None if part is None else part.text


def test_an_unreadable_state_is_one_warning_per_outage_and_the_last_part_is_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flaky = Flaky(StateError("state database down: connection refused"))
    spec = ProviderSpec("flaky", flaky, reads=None, time_driven=False)
    parts = Parts()
    first = render(parts, spec)
    assert first is not None and b"platform_test_value 1.0" in first
    flaky.failing = True
    with caplog.at_level(logging.INFO, logger="exporter.snapshot"):
        served = [render(parts, spec) for _ in range(5)]
        flaky.failing = False
        assert render(parts, spec) == first
    assert served == [first] * 5
    lines = [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records]
    assert lines == [
        (
            "WARNING",
            "metrics provider flaky: state unreadable (state database down: connection "
            "refused); serving its previous values until it is readable again",
            None,
        ),
        ("INFO", "metrics provider flaky rendered again from the state", None),
    ]


def test_any_other_failure_is_a_bug_logged_with_its_traceback_each_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flaky = Flaky(KeyError("service"))
    spec = ProviderSpec("flaky", flaky, reads=None, time_driven=False)
    parts = Parts()
    first = render(parts, spec)
    flaky.failing = True
    with caplog.at_level(logging.INFO, logger="exporter.snapshot"):
        assert [render(parts, spec) for _ in range(3)] == [first] * 3
    assert [r.levelname for r in caplog.records] == ["ERROR"] * 3
    assert all(r.exc_info is not None for r in caplog.records)
