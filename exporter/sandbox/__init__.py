"""The built-in simulated platform that ``platform-kpi-exporter demo`` runs against.

Every fake upstream is an :class:`~exporter.core.sandbox.app.App` route set driven by
the seeded :mod:`~exporter.core.sandbox.scenario`, so its values are known. The same
apps serve over real HTTP on loopback (the demo, end-to-end tests) and through
``httpx.MockTransport`` (unit tests).
"""
