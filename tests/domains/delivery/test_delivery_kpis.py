"""Delivery KPI functions on small hand-checked tables (times in hours from T0)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from exporter.core.periods import last_month
from exporter.domains.delivery import kpis as kpi
from exporter.domains.delivery.kpis import CommitNode, IncidentSpan, ProdDeploy

H = 3600.0
D = 86400.0
T0 = 1_700_000_000.0


def t(hours: float) -> float:
    return T0 + hours * H


def chain(*specs: tuple[str, float], root: bool = False) -> dict[str, CommitNode]:
    """A linear history: each (sha, hour) has the previous one as parent. The first one's
    parent is a commit older than the history read, unless ``root`` (it has none)."""
    out: dict[str, CommitNode] = {}
    prev: tuple[str, ...] = () if root else ("before-history",)
    for sha, hour in specs:
        out[sha] = CommitNode(sha, t(hour), prev)
        prev = (sha,)
    return out


# (older, unread) <- a(0h) <- b(1h) <- c(2h) <- d(5h)
HISTORY = chain(("a", 0), ("b", 1), ("c", 2), ("d", 5))
# The same history, of a new service: a is its root commit.
NEW_SERVICE = chain(("a", 0), ("b", 1), ("c", 2), ("d", 5), root=True)


class TestLeadTime:
    def test_no_deployments_give_no_samples(self) -> None:
        """No deployment: no lead time at all, and the quantiles are absent, not 0."""
        assert kpi.lead_times([], HISTORY) == []
        assert kpi.lead_time_quantiles([], t(10), 7 * D) == (0, {})

    def test_commits_since_previous_deploy_each_contribute(self) -> None:
        """Deploy of a at 1h, then of c at 4h: b and c (not a) ship with the second, 3h and 2h."""
        deploys = [ProdDeploy("d1", "a", True, t(1)), ProdDeploy("d2", "c", True, t(4))]
        samples = kpi.lead_times(deploys, HISTORY)
        assert sorted((s.sha, s.seconds / H) for s in samples) == [("b", 3.0), ("c", 2.0)]
        assert all(s.deploy_key == "d2" for s in samples)

    def test_first_known_deploy_has_no_lower_bound_and_contributes_nothing(self) -> None:
        """a's parent was never read: what the first deploy shipped is unknown."""
        assert kpi.lead_times([ProdDeploy("d1", "c", True, t(3))], HISTORY) == []

    def test_a_new_services_first_deploy_ships_every_commit_from_its_root(self) -> None:
        """a is a root commit, so the first deploy (c at 3h) shipped a, b and c: 3h, 2h and
        1h; the next (d at 8h) ships d: 3h. Four samples for four commits, median
        (2 + 3) / 2 = 2.5h, p90 at rank 2.7: 3h."""
        deploys = [ProdDeploy("d1", "c", True, t(3)), ProdDeploy("d2", "d", True, t(8))]
        samples = kpi.lead_times(deploys, NEW_SERVICE)
        assert sorted((s.deploy_key, s.sha, s.seconds / H) for s in samples) == [
            ("d1", "a", 3.0),
            ("d1", "b", 2.0),
            ("d1", "c", 1.0),
            ("d2", "d", 3.0),
        ]
        n, q = kpi.lead_time_quantiles(samples, t(9), 7 * D)
        assert n == 4
        assert q[0.5] == pytest.approx(2.5 * H) and q[0.9] == pytest.approx(3.0 * H)

    def test_a_failed_first_deploy_is_no_lower_bound_the_first_success_is(self) -> None:
        """b failed at 1.5h, then c succeeded at 3h: c shipped everything from the root."""
        deploys = [ProdDeploy("f", "b", False, t(1.5)), ProdDeploy("s", "c", True, t(3))]
        shas = sorted(s.sha for s in kpi.lead_times(deploys, NEW_SERVICE))
        assert shas == ["a", "b", "c"]

    def test_a_root_reached_by_one_path_only_is_no_lower_bound(self) -> None:
        """m merges c (whose history reaches the root a) and f, whose parent was never read:
        part of what m shipped is unknown, so the first deploy still contributes nothing."""
        commits = dict(NEW_SERVICE)
        commits["f"] = CommitNode("f", t(1.5), ("unread",))
        commits["m"] = CommitNode("m", t(3), ("c", "f"))
        assert kpi.lead_times([ProdDeploy("d1", "m", True, t(4))], commits) == []

    def test_redeploy_of_the_same_sha_adds_no_commits(self) -> None:
        """Deploying c again at 6h after c at 4h ships nothing new: only d2's 2 samples exist."""
        deploys = [
            ProdDeploy("d1", "a", True, t(1)),
            ProdDeploy("d2", "c", True, t(4)),
            ProdDeploy("d3", "c", True, t(6)),
        ]
        assert sorted(s.deploy_key for s in kpi.lead_times(deploys, HISTORY)) == ["d2", "d2"]

    def test_deploy_with_no_new_commits_after_rollback(self) -> None:
        """A rollback from c to b ships no commit; the next deploy (of d) ships what b
        cannot reach: c and d, counted from that deploy."""
        deploys = [
            ProdDeploy("d1", "a", True, t(1)),
            ProdDeploy("d2", "c", True, t(4)),
            ProdDeploy("rollback", "b", True, t(4.5)),
            ProdDeploy("d4", "d", True, t(6)),
        ]
        samples = kpi.lead_times(deploys, HISTORY)
        assert not [s for s in samples if s.deploy_key == "rollback"]
        # From b to d: c (6h - 2h = 4h) and d (6h - 5h = 1h).
        assert sorted((s.sha, s.seconds / H) for s in samples if s.deploy_key == "d4") == [
            ("c", 4.0),
            ("d", 1.0),
        ]

    def test_events_arriving_out_of_order_give_the_same_result(self) -> None:
        in_order = [
            ProdDeploy("d1", "a", True, t(1)),
            ProdDeploy("d2", "b", True, t(2)),
            ProdDeploy("d3", "d", True, t(6)),
        ]
        shuffled = [in_order[2], in_order[0], in_order[1]]
        assert kpi.lead_times(in_order, HISTORY) == kpi.lead_times(shuffled, HISTORY)
        assert sorted((s.sha, s.seconds / H) for s in kpi.lead_times(shuffled, HISTORY)) == [
            ("b", 1.0),
            ("c", 4.0),
            ("d", 1.0),
        ]

    def test_failed_deploy_then_fixed_one_counts_from_the_last_success(self) -> None:
        """A failed deploy is not a lower bound: the fix (d) ships all since a, the last success."""
        deploys = [
            ProdDeploy("d1", "a", True, t(1)),
            ProdDeploy("bad", "c", False, t(3)),
            ProdDeploy("fix", "d", True, t(7)),
        ]
        samples = kpi.lead_times(deploys, HISTORY)
        assert sorted((s.sha, s.seconds / H) for s in samples) == [
            ("b", 6.0),
            ("c", 5.0),
            ("d", 2.0),
        ]

    def test_merge_commits_bring_their_branch(self) -> None:
        """m merges feature commit f (authored at 1.5h) into c: f ships with m."""
        commits = dict(HISTORY)
        commits["f"] = CommitNode("f", t(1.5), ("a",))
        commits["m"] = CommitNode("m", t(3), ("c", "f"))
        deploys = [ProdDeploy("d1", "b", True, t(2)), ProdDeploy("d2", "m", True, t(4))]
        got = sorted((s.sha, s.seconds / H) for s in kpi.lead_times(deploys, commits))
        assert got == [("c", 2.0), ("f", 2.5), ("m", 1.0)]

    def test_a_squash_commit_counts_from_the_commits_it_replaced(self) -> None:
        """s (at 5h, parent b) squashed a merge request's commits x (0.5h) and y (3h), which
        left the branch. The deploy of s at 6h after b's at 2h ships x (5.5h) and y (3h),
        not s (1h)."""
        commits = dict(chain(("a", 0), ("b", 1)))
        commits["s"] = CommitNode("s", t(5), ("b",))
        commits["x"] = CommitNode("x", t(0.5), ("a",))
        commits["y"] = CommitNode("y", t(3), ("x",))
        deploys = [ProdDeploy("d1", "b", True, t(2)), ProdDeploy("d2", "s", True, t(6))]
        squashed = {"s": ("x", "y")}
        got = sorted((s.sha, s.seconds / H) for s in kpi.lead_times(deploys, commits, squashed))
        assert got == [("x", 5.5), ("y", 3.0)]
        assert [(s.sha, s.seconds / H) for s in kpi.lead_times(deploys, commits)] == [("s", 1.0)]

    def test_a_squash_whose_original_commits_are_unknown_counts_itself(self) -> None:
        """Without any of the merge request's commits in the graph, s stands for itself."""
        commits = dict(chain(("a", 0), ("b", 1)))
        commits["s"] = CommitNode("s", t(5), ("b",))
        deploys = [ProdDeploy("d1", "b", True, t(2)), ProdDeploy("d2", "s", True, t(6))]
        got = kpi.lead_times(deploys, commits, {"s": ("x", "y")})
        assert [(s.sha, s.seconds / H) for s in got] == [("s", 1.0)]

    def test_a_redeploy_of_a_squash_commit_counts_its_commits_once(self) -> None:
        commits = dict(chain(("a", 0), ("b", 1)))
        commits["s"] = CommitNode("s", t(5), ("b",))
        commits["x"] = CommitNode("x", t(0.5), ("a",))
        deploys = [
            ProdDeploy("d1", "b", True, t(2)),
            ProdDeploy("d2", "s", True, t(6)),
            ProdDeploy("d3", "s", True, t(8)),
        ]
        got = kpi.lead_times(deploys, commits, {"s": ("x",)})
        assert [(s.deploy_key, s.sha, s.seconds / H) for s in got] == [("d2", "x", 5.5)]

    def test_unknown_commit_gives_no_samples(self) -> None:
        deploys = [ProdDeploy("d1", "a", True, t(1)), ProdDeploy("d2", "zzz", True, t(4))]
        assert kpi.lead_times(deploys, HISTORY) == []

    def test_quantiles_over_a_window_boundary(self) -> None:
        """Window (now-7d, now]: a deploy exactly 7d old is out, one just inside is in."""
        now = t(0) + 10 * D
        samples = [
            kpi.LeadTime("old", "x", now - 7 * D, 100.0),
            kpi.LeadTime("in1", "y", now - 7 * D + 1, 10.0),
            kpi.LeadTime("in2", "z", now, 30.0),
            kpi.LeadTime("in3", "w", now - D, 20.0),
        ]
        n, qs = kpi.lead_time_quantiles(samples, now, 7 * D)
        assert n == 3
        assert qs[0.5] == 20.0
        assert qs[0.9] == pytest.approx(28.0)  # 20 + 0.8 * (30 - 20)


class TestDeploymentFrequency:
    def test_no_deployments_is_absent(self) -> None:
        assert kpi.deployment_frequency([], t(0), 7 * D) is None

    def test_successes_in_window_per_day(self) -> None:
        now = t(0) + 30 * D
        deploys = [
            ProdDeploy("a", "a", True, now - 1),
            ProdDeploy("b", "b", True, now - 2 * D),
            ProdDeploy("f", "c", False, now - 3 * D),  # failures do not count
            ProdDeploy("o", "d", True, now - 7 * D),  # exactly on the boundary: out
        ]
        assert kpi.deployment_frequency(deploys, now, 7 * D) == pytest.approx(2 / 7)
        assert kpi.deployment_frequency(deploys, now, D) == 1.0
        assert kpi.deployment_frequency(deploys, now, 30 * D) == pytest.approx(3 / 30)

    def test_known_service_with_no_recent_deploy_is_zero(self) -> None:
        """A service that deploys, but not this week, really has frequency 0 this week."""
        now = t(0) + 30 * D
        assert kpi.deployment_frequency([ProdDeploy("a", "a", True, now - 20 * D)], now, 7 * D) == 0


class TestChangeFailure:
    NOW = T0 + 40 * D

    def deploys(self) -> list[ProdDeploy]:
        n = self.NOW
        return [
            ProdDeploy("d1", "a", True, n - 10 * D),
            ProdDeploy("d2", "b", False, n - 9 * D),  # failed
            ProdDeploy("d3", "c", True, n - 8 * D),  # the fix
            ProdDeploy("d4", "d", True, n - 5 * D),
        ]

    def test_failed_deploy_followed_by_fix(self) -> None:
        """1 failed of 4: 0.25. The fix itself is a success."""
        cf = kpi.change_failure(self.deploys(), [], self.NOW, 30 * D, H)
        assert (cf.failed, cf.total, cf.ratio) == (1, 4, 0.25)

    def test_incident_within_link_window_marks_the_deploy_failed(self) -> None:
        incident = IncidentSpan("i1", self.NOW - 5 * D + 1800, self.NOW - 5 * D + 3600)
        cf = kpi.change_failure(self.deploys(), [incident], self.NOW, 30 * D, H)
        assert (cf.failed, cf.total) == (2, 4)

    def test_incident_after_link_window_links_nothing(self) -> None:
        incident = IncidentSpan("i1", self.NOW - 5 * D + 2 * H, None)
        cf = kpi.change_failure(self.deploys(), [incident], self.NOW, 30 * D, H)
        assert (cf.failed, cf.total) == (1, 4)

    def test_explicit_link_wins_over_time(self) -> None:
        incident = IncidentSpan("i1", self.NOW - D, None, deployment_sha="a")
        assert kpi.failed_changes(self.deploys(), [incident], H) == {"d1", "d2"}

    def test_explicit_link_by_sha_prefix_reaches_beyond_the_window(self) -> None:
        """An incident opened 1 min after d4 (the time rule would blame d4) names d3's commit,
        3 days older, by a 7-digit prefix: d3 is the failed change, d4 is not; 2 of 4."""
        deploys = [
            ProdDeploy("d1", "1111111aaaa", True, self.NOW - 10 * D),
            ProdDeploy("d2", "2222222bbbb", False, self.NOW - 9 * D),
            ProdDeploy("d3", "3333333cccc", True, self.NOW - 8 * D),
            ProdDeploy("d4", "4444444dddd", True, self.NOW - 5 * D),
        ]
        incident = IncidentSpan("i1", self.NOW - 5 * D + 60, None, deployment_sha="3333333")
        cf = kpi.change_failure(deploys, [incident], self.NOW, 30 * D, H)
        assert (cf.failed, cf.total) == (2, 4)
        assert kpi.failed_changes(deploys, [incident], H) == {"d2", "d3"}

    def test_root_cause_commit_links_the_deployment_that_shipped_it(self) -> None:
        """History a <- b <- c <- d; deploys of a (1h), c (4h), d (6h). Commit b was shipped
        by the deploy of c (the first one whose history holds it), not by a's or d's."""
        deploys = [
            ProdDeploy("da", "a", True, t(1)),
            ProdDeploy("dc", "c", True, t(4)),
            ProdDeploy("dd", "d", True, t(6)),
        ]
        incident = IncidentSpan("i1", t(30), None, deployment_sha="b")
        assert kpi.failed_changes(deploys, [incident], H, HISTORY) == {"dc"}

    def test_root_cause_in_a_squashed_merge_request_links_where_the_squash_shipped(self) -> None:
        """x was squashed into s (x left the branch): naming x links the deploy of s."""
        commits = dict(chain(("a", 0), ("b", 1)))
        commits["s"] = CommitNode("s", t(5), ("b",))
        commits["x"] = CommitNode("x", t(0.5), ("a",))
        deploys = [ProdDeploy("d1", "b", True, t(2)), ProdDeploy("d2", "s", True, t(6))]
        incident = IncidentSpan("i1", t(30), None, deployment_sha="x")
        assert kpi.failed_changes(deploys, [incident], H, commits, {"s": ("x",)}) == {"d2"}
        assert kpi.failed_changes(deploys, [incident], H, commits) == set()

    def test_short_prefix_resolves_only_when_unique(self) -> None:
        """abcdef01 and abcdef02 share the prefix abcdef0: ambiguous, it names nothing (as in
        git); abcdef01 is unique; a prefix under 7 digits never matches."""
        deploys = [
            ProdDeploy("d1", "abcdef01" + "0" * 32, True, t(1)),
            ProdDeploy("d2", "abcdef02" + "0" * 32, True, t(2)),
        ]
        assert kpi.resolve_sha("abcdef0", deploys, {}) is None
        assert kpi.resolve_sha("ABCDEF01", deploys, {}) == "abcdef01" + "0" * 32
        assert kpi.resolve_sha("abcdef", deploys, {}) is None
        assert kpi.resolve_sha("1234567", deploys, {}) is None

    def test_an_unresolved_root_cause_links_nothing_not_even_by_time(self) -> None:
        """The incident opened 30 min after d4 (inside the 1h window) but names an unknown
        commit: its statement wins, so only the failed d2 counts (1 of 4)."""
        incident = IncidentSpan("i1", self.NOW - 5 * D + 1800, None, deployment_sha="feedbee")
        cf = kpi.change_failure(self.deploys(), [incident], self.NOW, 30 * D, H)
        assert (cf.failed, cf.total) == (1, 4)

    def test_incident_with_no_deploy(self) -> None:
        """An incident before any deployment links nothing; no deploys at all: ratio absent."""
        incident = IncidentSpan("i1", T0, T0 + H)
        cf = kpi.change_failure([], [incident], self.NOW, 30 * D, H)
        assert (cf.failed, cf.total, cf.ratio) == (0, 0, None)

    def test_window_boundary(self) -> None:
        """Only deploys finished in (now-7d, now] count: d4 alone, a success."""
        cf = kpi.change_failure(self.deploys(), [], self.NOW, 7 * D, H)
        assert (cf.failed, cf.total, cf.ratio) == (0, 1, 0.0)


class TestTimeToRestore:
    def test_resolved_minus_opened_in_window(self) -> None:
        now = T0 + 40 * D
        incidents = [
            IncidentSpan("i1", now - 2 * D, now - 2 * D + H),  # 1h
            IncidentSpan("i2", now - 3 * D, now - 3 * D + 3 * H),  # 3h
            IncidentSpan("open", now - H, None),  # unresolved: no sample
            IncidentSpan("old", now - 40 * D, now - 31 * D),  # resolved before the window
        ]
        values = kpi.restore_times(incidents, now, 30 * D)
        assert sorted(v / H for v in values) == [1.0, 3.0]
        assert kpi.quantile(values, 0.5) == 2 * H

    def test_incident_with_no_deploy_still_has_a_restore_time(self) -> None:
        assert kpi.restore_times([IncidentSpan("i", T0, T0 + 600)], T0 + D, 30 * D) == [600.0]


class TestTimeToProduction:
    def test_from_root_commit_to_first_successful_production_deploy(self) -> None:
        deploys = [
            ProdDeploy("f", "b", False, t(10)),
            ProdDeploy("s", "c", True, t(30)),
            ProdDeploy("s2", "d", True, t(40)),
        ]
        start = kpi.first_commit_time(NEW_SERVICE)
        assert start == t(0)
        assert kpi.time_to_production(start, deploys) == 30 * H

    def test_unknown_start_or_no_deploy_is_absent(self) -> None:
        assert kpi.first_commit_time({"x": CommitNode("x", t(1), ("older",))}) is None
        assert kpi.time_to_production(None, [ProdDeploy("s", "c", True, t(3))]) is None
        assert kpi.time_to_production(t(0), [ProdDeploy("f", "c", False, t(3))]) is None


class TestDoraLevel:
    @pytest.mark.parametrize(
        ("freq", "lead", "cfr", "ttr", "expected"),
        [
            (2.0, 1800.0, 0.05, 1800.0, "elite"),
            (2.0, 1800.0, 0.20, 1800.0, "high"),  # worst key decides
            (0.5, 2 * D, 0.10, 4 * H, "high"),
            (0.1, 20 * D, 0.25, 2 * D, "medium"),
            (1 / 365, None, None, None, "low"),
            (1.0, 3600.0, 0.15, None, "high"),  # 1h lead time is not "less than one hour"
            (0.0, None, None, None, "low"),
        ],
    )
    def test_levels(
        self, freq: float, lead: float | None, cfr: float | None, ttr: float | None, expected: str
    ) -> None:
        assert kpi.performance_level(freq, lead, cfr, ttr) == expected

    def test_no_deployment_data_no_level(self) -> None:
        assert kpi.performance_level(None, 10.0, 0.0, 10.0) is None


class TestLastMonth:
    """Delivery KPIs over the previous calendar month (UTC), at the edges of months."""

    @staticmethod
    def at(text: str) -> float:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()

    def deploys(self) -> list[ProdDeploy]:
        """Around February 2028 (29 days): one at 23:59:59 on Jan 31, three in February
        (one failed), one at exactly 00:00 on March 1 (March's, not February's)."""
        return [
            ProdDeploy("jan", "a", True, self.at("2028-01-31T23:59:59")),
            ProdDeploy("f1", "b", True, self.at("2028-02-01T00:00:00")),
            ProdDeploy("f2", "c", False, self.at("2028-02-15T12:00:00")),
            ProdDeploy("f3", "d", True, self.at("2028-02-29T23:59:59")),
            ProdDeploy("mar", "e", True, self.at("2028-03-01T00:00:00")),
        ]

    @pytest.mark.parametrize(
        "now", ["2028-03-01T00:05:00", "2028-03-15T12:00:00", "2028-03-31T23:55:00"]
    )
    def test_frequency_divides_the_months_successes_by_its_29_days(self, now: str) -> None:
        window = last_month(self.at(now))
        assert kpi.successful_deployments(self.deploys(), 0.0, window) == 2
        assert kpi.deployment_frequency(self.deploys(), 0.0, window) == pytest.approx(2 / 29)
        cf = kpi.change_failure(self.deploys(), [], 0.0, window, 0.0)
        assert (cf.failed, cf.total) == (1, 3)

    def test_a_month_without_deployments_is_zero_for_a_deploying_service(self) -> None:
        """April 2028 holds none of them: 0 per day, and no change failure ratio."""
        window = last_month(self.at("2028-05-01T00:05:00"))
        assert kpi.deployment_frequency(self.deploys(), 0.0, window) == 0.0
        assert kpi.change_failure(self.deploys(), [], 0.0, window, 0.0).ratio is None
        assert kpi.deployment_frequency([], 0.0, window) is None

    def test_lead_time_and_restore_quantiles_of_the_closed_month(self) -> None:
        """December 2027, read on New Year's Day: lead times of deployments finished in
        December (4 h and 2 h), restore times of incidents resolved in it (1 h; the one
        resolved at 00:00 on January 1 is January's)."""
        window = last_month(self.at("2028-01-01T00:00:00"))
        leads = [
            kpi.LeadTime("d1", "x", self.at("2027-12-31T23:00:00"), 4 * H),
            kpi.LeadTime("d2", "y", self.at("2027-12-01T00:00:00"), 2 * H),
            kpi.LeadTime("d3", "z", self.at("2027-11-30T23:59:00"), 50 * H),
        ]
        n, qs = kpi.lead_time_quantiles(leads, 0.0, window)
        assert (n, qs[0.5]) == (2, 3 * H)
        incidents = [
            IncidentSpan("i1", self.at("2027-12-10T10:00:00"), self.at("2027-12-10T11:00:00")),
            IncidentSpan("i2", self.at("2027-12-31T22:00:00"), self.at("2028-01-01T00:00:00")),
        ]
        assert kpi.restore_times(incidents, 0.0, window) == [H]


class TestServiceKpis:
    """Every KPI of one service as the metrics show it, on one hand-checked history.

    History (a new service) a(0h, the root) <- b(1h) <- c(2h) <- d(5h); deployments: a
    succeeds at 1h, c at 4h,
    d fails at 6h; an incident opens at 4.5h (no root cause named) and is resolved at
    5.5h. ``now`` is 10h: 2023-11-15, so last_month is October 2023 (no events).
    """

    NOW = t(10)
    DATA = kpi.ServiceDelivery(
        deploys=[
            ProdDeploy("d1", "a", True, t(1)),
            ProdDeploy("d2", "c", True, t(4)),
            ProdDeploy("d3", "d", False, t(6)),
        ],
        commits=NEW_SERVICE,
        incidents=[IncidentSpan("i1", t(4.5), t(5.5))],
    )

    def kpis(self) -> kpi.ServiceKpis:
        return kpi.service_kpis(self.DATA, kpi.DeliveryRules(), None, self.NOW)

    def test_frequency_per_window_with_the_count_behind_it(self) -> None:
        """Two successes in every rolling window: 2 per day over 1d, 2/7 over 7d, 2/30 over
        30d; none in October is a rate of 0, not absent (the service has deployments)."""
        assert self.kpis().frequency == {
            "1d": (2, 2.0),
            "7d": (2, 2 / 7),
            "30d": (2, 2 / 30),
            "last_month": (0, 0.0),
        }

    def test_lead_time_histogram_and_quantiles(self) -> None:
        """a's deployment ships a, the root (1h: in the 1h bucket, le is inclusive); c's
        ships b (3h) and c (2h), within the 3h bucket. Sorted 1 2 3: median 2h, p90 at
        rank 1.8: 2.8h; no lead time in October."""
        k = self.kpis()
        counts, total, n = k.lead_histogram
        assert counts[:3] == [0, 1, 3] and set(counts[2:]) == {3}
        assert (total, n) == (6 * H, 3)
        assert k.lead["7d"] == (3, {0.5: 2 * H, 0.9: pytest.approx(2.8 * H)})
        assert k.lead["last_month"] == (0, {})

    def test_change_failure_counts_the_failed_and_the_incident_linked(self) -> None:
        """d3 failed and the incident links to d2 (the latest success before it opened):
        2 of 3 over 30d; no deployment in October, no ratio."""
        k = self.kpis()
        assert (k.change_failure["30d"].failed, k.change_failure["30d"].total) == (2, 3)
        assert k.change_failure["30d"].ratio == pytest.approx(2 / 3)
        assert k.change_failure["last_month"].ratio is None

    def test_restore_histogram_and_quantiles(self) -> None:
        """One incident restored in exactly 1h: counted in the 3600 s bucket (le is inclusive)."""
        k = self.kpis()
        counts, total, n = k.restore_histogram
        assert counts[: kpi.RESTORE_BUCKETS.index(H) + 1] == [0, 0, 0, 1]
        assert (total, n) == (H, 1)
        assert k.restore["30d"] == (1, {0.5: H, 0.9: H})
        assert k.restore["last_month"] == (0, {})

    def test_time_to_production_from_the_root_commit(self) -> None:
        """Root commit a at 0h, first successful production deployment at 1h: one hour."""
        k = self.kpis()
        assert k.ttp_known
        assert k.time_to_production == H

    def test_dora_level_is_the_worst_key(self) -> None:
        """Frequency 2/30 a day (high), lead median 2h (high), restore median 1h (high: not
        under an hour), change failure 2/3 (low): the level is low."""
        assert self.kpis().level == "low"

    def test_registration_starts_time_to_production_only_within_the_history(self) -> None:
        """No commits known: a registration inside the backfill starts time to production;
        one older than the history read leaves the start unknown."""
        data = kpi.ServiceDelivery(deploys=[ProdDeploy("d1", "x", True, t(5))])
        rules = kpi.DeliveryRules(backfill_days=1)
        recent = kpi.service_kpis(data, rules, t(2), self.NOW)
        assert (recent.ttp_known, recent.time_to_production) == (True, 3 * H)
        old = kpi.service_kpis(data, rules, self.NOW - 2 * D, self.NOW)
        assert (old.ttp_known, old.time_to_production) == (False, None)

    def test_no_deployments_no_level_and_no_rates(self) -> None:
        """A service without production deployments has no rate (absent, not 0) and no level."""
        k = kpi.service_kpis(kpi.ServiceDelivery(), kpi.DeliveryRules(), None, self.NOW)
        assert k.frequency["30d"] == (0, None)
        assert k.level is None
        assert k.lead_histogram[2] == 0

    def test_first_production_histogram_takes_one_sample_per_service_that_has_one(self) -> None:
        k = self.kpis()
        none = kpi.service_kpis(kpi.ServiceDelivery(), kpi.DeliveryRules(), None, self.NOW)
        counts, total, n = kpi.first_production_histogram([k, none])
        assert (total, n) == (H, 1)
        assert counts[0] == 1  # one hour is within the first bucket (one day)


class TestDeliveryServices:
    def test_services_with_ci_refs_or_repos_of_a_configured_ci_kind(self) -> None:
        """In name order: a config service with ci refs, and catalog services whose repos
        name a configured kind; a repo of another kind does not count."""
        from exporter.core.catalog import CatalogService

        services = {
            "web": CatalogService("web", "t", "backstage", repos=("gitlab:g/web",)),
            "api": CatalogService("api", "t", "config"),
            "db": CatalogService("db", "t", "backstage", repos=("jenkins:db",)),
        }
        shown = kpi.delivery_services(services, ["api"], ["github", "gitlab"])
        assert [s.name for s in shown] == ["api", "web"]
