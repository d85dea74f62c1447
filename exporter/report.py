"""Reports from the stored history at a chosen instant: what ``once --as-of`` prints.

A report renders every metrics provider with "now" set to the instant, from
what the store already holds. It polls no source and records nothing, so
running it again gives the same numbers: a month-end report, or a re-run of a
past review. Every window ends at the instant (``mtd`` and the closed days as
they were then); data that arrived later for days before it, such as a late
billing correction, counts as the history records it now. Counters and
histograms know only their totals so far, not their values at an instant, so a
report leaves them out, as it leaves out the health of sources it never polled.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from prometheus_client.metrics_core import Metric

from exporter.core.clock import FixedClock
from exporter.core.settings import ConfigBase
from exporter.core.snapshot import Part, Snapshot, render_part
from exporter.core.store import Store
from exporter.domains import of, open_store, providers, render_context

log = logging.getLogger("exporter.report")

# Families whose value is a running total: not a value at the report's instant.
TOTALS = frozenset({"counter", "histogram", "summary", "gaugehistogram"})


def _at_instant(families: Iterable[Metric]) -> Iterator[Metric]:
    return (f for f in families if f.type not in TOTALS)


def report(config: ConfigBase, at: float) -> tuple[Snapshot, list[str]]:
    """The exposition of the stored history at ``at``, and the providers that failed.

    A failing provider is logged and left out; the others still report.
    """
    store = open_store(
        config.state.location(), FixedClock(at), busy_timeout=config.state.busy_timeout
    )
    try:
        return report_of(config, store, at)
    finally:
        store.close()


def report_of(config: ConfigBase, store: Store, at: float) -> tuple[Snapshot, list[str]]:
    """:func:`report` from an open store."""
    ctx = render_context(config, store, at)
    parts: list[Part] = []
    failed: list[str] = []
    for name, spec in providers(live=False, among=of(config)).items():
        try:
            parts.append(render_part(_at_instant(spec.collect(ctx))))
        except Exception:
            log.exception("metrics provider %s failed; its families are left out", name)
            failed.append(name)
    return Snapshot.assemble(parts, at), failed
