"""The whole simulated platform: every fake upstream mounted on one loopback server,
and the exporter config that points at it.

Each domain names its sandbox modules (``Domain.sandbox``); each may define two hooks:

* ``apps(scenario) -> dict[str, App]``: its fake upstreams, by URL prefix;
* ``configure(config, base_url, scenario, state_dir) -> None``: add what the
  exporter needs to watch them to the demo config (YAML-shaped data);
* ``push(scenario, exporter_url) -> Pusher``: start a simulated upstream that posts to
  the exporter (a webhook sender), once the exporter listens at ``exporter_url``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from exporter.core.sandbox.app import App, SandboxServer
from exporter.core.sandbox.scenario import Scenario
from exporter.domains import domains


def _modules() -> Iterator[ModuleType]:
    """Every domain's sandbox modules, in the config's order of the domains."""
    for domain in domains():
        for name in domain.sandbox:
            yield importlib.import_module(name)


def apps(scenario: Scenario) -> dict[str, App]:
    """Each fake upstream under its URL prefix."""
    mounted: dict[str, App] = {}
    for module in _modules():
        hook = getattr(module, "apps", None)
        if hook is not None:
            mounted.update(hook(scenario))
    return mounted


class Pusher(Protocol):
    """A simulated upstream posting to the exporter, running until stopped."""

    def caught_up(self, timeout: float) -> bool: ...  # everything due so far was accepted

    def stop(self) -> None: ...


def push(scenario: Scenario, exporter_url: str) -> list[Pusher]:
    """Start every domain's webhook senders, posting to the exporter at ``exporter_url``."""
    started: list[Pusher] = []
    for module in _modules():
        hook = getattr(module, "push", None)
        if hook is not None:
            started.append(hook(scenario, exporter_url))
    return started


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
