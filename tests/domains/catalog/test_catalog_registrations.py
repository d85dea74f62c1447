"""Registrations: each service of the merged catalog is counted once, when first seen.

``platform_catalog_services_registered_total{team}`` is persisted in the store: a restart,
a re-poll, an entity that leaves Backstage and comes back never count a service twice.
Hand-checked: the config lists checkout (payments) and search (discovery); Backstage lists
ledger (payments), notifications (identity) and search (owned by search-team there; the
config wins).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from exporter.config import Config
from exporter.daemon import Daemon
from exporter.domains.catalog.sandbox import TOKEN, FakeCatalog, backstage_app
from tests.domains.catalog.test_backstage import BASE, entity
from tests.support.exposition import Exposition

METRIC = "platform_catalog_services_registered_total"


def registered(daemon: Daemon) -> dict[str, float]:
    exp = Exposition.parse(daemon.holder.current.text)
    return {labels["team"]: value for labels, value in exp.samples(METRIC)}


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.fake = FakeCatalog(
            [
                entity("ledger"),
                entity("notifications", owner="group:default/identity"),
                entity("search", owner="group:default/search-team"),
            ]
        )
        self.config = Config(
            state={"path": str(tmp_path / "state.db")},
            services=[
                {"name": "checkout", "team": "payments"},
                {"name": "search", "team": "discovery"},
            ],
            sources={"probe": {"enabled": False}, "backstage": {"base_url": BASE, "token": TOKEN}},
        )
        self.daemon = self.start()

    def start(self) -> Daemon:
        return Daemon(self.config, transport=backstage_app(self.fake).transport())

    def poll(self) -> dict[str, float]:
        assert asyncio.run(self.daemon.poll(self.daemon.sources[0]))
        return registered(self.daemon)

    def restart(self) -> None:
        self.close()
        self.daemon = self.start()

    def add(self, item: dict[str, Any]) -> None:
        self.fake.entities = [*self.fake.entities, item]

    def close(self) -> None:
        asyncio.run(self.daemon.shutdown())


class TestRegistrationsAreCountedOnce:
    def test_config_services_count_at_start_and_backstage_only_ones_when_first_listed(
        self, tmp_path: Path
    ) -> None:
        h = Harness(tmp_path)
        try:
            assert registered(h.daemon) == {"payments": 1, "discovery": 1}
            # ledger and notifications are new; search was already counted, under discovery.
            assert h.poll() == {"payments": 2, "discovery": 1, "identity": 1}
            assert h.poll() == {"payments": 2, "discovery": 1, "identity": 1}
        finally:
            h.close()

    def test_a_restart_a_removal_and_a_return_count_nothing_again(self, tmp_path: Path) -> None:
        h = Harness(tmp_path)
        try:
            expected = {"payments": 2, "discovery": 1, "identity": 1}
            assert h.poll() == expected
            assert h.fake.remove("ledger")
            assert h.poll() == expected
            h.add(entity("ledger"))
            assert h.poll() == expected
            h.restart()
            assert registered(h.daemon) == expected
            assert h.poll() == expected
            h.add(entity("billing", owner="group:default/finance"))
            assert h.poll() == {**expected, "finance": 1}
        finally:
            h.close()

    def test_the_family_is_a_counter_with_a_team_label(self, tmp_path: Path) -> None:
        h = Harness(tmp_path)
        try:
            text = h.daemon.holder.current.text.decode()
            assert f"# TYPE {METRIC} counter" in text
            assert f'{METRIC}{{team="payments"}} 1.0' in text
        finally:
            h.close()
