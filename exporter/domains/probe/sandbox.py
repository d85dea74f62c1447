"""Simulated service health endpoints, and the control API that forces outages.

``GET /services/{name}/health`` answers ``200 {"status":"ok"}`` after the
scenario's latency, or ``503 {"status":"unavailable"}`` during an outage.
``PUT`` / ``DELETE /control/outage/{name}`` starts / ends a forced outage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporter.core.sandbox.app import App, Request, Response
from exporter.core.sandbox.scenario import Scenario


def health_app(scenario: Scenario) -> App:
    """The services' health endpoints: up or down as the scenario says at its clock's now."""
    app = App()

    @app.route("GET", "/{name}/health")
    def health(request: Request) -> Response:
        name = request.params["name"]
        if scenario.service(name) is None:
            return Response.json({"status": "unknown service"}, 404)
        now = scenario.now()
        if scenario.is_down(name, now):
            return Response.json({"status": "unavailable"}, 503, {"Retry-After": "30"})
        response = Response.json({"status": "ok", "service": name})
        response.delay = scenario.latency(name, now)
        return response

    return app


def control_app(scenario: Scenario) -> App:
    app = App()

    @app.route("PUT", "/outage/{name}")
    def start(request: Request) -> Response:
        scenario.set_outage(request.params["name"], True)
        return Response.json({"outage": True})

    @app.route("DELETE", "/outage/{name}")
    def end(request: Request) -> Response:
        scenario.set_outage(request.params["name"], False)
        return Response.json({"outage": False})

    return app


def apps(scenario: Scenario) -> dict[str, App]:
    return {"/services": health_app(scenario), "/control": control_app(scenario)}


def configure(config: dict[str, Any], base_url: str, scenario: Scenario, state_dir: Path) -> None:
    """Give every simulated service an HTTP health probe."""
    for service in config["services"]:
        service["probes"] = [
            {
                "name": "health",
                "url": f"{base_url}/services/{service['name']}/health",
                "expect_status": [200],
                "body_regex": '"status":"ok"',
                "timeout": "2s",
                "interval": "5s",
            }
        ]
    config["sources"]["probe"] = {"interval": "1s"}
