"""The command line, run as a real subprocess from the repo root: help, version, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter import __version__
from tests.support.daemon import run_cli

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
                "--duration",
                "6",
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
                body = http_get(url)[2]
                return bool(Exposition.parse(body).samples("platform_service_uptime_ratio"))

            wait_until(probed, timeout=15, what="uptime from the demo")
            exp = Exposition.parse(http_get(url)[2])
            services = {lb["service"] for lb, _ in exp.samples("platform_probe_checks_total")}
            assert {"checkout", "search", "accounts"} <= services
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
