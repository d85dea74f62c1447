"""The whole simulated platform: every fake upstream mounted on one loopback server,
and the exporter config that points at it.

Each sandbox module may define two hooks, found by name:

* ``apps(scenario) -> dict[str, App]``: its fake upstreams, by URL prefix;
* ``configure(config, base_url, scenario, state_dir) -> None``: add what the
  exporter needs to watch them to the demo config (YAML-shaped data).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from exporter.sandbox.app import App, SandboxServer
from exporter.sandbox.scenario import Scenario

# The domain packages, found by path (the interim scan below is to be replaced by a registry).
_DOMAINS = str(Path(__file__).resolve().parents[1] / "domains")


def _modules() -> Iterator[ModuleType]:
    names = (i.name for i in pkgutil.walk_packages([_DOMAINS], "exporter.domains."))
    for name in sorted(n for n in names if ".sandbox" in n):
        yield importlib.import_module(name)


def apps(scenario: Scenario) -> dict[str, App]:
    """Each fake upstream under its URL prefix."""
    mounted: dict[str, App] = {}
    for module in _modules():
        hook = getattr(module, "apps", None)
        if hook is not None:
            mounted.update(hook(scenario))
    return mounted


def start(scenario: Scenario, port: int = 0) -> SandboxServer:
    return SandboxServer(apps(scenario), port=port).start()


def demo_config(base_url: str, state_dir: Path, scenario: Scenario, port: int) -> dict[str, Any]:
    """Config (as YAML-shaped data) for the exporter to watch the sandbox."""
    config: dict[str, Any] = {
        "server": {"listen_address": "127.0.0.1", "port": port, "startup_grace": "30s"},
        "state": {"path": str(state_dir / "demo.db")},
        "services": [{"name": svc.name, "team": svc.team} for svc in scenario.services],
        "sources": {},
    }
    for module in _modules():
        hook = getattr(module, "configure", None)
        if hook is not None:
            hook(config, base_url, scenario, state_dir)
    return config
