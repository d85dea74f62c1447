"""platform-kpi-exporter: one trustworthy set of platform KPIs, exposed as Prometheus metrics."""

import sys

__version__ = "0.1.0"

# httpx imports its command-line client (click, rich, pygments: 2 MiB resident) whenever
# click is installed, and the exporter never runs it. A None entry makes that import
# fail, which httpx expects (its ``main`` then says to install httpx[cli]).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]  # None: not importable
