"""Service-level objectives: their normalised form, OpenSLO input and alert-window maths.

:mod:`exporter.slo.spec` turns each service's ``slo`` config (and any OpenSLO
documents) into :class:`~exporter.slo.spec.SLOSpec` objects; the rules
generator, the dashboards and the exporter's own budget metrics all read those.
"""
