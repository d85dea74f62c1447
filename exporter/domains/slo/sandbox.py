"""Objectives for the demo: every probed service gets availability and latency SLOs.

Availability is probe-based (99.5% of checks succeed); latency is request-based
(99% of gateway requests within 500ms) for services whose traffic the sandbox
gateways carry, probe-based (99% of checks within 250ms) for the others. The
scenario's scheduled outages (checkout, search) burn their budgets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporter.core.sandbox.scenario import Scenario


def _gateway_services() -> set[str]:
    """Catalog services the sandbox gateways (Kong, NGINX) carry traffic for."""
    from exporter.domains.traffic.sandbox import KONG_SERVICES, NGINX_HOSTS

    return {s.catalog for s in KONG_SERVICES if s.catalog} | {svc for _, _, svc in NGINX_HOSTS}


def configure(config: dict[str, Any], base_url: str, scenario: Scenario, state_dir: Path) -> None:
    # The traffic hook adds routes after this one runs (hooks run in module-name order).
    gateway = _gateway_services()
    for service in config["services"]:
        if not service.get("probes"):
            continue
        latency: dict[str, Any] = (
            {"objective": 99, "threshold": "500ms", "sli": "requests"}
            if service["name"] in gateway
            else {"objective": 99, "threshold": "250ms", "sli": "probe"}
        )
        service["slo"] = {"availability": {"objective": 99.5}, "latency": latency}
