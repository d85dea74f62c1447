"""End-to-end tests: the whole exporter against the simulated platform or real servers."""
