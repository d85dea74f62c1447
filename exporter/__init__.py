"""platform-kpi-exporter: one trustworthy set of platform KPIs, exposed as Prometheus metrics."""

__version__ = "0.1.0"
