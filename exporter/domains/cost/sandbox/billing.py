"""The sandbox's cloud bill and daily request totals, for the cost part of the demo.

``configure`` writes FOCUS 1.0 exports of the scenario's platform under
``state_dir/focus/`` (one gzip CSV per billing month, AWS Data Exports style):
daily lines per service tagged ``service=<name>``, over several service
categories, for every day of the previous calendar month and of this one up to
today so far (and at least the last :data:`DAYS` closed days); untagged
network cost (which lands in ``unallocated``); a negative correction
(``ChargeClass=Correction``) of checkout's compute on one day; and a credit
(``ChargeCategory=Credit``) for search. It also serves, under ``/billing``, a
Prometheus-API ``/api/v1/query`` answering each service's requests for the UTC
day that ends at ``time``, and under ``/azure`` a fake Azure Cost Management
with EUR cost for the recommendations service over the same days. Every number
is a pure function of (seed, service, day), so the demo's cost KPIs are known in
advance; "today" is the scenario clock's UTC day.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from exporter.core.clock import utc_datetime
from exporter.core.sandbox.app import App, Request, Response
from exporter.core.sandbox.scenario import Scenario, _unit
from exporter.domains.cost.focus_schema import EXPORT_HEADER
from exporter.domains.cost.sandbox.azure import AzureCostFake

# Closed days of history at least; the previous calendar month is always covered too.
DAYS = 40
AZURE_SCOPE = "/subscriptions/5a4d7e00-0000-4000-8000-00000000beef"
AZURE_SECRET = "sandbox-azure-secret"
# Daily cost per service and ServiceCategory, in USD, before noise.
DAILY_COST: dict[str, tuple[tuple[str, str, float], ...]] = {
    "checkout": (
        ("Amazon Elastic Compute Cloud", "Compute", 96.0),
        ("Amazon RDS", "Databases", 31.0),
    ),
    "payments-api": (
        ("Amazon Elastic Compute Cloud", "Compute", 54.0),
        ("Amazon DynamoDB", "Databases", 12.5),
    ),
    "search": (("Amazon OpenSearch Service", "Analytics", 140.0), ("Amazon S3", "Storage", 8.0)),
    "accounts": (("AWS Lambda", "Compute", 9.0), ("Amazon DynamoDB", "Databases", 6.0)),
    "recommendations": (("Amazon SageMaker", "AI and Machine Learning", 22.0),),
}
UNTAGGED_NETWORK = 17.5
# Requests per day per service, before noise.
DAILY_REQUESTS = {
    "checkout": 1_200_000,
    "payments-api": 2_600_000,
    "search": 5_400_000,
    "accounts": 900_000,
    "recommendations": 150_000,
}
HEADER = list(EXPORT_HEADER)


def first_billed_day(today: date) -> date:
    """The oldest day the sandbox bills: the 1st of the previous month, or DAYS ago if older."""
    previous_month = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    return min(previous_month, today - timedelta(days=DAYS))


def billed_days(today: date) -> list[date]:
    """Every day the sandbox bills, oldest first, ending with ``today`` (billed so far)."""
    first = first_billed_day(today)
    return [first + timedelta(days=n) for n in range((today - first).days + 1)]


def daily_cost(scenario: Scenario, service: str, category: str, day: date) -> float:
    base = next((c for _, cat, c in DAILY_COST.get(service, ()) if cat == category), 0.0)
    return round(base * (0.85 + 0.3 * _unit(scenario.seed, "cost", service, category, day)), 4)


def daily_requests(scenario: Scenario, service: str, day: date) -> int:
    sim = scenario.service(service)
    if sim is None:
        return 0
    today = utc_datetime(scenario.now()).date()
    registered = today - timedelta(days=sim.registered_days_ago)
    if day < registered:
        return 0
    base = DAILY_REQUESTS.get(service, 0)
    return int(base * (0.8 + 0.4 * _unit(scenario.seed, "requests", service, day)))


def focus_lines(scenario: Scenario, today: date, now: float) -> dict[str, list[list[str]]]:
    """FOCUS rows per billing month (YYYY-MM), for the closed days and today so far."""
    months: dict[str, list[list[str]]] = {}
    hours_today = max(
        1, int((now - datetime(today.year, today.month, today.day, tzinfo=UTC).timestamp()) // 3600)
    )
    for d in billed_days(today):
        n = (today - d).days
        rows = months.setdefault(d.strftime("%Y-%m"), [])
        start = f"{d}T00:00:00Z"
        end = f"{d + timedelta(days=1)}T00:00:00Z" if n else f"{d}T{hours_today:02d}:00:00Z"
        share = 1.0 if n else hours_today / 24
        for svc in scenario.services:
            registered = today - timedelta(days=svc.registered_days_ago)
            if d < registered:
                continue
            for aws_service, category, _ in DAILY_COST.get(svc.name, ()):
                amount = daily_cost(scenario, svc.name, category, d) * share
                rows.append(_row(amount, amount, start, end, aws_service, category, svc.name))
        net = UNTAGGED_NETWORK * share
        rows.append(_row(net, net, start, end, "AWS Data Transfer", "Networking", None))
        if n == 3:
            # A correction of an earlier overcharge, and a promotional credit.
            rows.append(
                _row(
                    -12.0,
                    -12.0,
                    start,
                    end,
                    "Amazon Elastic Compute Cloud",
                    "Compute",
                    "checkout",
                    charge_class="Correction",
                )
            )
            rows.append(
                _row(
                    -25.0,
                    -25.0,
                    start,
                    end,
                    "Amazon OpenSearch Service",
                    "Analytics",
                    "search",
                    category="Credit",
                )
            )
    return months


def _row(
    billed: float,
    effective: float,
    start: str,
    end: str,
    aws_service: str,
    service_category: str,
    service: str | None,
    category: str = "Usage",
    charge_class: str = "",
) -> list[str]:
    tags = json.dumps({"service": service, "environment": "production"}) if service else ""
    return [
        f"{billed:.6f}",
        f"{effective:.6f}",
        "USD",
        start,
        end,
        category,
        charge_class,
        "AWS",
        aws_service,
        service_category,
        "210987654321",
        "eu-west-1",
        f"arn:aws:resource:eu-west-1:210987654321:{service or 'shared'}/{aws_service.replace(' ', '-')}",
        tags,
    ]


def write_exports(scenario: Scenario, directory: Path, now: float | None = None) -> list[Path]:
    """Write one gzip CSV per billing month as of ``now`` (the scenario's now); return the files."""
    at = scenario.now() if now is None else now
    today = utc_datetime(at).date()
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for month, rows in sorted(focus_lines(scenario, today, at).items()):
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(HEADER)
        writer.writerows(rows)
        path = directory / f"billing_period={month}" / "focus-00001.csv.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(buf.getvalue().encode(), mtime=0))
        written.append(path)
    return written


def requests_app(scenario: Scenario) -> App:
    """``/api/v1/query``: each service's requests on the UTC day ending at ``time``."""
    app = App()

    @app.route("GET", "/api/v1/query")
    def query(request: Request) -> Response:
        try:
            at = float(request.arg("time") or scenario.now())
        except ValueError:
            return Response.json(
                {"status": "error", "errorType": "bad_data", "error": "invalid time"}, 400
            )
        day = utc_datetime(at - 1).date()
        result = [
            {"metric": {"service": svc.name}, "value": [at, str(n)]}
            for svc in scenario.services
            if (n := daily_requests(scenario, svc.name, day)) > 0
        ]
        return Response.json(
            {"status": "success", "data": {"resultType": "vector", "result": result}}
        )

    return app


def azure_fake(scenario: Scenario, now: float | None = None) -> AzureCostFake:
    """Recommendations' GPU cost in EUR on Azure, tagged like the AWS lines."""
    today = utc_datetime(scenario.now() if now is None else now).date()
    fake = AzureCostFake(client_secret=AZURE_SECRET, page_size=1000, clock=scenario.clock)
    sim = scenario.service("recommendations")
    registered = today - timedelta(days=sim.registered_days_ago if sim else 0)
    for d in billed_days(today)[:-1]:
        if d >= registered:
            eur = round(18.0 * (0.9 + 0.2 * _unit(scenario.seed, "azure", d)), 4)
            fake.costs[(AZURE_SCOPE, d.isoformat())] = [("recommendations", eur, "EUR")]
    return fake


def apps(scenario: Scenario) -> dict[str, App]:
    return {"/billing": requests_app(scenario), "/azure": azure_fake(scenario).app()}


def configure(config: dict[str, Any], base_url: str, scenario: Scenario, state_dir: Path) -> None:
    """Write the FOCUS exports; point the cost sources at them and at the fakes."""
    exports = state_dir / "focus"
    write_exports(scenario, exports)
    for service in config["services"]:
        service["cost"] = {"tags": {"service": service["name"]}}
    config["sources"]["focus"] = {"paths": [str(exports)], "interval": "30s"}
    config["sources"]["request_totals"] = {
        "url": f"{base_url}/billing",
        "query": "sum by (service) (increase(http_requests_total[$window]))",
        # The previous calendar month and this one, at every date.
        "lookback_days": 62,
        "settle": "0s",
        "interval": "30s",
    }
    config["sources"]["azure_cost"] = {
        "tenant_id": "tenant-1",
        "client_id": "client-1",
        "client_secret": AZURE_SECRET,
        "scopes": [AZURE_SCOPE],
        "management_url": f"{base_url}/azure",
        "login_url": f"{base_url}/azure",
        "interval": "1h",
    }
    config.setdefault("cost", {})["budgets"] = [
        {"scope": "team", "name": "payments", "monthly": 6000, "currency": "USD"},
        {"scope": "team", "name": "discovery", "monthly": 4500, "currency": "USD"},
        {"scope": "service", "name": "recommendations", "monthly": 500, "currency": "EUR"},
    ]
