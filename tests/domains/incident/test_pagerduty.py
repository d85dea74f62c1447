"""The PagerDuty source against the simulated REST API v2.

The fake follows PagerDuty's documented shapes (developer.pagerduty.com):
"List incidents" (``GET /incidents``: ``since``, ``until``, ``statuses[]``,
``service_ids[]``, ``sort_by``), "List log entries for an incident"
(``GET /incidents/{id}/log_entries``, ``acknowledge_log_entry``,
``resolve_log_entry``), "Pagination" (classic: ``limit``, ``offset``, ``more``; at most
10,000 records), "Rate Limits" (``429`` with ``ratelimit-limit``, ``ratelimit-remaining``
and ``ratelimit-reset`` in seconds) and "Authentication" (``Authorization: Token
token=…``, ``Accept: application/vnd.pagerduty+json;version=2``).
"""

from __future__ import annotations

from typing import Any

from exporter.core.sandbox.fakes import Fault
from exporter.core.sandbox.scenario import Scenario
from exporter.domains.catalog.records import CatalogEntity, CatalogListing
from exporter.domains.incident.sandbox.data import TOKEN, FakePdIncident, IncidentScenario
from exporter.domains.incident.sandbox.pagerduty import PagerDutyFake
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

SERVICES: list[dict[str, Any]] = [
    {"name": "accounts", "team": "identity", "pagerduty_services": ["PACCNTS"]},
    {"name": "search", "team": "discovery", "pagerduty_escalation_policies": ["PESCSRCH"]},
]


def source(services: list[dict[str, Any]] = SERVICES, **extra: Any) -> PagerDutySource:
    cfg = config(services, {"pagerduty": {"token": TOKEN, "max_pause": "5s", **extra}})
    settings = cfg.sources.pagerduty
    assert settings is not None
    return PagerDutySource(cfg, settings)


def fake(clock: MovableClock, *incidents: FakePdIncident) -> PagerDutyFake:
    data = IncidentScenario(anchor=NOW, pagerduty=list(incidents))
    return PagerDutyFake(data, Scenario(clock=clock))


def incident(n: int, service: str = "PACCNTS", **kw: Any) -> FakePdIncident:
    return FakePdIncident(f"Q{n:04d}", n, service, kw.pop("urgency", "high"), **kw)


class TestListing:
    def test_every_page_is_read_and_each_incident_mapped(self) -> None:
        """Seven incidents over pages of three: all stored, by the config's service ids and
        escalation policies; an unmapped PagerDuty service is not read at all."""
        clock = MovableClock(NOW)
        pd = fake(
            clock,
            *(
                incident(n, created_at=NOW - (10 - n) * H, resolved_at=NOW - (9.5 - n) * H)
                for n in range(5)
            ),
            incident(5, "PSEARCH", created_at=NOW - 2 * H, escalation_policy_id="PESCSRCH"),
            incident(6, "POTHER", created_at=NOW - 2 * H, escalation_policy_id="POTHERPOL"),
        )
        src = source()
        src.page_size = 3
        with poller(src, pd.app, clock) as p:
            assert p.poll() == [""]
            rows = stored(p.store)
        assert sorted(rows) == [f"pagerduty/Q{n:04d}" for n in range(6)]
        assert rows["pagerduty/Q0005"][0] == "search"
        assert {r[0] for k, r in rows.items() if k != "pagerduty/Q0005"} == {"accounts"}
        offsets = [q for path, q, _ in pd.faults.log if path == "/incidents"]
        assert [o.split("offset=")[1].split("&")[0] for o in offsets] == ["0", "3", "6"]

    def test_service_ids_filter_the_list_when_no_policy_maps(self) -> None:
        clock = MovableClock(NOW)
        pd = fake(clock, incident(1, created_at=NOW - H), incident(2, "POTHER", created_at=NOW - H))
        with poller(source(SERVICES[:1]), pd.app, clock) as p:
            assert p.poll() == [""]
            assert sorted(stored(p.store)) == ["pagerduty/Q0001"]
        query = next(q for path, q, _ in pd.faults.log if path == "/incidents")
        assert "service_ids[]=PACCNTS" in query
        assert "sort_by=created_at:asc" in query

    def test_times_come_from_the_log_entries(self) -> None:
        """Opened at created_at; acknowledged at the first acknowledge_log_entry, resolved at
        the resolve_log_entry; urgency high counts, low does not."""
        clock = MovableClock(NOW)
        pd = fake(
            clock,
            incident(1, created_at=NOW - 3 * H, acknowledged_at=NOW - 2.5 * H, resolved_at=NOW - H),
            incident(2, urgency="low", created_at=NOW - 3 * H, resolved_at=NOW - 2 * H),
        )
        with poller(source(), pd.app, clock) as p:
            assert p.poll() == [""]
            rows = stored(p.store)
        assert rows["pagerduty/Q0001"] == (
            "accounts",
            NOW - 3 * H,
            NOW - 2.5 * H,
            NOW - H,
            "high",
            1,
        )
        assert rows["pagerduty/Q0002"] == ("accounts", NOW - 3 * H, None, NOW - 2 * H, "low", 0)


class TestPriority:
    def test_a_priority_filter_applies_with_the_urgency_filter(self) -> None:
        """With ``pagerduty_priorities: [P1, P2]`` an incident counts when its urgency is
        high and its priority is P1 or P2: the P1 and the P2 count; the P3, the one with no
        priority and the low-urgency P1 do not. Each stores its priority's name."""
        clock = MovableClock(NOW)
        pd = fake(
            clock,
            incident(1, priority="P1", created_at=NOW - 5 * H),
            incident(2, priority="P2", created_at=NOW - 4 * H),
            incident(3, priority="P3", created_at=NOW - 3 * H),
            incident(4, created_at=NOW - 2 * H),
            incident(5, urgency="low", priority="P1", created_at=NOW - H),
        )
        cfg = config(
            SERVICES,
            {"pagerduty": {"token": TOKEN}},
            incidents={"pagerduty_priorities": ["P1", "P2"]},
        )
        assert cfg.sources.pagerduty is not None
        src = PagerDutySource(cfg, cfg.sources.pagerduty)
        with poller(src, pd.app, clock) as p:
            assert p.poll() == [""]
            rows = p.store.query("SELECT incident_id, priority, counts FROM oncall_incidents")
        assert sorted(tuple(r) for r in rows) == [
            ("Q0001", "P1", 1),
            ("Q0002", "P2", 1),
            ("Q0003", "P3", 0),
            ("Q0004", None, 0),
            ("Q0005", "P1", 0),
        ]

    def test_without_a_priority_filter_priorities_do_not_matter(self) -> None:
        clock = MovableClock(NOW)
        pd = fake(
            clock,
            incident(1, priority="P4", created_at=NOW - 2 * H),
            incident(2, created_at=NOW - H),
        )
        with poller(source(), pd.app, clock) as p:
            assert p.poll() == [""]
            rows = p.store.query("SELECT incident_id, counts FROM oncall_incidents")
        assert sorted(tuple(r) for r in rows) == [("Q0001", 1), ("Q0002", 1)]


class TestAcrossPolls:
    def test_an_incident_open_across_two_polls_then_resolved(self) -> None:
        """Triggered at the first poll, acknowledged at the second, resolved at the third
        (read again through the open lookback though it is older than the last poll);
        its DORA incident is open until then, then restored in 2h."""
        clock = MovableClock(NOW)
        opened = NOW - 0.5 * H
        pd = fake(
            clock,
            incident(1, created_at=opened, acknowledged_at=NOW + H, resolved_at=NOW + 1.5 * H),
        )
        steps = iter([NOW + 1.2 * H, NOW + 3 * H])
        seen: list[tuple[Any, ...]] = []
        with poller(source(), pd.app, clock) as p:

            def advance() -> None:
                seen.append(stored(p.store)["pagerduty/Q0001"])
                clock.at = next(steps)

            assert p.poll(3, advance) == ["", "", ""]
            seen.append(stored(p.store)["pagerduty/Q0001"])
            dora = dora_incidents(p.store)
        assert [s[2:4] for s in seen] == [(None, None), (NOW + H, None), (NOW + H, NOW + 1.5 * H)]
        assert dora == {"oncall/pagerduty/Q0001": ("accounts", opened, NOW + 1.5 * H)}
        # Log entries are read when the status moved on, not at every poll.
        reads = [path for path, _, _ in pd.faults.log if path.endswith("/log_entries")]
        assert len(reads) == 2

    def test_a_poll_reads_since_its_previous_one(self) -> None:
        clock = MovableClock(NOW)
        pd = fake(clock, incident(1, created_at=NOW - 2 * H, resolved_at=NOW - H))
        with poller(source(backfill_days=3), pd.app, clock) as p:

            def later() -> None:
                clock.at = NOW + 4 * H

            assert p.poll(2, later) == ["", ""]
        sinces = [
            q.split("since=")[1].split("&")[0]
            for path, q, _ in pd.faults.log
            if path == "/incidents"
        ]
        assert sinces == ["2027-01-12T08:00:00Z", "2027-01-15T07:50:00Z"]


class TestRateLimit:
    def test_a_429_waits_for_ratelimit_reset_then_goes_on(self) -> None:
        """PagerDuty's 429 names the wait in ``ratelimit-reset`` (seconds): the poll waits it
        out and succeeds, nothing counted twice."""
        clock = MovableClock(NOW)
        pd = fake(clock, incident(1, created_at=NOW - H))
        pd.faults.add(
            Fault(
                "/incidents",
                429,
                {"ratelimit-limit": "960", "ratelimit-remaining": "0", "ratelimit-reset": "1"},
                b'{"error":{"message":"Rate Limit Exceeded","code":2020}}',
            )
        )
        with poller(source(), pd.app, clock) as p:
            assert p.poll() == [""]
            assert sorted(stored(p.store)) == ["pagerduty/Q0001"]
        assert pd.faults.statuses()[429] == 1

    def test_a_wait_past_max_pause_fails_the_poll_as_rate_limited(self) -> None:
        clock = MovableClock(NOW)
        pd = fake(clock, incident(1, created_at=NOW - H))
        pd.faults.add(
            Fault(
                "/incidents", 429, {"ratelimit-remaining": "0", "ratelimit-reset": "600"}, times=5
            )
        )
        with poller(source(), pd.app, clock) as p:
            [error] = p.poll()
            assert stored(p.store) == {}
        assert error.startswith("RateLimited")

    def test_bad_token_is_an_auth_error(self) -> None:
        clock = MovableClock(NOW)
        pd = fake(clock, incident(1, created_at=NOW - H))
        pd.token = "other"
        with poller(source(), pd.app, clock) as p:
            [error] = p.poll()
        assert error.startswith("AuthError")


class TestCatalogAnnotation:
    def test_a_backstage_component_maps_by_pagerduty_service_id(self) -> None:
        """A service only Backstage lists, annotated ``pagerduty.com/service-id``, gets the
        incidents of that PagerDuty service."""
        clock = MovableClock(NOW)
        pd = fake(clock, incident(1, "PBILLING", created_at=NOW - H))
        cfg = config(
            SERVICES[:1],
            {
                "pagerduty": {"token": TOKEN},
                "backstage": {"base_url": "http://backstage.invalid/api/catalog"},
            },
        )
        settings = cfg.sources.pagerduty
        assert settings is not None
        entity = CatalogEntity(
            "backstage",
            "component",
            "default",
            "billing",
            "payments",
            annotations=(("pagerduty.com/service-id", "PBILLING"),),
        )
        with poller(PagerDutySource(cfg, settings), pd.app, clock) as p:
            with p.store.transaction() as tx:
                from exporter.core.store import write_records

                write_records(tx, [CatalogListing("backstage", NOW - H, (entity,))])
            assert p.poll() == [""]
            assert stored(p.store)["pagerduty/Q0001"][0] == "billing"
