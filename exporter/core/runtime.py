"""The exporter process's own resources: the standard ``process_*`` and ``python_*`` families.

prometheus_client's process, platform and garbage-collector collectors, read into
the snapshot on every render like any other provider, so ``/metrics`` still serves
only cached bytes. The values are those of the last render: the HELP text says so.
They describe the running daemon, so a report of the stored history
(``once --as-of``) leaves them out.

Sample::

    process_cpu_seconds_total 1.52
    process_resident_memory_bytes 6.1e+07
    process_open_fds 14
    process_start_time_seconds 1.7e+09
    python_info{implementation="CPython",major="3",minor="11",patchlevel="7",version="3.11.7"} 1
    python_gc_collections_total{generation="0"} 212
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from exporter.core.provider import RenderContext

CACHED = " Cached by the exporter: as of its last refresh of /metrics."

# A registry of their own: the global one would also hold whatever else registers there.
_RUNTIME = CollectorRegistry(auto_describe=False)
ProcessCollector(registry=_RUNTIME)
PlatformCollector(registry=_RUNTIME)
GCCollector(registry=_RUNTIME)


def collect(ctx: RenderContext) -> Iterator[Metric]:
    """The process and Python families as they stand now (``process_*`` only on Linux,
    where ``/proc`` holds them; ``python_gc_*`` only on CPython)."""
    for family in _RUNTIME.collect():
        family.documentation = f"{family.documentation}{CACHED}"
        yield family
