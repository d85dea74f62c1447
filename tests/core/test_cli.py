"""The command line, run as a real subprocess from the repo root: help, version, exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from exporter import __version__
from exporter.cli import main
from exporter.core.clock import FixedClock, utc_datetime
from exporter.core.sandbox.scenario import Scenario
from exporter.domains.cost.kpis import window_bounds
from exporter.domains.cost.sandbox import billing
from tests.support.daemon import DemoProcess, run_cli
from tests.support.exposition import Exposition
from tests.support.instants import at, each_instant

GOOD = """
server:
  port: 9100
  basic_auth:
    username: prom
    password: {env: CLI_TEST_PASSWORD}
services:
  - name: checkout
    team: payments
"""


class TestHelpAndVersion:
    @pytest.mark.parametrize("command", [[], ["run"], ["check-config"], ["once"], ["demo"]])
    def test_every_command_has_help(self, command: list[str]) -> None:
        proc = run_cli(*command, "--help")
        assert proc.returncode == 0
        assert proc.stdout.startswith("usage: platform-kpi-exporter")
        assert "exit codes:" in proc.stdout

    def test_version(self) -> None:
        proc = run_cli("--version")
        assert proc.returncode == 0
        assert proc.stdout.strip() == f"platform-kpi-exporter {__version__}"

    def test_no_command_is_a_usage_error(self) -> None:
        proc = run_cli()
        assert proc.returncode == 2
        assert "usage:" in proc.stderr


class TestCheckConfig:
    def test_valid_config_is_printed_with_secrets_masked(self, tmp_path: Path) -> None:
        path = tmp_path / "c.yaml"
        path.write_text(GOOD)
        proc = run_cli(
            "check-config",
            str(path),
            env={"CLI_TEST_PASSWORD": "hunter2", "PLATFORM_KPI_SERVER__PORT": "9200"},
        )
        assert proc.returncode == 0, proc.stderr
        assert "hunter2" not in proc.stdout + proc.stderr
        data = json.loads(proc.stdout)
        assert data["server"]["basic_auth"] == {"username": "prom", "password": "**********"}
        assert data["server"]["port"] == 9200  # the environment override is resolved
        assert data["services"][0]["name"] == "checkout"

    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("postgresql://postgres@db.internal:5432/kpi", "postgresql://***@db.internal:5432/kpi"),
            (
                "postgresql://db.internal/kpi?user=kpi_reader&sslmode=require",
                "postgresql://db.internal/kpi?user=***&sslmode=require",
            ),
        ],
        ids=["userinfo", "query"],
    )
    def test_a_state_url_is_printed_without_its_user_name(
        self,
        tmp_path: Path,
        url: str,
        shown: str,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """The PostgreSQL URL's user name is masked, and only there: a role named
        ``postgres`` does not mask "postgresql" elsewhere; the password is a secret.
        (In this process: the command reads no state.)"""
        path = tmp_path / "c.yaml"
        state = {"url": url, "password": {"env": "CLI_TEST_STATE_PASSWORD"}}
        path.write_text(yaml.safe_dump({"state": state}), encoding="utf-8")
        monkeypatch.setenv("CLI_TEST_STATE_PASSWORD", "s3cret-state-pw")
        assert main(["check-config", str(path)]) == 0
        printed = capsys.readouterr()
        data = json.loads(printed.out)
        assert data["state"]["url"] == shown
        assert data["state"]["password"] == "**********"
        for user in ("postgres@", "kpi_reader", "s3cret-state-pw"):
            assert user not in printed.out + printed.err

    def test_example_config_checks(self) -> None:
        proc = run_cli("check-config", "examples/config.yaml")
        assert proc.returncode == 0, proc.stderr

    @pytest.mark.parametrize(
        ("text", "env", "expected"),
        [
            ("server:\n  prot: 1\n", {}, "server.prot: unknown key"),
            ("server:\n  port: lots\n", {}, "server.port: Input should be a valid integer"),
            (
                GOOD,
                {},
                "server.basic_auth.password: environment variable CLI_TEST_PASSWORD is not set",
            ),
        ],
        ids=["unknown-key", "wrong-type", "missing-secret"],
    )
    def test_errors_name_file_and_field_and_exit_2(
        self, tmp_path: Path, text: str, env: dict[str, str], expected: str
    ) -> None:
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        proc = run_cli("check-config", str(path), env=env)
        assert proc.returncode == 2
        assert f"config error in {path}: {expected}" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert proc.stdout == ""

    def test_run_and_once_reject_a_bad_config_with_exit_2(self, tmp_path: Path) -> None:
        path = tmp_path / "bad.yaml"
        path.write_text("state:\n  colour: blue\n")
        for command in ("run", "once"):
            proc = run_cli(command, "--config", str(path))
            assert proc.returncode == 2, command
            assert f"config error in {path}: state.colour: unknown key" in proc.stderr


class TestOnce:
    def test_once_prints_the_exposition(self, tmp_path: Path) -> None:
        """With no probes configured there is nothing to poll; self-metrics still print."""
        path = tmp_path / "c.yaml"
        path.write_text(f"state:\n  path: {tmp_path}/s.db\n")
        proc = run_cli("once", "--config", str(path))
        assert proc.returncode == 0, proc.stderr
        assert "platform_exporter_build_info{" in proc.stdout


def billing_config(tmp_path: Path, instant: float) -> Path:
    """A config reading the sandbox's FOCUS exports as billed up to ``instant``, with budgets."""
    scenario = Scenario(clock=FixedClock(instant))
    exports = tmp_path / "focus"
    billing.write_exports(scenario, exports)
    data = {
        "state": {"path": str(tmp_path / "state.db")},
        "services": [
            {"name": s.name, "team": s.team, "cost": {"tags": {"service": s.name}}}
            for s in scenario.services
        ],
        "sources": {"probe": {"enabled": False}, "focus": {"paths": [str(exports)]}},
        "cost": {"budgets": [{"scope": "team", "name": "payments", "monthly": 6000}]},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def values_at_an_instant(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The gauges of an exposition, apart from the exporter's own health and the process's
    own resources (``process_*``, ``python_*``), by name and labels."""
    own = ("platform_exporter_", "process_", "python_")
    out = {}
    for family in Exposition.parse(body).families.values():
        if family.type != "gauge" or family.name.startswith(own):
            continue
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


class TestOnceAsOf:
    """``once --as-of``: the KPIs of the stored history at an instant, without polling."""

    @each_instant
    def test_a_report_at_an_instant_shows_what_the_exporter_showed_then(
        self, tmp_path: Path, instant: float
    ) -> None:
        """``once`` on a machine whose clock reads the instant (faketime) polls and prints the
        cost KPIs; later, ``once --as-of`` that instant prints the same values from the store
        alone: a reproducible report. On the 1st, month to date is absent in both."""
        config = billing_config(tmp_path, instant)
        then = run_cli("once", "--config", str(config), at=instant)
        assert then.returncode == 0, then.stderr
        stamp = utc_datetime(instant).isoformat()
        report = run_cli("once", "--config", str(config), "--as-of", stamp)
        assert report.returncode == 0, report.stderr
        shown = values_at_an_instant(then.stdout)
        assert any(name == "platform_cost" for name, _ in shown)
        assert values_at_an_instant(report.stdout) == shown
        exp = Exposition.parse(report.stdout)
        has_mtd = "mtd" in window_bounds(utc_datetime(instant).date())
        assert bool(exp.samples("platform_cost", window="mtd")) is has_mtd
        assert bool(exp.samples("platform_budget_used_ratio", window="mtd")) is has_mtd
        assert exp.samples("platform_cost", window="last_month")
        # Totals and the health of sources polled at another time are no part of a report.
        assert {f.type for f in exp.families.values() if f.samples} == {"gauge"}
        assert exp.samples("platform_exporter_source_up") == []

    def test_a_report_polls_nothing_and_records_nothing(self, tmp_path: Path) -> None:
        """The state database is byte for byte the same after a report."""
        config = billing_config(tmp_path, at("mid-month"))
        assert run_cli("once", "--config", str(config)).returncode == 0
        before = (tmp_path / "state.db").read_bytes()
        report = run_cli("once", "--config", str(config), "--as-of", "2027-07-14T09:30:00Z")
        assert report.returncode == 0, report.stderr
        assert (tmp_path / "state.db").read_bytes() == before
        assert "platform_cost{" in report.stdout

    def test_without_a_stored_history_it_is_a_one_line_error(self, tmp_path: Path) -> None:
        path = tmp_path / "c.yaml"
        path.write_text(f"state:\n  path: {tmp_path}/missing.db\n")
        proc = run_cli("once", "--config", str(path), "--as-of", "2027-03-01T00:05:00Z")
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [
            f"config error in {path}: state.path: {tmp_path}/missing.db does not exist: "
            "--as-of reports on a stored history"
        ]
        assert not (tmp_path / "missing.db").exists()


class TestInvalidAsOf:
    @pytest.mark.parametrize("command", [["demo"], ["once", "--config", "examples/config.yaml"]])
    @pytest.mark.parametrize("value", ["yesterday", "2027-02-29T00:00:00Z", "-1"])
    def test_an_invalid_instant_is_one_line_and_exit_2(
        self, command: list[str], value: str
    ) -> None:
        proc = run_cli(*command, "--as-of", value)
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [
            f"{command[0]} --as-of: invalid instant {value!r}: "
            + (
                "epoch seconds must be finite and not negative"
                if value == "-1"
                else "use e.g. 2027-03-01T00:05:00Z or epoch seconds"
            )
        ]
        assert proc.stdout == ""


@pytest.mark.integration
class TestDemo:
    def test_demo_serves_metrics_from_the_simulated_platform_then_stops(
        self, tmp_path: Path
    ) -> None:
        """``demo --port 0`` prints its /metrics URL, serves probe results of the
        simulated services, and exits 0 on Ctrl-C (SIGINT)."""
        import signal
        import subprocess
        import sys

        from tests.support.daemon import REPO_ROOT, exporter_env
        from tests.support.exposition import Exposition
        from tests.support.net import http_get, wait_until

        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exporter",
                "demo",
                "--port",
                "0",
                # A backstop only: Ctrl-C below ends it first, however slow the machine is.
                "--duration",
                "60",
                "--state-dir",
                str(tmp_path),
            ],
            cwd=REPO_ROOT,
            env=exporter_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().startswith("simulated platform on http://127.0.0.1:")
            line = proc.stdout.readline()
            assert line.startswith("metrics at http://127.0.0.1:"), line
            url = line.split()[2]

            def probed() -> bool:
                # The checks due at start finish at their own pace and each later poll commits
                # those that did: wait for the three services' checks, not only the first.
                exp = Exposition.parse(http_get(url)[2])
                services = {lb["service"] for lb, _ in exp.samples("platform_probe_checks_total")}
                return (
                    bool(exp.samples("platform_service_uptime_ratio"))
                    and {
                        "checkout",
                        "search",
                        "accounts",
                    }
                    <= services
                )

            wait_until(probed, timeout=15, what="uptime and the checks of three services")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def test_demo_as_of_runs_the_platform_and_the_daemon_from_that_instant(
        self, demo_process: Callable[..., DemoProcess]
    ) -> None:
        """``demo --as-of`` 00:05 on the 1st: the exporter's own timestamps read that morning,
        the closed 30 days are billed, month to date is absent (no day has closed) and last
        month's budget ratio is there."""
        from tests.support.net import http_get, wait_until

        instant = at("first-of-month")
        demo = demo_process(at=instant)

        def billed() -> bool:
            exp = Exposition.parse(http_get(f"{demo.url}/metrics")[2])
            return bool(exp.samples("platform_cost", window="30d"))

        wait_until(billed, timeout=30, what="30-day cost from the demo")
        exp = Exposition.parse(http_get(f"{demo.url}/metrics")[2])
        polled = [
            v for _, v in exp.samples("platform_exporter_source_last_success_timestamp_seconds")
        ]
        assert polled and all(instant <= t < instant + 120 for t in polled)
        assert exp.samples("platform_cost", window="mtd") == []
        assert exp.samples("platform_budget_used_ratio", window="mtd") == []

        def closed_month() -> bool:
            exp = Exposition.parse(http_get(f"{demo.url}/metrics")[2])
            return bool(exp.samples("platform_budget_used_ratio", window="last_month"))

        # The closed month is there instead (February, billed in full by the sandbox), once
        # every cost source has polled.
        wait_until(closed_month, timeout=30, what="last month's budget ratio from the demo")
