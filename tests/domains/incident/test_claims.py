"""On-call incidents follow the catalog: each is stored with what claimed it (its PagerDuty
service and escalation policy, or the Opsgenie query that selected it), resolved again
after every catalog poll.

The platform: the config maps accounts to PagerDuty service PACCNTS; Backstage lists the
component billing (owner payments), annotated with PagerDuty service PBILLING or not. The
incidents, hand-checked: Q0001 of PBILLING opened 3 h before now and resolved 2 h before;
Q0002 of PACCNTS opened 1 h before, resolved 30 minutes before.
"""

from __future__ import annotations

from typing import Any

from exporter.core.store import Store, write_records
from exporter.domains.catalog.records import CatalogEntity, CatalogListing
from exporter.domains.delivery.records import PipelineRun
from exporter.domains.incident.claims import opsgenie_claim, pagerduty_claim, resolve
from exporter.domains.incident.refresh import refresh
from exporter.domains.incident.sandbox.data import API_KEY, TOKEN
from exporter.domains.incident.sources.mapping import ServiceMap
from exporter.domains.incident.sources.opsgenie import OpsgenieSource
from exporter.domains.incident.sources.pagerduty import PagerDutySource
from tests.domains.incident.helpers import (
    NOW,
    H,
    MovableClock,
    config,
    dora_incidents,
    poller,
    stored,
)
from tests.domains.incident.test_opsgenie import alert as og_alert
from tests.domains.incident.test_opsgenie import fake as og_fake
from tests.domains.incident.test_pagerduty import fake, incident

BACKSTAGE = {"backstage": {"base_url": "http://backstage.invalid/api/catalog"}}
ACCOUNTS = {"name": "accounts", "team": "identity", "pagerduty_services": ["PACCNTS"]}
INCIDENTS = (
    incident(1, "PBILLING", created_at=NOW - 3 * H, resolved_at=NOW - 2 * H),
    incident(2, "PACCNTS", created_at=NOW - H, resolved_at=NOW - 0.5 * H),
)


def billing(name: str = "billing", **annotations: str) -> CatalogEntity:
    return CatalogEntity(
        "backstage",
        "component",
        "default",
        name,
        "payments",
        annotations=tuple(annotations.items()),
    )


def listed(store: Store, *entities: CatalogEntity) -> None:
    """Backstage lists these components now (as its source stores a listing)."""
    with store.transaction() as tx:
        write_records(tx, [CatalogListing("backstage", NOW, tuple(entities))])


def pagerduty(**extra: Any) -> PagerDutySource:
    cfg = config([ACCOUNTS], {"pagerduty": {"token": TOKEN, **extra}, **BACKSTAGE})
    assert cfg.sources.pagerduty is not None
    return PagerDutySource(cfg, cfg.sources.pagerduty)


PD_SERVICE = "pagerduty.com/service-id"
OG_SELECTOR = "opsgenie.com/component-selector"
CATALOG = frozenset({CatalogListing})


class TestResolve:
    def test_a_pagerduty_service_id_is_tried_before_its_escalation_policy(self) -> None:
        mapping = ServiceMap({"PA": "a"}, {"POL": "b"})
        assert resolve(pagerduty_claim("PA", "POL"), mapping) == "a"
        assert resolve(pagerduty_claim("PX", "POL"), mapping) == "b"
        assert resolve(pagerduty_claim("PX", None), mapping) is None

    def test_an_opsgenie_query_shared_by_two_services_goes_to_the_first_by_name(self) -> None:
        mapping = ServiceMap(opsgenie_queries={"b": "tag:x", "a": "tag:x", "c": "tag:y"})
        assert resolve(opsgenie_claim("tag:x"), mapping) == "a"
        assert resolve(opsgenie_claim("tag:z"), mapping) is None


class TestAPagerDutyServiceMovedInTheCatalog:
    def test_its_incidents_and_dora_incidents_move_to_the_new_service(self) -> None:
        """billing is renamed billing-v2, which keeps the PBILLING annotation: Q0001 and its
        DORA incident move at the refresh after the catalog poll, without reading PagerDuty."""
        clock = MovableClock(NOW)
        pd = fake(clock, *INCIDENTS)
        src = pagerduty()
        with poller(src, pd.app, clock) as p:
            listed(p.store, billing(**{PD_SERVICE: "PBILLING"}))
            assert p.poll() == [""]
            assert stored(p.store)["pagerduty/Q0001"][0] == "billing"
            requests = len(pd.faults.log)

            listed(p.store, billing("billing-v2", **{PD_SERVICE: "PBILLING"}))
            assert not src.stale_after(p.store, CATALOG)  # nothing new to read
            refresh(src.config, p.store, NOW)
            rows = stored(p.store)
            dora = dora_incidents(p.store)
        assert len(pd.faults.log) == requests
        assert rows["pagerduty/Q0001"][0] == "billing-v2"
        assert rows["pagerduty/Q0002"][0] == "accounts"
        assert sorted(v[0] for v in dora.values()) == ["accounts", "billing-v2"]
        assert {v[1:] for v in dora.values() if v[0] == "billing-v2"} == {
            (NOW - 3 * H, NOW - 2 * H)
        }

    def test_an_incident_nobody_claims_any_more_is_dropped_with_its_dora_incident(
        self,
    ) -> None:
        clock = MovableClock(NOW)
        pd = fake(clock, *INCIDENTS)
        src = pagerduty()
        with poller(src, pd.app, clock) as p:
            listed(p.store, billing(**{PD_SERVICE: "PBILLING"}))
            assert p.poll() == [""]
            listed(p.store, billing())
            refresh(src.config, p.store, NOW)
            rows = stored(p.store)
            dora = dora_incidents(p.store)
        assert sorted(rows) == ["pagerduty/Q0002"]
        assert [v[0] for v in dora.values()] == ["accounts"]

    def test_rows_stored_before_claims_keep_their_service(self) -> None:
        clock = MovableClock(NOW)
        pd = fake(clock, *INCIDENTS)
        src = pagerduty()
        with poller(src, pd.app, clock) as p:
            listed(p.store, billing(**{PD_SERVICE: "PBILLING"}))
            assert p.poll() == [""]
            with p.store.transaction() as tx:
                tx.execute("UPDATE oncall_incidents SET claim = NULL")
            listed(p.store, billing())
            refresh(src.config, p.store, NOW)
            assert stored(p.store)["pagerduty/Q0001"][0] == "billing"


class TestAPagerDutyServiceClaimedAfterItsIncidents:
    def test_the_source_polls_at_once_and_reads_the_backfill_for_it(self) -> None:
        """PBILLING is not mapped at the first poll (so not listed); four hours later
        Backstage annotates billing with it. The source says it is stale, and its next
        poll reads from the backfill, not since its last poll: Q0001, opened 7 h before that
        poll, is stored as billing's."""
        clock = MovableClock(NOW)
        pd = fake(clock, *INCIDENTS)
        src = pagerduty(backfill_days=3)
        with poller(src, pd.app, clock) as p:
            listed(p.store, billing())
            assert p.poll() == [""]
            assert sorted(stored(p.store)) == ["pagerduty/Q0002"]
            assert not src.stale_after(p.store, CATALOG)

            clock.at = NOW + 4 * H
            listed(p.store, billing(**{PD_SERVICE: "PBILLING"}))
            assert src.stale_after(p.store, CATALOG)
            assert not src.stale_after(p.store, frozenset({PipelineRun}))
            assert p.poll() == [""]
            rows = stored(p.store)
            assert not src.stale_after(p.store, CATALOG)  # read under it now
        assert rows["pagerduty/Q0001"][0] == "billing"
        sinces = [
            q.split("since=")[1].split("&")[0]
            for path, q, _ in pd.faults.log
            if path == "/incidents"
        ]
        # Both from the backfill: 3 days before each poll.
        assert sinces == ["2027-01-12T08:00:00Z", "2027-01-12T12:00:00Z"]


class TestAnOpsgenieQuery:
    def test_a_service_whose_query_changed_drops_the_old_alerts_and_reads_the_new(
        self,
    ) -> None:
        """billing selects ``tag:billing`` at first, then ``tag:payments``: the alert of
        the old query is dropped at the refresh, and the source reads the new query's
        alerts from the backfill (A2 was opened before the first poll)."""
        clock = MovableClock(NOW)
        og = og_fake(
            clock,
            og_alert(1, "billing", created_at=NOW - 3 * H, closed_at=NOW - 2 * H),
            og_alert(2, "payments", created_at=NOW - 3 * H, closed_at=NOW - 2 * H),
        )
        cfg = config([ACCOUNTS], {"opsgenie": {"api_key": API_KEY}, **BACKSTAGE})
        assert cfg.sources.opsgenie is not None
        src = OpsgenieSource(cfg, cfg.sources.opsgenie)
        with poller(src, og.app, clock) as p:
            listed(p.store, billing(**{OG_SELECTOR: "tag:billing"}))
            assert p.poll() == [""]
            assert sorted(stored(p.store)) == ["opsgenie/alert-001"]
            clock.at = NOW + H
            listed(p.store, billing(**{OG_SELECTOR: "tag:payments"}))
            refresh(cfg, p.store, NOW + H)
            assert stored(p.store) == {}
            assert src.stale_after(p.store, CATALOG)
            assert p.poll() == [""]
            assert sorted(stored(p.store)) == ["opsgenie/alert-002"]
            assert stored(p.store)["opsgenie/alert-002"][0] == "billing"
