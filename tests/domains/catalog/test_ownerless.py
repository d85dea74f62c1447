"""No pseudo-teams: a component no team owns is a service "without owner".

Backstage lists, besides the teams' services, a component with no ``spec.owner``
(``stray-worker``), one owned by a user (``jdoe-tool``, ``user:default/jdoe``) and a
deprecated one (``old-billing``, owned by payments). By default (``catalog.owner_kinds:
[group]``, ``catalog.lifecycles: [production, experimental]``) the first two are
services without owner and the deprecated one is no service. Each of the three serves
gateway traffic, so each would adopt the gateway if it counted.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.domains.traffic.attribution_platform import Platform, component, group, line
from tests.support.exposition import Exposition
from tests.support.instants import at

NOW = at("end-of-30-day-month")


def entities() -> list[dict[str, object]]:
    return [
        group("payments"),
        group("discovery"),
        component("payments-api", "group:default/payments", "shop.test/payments"),
        component("search", "group:default/discovery", "/search"),
        component("stray-worker", None, "/stray"),
        component("jdoe-tool", "user:default/jdoe", "/tool"),
        component("old-billing", "group:default/payments", "/billing", lifecycle="deprecated"),
    ]


def traffic(p: Platform) -> None:
    p.write(
        *[
            line(NOW - 600 + i, host, uri, 200)
            for i, (host, uri) in enumerate(
                [
                    ("shop.test", "/payments/a"),
                    ("any.test", "/search/b"),
                    ("any.test", "/stray/c"),
                    ("any.test", "/tool/d"),
                    ("any.test", "/billing/e"),
                ]
            )
        ]
    )


def teams_in(m: Exposition, name: str) -> set[str]:
    return {labels.get("team", "") for labels, _ in m.samples(name)}


class TestOwnerlessComponents:
    def test_they_are_services_in_no_teams_figures_and_in_the_gauge(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        p = Platform(tmp_path, NOW, entities())
        traffic(p)
        try:
            with caplog.at_level(logging.WARNING, logger="exporter.catalog"):
                assert p.poll_all()
                assert p.poll("backstage")
            m = p.metrics()
            assert m.value("platform_catalog_services_without_owner") == 2
            # Teams are the groups only: no "unknown", no user, no empty team.
            assert m.value("platform_catalog_teams") == 2
            assert teams_in(m, "platform_catalog_services") == {"payments", "discovery"}
            assert m.value("platform_catalog_services", team="payments") == 1
            info = {
                s["service"]: s.get("team", "")
                for s, _ in m.samples("platform_catalog_entity_info")
            }
            assert info == {
                "payments-api": "payments",
                "search": "discovery",
                "stray-worker": "",
                "jdoe-tool": "",
            }
            # They adopt the gateway as services; they make no team adopt or onboard.
            gateway = {"capability": "api-gateway"}
            assert m.value("platform_capability_adopting_services", **gateway) == 4
            assert m.value("platform_capability_adoption_ratio", **gateway) == 1.0
            assert m.value("platform_capability_adopting_teams", **gateway) == 2
            assert m.value("platform_teams_onboarded") == 2
            # Their traffic is theirs, and carries no team.
            assert (
                m.value("platform_service_request_samples", service="stray-worker", window="1h")
                == 1
            )
            # ("unknown" is only the team of unmapped traffic.)
            teams = {"payments", "discovery", "", "unknown"}
            assert teams_in(m, "platform_service_requests_total") == teams
            # The deprecated component is no service: its traffic is unmapped.
            assert m.value("platform_service_request_samples", service="unmapped", window="1h") == 1
            # Named once, although the catalog was listed twice.
            named = [r.message for r in caplog.records if "without owner" in r.message]
            assert named == [
                "services without owner (counted as services, in no team's figures): "
                "jdoe-tool, stray-worker"
            ]
        finally:
            p.close()

    def test_users_and_deprecated_components_count_when_configured(self, tmp_path: Path) -> None:
        p = Platform(
            tmp_path,
            NOW,
            entities(),
            catalog={"owner_kinds": ["group", "user"], "lifecycles": []},
        )
        traffic(p)
        try:
            assert p.poll_all()
            m = p.metrics()
            assert m.value("platform_catalog_services_without_owner") == 1  # stray-worker
            assert m.value("platform_catalog_teams") == 3  # and the user jdoe
            assert m.value("platform_catalog_services", team="payments") == 2  # old-billing too
            assert (
                m.value("platform_service_request_samples", service="old-billing", window="1h") == 1
            )
        finally:
            p.close()
