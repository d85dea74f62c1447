"""The demo scenario, with every domain's fake upstreams, yields a clean exposition.

Runs the real daemon in-process against the built-in simulated platform (every
sandbox module mounted, every source the demo config enables), polls each
source once, and checks the exposition with ``promtool check metrics``, so no
metric anywhere in the project breaks Prometheus' naming and typing rules. It
does so at each of the suite's fixed instants (tests/support/instants.py), the
platform and the daemon on one fixed clock: the 1st of a month, with no closed
day, is as clean as a mid-month day.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from dataclasses import dataclass

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import Config
from exporter.core.clock import FixedClock
from exporter.core.sandbox.scenario import Scenario
from exporter.daemon import Daemon
from exporter.sandbox import platform
from tests.support.instants import INSTANTS
from tests.support.paths import REPO_ROOT

METRICS_DOC = REPO_ROOT / "docs" / "metrics.md"


@dataclass
class DemoPoll:
    ok: bool
    errors: dict[str, str | None]
    sources: list[str]
    text: bytes
    openmetrics: bytes


@pytest.fixture(scope="module", params=list(INSTANTS.values()), ids=list(INSTANTS))
def demo_poll(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> DemoPoll:
    """Every demo source polled once against the simulated platform at an instant, and the
    exposition after it."""
    clock = FixedClock(request.param)
    scenario = Scenario(seed=42, clock=clock)
    sandbox = platform.start(scenario)
    config = Config(
        **platform.demo_config(sandbox.url, tmp_path_factory.mktemp("demo"), scenario, port=0)
    )

    async def run() -> DemoPoll:
        daemon = Daemon(config, clock=clock)
        try:
            ok = await daemon.poll_all()
            return DemoPoll(
                ok=ok,
                errors={n: h.last_error for n, h in daemon.health.items() if not h.up},
                sources=[s.name for s in daemon.sources],
                text=daemon.holder.current.text,
                openmetrics=daemon.holder.current.openmetrics_text,
            )
        finally:
            await daemon.shutdown()

    try:
        return asyncio.run(run())
    finally:
        sandbox.stop()


@pytest.mark.integration
class TestDemoExposition:
    def test_every_demo_source_polls_successfully(self, demo_poll: DemoPoll) -> None:
        """Each source the demo enables succeeds against the simulated platform."""
        assert "probe" in demo_poll.sources
        assert demo_poll.errors == {}
        assert demo_poll.ok is True

    def test_promtool_finds_nothing_to_report(self, demo_poll: DemoPoll) -> None:
        """`promtool check metrics` prints nothing for the whole demo exposition."""
        promtool = shutil.which("promtool")
        assert promtool, "promtool is not installed: scripts/test installs the Debian package"
        text = demo_poll.text
        families = {f.name for f in text_string_to_metric_families(text.decode())}
        assert "platform_exporter_build_info" in families
        result = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, timeout=60
        )
        assert result.stdout.decode() + result.stderr.decode() == ""
        assert result.returncode == 0

    def test_docs_list_every_family(self, demo_poll: DemoPoll) -> None:
        """docs/metrics.md names every family the demo exposes (a counter as ``name_total``),
        the process's own ``process_*`` and ``python_*`` too."""
        documented = set(
            re.findall(r"`((?:platform|process|python)_[a-z0-9_]+)`", METRICS_DOC.read_text())
        )
        families = list(openmetrics_families(demo_poll.openmetrics.decode()))
        exposed = {f.name + "_total" if f.type == "counter" else f.name for f in families}
        assert len(exposed) > 50
        assert sorted(exposed - documented) == []
