"""SLO recording rules and burn-rate alerts, compatible with Sloth's names and labels.

Per SLO, one group ``sloth-slo-<id>`` holding, in this order (Sloth spreads them
over three groups; rules of one group are evaluated in order at the same instant,
while groups run independently, so one group means an alert never reads the
recordings of the previous evaluation):

* ``slo:sli_error:ratio_rate<w>`` for every alert window and for the SLO period.
  Each is bad events / all events over the window, so the period ratio is
  weighted by events (not an average of 5m ratios);
* ``slo:objective:ratio``, ``slo:error_budget:ratio``, ``slo:time_period:days``,
  ``slo:current_burn_rate:ratio``, ``slo:period_burn_rate:ratio``,
  ``slo:period_error_budget_remaining:ratio``, ``sloth_slo_info``;
* ``SLOErrorBudgetBurn`` at ``severity: page`` and ``ticket`` (see
  :mod:`exporter.domains.slo.windows`), and ``SLODataAbsent``.

Every series carries ``sloth_id``, ``sloth_service``, ``sloth_slo`` (and ``team``),
so Sloth's Grafana dashboards work on them.

An SLO whose period is the calendar month (``window: month``) records
``slo:sli_error:ratio_rate_month``: bad / all events since 00:00 UTC on the 1st.
PromQL ranges are fixed, so the month so far is summed from three subqueries over
the SLI's event rates (whole days of the month, whole hours of today, five-minute
steps of this hour), each step kept only if it lies in the current month (day,
hour) of the evaluation instant (read with ``@ end()``). It is at most five
minutes behind, starts afresh at the month boundary (absent until the month has
events) and stays within promtool's sample limit. ``slo:time_period:days`` is
``days_in_month()``, and the burn thresholds follow it (see
:mod:`exporter.domains.slo.windows`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exporter.core.settings import ConfigBase
from exporter.domains.slo.spec import SLOSpec, all_slos
from exporter.domains.slo.windows import DAY, BurnWindow, prom_duration

IDS = ("sloth_id", "sloth_service", "sloth_slo")


def _num(value: float) -> str:
    """A float as short as it round-trips (0.999, 14.4, 0.5)."""
    text = repr(round(value, 10))
    return text[:-2] if text.endswith(".0") else text


def labels(spec: SLOSpec) -> dict[str, str]:
    return {
        "sloth_id": spec.id,
        "sloth_service": spec.service,
        "sloth_slo": spec.name,
        "team": spec.team,
    }


def selector(spec: SLOSpec) -> str:
    return f'{{sloth_id="{spec.id}", sloth_service="{spec.service}", sloth_slo="{spec.name}"}}'


def windows(spec: SLOSpec) -> list[float]:
    """Every rolling window with a ``slo:sli_error:ratio_rate<w>`` rule: the alert windows,
    and the period unless it is the calendar month."""
    found = {w.long for w in spec.burn_windows} | {w.short for w in spec.burn_windows}
    if not isinstance(spec.period, str):
        found.add(spec.period)
    return sorted(found)


def sli_record(window: float | str) -> str:
    """``slo:sli_error:ratio_rate5m``, ..., and ``slo:sli_error:ratio_rate_month``."""
    if isinstance(window, str):
        return f"slo:sli_error:ratio_rate_{window}"
    return f"slo:sli_error:ratio_rate{prom_duration(window)}"


# The evaluation instant, inside a subquery (where time() is the step's time).
_NOW = "last_over_time(vector(time())[1m:1m] @ end())"
# (step, range, the calendar field a step must share with now): whole days of the
# month, whole hours of today, five-minute steps of this hour. A step at s covers
# (s - step, s], so it is kept when s - 1 lies in the same month (day, hour) as now.
_MONTH_STEPS = (
    ("1d", "31d", 86400, "month"),
    ("1h", "1d", 3600, "day_of_month"),
    ("5m", "1h", 300, "hour"),
)


def month_events(template: Callable[[float], str]) -> str:
    """Events since 00:00 UTC on the 1st, from ``template(window)``, an event rate."""
    parts = []
    for step, span, seconds, field in _MONTH_STEPS:
        inside = f"{field}(vector(time() - 1)) == scalar({field}({_NOW}))"
        parts.append(
            "(\n"
            "  sum_over_time((\n"
            f"    ({template(seconds)})\n"
            f"    and on () ({inside})\n"
            f"  )[{span}:{step}]) * {seconds}\n"
            "  or vector(0)\n"
            ")"
        )
    return "\n+\n".join(parts)


def _indent(text: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in text.splitlines())


def month_error_ratio(spec: SLOSpec) -> str:
    """Bad / all events of the calendar month so far; absent until the month has events."""
    bad = _indent(month_events(spec.bad), 2)
    total = _indent(month_events(spec.total), 4)
    return f"(\n{bad}\n)\n/\n(\n  (\n{total}\n  ) > 0\n)\n"


def _sli_group(spec: SLOSpec) -> dict[str, Any]:
    rules = [
        {
            "record": sli_record(w),
            "expr": spec.error_ratio(w) + "\n",
            "labels": {**labels(spec), "sloth_window": prom_duration(w)},
        }
        for w in windows(spec)
    ]
    if spec.calendar:
        rules.append(
            {
                "record": sli_record(spec.period),
                "expr": month_error_ratio(spec),
                "labels": {**labels(spec), "sloth_window": spec.period_name},
            }
        )
    return {"name": f"sloth-slo-sli-recordings-{spec.id}", "rules": rules}


def _meta_group(spec: SLOSpec) -> dict[str, Any]:
    sel = selector(spec)
    base = labels(spec)
    shortest = min(w.short for w in spec.burn_windows)
    on = "on (sloth_id, sloth_slo, sloth_service) group_left"
    rules: list[dict[str, Any]] = [
        {"record": "slo:objective:ratio", "expr": f"vector({_num(spec.objective)})"},
        {"record": "slo:error_budget:ratio", "expr": f"vector(1 - {_num(spec.objective)})"},
        {"record": "slo:time_period:days", "expr": _period_days(spec)},
        {
            "record": "slo:current_burn_rate:ratio",
            "expr": f"{sli_record(shortest)}{sel}\n/ {on}\nslo:error_budget:ratio{sel}\n",
        },
        {
            "record": "slo:period_burn_rate:ratio",
            "expr": f"{sli_record(spec.period)}{sel}\n/ {on}\nslo:error_budget:ratio{sel}\n",
        },
        {
            "record": "slo:period_error_budget_remaining:ratio",
            "expr": f"1 - slo:period_burn_rate:ratio{sel}",
        },
    ]
    for rule in rules:
        rule["labels"] = dict(base)
    rules.append(
        {
            "record": "sloth_slo_info",
            "expr": "vector(1)",
            "labels": {
                **base,
                "sloth_mode": "cli-gen-prom",
                "sloth_objective": _num(spec.objective * 100),
                "sloth_spec": "platform-kpi-exporter/v1",
                "sli": spec.sli,
            },
        }
    )
    return {"name": f"sloth-slo-meta-recordings-{spec.id}", "rules": rules}


def _period_days(spec: SLOSpec) -> str:
    if isinstance(spec.period, str):
        return "days_in_month()"
    return f"vector({_num(spec.period / DAY)})"


def _factor(spec: SLOSpec, w: BurnWindow) -> str:
    """The burn factor of ``w`` in PromQL: a number, or, for a calendar month, the
    budget share times the current month's length over the long window."""
    if not spec.calendar:
        return _num(w.factor)
    days = "scalar(days_in_month())"
    per_day = DAY / w.long
    if per_day == 1:
        return f"{_num(w.budget_share)} * {days}"
    if per_day > 1:
        return f"{_num(w.budget_share)} * {_num(per_day)} * {days}"
    return f"{_num(w.budget_share)} * {days} / {_num(w.long / DAY)}"


def _factor_text(spec: SLOSpec, w: BurnWindow) -> str:
    if not spec.calendar:
        return f"{_num(w.factor)}x"
    return f"{_num(w.factor_in(28))}x-{_num(w.factor_in(31))}x"


def _burn_condition(spec: SLOSpec, severity: str) -> str:
    sel = selector(spec)
    budget = _num(spec.budget)
    parts = []
    for w in spec.burn_windows:
        if w.severity != severity:
            continue
        threshold = f"({_factor(spec, w)} * {budget})"
        parts.append(
            "(\n"
            f"    max({sli_record(w.short)}{sel} > {threshold}) without (sloth_window)\n"
            "    and\n"
            f"    max({sli_record(w.long)}{sel} > {threshold}) without (sloth_window)\n"
            ")"
        )
    return "\nor\n".join(parts) + "\n"


def _factors_note(spec: SLOSpec) -> str:
    return " (the factors follow the month's 28 to 31 days)" if spec.calendar else ""


def _period_text(spec: SLOSpec) -> str:
    return "the calendar month" if spec.calendar else spec.period_name


def _alert_group(spec: SLOSpec) -> dict[str, Any]:
    base = labels(spec)
    windows_text = {
        sev: " or ".join(
            f"{_factor_text(spec, w)} over {prom_duration(w.long)} and {prom_duration(w.short)}"
            for w in spec.burn_windows
            if w.severity == sev
        )
        for sev in ("page", "ticket")
    }
    rules: list[dict[str, Any]] = []
    for severity in ("page", "ticket"):
        rules.append(
            {
                "alert": "SLOErrorBudgetBurn",
                "expr": _burn_condition(spec, severity),
                "labels": {
                    "severity": severity,
                    "sloth_severity": severity,
                    "service": spec.service,
                    "team": spec.team,
                    "slo": spec.name,
                },
                "annotations": {
                    "summary": f"({severity}) {spec.service} {spec.name} SLO error budget burn "
                    "rate is too fast.",
                    "description": f"{spec.description} over {_period_text(spec)}; "
                    f"{severity} when the error ratio exceeds {windows_text[severity]} "
                    f"the budget of {_num(spec.budget)}{_factors_note(spec)}.",
                },
            }
        )
    shortest = min(w.short for w in spec.burn_windows)
    rules.append(
        {
            "alert": "SLODataAbsent",
            "expr": f"absent({spec.total(shortest)})\n",
            "for": prom_duration(2 * shortest),
            "labels": {
                "severity": "ticket",
                **base,
                "service": spec.service,
                "slo": spec.name,
            },
            "annotations": {
                "summary": f"No SLI data for the {spec.service} {spec.name} SLO.",
                "description": "The events behind this SLO have been absent for "
                f"{prom_duration(2 * shortest)}: the exporter is not scraped, or it no longer "
                "reports this service. Burn-rate alerts cannot fire meanwhile.",
            },
        }
    )
    return {"name": f"sloth-slo-alerts-{spec.id}", "rules": rules}


def rule_file(config: ConfigBase) -> dict[str, Any]:
    groups: list[dict[str, Any]] = []
    for spec in all_slos(config):
        rules = [r for part in (_sli_group, _meta_group, _alert_group) for r in part(spec)["rules"]]
        groups.append({"name": f"sloth-slo-{spec.id}", "rules": rules})
    return {"groups": groups}
