"""Every SLO in one normalised form: who it belongs to, its objective, and its SLI in PromQL.

An SLI is three PromQL templates over the ``{{.window}}`` placeholder: the error
ratio (bad events / all events, weighted by events), the total event rate, whose
absence means the SLI has no data, and the bad event rate (which a calendar-month
period sums over the month's days, hours and minutes). Built-in SLIs read the exporter's own
event counters and histograms:

* probe availability: ``platform_probe_checks_total{result="failure"}`` / all checks;
* probe latency: successful checks slower than the threshold, from the
  ``platform_probe_duration_seconds`` buckets (``count - bucket{le=threshold}``);
* request availability: ``platform_service_requests_total{code_class="5xx"}`` / all requests;
* request latency: the same from ``platform_service_request_duration_seconds``.

Each event rate is summed over one copy of each series (:func:`~exporter.core.replicas.one_copy`):
with several replicas scraped, every one serves the same counters, and each event counts once.
OpenSLO documents bring their own queries (see :mod:`exporter.domains.slo.openslo`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exporter.core.replicas import one_copy
from exporter.domains.slo.openslo import WINDOW, load_documents
from exporter.domains.slo.settings import SloServiceFields
from exporter.domains.slo.windows import (
    MONTH,
    BurnWindow,
    Period,
    burn_windows,
    period_name,
    prom_duration,
)

if TYPE_CHECKING:
    from exporter.core.settings import ConfigBase, ServiceBase

PROBE_CHECKS = "platform_probe_checks_total"
PROBE_DURATION = "platform_probe_duration_seconds"
REQUESTS = "platform_service_requests_total"
REQUEST_DURATION = "platform_service_request_duration_seconds"


@dataclass(frozen=True, slots=True)
class SLOSpec:
    """One objective of one service."""

    service: str
    team: str
    name: str  # the sloth_slo label: "availability", "latency" or the OpenSLO name
    objective: float  # ratio, e.g. 0.999
    period: Period  # seconds, or "month" (the calendar month, UTC)
    alert_windows: str  # "workbook" or "scaled"
    # "probe-availability", "probe-latency", "requests-availability", "requests-latency", "openslo"
    sli: str
    description: str
    error_ratio_template: str
    total_template: str
    bad_template: str
    threshold: float | None = None  # latency SLIs: seconds

    @property
    def id(self) -> str:
        return f"{self.service}-{self.name}"

    @property
    def budget(self) -> float:
        return 1.0 - self.objective

    @property
    def calendar(self) -> bool:
        """True when the period is the calendar month."""
        return self.period == MONTH

    @property
    def period_name(self) -> str:
        return period_name(self.period)

    @property
    def burn_windows(self) -> tuple[BurnWindow, ...]:
        return burn_windows(self.period, self.alert_windows)

    def error_ratio(self, window: float) -> str:
        return self.error_ratio_template.replace(WINDOW, prom_duration(window))

    def total(self, window: float) -> str:
        return self.total_template.replace(WINDOW, prom_duration(window))

    def bad(self, window: float) -> str:
        return self.bad_template.replace(WINDOW, prom_duration(window))


def _le(bound: float) -> str:
    """A matcher for a bucket bound as the exporter writes it (``%g``); a whole number also
    matches its ``1.0`` spelling, which Prometheus 3 normalises ``le`` to."""
    text = f"{bound:g}"
    if bound == int(bound):
        return f'le=~"{text}(\\\\.0)?"'
    return f'le="{text}"'


def _events(selector: str) -> str:
    """The rate of the events ``selector`` counts, each once across replicas."""
    return f"sum({one_copy(f'rate({selector}[{WINDOW}])')})"


def _ratio(bad: str, total: str) -> str:
    # A service that never failed has no failure series yet: its error ratio is 0, not absent.
    return f"(\n  ({bad})\n  or vector(0)\n)\n/\n({total})"


# (error ratio, total rate, bad rate) templates of an SLI.
Templates = tuple[str, str, str]


def _probe_availability(service: str) -> Templates:
    sel = f'service="{service}"'
    total = _events(f"{PROBE_CHECKS}{{{sel}}}")
    bad = _events(f'{PROBE_CHECKS}{{{sel},result="failure"}}')
    return _ratio(bad, total), total, bad


def _histogram_latency(metric: str, service: str, threshold: float) -> Templates:
    sel = f'service="{service}"'
    total = _events(f"{metric}_count{{{sel}}}")
    fast = _events(f"{metric}_bucket{{{sel},{_le(threshold)}}}")
    slow = f"(\n  {total}\n  -\n  {fast}\n)"
    return f"{slow}\n/\n{total}", total, slow


def _requests_availability(service: str) -> Templates:
    sel = f'service="{service}"'
    total = _events(f"{REQUESTS}{{{sel}}}")
    bad = _events(f'{REQUESTS}{{{sel},code_class="5xx"}}')
    return _ratio(bad, total), total, bad


def service_slos(service: ServiceBase) -> list[SLOSpec]:
    """The SLOs of one service, built-in ones first."""
    slo = SloServiceFields.of(service).slo
    if slo is None:
        return []
    out: list[SLOSpec] = []
    if slo.availability is not None:
        a = slo.availability
        templates = (
            _probe_availability(service.name)
            if a.sli == "probe"
            else _requests_availability(service.name)
        )
        what = "probe checks that succeed" if a.sli == "probe" else "requests not answered 5xx"
        out.append(
            _built_in(
                service,
                "availability",
                a.objective,
                a.sli,
                f"{a.objective:g}% of {what}",
                templates,
            )
        )
    if slo.latency is not None:
        lat = slo.latency
        metric = PROBE_DURATION if lat.sli == "probe" else REQUEST_DURATION
        templates = _histogram_latency(metric, service.name, lat.threshold)
        what = "successful probe checks" if lat.sli == "probe" else "requests"
        description = f"{lat.objective:g}% of {what} faster than {lat.threshold:g}s"
        out.append(
            _built_in(
                service, "latency", lat.objective, lat.sli, description, templates, lat.threshold
            )
        )
    for doc in load_documents(slo.openslo) if slo.openslo else []:
        total = doc.total_query
        if doc.bad_query is not None:
            ratio = _ratio(doc.bad_query, total)
            bad = doc.bad_query
        else:
            ratio = f"1 - (\n  ({doc.good_query})\n  /\n  ({total})\n)"
            # A step with no good event has no good series: all its events are bad.
            bad = f"(\n  ({total})\n  -\n  (({doc.good_query}) or vector(0))\n)"
        out.append(
            SLOSpec(
                service=service.name,
                team=service.team,
                name=doc.name,
                objective=doc.objective,
                period=doc.period if doc.period is not None else slo.window,
                alert_windows=slo.alert_windows,
                sli="openslo",
                description=doc.description or f"{doc.objective * 100:g}% (OpenSLO)",
                error_ratio_template=ratio,
                total_template=total,
                bad_template=bad,
            )
        )
    return out


def _built_in(
    service: ServiceBase,
    name: str,
    objective_percent: float,
    sli: str,
    description: str,
    templates: Templates,
    threshold: float | None = None,
) -> SLOSpec:
    """A built-in SLO (``slo.availability`` or ``slo.latency``) of ``service``;
    ``templates`` are its error-ratio, total and bad PromQL templates."""
    slo = SloServiceFields.of(service).slo
    assert slo is not None
    ratio, total, bad = templates
    return SLOSpec(
        service=service.name,
        team=service.team,
        name=name,
        objective=round(objective_percent / 100.0, 10),
        period=slo.window,
        alert_windows=slo.alert_windows,
        sli=f"{sli}-{name}",
        description=description,
        error_ratio_template=ratio,
        total_template=total,
        bad_template=bad,
        threshold=threshold,
    )


def all_slos(config: ConfigBase | Sequence[ServiceBase]) -> list[SLOSpec]:
    """Every SLO of the catalog, ordered by service then as declared."""
    services = config.services if not isinstance(config, Sequence) else config
    return [spec for svc in sorted(services, key=lambda s: s.name) for spec in service_slos(svc)]
