"""Sources: one module per upstream. A source only talks to its upstream and
turns what it reads into records (:mod:`exporter.domains.delivery.records`)."""
