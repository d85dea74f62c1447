"""How rules and dashboards read series that several replicas serve alike.

With several replicas on one PostgreSQL state, every replica renders the KPI families
from the shared store, so Prometheus scrapes each KPI series once per replica. The
copies differ only in the labels that name the replica: the target labels Prometheus
adds (``instance``; ``pod`` under the Prometheus Operator's ServiceMonitor) and the
exporter's own ``replica`` (on its health families only). :func:`one_copy` keeps one
copy of each series (the largest: counters only grow, so it is the freshest render), so
a ``sum`` or ``rate`` counts each event once, however many replicas are scraped.
"""

from __future__ import annotations

# The labels by which one replica's copy of a series differs from another's.
REPLICA_LABELS = ("instance", "pod", "replica")
WITHOUT = f"without ({', '.join(REPLICA_LABELS)})"


def one_copy(expr: str) -> str:
    """``expr`` with one series per set of labels other than the replicas'."""
    return f"max {WITHOUT} ({expr})"
