"""Settings of the SLO domain: a service's objectives, and the checks that they fit its data."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BeforeValidator, Field, field_validator, model_validator

from exporter.core.settings import (
    Duration,
    Percent,
    ServiceBase,
    ServiceFields,
    StrictModel,
    parse_duration,
)
from exporter.domains.probe.kpis import DURATION_BUCKETS
from exporter.domains.probe.settings import ProbeServiceFields
from exporter.domains.slo.openslo import OpenSLOError, load_documents
from exporter.domains.slo.windows import WorkbookWindowsError, burn_windows, check_period
from exporter.domains.traffic.kpis import LATENCY_BUCKETS


class SLOSpecError(ValueError):
    """A service's SLO config does not fit its data."""


def parse_slo_window(value: Any) -> Any:
    """An SLO period: a duration (rolling), or ``month`` for the calendar month (UTC)."""
    if isinstance(value, str) and value.strip() == "month":
        return "month"
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{exc}; or month for the calendar month") from None


SLOWindow = Annotated[float | Literal["month"], BeforeValidator(parse_slo_window)]


class AvailabilitySLOConfig(StrictModel):
    """Availability: the share of good events. ``probe``: successful probe checks
    (``platform_probe_checks_total``); ``requests``: requests not answered 5xx
    (``platform_service_requests_total``)."""

    objective: Percent
    sli: Literal["probe", "requests"] = "probe"


class LatencySLOConfig(StrictModel):
    """Latency: the share of events faster than ``threshold``, counted from a histogram
    (``platform_probe_duration_seconds`` or ``platform_service_request_duration_seconds``),
    so the threshold must be one of its bucket bounds."""

    objective: Percent
    threshold: Duration
    sli: Literal["probe", "requests"] = "probe"

    @field_validator("threshold")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value


class SLOConfig(StrictModel):
    """A service's service-level objectives, and the window they are judged over.

    ``alert_windows``: ``workbook`` keeps the SRE Workbook's alert windows (1h/5m,
    6h/30m, 1d/2h, 3d/6h) and derives each burn factor from the same share of the
    budget (14.4, 6, 3, 1 for 30 days); ``scaled`` shrinks the windows in proportion
    to ``window`` (for short windows, as in tests) and keeps the factors.
    ``window: month`` is the calendar month (UTC): the budget starts afresh on the
    1st, and the burn factors follow the month's 28 to 31 days.
    """

    window: SLOWindow = 30 * 86400.0
    alert_windows: Literal["workbook", "scaled"] = "workbook"
    availability: AvailabilitySLOConfig | None = None
    latency: LatencySLOConfig | None = None
    # OpenSLO v1 ``SLO`` (and ``SLI``) documents: inline, or the path of a YAML file.
    openslo: list[str | dict[str, Any]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> SLOConfig:
        try:
            check_period(self.window, self.alert_windows)
        except WorkbookWindowsError as exc:
            raise ValueError(f"window: {exc}") from None
        if self.openslo:
            try:
                load_documents(self.openslo)
            except OpenSLOError as exc:
                raise ValueError(f"openslo: {exc}") from None
        return self


class SloServiceFields(ServiceFields):
    """A service's objectives; rules and dashboards are generated from them
    (``platform-kpi-exporter rules``)."""

    slo: SLOConfig | None = None

    @model_validator(mode="after")
    def _slo_fits(self) -> Self:
        assert isinstance(self, ServiceBase)
        try:
            check_service_slos(self)
        except SLOSpecError as exc:
            raise ValueError(f"slo: {exc}") from None
        return self


def request_buckets() -> tuple[float, ...]:
    """The bounds of the request-duration histogram (the traffic domain's)."""
    return tuple(float(b) for b in LATENCY_BUCKETS)


def check_service_slos(service: ServiceBase) -> None:
    """Raise SLOSpecError when the SLO config cannot work for this service."""
    slo = SloServiceFields.of(service).slo
    probes = ProbeServiceFields.of(service).probes
    if slo is None:
        return
    if slo.availability and slo.availability.sli == "probe" and not probes:
        raise SLOSpecError("availability.sli is probe but the service has no probes")
    if slo.latency:
        if slo.latency.sli == "probe":
            if not probes:
                raise SLOSpecError("latency.sli is probe but the service has no probes")
            bounds: tuple[float, ...] | None = DURATION_BUCKETS
        else:
            bounds = request_buckets()
        if bounds is not None and not any(abs(b - slo.latency.threshold) < 1e-9 for b in bounds):
            raise SLOSpecError(
                f"latency.threshold {slo.latency.threshold:g}s is not a bucket bound of the "
                f"{slo.latency.sli} duration histogram; use one of "
                + ", ".join(f"{b:g}s" for b in bounds)
            )
    builtin = {n for n in ("availability", "latency") if getattr(slo, n) is not None}
    for doc in load_documents(slo.openslo) if slo.openslo else []:
        if doc.service and doc.service != service.name:
            raise SLOSpecError(
                f"openslo: SLO {doc.name!r} is for service {doc.service!r}, not {service.name!r}"
            )
        if doc.name in builtin:
            raise SLOSpecError(f"openslo: SLO name {doc.name!r} clashes with slo.{doc.name}")
        if doc.period is not None:
            try:
                burn_windows(doc.period, slo.alert_windows)
            except ValueError as exc:
                raise SLOSpecError(f"openslo: SLO {doc.name!r}: timeWindow: {exc}") from None
