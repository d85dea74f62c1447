"""One outage reported by several tools is one incident: the grouping rule, and the DORA
keys computed from incidents of PagerDuty, Opsgenie and Alertmanager for one service."""

from __future__ import annotations

import pytest

from exporter.core.store import Store, write_records
from exporter.domains import open_store
from exporter.domains.delivery import store as delivery_store
from exporter.domains.delivery.kpis import ChangeFailure, DeliveryRules, service_kpis
from exporter.domains.delivery.records import Deployment, Incident
from exporter.domains.incident import DOMAIN
from exporter.domains.incident.kpis import Span, merge_duplicates
from exporter.domains.incident.records import AlertGroupNotice, OnCallIncident
from exporter.domains.incident.store import group_key_hash, merge_issue_incidents
from tests.domains.incident.helpers import NOW, H

W = 900.0  # the default duplicate window, 15 min


def span(key: str, opened: float, resolved: float | None, dedup: str | None = None) -> Span:
    return Span(key, key.split("/")[0], opened, None, resolved, dedup)


class TestGrouping:
    @pytest.mark.parametrize(
        ("spans", "groups"),
        [
            # Same key, overlapping: one, though opened 33 min apart.
            ([span("pagerduty/1", 0, 3000, "k"), span("opsgenie/1", 2000, 3500, "k")], None),
            # Same key but no overlap (the group fired again later): two.
            (
                [span("pagerduty/1", 0, 100, "k"), span("opsgenie/1", 200, 300, "k")],
                [["pagerduty/1"], ["opsgenie/1"]],
            ),
            # No key, opened 10 min apart and overlapping: one.
            ([span("pagerduty/1", 0, 3600), span("opsgenie/1", 600, 4000)], None),
            # No key, opened 20 min apart: two, though they overlap.
            (
                [span("pagerduty/1", 0, 3600), span("opsgenie/1", 1200, 4000)],
                [["pagerduty/1"], ["opsgenie/1"]],
            ),
            # Two of one tool are never merged, however close.
            (
                [span("pagerduty/1", 0, 3600), span("pagerduty/2", 60, 4000)],
                [["pagerduty/1"], ["pagerduty/2"]],
            ),
            # An open incident overlaps everything after it.
            ([span("opsgenie/1", 0, None), span("alertmanager/1", 500, 900)], None),
        ],
    )
    def test_rule(self, spans: list[Span], groups: list[list[str]] | None) -> None:
        got = [[m.key for m in g.members] for g in merge_duplicates(spans, W)]
        assert got == (groups or [[s.key for s in spans]])

    def test_a_shared_key_wins_over_time(self) -> None:
        """An Opsgenie alert joins the PagerDuty incident it shares a key with, not the
        one opened closer to it."""
        spans = [
            span("pagerduty/1", 0, 7200, "a"),
            span("pagerduty/2", 500, 7200),
            span("opsgenie/1", 600, 7000, "a"),
        ]
        got = [[m.key for m in g.members] for g in merge_duplicates(reversed(spans), W)]
        assert got == [["pagerduty/1", "opsgenie/1"], ["pagerduty/2"]]

    def test_a_group_spans_its_members(self) -> None:
        [g] = merge_duplicates(
            [
                Span("pagerduty/1", "pagerduty", 100, 400, 1000, "k"),
                Span("opsgenie/1", "opsgenie", 160, 200, 1300, "k"),
            ],
            W,
        )
        assert (g.key, g.opened_at, g.acknowledged_at, g.resolved_at) == (
            "pagerduty/1",
            100,
            200,
            1300,
        )


def test_dora_with_three_tools_for_one_service_counts_each_incident_once() -> None:
    """Accounts deployed 100h and 20h ago. One outage 19h ago paged through all three
    tools (Alertmanager's group key hash is PagerDuty's incident_key and Opsgenie's
    alias); one 90h ago in Opsgenie and, 5 min later, in PagerDuty (no key: by time);
    one 50h ago in PagerDuty only. Three incidents: restores 1h 31 min (first opening to
    last resolution), 36 min and 1h; the 19h one fails the 20h deploy."""
    key = group_key_hash('{}:{alertname="AccountsDown"}')
    db = open_store(":memory:")
    records = [
        Deployment(
            "jenkins",
            "accounts",
            "production",
            True,
            "d1",
            "a1",
            "success",
            NOW - 100 * H,
            NOW - 100 * H,
        ),
        Deployment(
            "jenkins",
            "accounts",
            "production",
            True,
            "d2",
            "a2",
            "success",
            NOW - 20 * H,
            NOW - 20 * H,
        ),
        AlertGroupNotice(key, "accounts", False, NOW - 19 * H - 30, NOW - 17.5 * H, "critical"),
        OnCallIncident(
            "pagerduty",
            "accounts",
            "P1",
            NOW - 19 * H,
            NOW - 18.9 * H,
            NOW - 17.5 * H,
            "high",
            True,
            key,
        ),
        OnCallIncident(
            "opsgenie",
            "accounts",
            "A1",
            NOW - 19 * H + 60,
            None,
            NOW - 17.5 * H + 30,
            "P1",
            True,
            key,
        ),
        OnCallIncident(
            "opsgenie", "accounts", "A2", NOW - 90 * H, None, NOW - 89.5 * H, "P2", True, "A2"
        ),
        OnCallIncident(
            "pagerduty", "accounts", "P2", NOW - 90 * H + 300, None, NOW - 89.4 * H, "high", True
        ),
        OnCallIncident(
            "pagerduty", "accounts", "P3", NOW - 50 * H, None, NOW - 49 * H, "high", True
        ),
        # Low urgency: stored, not a DORA incident.
        OnCallIncident(
            "pagerduty", "accounts", "P4", NOW - 60 * H, None, NOW - 59 * H, "low", False
        ),
    ]
    try:
        # Twice, in two orders: a re-poll or a redelivery changes nothing.
        for batch in (records, list(reversed(records))):
            for record in batch:
                with db.transaction() as tx:
                    write_records(tx, [record])
        delivery = delivery_store.load(db, "committed")["accounts"]
        kpis = service_kpis(delivery, DeliveryRules(incident_link_window=2 * H), None, NOW)
    finally:
        db.close()
    assert len(delivery.incidents) == 3
    n, quantiles = kpis.restore["30d"]
    assert n == 3
    # 1.5h + 1 min = 5460 s, 0.6h = 2160 s, 1h = 3600 s: median 3600.
    assert quantiles[0.5] == pytest.approx(3600.0)
    assert sorted(
        i.resolved_at - i.opened_at for i in delivery.incidents if i.resolved_at
    ) == pytest.approx([2160.0, 3600.0, 5460.0])
    assert kpis.change_failure["30d"] == ChangeFailure(1, 2)


class TestIssueIncidents:
    """GitHub/GitLab issue incidents take part in the cross-tool rule: an issue and an
    on-call incident of one service that overlap and opened within the window are one
    incident, and the issue (with its own times and root cause) is the one counted."""

    def records(self) -> list[object]:
        """Accounts: an issue opened 10 min after PagerDuty's P1 (19h ago), both resolved by
        17h: one incident; PagerDuty's P2 (50h ago) and an issue opened 30 min after it:
        two incidents; an issue 80h ago alone."""
        return [
            OnCallIncident(
                "pagerduty", "accounts", "P1", NOW - 19 * H, None, NOW - 17.5 * H, "high", True
            ),
            Incident("github", "accounts", "7", NOW - 19 * H + 600, NOW - 17 * H, "abc1234"),
            OnCallIncident(
                "pagerduty", "accounts", "P2", NOW - 50 * H, None, NOW - 49 * H, "high", True
            ),
            Incident("github", "accounts", "8", NOW - 49.5 * H, NOW - 48 * H),
            Incident("gitlab", "accounts", "9", NOW - 80 * H, NOW - 79 * H),
        ]

    def dora(self, db: Store) -> list[tuple[str, float, float | None]]:
        rows = db.query("SELECT key, opened_at, resolved_at FROM incidents ORDER BY opened_at")
        return [(str(r[0]), float(r[1]), r[2]) for r in rows]

    WANT = [
        ("gitlab/9", NOW - 80 * H, NOW - 79 * H),
        ("oncall/pagerduty/P2", NOW - 50 * H, NOW - 49 * H),
        ("github/8", NOW - 49.5 * H, NOW - 48 * H),
        ("github/7", NOW - 19 * H + 600, NOW - 17 * H),
    ]

    def test_on_call_incidents_written_after_the_issues(self) -> None:
        db = open_store(":memory:")
        try:
            records = self.records()
            for record in [*records[1:2], *records[3:], records[0], records[2]]:
                with db.transaction() as tx:
                    write_records(tx, [record])
            assert self.dora(db) == self.WANT
        finally:
            db.close()

    def test_issues_written_after_the_on_call_incidents_merge_at_the_refresh(self) -> None:
        """An issue poll writes the issue; the refresh that follows it (the domain's
        ``refresh_after`` names delivery's Incident) drops the on-call duplicate."""
        db = open_store(":memory:")
        try:
            for record in self.records():
                with db.transaction() as tx:
                    write_records(tx, [record])
            assert ("oncall/pagerduty/P1", NOW - 19 * H, NOW - 17.5 * H) in self.dora(db)
            assert Incident in DOMAIN.refresh_after
            merge_issue_incidents(db)
            assert self.dora(db) == self.WANT
            # Time to restore counts the merged incident once: 4 restores, not 5.
            delivery = delivery_store.load(db, "committed")["accounts"]
            kpis = service_kpis(delivery, DeliveryRules(incident_link_window=2 * H), None, NOW)
            assert kpis.restore["30d"][0] == 4
        finally:
            db.close()

    def test_an_issue_moved_to_another_service_lets_the_on_call_incident_count_again(
        self,
    ) -> None:
        """Issue 7 stood for PagerDuty's P1; the repo of every issue moves to the service
        ledger (as the delivery refresh moves a repo's records), so accounts has no issue
        left. At the next merge accounts counts P1 again, and ledger counts the issues."""
        db = open_store(":memory:")
        try:
            for record in self.records():
                with db.transaction() as tx:
                    write_records(tx, [record])
            merge_issue_incidents(db)
            with db.transaction() as tx:
                tx.execute("UPDATE incidents SET service = 'ledger' WHERE source != 'oncall'")
            merge_issue_incidents(db)
            rows = db.query("SELECT key, service FROM incidents ORDER BY opened_at")
            assert [tuple(r) for r in rows] == [
                ("gitlab/9", "ledger"),
                ("oncall/pagerduty/P2", "accounts"),
                ("github/8", "ledger"),
                ("oncall/pagerduty/P1", "accounts"),
                ("github/7", "ledger"),
            ]
        finally:
            db.close()
