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
  :mod:`exporter.slo.windows`), and ``SLODataAbsent``.

Every series carries ``sloth_id``, ``sloth_service``, ``sloth_slo`` (and ``team``),
so Sloth's Grafana dashboards work on them.
"""

from __future__ import annotations

from typing import Any

from exporter.config import Config
from exporter.slo.spec import SLOSpec, all_slos
from exporter.slo.windows import prom_duration

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
    """Every window with a ``slo:sli_error:ratio_rate<w>`` rule: alert windows and the period."""
    found = {w.long for w in spec.burn_windows} | {w.short for w in spec.burn_windows}
    found.add(spec.period)
    return sorted(found)


def sli_record(window: float) -> str:
    return f"slo:sli_error:ratio_rate{prom_duration(window)}"


def _sli_group(spec: SLOSpec) -> dict[str, Any]:
    rules = [
        {
            "record": sli_record(w),
            "expr": spec.error_ratio(w) + "\n",
            "labels": {**labels(spec), "sloth_window": prom_duration(w)},
        }
        for w in windows(spec)
    ]
    return {"name": f"sloth-slo-sli-recordings-{spec.id}", "rules": rules}


def _meta_group(spec: SLOSpec) -> dict[str, Any]:
    sel = selector(spec)
    base = labels(spec)
    shortest = min(w.short for w in spec.burn_windows)
    on = "on (sloth_id, sloth_slo, sloth_service) group_left"
    rules: list[dict[str, Any]] = [
        {"record": "slo:objective:ratio", "expr": f"vector({_num(spec.objective)})"},
        {"record": "slo:error_budget:ratio", "expr": f"vector(1 - {_num(spec.objective)})"},
        {"record": "slo:time_period:days", "expr": f"vector({_num(spec.period / 86400)})"},
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


def _burn_condition(spec: SLOSpec, severity: str) -> str:
    sel = selector(spec)
    budget = _num(spec.budget)
    parts = []
    for w in spec.burn_windows:
        if w.severity != severity:
            continue
        threshold = f"({_num(w.factor)} * {budget})"
        parts.append(
            "(\n"
            f"    max({sli_record(w.short)}{sel} > {threshold}) without (sloth_window)\n"
            "    and\n"
            f"    max({sli_record(w.long)}{sel} > {threshold}) without (sloth_window)\n"
            ")"
        )
    return "\nor\n".join(parts) + "\n"


def _alert_group(spec: SLOSpec) -> dict[str, Any]:
    base = labels(spec)
    windows_text = {
        sev: " or ".join(
            f"{_num(w.factor)}x over {prom_duration(w.long)} and {prom_duration(w.short)}"
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
                    "description": f"{spec.description} over {prom_duration(spec.period)}; "
                    f"{severity} when the error ratio exceeds {windows_text[severity]} "
                    f"the budget of {_num(spec.budget)}.",
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


def rule_file(config: Config) -> dict[str, Any]:
    groups: list[dict[str, Any]] = []
    for spec in all_slos(config):
        rules = [r for part in (_sli_group, _meta_group, _alert_group) for r in part(spec)["rules"]]
        groups.append({"name": f"sloth-slo-{spec.id}", "rules": rules})
    return {"groups": groups}
