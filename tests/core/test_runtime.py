"""The process's own ``process_*`` and ``python_*`` families, rendered into the snapshot."""

from __future__ import annotations

import platform
import resource
from pathlib import Path

import pytest

from exporter.config import Config
from exporter.core.runtime import CACHED
from exporter.daemon import Daemon
from exporter.report import report
from tests.support.exposition import Exposition
from tests.support.instants import at


def make_config(tmp_path: Path) -> Config:
    return Config(
        server={"listen_address": "127.0.0.1", "port": 0},
        state={"path": str(tmp_path / "state.db")},
        services=[{"name": "a", "team": "x"}],
    )


@pytest.fixture
def rendered(tmp_path: Path) -> Exposition:
    """What the daemon serves after one render, with no source configured."""
    daemon = Daemon(make_config(tmp_path), sources=[])
    try:
        return Exposition.parse(daemon.render().text)
    finally:
        daemon.store.close()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process_* come from /proc")
class TestProcessFamilies:
    def test_the_snapshot_holds_this_process_s_resources(self, rendered: Exposition) -> None:
        """Values of this very process: its start time, an open-fd count under its soft limit,
        resident memory of at least a megabyte and CPU time spent."""
        start = rendered.value("process_start_time_seconds")
        assert start is not None and start > 0
        fds = rendered.value("process_open_fds")
        limit = rendered.value("process_max_fds")
        assert limit == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert fds is not None and 3 <= fds <= limit
        rss = rendered.value("process_resident_memory_bytes")
        assert rss is not None and rss > 1 << 20
        cpu = rendered.value("process_cpu_seconds_total")
        assert cpu is not None and cpu > 0

    def test_help_says_the_value_is_cached(self, rendered: Exposition) -> None:
        family = rendered.families["process_resident_memory_bytes"]
        assert family.documentation.endswith(CACHED.strip())


class TestPythonFamilies:
    def test_python_info_names_the_running_interpreter(self, rendered: Exposition) -> None:
        major, minor, patch = platform.python_version_tuple()
        assert (
            rendered.value(
                "python_info",
                implementation=platform.python_implementation(),
                major=major,
                minor=minor,
                patchlevel=patch,
            )
            == 1
        )

    @pytest.mark.skipif(platform.python_implementation() != "CPython", reason="CPython's gc")
    def test_garbage_collections_per_generation(self, rendered: Exposition) -> None:
        counts = {
            labels["generation"]: value
            for labels, value in rendered.samples("python_gc_collections_total")
        }
        assert set(counts) == {"0", "1", "2"}
        assert counts["0"] >= counts["1"] >= 0


class TestAReportOfTheStoredHistory:
    def test_leaves_the_process_and_python_families_out(self, tmp_path: Path) -> None:
        """``once --as-of`` describes the stored history, not the process printing it."""
        snapshot, failed = report(make_config(tmp_path), at("mid-month"))
        assert failed == []
        names = Exposition.parse(snapshot.text).families
        assert "platform_exporter_build_info" in names
        assert [n for n in names if n.startswith(("process_", "python_"))] == []
