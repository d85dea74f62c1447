"""Gateway traffic for the sandbox: a Kong-like Status and Admin API, and an NGINX JSON access log.

Kong (under ``/kong-status`` and ``/kong-admin``): the Prometheus plugin's exposition in
Kong 3.x names (``kong_http_requests_total``, ``kong_request_latency_ms`` with Kong's
bounds, padded as Kong prints them), and the Admin API's ``/services``, ``/routes`` and
``/consumers`` with Kong's ``{"data": [...], "next": "/services?offset=..."}`` pages.
Counters grow at each Kong service's fixed rate from the moment the fake started;
``PUT /kong-control/restart`` restarts "Kong", so every counter starts again from 0.
``legacy-svc`` belongs to no catalog service and shows as ``unmapped``.

NGINX: the demo keeps appending requests for ``recommendations`` (host
``recs.sandbox``) and some unmapped paths to ``<state_dir>/access.log`` in the JSON
``log_format`` documented in docs/kpis.md; during the scenario's outages of a service,
its requests get 503s.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.core.clock import Clock, system_clock
from exporter.core.periods import utc_minute
from exporter.core.sandbox.app import App, Request, Response
from exporter.core.sandbox.scenario import Scenario, _unit

KONG_STATUS = "/kong-status"
KONG_ADMIN = "/kong-admin"
KONG_CONTROL = "/kong-control"
# Kong 3.x's UPSTREAM_LATENCY_BUCKETS, in ms.
KONG3_BUCKETS = (25, 50, 80, 100, 250, 400, 700, 1000, 2000, 5000, 10000, 30000, 60000)
CONSUMERS = 7


@dataclass(frozen=True)
class KongService:
    name: str
    route: str
    # The catalog service whose routes list the Kong route; None: unmapped.
    catalog: str | None
    rps: float
    share_4xx: float
    share_5xx: float
    # Median request latency, seconds.
    median: float


KONG_SERVICES: tuple[KongService, ...] = (
    KongService("checkout-svc", "checkout-route", "checkout", 40.0, 0.03, 0.005, 0.120),
    KongService("payments-svc", "payments-route", "payments-api", 25.0, 0.02, 0.001, 0.080),
    KongService("search-svc", "search-route", "search", 60.0, 0.05, 0.010, 0.200),
    KongService("accounts-svc", "accounts-route", "accounts", 15.0, 0.01, 0.0, 0.040),
    KongService("legacy-svc", "legacy-route", None, 5.0, 0.0, 0.020, 0.300),
)
SIGMA = 0.5


def _lognormal_cdf(x: float, median: float, sigma: float = SIGMA) -> float:
    return 0.5 * (1.0 + math.erf(math.log(x / median) / (sigma * math.sqrt(2.0))))


def _pad(bound: float) -> str:
    # Kong's Prometheus library pads bucket bounds so that they sort as text.
    return f"{bound:07.1f}"


@dataclass
class KongFake:
    """Counters as a function of time since the fake (re)started."""

    clock: Clock = system_clock
    # When the fake (re)started; None: at its creation, by its clock.
    started: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.started is None:
            self.started = self.clock()

    def restart(self) -> None:
        with self.lock:
            self.started = self.clock()

    def totals(self, svc: KongService, now: float) -> tuple[int, int, int]:
        """(2xx, 4xx, 5xx) requests since the start."""
        with self.lock:
            elapsed = max(0.0, now - (self.started or 0.0))
        total = math.floor(svc.rps * elapsed)
        e5 = math.floor(total * svc.share_5xx)
        e4 = math.floor(total * svc.share_4xx)
        return total - e4 - e5, e4, e5

    def exposition(self, now: float) -> str:
        lines = [
            "# HELP kong_http_requests_total HTTP status codes per consumer/service/route in Kong",
            "# TYPE kong_http_requests_total counter",
        ]
        hist = [
            "# HELP kong_request_latency_ms Total latency incurred during requests for each "
            "service/route in Kong",
            "# TYPE kong_request_latency_ms histogram",
        ]
        for svc in KONG_SERVICES:
            ok, e4, e5 = self.totals(svc, now)
            base = f'service="{svc.name}",route="{svc.route}"'
            for code, n in (("200", ok), ("404", e4), ("503", e5)):
                if n:
                    lines.append(
                        f'kong_http_requests_total{{{base},code="{code}",source="service",'
                        f'consumer=""}} {n}'
                    )
            total = ok + e4 + e5
            if not total:
                continue
            for bound in KONG3_BUCKETS:
                count = math.floor(total * _lognormal_cdf(bound / 1000.0, svc.median))
                hist.append(f'kong_request_latency_ms_bucket{{{base},le="{_pad(bound)}"}} {count}')
            hist.append(f'kong_request_latency_ms_bucket{{{base},le="+Inf"}} {total}')
            mean_ms = svc.median * math.exp(SIGMA**2 / 2) * 1000.0
            hist.append(f"kong_request_latency_ms_sum{{{base}}} {total * mean_ms:.1f}")
            hist.append(f"kong_request_latency_ms_count{{{base}}} {total}")
        lines.append(
            "# HELP kong_nginx_requests_total Number of requests total\n"
            "# TYPE kong_nginx_requests_total gauge"
        )
        all_requests = sum(sum(self.totals(s, now)) for s in KONG_SERVICES)
        lines.append(
            f'kong_nginx_requests_total{{node_id="sandbox",subsystem="http"}} {all_requests}'
        )
        return "\n".join(lines + hist) + "\n"


def _uuid(kind: str, i: int) -> str:
    n = int(_unit(7, kind, i) * 2**64)
    h = f"{n:016x}{i:016x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}"


def admin_entities() -> dict[str, list[dict[str, Any]]]:
    services = [
        {
            "id": _uuid("service", i),
            "name": s.name,
            "host": f"{s.name}.internal",
            "port": 80,
            "protocol": "http",
            "path": None,
            "created_at": 1700000000 + i,
            "updated_at": 1700000000 + i,
            "tags": None,
        }
        for i, s in enumerate(KONG_SERVICES)
    ]
    routes = [
        {
            "id": _uuid("route", i),
            "name": s.route,
            "paths": [f"/{s.name.removesuffix('-svc')}"],
            "protocols": ["http", "https"],
            "service": {"id": services[i]["id"]},
            "strip_path": True,
            "created_at": 1700000000 + i,
        }
        for i, s in enumerate(KONG_SERVICES)
    ]
    consumers = [
        {
            "id": _uuid("consumer", i),
            "username": f"partner-{i}",
            "custom_id": None,
            "created_at": 1700000000 + i,
            "tags": None,
        }
        for i in range(CONSUMERS)
    ]
    return {"services": services, "routes": routes, "consumers": consumers}


def admin_app(entities: dict[str, list[dict[str, Any]]] | None = None) -> App:
    """Kong's Admin API list endpoints: ``size`` (default 100, at most 1000) and ``offset``."""
    data = entities if entities is not None else admin_entities()
    app = App()

    @app.route("GET", "/{entity}")
    def listing(request: Request) -> Response:
        entity = request.params["entity"]
        if entity not in data:
            return Response.json({"message": "Not found"}, 404)
        try:
            size = int(request.arg("size", "100") or "100")
        except ValueError:
            size = 0
        if not 1 <= size <= 1000:
            return Response.json(
                {
                    "code": 2,
                    "name": "invalid size",
                    "message": "size must be an integer between 1 and 1000",
                },
                400,
            )
        items = data[entity]
        offset = request.arg("offset")
        start = 0
        if offset is not None:
            ids = [i["id"] for i in items]
            if offset not in ids:
                return Response.json(
                    {
                        "code": 6,
                        "name": "invalid offset",
                        "message": f"'{offset}' is not a valid offset",
                    },
                    400,
                )
            start = ids.index(offset)
        page = items[start : start + size]
        more = start + size < len(items)
        next_offset = items[start + size]["id"] if more else None
        return Response.json(
            {
                "data": page,
                "next": f"/{entity}?offset={next_offset}&size={size}" if more else None,
                "offset": next_offset,
            }
        )

    return app


def status_app(kong: KongFake) -> App:
    app = App()

    @app.route("GET", "/metrics")
    def metrics(request: Request) -> Response:
        return Response.text(kong.exposition(kong.clock()))

    return app


def control_app(kong: KongFake) -> App:
    app = App()

    @app.route("PUT", "/restart")
    def restart(request: Request) -> Response:
        kong.restart()
        return Response.json({"restarted": True})

    return app


def apps(scenario: Scenario) -> dict[str, App]:
    kong = KongFake(clock=scenario.clock)
    return {
        KONG_STATUS: status_app(kong),
        KONG_ADMIN: admin_app(),
        KONG_CONTROL: control_app(kong),
    }


# --- NGINX access log ---------------------------------------------------------------------

NGINX_HOSTS = (("recs.sandbox", "/recommendations/for-you", "recommendations"),)


def access_log_line(scenario: Scenario, t: float, i: int) -> str:
    """One JSON access-log line at time ``t`` (request number ``i``), from the scenario."""
    if i % 10 == 9:
        host, uri, service = "static.sandbox", "/assets/app.js", ""
    else:
        host, uri, service = NGINX_HOSTS[0]
    sim = scenario.service(service) if service else None
    down = sim is not None and scenario.is_down(service, t)
    latency = scenario.latency(service, t + i * 0.001) * 2 if sim else 0.002
    u = _unit(scenario.seed, "nginx", i)
    status = 503 if down else (404 if u < 0.02 else (500 if u < 0.025 else 200))
    return json.dumps(
        {
            "msec": f"{t:.3f}",
            "host": host,
            "request_uri": f"{uri}?page={i % 5}",
            "status": str(status),
            "request_time": f"{latency:.3f}",
            "upstream_response_time": f"{max(latency - 0.001, 0):.3f}",
            "api_key": f"key-{i % 4}",
        },
        separators=(",", ":"),
    )


def write_access_log(
    path: Path, scenario: Scenario, stop: threading.Event, rate: float = 20.0
) -> None:
    """Append ``rate`` lines per second until ``stop`` is set or the file's directory goes."""
    i = 0
    clock = scenario.clock
    backlog_start = utc_minute(clock()) - 600
    try:
        with open(path, "a", encoding="utf-8") as fh:
            # Ten minutes of history first, so every window has data at once.
            t = backlog_start
            while t < clock():
                fh.write(access_log_line(scenario, t, i) + "\n")
                i += 1
                t += 1.0 / rate
            fh.flush()
            while not stop.wait(0.25):
                if not path.exists():
                    return  # the demo's state directory is gone: so is the demo
                now = clock()
                for _ in range(int(rate / 4)):
                    fh.write(access_log_line(scenario, now, i) + "\n")
                    i += 1
                fh.flush()
    except OSError:
        return


def configure(config: dict[str, Any], base_url: str, scenario: Scenario, state_dir: Path) -> None:
    """Map the catalog to Kong routes and the NGINX host; watch Kong and the access log."""
    routes = {s.catalog: s.route for s in KONG_SERVICES if s.catalog}
    hosts = {svc: f"{host}{uri.rsplit('/', 1)[0]}" for host, uri, svc in NGINX_HOSTS}
    for service in config["services"]:
        mine = [r for r in (routes.get(service["name"]), hosts.get(service["name"])) if r]
        if mine:
            service.setdefault("routes", []).extend(mine)
    config["sources"]["kong"] = {
        "status_url": f"{base_url}{KONG_STATUS}",
        "admin_url": f"{base_url}{KONG_ADMIN}",
        "interval": "5s",
        "page_size": 2,
    }
    log = Path(state_dir) / "access.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    threading.Thread(
        target=write_access_log, args=(log, scenario, stop), name="sandbox-access-log", daemon=True
    ).start()
    config["sources"]["nginx"] = {
        "access_log": str(log),
        "consumer_field": "api_key",
        "interval": "2s",
    }
