"""The exporter's own health with several replicas: labelled by replica, leases shown, a
source a peer polls neither up nor down here, a lease that ran out in an outage reported
down by its last holder, and a lease taken over reported with its previous holder's
verdict until the first poll."""

from __future__ import annotations

from typing import Any, cast

from exporter.core import self_health
from exporter.core.health import SourceHealth
from exporter.core.lease import Polled
from exporter.core.provider import RenderContext
from exporter.core.snapshot import render_part
from tests.support.exposition import Exposition


class TestLeasedHealth:
    def test_losing_a_lease_clears_up_and_last_success(self) -> None:
        """The old holder's last verdict would read as stale (or down) beside the new
        holder's: it is dropped, and comes back only with this replica's next poll."""
        h = SourceHealth("github", "github", 60.0, replica="kpi-0", leased=True)
        h.poll_succeeded(1000.0, 0.5)
        h.set_leased(False, 2)
        copy = h.copy()
        assert (copy.up, copy.last_success, copy.leased, copy.leases_held) == (None, None, False, 2)
        assert h.last_poll() is None  # the peer's last poll is the one to hand over
        h.set_leased(True, 3)
        h.poll_succeeded(1060.0, 0.5)
        assert (h.up, h.last_success) == (True, 1060.0)

    def test_a_lease_taken_over_reports_the_previous_holders_verdict_until_the_first_poll(
        self,
    ) -> None:
        """A failing source stays down through the move (its down alert does not lapse
        for want of a verdict); this replica's own poll then decides."""
        h = SourceHealth("github", "github", 3600.0, replica="kpi-1", leased=False)
        h.set_leased(True, 1)
        h.inherit(Polled(1900.0, False))
        assert (h.up, h.last_poll()) == (False, Polled(1900.0, False))
        h.poll_started(1950.0)
        h.poll_succeeded(1951.0, 1.0)
        assert (h.up, h.last_poll()) == (True, Polled(1950.0, True))
        fresh = SourceHealth("probe", "probe", 60.0, replica="kpi-1", leased=False)
        fresh.set_leased(True, 1)
        fresh.inherit(None)  # no replica polled it: nothing to report before the first poll
        assert (fresh.up, fresh.last_poll()) == (None, None)


class TestAnOutage:
    """The state unreachable: no renewal round reaches it, leases run out locally."""

    def lapsed(self) -> SourceHealth:
        h = SourceHealth("github", "github", 60.0, replica="kpi-0", leased=True)
        h.poll_succeeded(1900.0, 0.5)
        h.set_leased(True, 1, reached=False)  # a failed round, the lease still unexpired
        assert not h.lapsed
        h.set_leased(False, 0, reached=False)  # run out unrenewed
        return h

    def test_the_last_holder_reports_the_source_down_with_its_last_success(self) -> None:
        """Nobody is known to poll it: ``up`` 0 (not absent), the freshness kept."""
        got = _exposition(self.lapsed())
        labels = {"source": "github", "kind": "github", "replica": "kpi-0"}
        assert got.value("platform_exporter_source_up", **labels) == 0.0
        assert got.value("platform_exporter_source_last_success_timestamp_seconds", **labels) == (
            1900.0
        )
        assert got.value("platform_exporter_source_leased", **labels) == 0.0

    def test_a_peer_that_never_held_it_reports_nothing_of_it(self) -> None:
        peer = SourceHealth("github", "github", 60.0, replica="kpi-1", leased=False)
        peer.set_leased(False, 0, reached=False)
        assert _exposition(peer).samples("platform_exporter_source_up") == []

    def test_the_state_back_a_regained_lease_serves_the_last_verdict_a_lost_one_nothing(
        self,
    ) -> None:
        regained = self.lapsed()
        regained.set_leased(True, 1)  # a late renewal: no one took it
        assert _exposition(regained).value("platform_exporter_source_up", source="github") == 1.0
        lost = self.lapsed()
        lost.set_leased(False, 0)  # a peer holds it now: its verdict is the source's
        assert _exposition(lost).samples("platform_exporter_source_up") == []
        assert lost.last_success is None


def _exposition(*health: SourceHealth) -> Exposition:
    """What the exporter's own health part renders for ``health`` (it reads nothing else)."""
    ctx = RenderContext(
        config=cast(Any, None),
        store=cast(Any, None),
        health=health,
        now=2000.0,
        sources=(),
        catalog_loader=cast(Any, None),
    )
    return Exposition.parse(render_part(self_health.collect(ctx)).text)


class TestWhatEachReplicaReports:
    """With several replicas only a source's lease holder says how it is: a peer's old
    verdict, freshness or API budget would read as down, stale or spent on the others."""

    def holder_and_peer(self) -> tuple[SourceHealth, SourceHealth]:
        holder = SourceHealth("github", "github", 60.0, replica="kpi-0", leased=True)
        holder.poll_succeeded(1900.0, 0.5)
        holder.set_rate_limit_remaining("core", 4990.0)
        peer = SourceHealth("github", "github", 60.0, replica="kpi-1", leased=True)
        peer.poll_failed("http_5xx", "503 from upstream", 1.5)
        peer.set_rate_limit_remaining("core", 12.0)
        peer.set_leased(False, 0)  # the lease moved to kpi-0
        return holder, peer

    def test_the_holder_reports_up_freshness_duration_and_budget(self) -> None:
        holder, _ = self.holder_and_peer()
        got = _exposition(holder)
        labels = {"source": "github", "kind": "github", "replica": "kpi-0"}
        assert got.value("platform_exporter_source_up", **labels) == 1.0
        assert got.value("platform_exporter_source_last_success_timestamp_seconds", **labels) == (
            1900.0
        )
        assert got.value("platform_exporter_source_poll_duration_seconds", **labels) == 0.5
        assert got.value("platform_exporter_rate_limit_remaining", **labels) == 4990.0
        assert got.value("platform_exporter_source_leased", **labels) == 1.0

    def test_a_peer_keeps_its_interval_and_counters_but_no_verdict_or_budget(self) -> None:
        _, peer = self.holder_and_peer()
        got = _exposition(peer)
        labels = {"source": "github", "kind": "github", "replica": "kpi-1"}
        for gone in (
            "platform_exporter_source_up",
            "platform_exporter_source_last_success_timestamp_seconds",
            "platform_exporter_source_poll_duration_seconds",
            "platform_exporter_rate_limit_remaining",
        ):
            assert got.samples(gone) == [], gone
        assert got.value("platform_exporter_source_interval_seconds", **labels) == 60.0
        assert got.value("platform_exporter_source_leased", **labels) == 0.0
        assert got.value("platform_exporter_leases_held", replica="kpi-1") == 0.0
        errors = "platform_exporter_source_errors_total"
        assert got.value(errors, reason="http_5xx", **labels) == 1.0

    def test_build_info_names_the_replica_and_a_single_replica_has_no_such_label(self) -> None:
        holder, _ = self.holder_and_peer()
        ((labels, value),) = _exposition(holder).samples("platform_exporter_build_info")
        assert (labels["replica"], value) == ("kpi-0", 1.0)
        single = SourceHealth("github", "github", 60.0)
        single.set_rate_limit_remaining("core", 4990.0)
        alone = _exposition(single)
        ((labels, _),) = alone.samples("platform_exporter_build_info")
        assert "replica" not in labels
        assert alone.samples("platform_exporter_source_leased") == []
        assert alone.value("platform_exporter_rate_limit_remaining", resource="core") == 4990.0
