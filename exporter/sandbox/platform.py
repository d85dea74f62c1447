"""The whole simulated platform: every fake upstream mounted on one loopback server,
and the exporter config that points at it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporter.sandbox.app import App, SandboxServer
from exporter.sandbox.health import control_app, health_app
from exporter.sandbox.scenario import Scenario


def apps(scenario: Scenario) -> dict[str, App]:
    """Each fake upstream under its URL prefix."""
    return {
        "/services": health_app(scenario),
        "/control": control_app(scenario),
    }


def start(scenario: Scenario, port: int = 0) -> SandboxServer:
    return SandboxServer(apps(scenario), port=port).start()


def demo_config(base_url: str, state_dir: Path, scenario: Scenario, port: int) -> dict[str, Any]:
    """Config (as YAML-shaped data) for the exporter to watch the sandbox."""
    return {
        "server": {"listen_address": "127.0.0.1", "port": port, "startup_grace": "30s"},
        "state": {"path": str(state_dir / "demo.db")},
        "services": [
            {
                "name": svc.name,
                "team": svc.team,
                "probes": [
                    {
                        "name": "health",
                        "url": f"{base_url}/services/{svc.name}/health",
                        "expect_status": [200],
                        "body_regex": '"status":"ok"',
                        "timeout": "2s",
                        "interval": "5s",
                    }
                ],
            }
            for svc in scenario.services
        ],
        "sources": {"probe": {"interval": "1s"}},
    }
