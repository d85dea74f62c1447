"""OpenSLO v1 ``SLO`` documents as an alternative way to declare objectives.

Supported: ``apiVersion: openslo/v1``, ``kind: SLO`` with an inline ``indicator``
or an ``indicatorRef`` to a ``kind: SLI`` document given alongside; a
``ratioMetric`` whose ``good`` (or ``bad``) and ``total`` have a ``metricSource``
of type ``Prometheus`` with ``spec.query``; ``budgetingMethod: Occurrences``; one
``timeWindow``, rolling, or calendar-aligned over one month in UTC (``duration: 1M``,
``isRolling: false``, a ``calendar.startTime`` on the 1st at 00:00 if any), which is
the calendar-month period; one objective with ``target`` (0..1) or ``targetPercent``.

A query is either a plain counter selector (``http_requests_total{job="api"}``),
which becomes ``sum(rate(<selector>[<window>]))``, or PromQL holding the
``{{.window}}`` placeholder that Sloth uses. Anything else (threshold metrics,
timeslice budgeting, other calendar windows) is rejected with a message, never
silently approximated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

WINDOW = "{{.window}}"
_SELECTOR = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^{}]*\})?$")
_DURATION = re.compile(r"^(\d+)(m|h|d|w)$")
_UNIT = {"m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


class OpenSLOError(ValueError):
    """A document is not a supported OpenSLO v1 SLO."""


@dataclass(frozen=True, slots=True)
class OpenSLOObjective:
    """One OpenSLO SLO, reduced to what the rules need."""

    name: str
    service: str
    description: str
    objective: float  # ratio, 0..1
    period: float | str | None  # seconds, "month"; None = the service's window
    # PromQL with the {{.window}} placeholder.
    total_query: str
    good_query: str | None
    bad_query: str | None


def load_documents(items: Sequence[str | Mapping[str, Any]]) -> list[OpenSLOObjective]:
    """Every SLO of ``items`` (inline documents or YAML file paths), validated."""
    docs: list[tuple[str, Mapping[str, Any]]] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            docs.extend((f"{item} document {j + 1}", d) for j, d in enumerate(_read(item)))
        elif isinstance(item, Mapping):
            docs.append((f"[{i}]", item))
        else:
            raise OpenSLOError(f"[{i}]: expected a document or a file path")
    slis = {
        str(_get(d, "metadata", "name")): d
        for _, d in docs
        if d.get("kind") == "SLI" and _get(d, "metadata", "name")
    }
    out = []
    for where, doc in docs:
        if doc.get("kind") == "SLO":
            try:
                out.append(_objective(doc, slis))
            except OpenSLOError as exc:
                raise OpenSLOError(f"{where}: {exc}") from None
        elif doc.get("kind") not in ("SLI", "Service", "DataSource"):
            raise OpenSLOError(f"{where}: kind {doc.get('kind')!r} is not SLO, SLI or Service")
    if not out:
        raise OpenSLOError("no document of kind SLO found")
    names = [o.name for o in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise OpenSLOError(f"SLO names must be unique: {', '.join(dupes)}")
    return out


def _read(path: str) -> list[Mapping[str, Any]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise OpenSLOError(f"cannot read {path}: {exc.strerror}") from None
    try:
        loaded = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise OpenSLOError(f"invalid YAML in {path}: {exc}") from None
    for d in loaded:
        if not isinstance(d, Mapping):
            raise OpenSLOError(f"{path}: every document must be a mapping")
    return loaded


def _get(doc: Mapping[str, Any], *keys: str) -> Any:
    cur: Any = doc
    for k in keys:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(k)
    return cur


def _objective(doc: Mapping[str, Any], slis: Mapping[str, Mapping[str, Any]]) -> OpenSLOObjective:
    if doc.get("apiVersion") != "openslo/v1":
        raise OpenSLOError(f"apiVersion must be openslo/v1, not {doc.get('apiVersion')!r}")
    name = _get(doc, "metadata", "name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise OpenSLOError("metadata.name must be a lower-case name such as checkout-availability")
    spec = doc.get("spec")
    if not isinstance(spec, Mapping):
        raise OpenSLOError("spec is missing")
    method = spec.get("budgetingMethod", "Occurrences")
    if method != "Occurrences":
        raise OpenSLOError(f"budgetingMethod {method!r} is not supported (only Occurrences)")

    indicator = spec.get("indicator")
    if indicator is None and spec.get("indicatorRef") is not None:
        indicator = slis.get(str(spec["indicatorRef"]))
        if indicator is None:
            raise OpenSLOError(
                f"indicatorRef {spec['indicatorRef']!r}: no SLI document of that name"
            )
    ratio = _get(indicator or {}, "spec", "ratioMetric")
    if not isinstance(ratio, Mapping):
        raise OpenSLOError(
            "spec.indicator must have a ratioMetric (thresholdMetric is not supported)"
        )
    counter = bool(ratio.get("counter", True))
    total = _query(ratio.get("total"), "total", counter)
    good = _query(ratio["good"], "good", counter) if ratio.get("good") is not None else None
    bad = _query(ratio["bad"], "bad", counter) if ratio.get("bad") is not None else None
    if (good is None) == (bad is None):
        raise OpenSLOError("ratioMetric needs exactly one of good and bad")

    objectives = spec.get("objectives")
    if not isinstance(objectives, list) or len(objectives) != 1:
        raise OpenSLOError("exactly one entry in spec.objectives is supported")
    target = _target(objectives[0])

    period: float | str | None = None
    windows = spec.get("timeWindow")
    if windows is not None:
        if not isinstance(windows, list) or len(windows) != 1:
            raise OpenSLOError("spec.timeWindow must have one entry")
        window = windows[0]
        if not isinstance(window, Mapping):
            raise OpenSLOError("spec.timeWindow must be a mapping")
        period = _period(window)

    service = spec.get("service")
    return OpenSLOObjective(
        name=name,
        service=str(service) if service is not None else "",
        description=str(spec.get("description") or _get(doc, "metadata", "displayName") or ""),
        objective=target,
        period=period,
        total_query=total,
        good_query=good,
        bad_query=bad,
    )


def _period(window: Mapping[str, Any]) -> float | str:
    """Seconds of a rolling window, or ``month`` for a calendar month in UTC."""
    if not window.get("isRolling", False):
        return _calendar_month(window)
    match = _DURATION.match(str(window.get("duration", "")))
    if not match:
        raise OpenSLOError("timeWindow duration must look like 28d, 4w or 720h")
    return int(match.group(1)) * _UNIT[match.group(2)]


def _calendar_month(window: Mapping[str, Any]) -> str:
    """A calendar-aligned window must be one month in UTC, starting on a 1st at 00:00."""
    if str(window.get("duration", "")) != "1M":
        raise OpenSLOError("a calendar-aligned timeWindow (isRolling: false) must be 1M")
    cal = window.get("calendar") or {}
    if not isinstance(cal, Mapping):
        raise OpenSLOError("timeWindow.calendar must be a mapping")
    zone = str(cal.get("timeZone", "UTC"))
    if zone not in ("UTC", "Etc/UTC", "Z"):
        raise OpenSLOError(f"timeWindow.calendar.timeZone {zone!r}: only UTC months are supported")
    start = cal.get("startTime")
    if start is not None and not re.match(r"^\d{4}-\d{2}-01[ T]00:00(:00)?Z?$", str(start)):
        raise OpenSLOError(
            f"timeWindow.calendar.startTime {start!r} must be the 1st of a month at 00:00"
        )
    return "month"


def _target(objective: Any) -> float:
    if not isinstance(objective, Mapping):
        raise OpenSLOError("an objective must be a mapping")
    if objective.get("target") is not None:
        value = float(objective["target"])
    elif objective.get("targetPercent") is not None:
        value = float(objective["targetPercent"]) / 100.0
    else:
        raise OpenSLOError("the objective needs target or targetPercent")
    if not 0 < value < 1:
        raise OpenSLOError("target must be strictly between 0 and 1 (targetPercent 0..100)")
    return value


def _query(metric: Any, role: str, counter: bool) -> str:
    source = _get(metric or {}, "metricSource")
    if not isinstance(source, Mapping):
        raise OpenSLOError(f"ratioMetric.{role} needs a metricSource")
    kind = str(source.get("type", "")).lower()
    if kind != "prometheus":
        raise OpenSLOError(
            f"ratioMetric.{role}: metricSource type {source.get('type')!r} is not Prometheus"
        )
    query = _get(source, "spec", "query") or _get(source, "spec", "promql")
    if not isinstance(query, str) or not query.strip():
        raise OpenSLOError(f"ratioMetric.{role}: metricSource.spec.query is missing")
    query = query.strip()
    if WINDOW in query:
        return query
    if counter and _SELECTOR.match(query):
        return f"sum(rate({query}[{WINDOW}]))"
    raise OpenSLOError(
        f"ratioMetric.{role}: the query must be a counter selector or contain {WINDOW}"
    )
