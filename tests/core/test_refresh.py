"""A refresh recomputes only what changed: providers whose inputs a poll changed, and the
time-driven ones once per ``metrics.min_refresh``; every other provider's rendered bytes
are reused, and the snapshot so assembled is the one a full render would give."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path
from typing import Any

import pytest

import exporter.daemon as daemon_module
from exporter.config import Config
from exporter.core.changes import ANY, writing_for
from exporter.core.clock import FixedClock
from exporter.core.snapshot import Parts, Snapshot
from exporter.core.source import PollContext
from exporter.daemon import Daemon
from exporter.domains import open_store, providers
from exporter.domains.probe.records import ProbeResult
from exporter.domains.traffic.kpis import LATENCY_BUCKETS
from exporter.domains.traffic.records import TrafficDelta
from tests.support.exposition import Exposition
from tests.support.fakes import ScriptedSource
from tests.support.instants import at

NOW = at("mid-month")
DOMAIN_PROVIDERS = (
    "adoption",
    "catalog",
    "cost",
    "delivery",
    "incident",
    "probe",
    "slo",
    "traffic",
)
# Cost reads only the totals of days already over (the traffic domain's view
# ``traffic_days_over``): a poll of today's traffic leaves it as it is.
TRAFFIC_READERS = {"adoption", "slo", "traffic"}


def config(tmp_path: Path, **metrics: Any) -> Config:
    return Config(
        state={"path": str(tmp_path / "state.db")},
        metrics=metrics,
        services=[
            {
                "name": "checkout",
                "team": "payments",
                "probes": [{"name": "health", "url": "http://checkout.test/health"}],
            }
        ],
    )


def probe(t: float) -> ProbeResult:
    return ProbeResult("checkout", "health", t, 0.05, True, "", 200)


def delta(minute: float, batch: str) -> TrafficDelta:
    buckets = [0] * (len(LATENCY_BUCKETS) + 1)
    buckets[0] = 10
    return TrafficDelta(
        "scripted-gw", "checkout", minute, batch, (0, 10, 0, 0, 0), tuple(buckets), 0.1, 10
    )


class TrafficScripted(ScriptedSource):
    """A scripted gateway: what it commits is traffic data, and nothing else."""

    produces = (TrafficDelta,)


def seeded(tmp_path: Path, clock: FixedClock, **kwargs: Any) -> Daemon:
    """A daemon whose store holds some probe results and a minute of traffic."""
    cfg = config(tmp_path)
    store = open_store(str(cfg.state.path), clock)
    with store.transaction() as tx:
        from exporter.core.store import write_records

        write_records(tx, [probe(NOW - 60), probe(NOW - 30), delta(NOW - 120, "seed")])
    store.close()
    return Daemon(config(tmp_path, **kwargs.pop("metrics", {})), clock=clock, **kwargs)


def renders(snapshot: Snapshot) -> dict[tuple[str, str], float]:
    exp = Exposition.parse(snapshot.text)
    return {
        (s.labels["provider"], s.labels["reason"]): s.value
        for s in exp.families["platform_exporter_renders"].samples
    }


def recomputed(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """Recomputations per provider between two snapshots, by the self-metric."""
    a, b = renders(before), renders(after)
    out = {}
    for name in ("self_health", *DOMAIN_PROVIDERS):
        out[name] = sum(b[name, r] - a.get((name, r), 0) for r in ("changed", "cadence"))
    return out


def domain_parts(daemon: Daemon) -> dict[str, Any]:
    return {name: daemon.parts.rendered(name) for name in DOMAIN_PROVIDERS}


def without_render_stats(body: bytes) -> bytes:
    """The exposition up to the render self-metrics, which come last and count renders."""
    return body[: body.index(b"# HELP platform_exporter_render_seconds")]


class TestNothingNew:
    def test_a_hundred_polls_that_commit_nothing_new_recompute_no_provider(
        self, tmp_path: Path
    ) -> None:
        """The source re-sends a probe result already stored, with the same cursor: the
        commits change no row, so no domain provider runs and their bytes stay the same."""

        async def resend(ctx: PollContext, n: int) -> None:
            await ctx.commit([probe(NOW - 30)], {"since": str(NOW - 30)})

        clock = FixedClock(NOW)
        src = ScriptedSource(config(tmp_path), behaviour=resend)
        daemon = seeded(tmp_path, clock, sources=[src])
        asyncio.run(daemon.poll(src))  # the cursor is new once
        first, parts = daemon.holder.current, domain_parts(daemon)

        async def polls() -> None:
            for _ in range(100):
                await daemon.poll(src)

        asyncio.run(polls())
        last = daemon.holder.current
        assert src.polls == 101
        counts = recomputed(first, last)
        assert {n: counts[n] for n in DOMAIN_PROVIDERS} == dict.fromkeys(DOMAIN_PROVIDERS, 0)
        assert counts["self_health"] == 100  # its poll counts and durations did change
        assert all(daemon.parts.rendered(n) is parts[n] for n in DOMAIN_PROVIDERS)
        domain_text = b"".join(p.text for p in parts.values() if p is not None)
        assert domain_text in last.text and domain_text in first.text
        assert renders(last)["probe", "skipped"] == 100 + renders(first)["probe", "skipped"]


class TestOneDomainChanged:
    def test_a_traffic_poll_recomputes_only_the_providers_that_read_traffic(
        self, tmp_path: Path
    ) -> None:
        async def minute(ctx: PollContext, n: int) -> None:
            await ctx.commit([delta(NOW - 60, f"poll-{n}")])

        clock = FixedClock(NOW)
        src = TrafficScripted(config(tmp_path), name="gateway", behaviour=minute)
        daemon = seeded(tmp_path, clock, sources=[src])
        before, parts = daemon.holder.current, domain_parts(daemon)
        asyncio.run(daemon.poll(src))
        after = daemon.holder.current
        counts = recomputed(before, after)
        assert {n for n in DOMAIN_PROVIDERS if counts[n]} == TRAFFIC_READERS
        assert all(counts[n] == 1 for n in TRAFFIC_READERS)
        for name in set(DOMAIN_PROVIDERS) - TRAFFIC_READERS:
            assert daemon.parts.rendered(name) is parts[name]  # the same bytes, reused
        requests = Exposition.parse(after.text).families["platform_service_requests"].samples
        assert sum(s.value for s in requests) == 20  # the seeded minute and the new one

    def test_a_traffic_poll_carrying_a_day_already_over_recomputes_cost_too(
        self, tmp_path: Path
    ) -> None:
        """The last minute of yesterday, read after midnight, changes the daily totals
        cost per transaction divides by."""
        today = NOW - NOW % 86400

        async def late(ctx: PollContext, n: int) -> None:
            await ctx.commit([delta(today - 60, f"late-{n}")])

        clock = FixedClock(NOW)
        src = TrafficScripted(config(tmp_path), name="gateway", behaviour=late)
        daemon = seeded(tmp_path, clock, sources=[src])
        before = daemon.holder.current
        asyncio.run(daemon.poll(src))
        counts = recomputed(before, daemon.holder.current)
        assert {n for n in DOMAIN_PROVIDERS if counts[n]} == TRAFFIC_READERS | {"cost"}

    def test_the_reused_and_new_parts_equal_a_full_render_byte_for_byte(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The process's own CPU and memory differ from one render to the next.
        monkeypatch.setattr(daemon_module, "providers", lambda **kw: providers(live=False, **kw))

        async def minute(ctx: PollContext, n: int) -> None:
            await ctx.commit([delta(NOW - 60, f"poll-{n}")])

        clock = FixedClock(NOW)
        src = TrafficScripted(config(tmp_path), name="gateway", behaviour=minute)
        daemon = seeded(tmp_path, clock, sources=[src])
        asyncio.run(daemon.poll(src))
        incremental = daemon.holder.current
        daemon.parts = Parts()  # forget every rendering: everything is computed afresh
        full = daemon.render()
        assert renders(full)["probe", "changed"] == 1
        assert without_render_stats(incremental.text) == without_render_stats(full.text)
        om_inc, om_full = incremental.openmetrics_text, full.openmetrics_text
        assert without_render_stats(om_inc) == without_render_stats(om_full)
        for snap in (incremental, full):
            assert gzip.decompress(snap.text_gzip) == snap.text
            assert gzip.decompress(snap.openmetrics_gzip) == snap.openmetrics_text


class TestCadence:
    def test_time_driven_providers_recompute_once_per_min_refresh_and_not_more(
        self, tmp_path: Path
    ) -> None:
        clock = FixedClock(NOW)
        daemon = seeded(tmp_path, clock, sources=[], metrics={"min_refresh": "15s"})
        start = daemon.holder.current
        seen = []
        for step in (5, 9.9, 0.1, 5, 9.9, 0.1, 1):  # at +5, +14.9, +15, +20, +29.9, +30, +31
            clock.advance(step)
            seen.append(recomputed(start, daemon.render()))
        probe_runs = [s["probe"] for s in seen]
        assert probe_runs == [0, 0, 1, 1, 1, 2, 2]
        assert [s["catalog"] for s in seen] == [0] * 7  # not time-driven
        assert renders(daemon.render())["probe", "cadence"] == 2

    def test_every_refresh_stamps_when_it_ran_even_when_it_recomputes_nothing(
        self, tmp_path: Path
    ) -> None:
        """Time since the last refresh is ``time() - platform_exporter_last_refresh_...``."""
        clock = FixedClock(NOW)
        daemon = seeded(tmp_path, clock, sources=[], metrics={"min_refresh": "15s"})
        stamps = []
        for step in (1, 1):  # within min_refresh: nothing recomputed, yet refreshed
            clock.advance(step)
            exp = Exposition.parse(daemon.render().text)
            stamps.append(exp.value("platform_exporter_last_refresh_timestamp_seconds"))
        assert stamps == [NOW + 1, NOW + 2]

    def test_the_help_texts_of_time_driven_families_say_how_often_they_move(
        self, tmp_path: Path
    ) -> None:
        daemon = seeded(tmp_path, FixedClock(NOW), sources=[], metrics={"min_refresh": "1m"})
        exp = Exposition.parse(daemon.holder.current.text)
        assert (
            "every 60s (metrics.min_refresh) as time passes"
            in exp.families["platform_service_uptime_ratio"].documentation
        )
        catalog = exp.families["platform_catalog_services"].documentation
        assert "min_refresh" not in catalog


class TestWhatCountsAsAChange:
    def test_writes_outside_a_poll_and_other_connections_change_every_input(
        self, tmp_path: Path
    ) -> None:
        store = open_store(str(tmp_path / "s.db"))
        v0 = store.versions()
        with store.transaction() as tx:
            tx.set_cursor("x", "c", "1")
        v1 = store.versions()
        assert v1[ANY] == v0[ANY] + 1
        other = open_store(str(tmp_path / "s.db"))
        with writing_for({"probe"}), other.transaction() as tx:
            tx.set_cursor("x", "c", "2")
        other.close()
        assert store.versions()[ANY] == v1[ANY] + 1

    def test_a_transaction_that_writes_the_same_values_changes_nothing(
        self, tmp_path: Path
    ) -> None:
        store = open_store(str(tmp_path / "s.db"))
        with writing_for({"probe"}), store.transaction() as tx:
            tx.set_cursor("x", "c", "1")
            tx.incr("platform_x_total", {"k": "v"}, 0)
        v = store.versions()
        for _ in range(3):
            with writing_for({"probe"}), store.transaction() as tx:
                tx.set_cursor("x", "c", "1")
                tx.incr("platform_x_total", {"k": "v"}, 0)
        assert store.versions() == v
        with writing_for({"probe"}), store.transaction() as tx:
            tx.incr("platform_x_total", {"k": "v"}, 1)
        assert store.versions()["probe"] == v["probe"] + 1
        assert store.versions()[ANY] == v[ANY]

    def test_a_catalog_listed_again_unchanged_changes_nothing(self, tmp_path: Path) -> None:
        """Each poll records when the catalog was listed (its freshness), which no
        provider renders: only a changed entity is a change of the catalog input."""
        from exporter.core.catalog import CatalogEntity
        from exporter.core.store import write_records
        from exporter.domains.catalog import store as catalog_store
        from exporter.domains.catalog.records import CatalogListing

        def listing(at: float, team: str) -> CatalogListing:
            entity = CatalogEntity("backstage", "component", "default", "web", team)
            return CatalogListing("backstage", at, (entity,))

        store = open_store(str(tmp_path / "s.db"))
        with writing_for({"catalog"}), store.transaction() as tx:
            write_records(tx, [listing(10.0, "shop")])
        v = store.versions()
        for listed in (20.0, 30.0):
            with writing_for({"catalog"}), store.transaction() as tx:
                write_records(tx, [listing(listed, "shop")])
        assert store.versions() == v
        assert catalog_store.listings(store) == {"backstage": (30.0, 1)}
        with writing_for({"catalog"}), store.transaction() as tx:
            write_records(tx, [listing(40.0, "payments")])
        assert store.versions()["catalog"] == v["catalog"] + 1

    def test_a_rolled_back_transaction_changes_nothing(self, tmp_path: Path) -> None:
        store = open_store(str(tmp_path / "s.db"))
        v = store.versions()
        try:
            with writing_for({"probe"}), store.transaction() as tx:
                tx.set_cursor("x", "c", "9")
                raise RuntimeError("fault")
        except RuntimeError:
            pass
        assert store.versions() == v


class TestDeclarations:
    def test_every_domain_provider_declares_what_it_reads(self) -> None:
        for name in DOMAIN_PROVIDERS:
            spec = providers()[name]
            assert spec.reads is not None and name in spec.reads, name


class TestRefreshRequests:
    def test_a_refresh_waits_for_one_render_after_it_not_for_later_requests(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With renders slower than the requests that keep coming (a poll every few ms), a
        request returns after at most two renders: the one running, then its own."""
        import threading
        import time

        renders_seen: list[int] = []
        count = [0]
        lock = threading.Lock()

        def slow(ctx: Any) -> Any:
            with lock:
                count[0] += 1
            time.sleep(0.1)
            return iter(())

        daemon = Daemon(config(tmp_path), sources=[], clock=FixedClock(NOW))
        monkeypatch.setattr(daemon_module, "providers", lambda **_: {"slow": slow})

        async def go() -> None:
            stop = asyncio.Event()

            asked: set[asyncio.Task[None]] = set()

            async def others() -> None:
                while not stop.is_set():
                    asked.add(asyncio.create_task(daemon.refresh()))
                    await asyncio.sleep(0.01)

            noise = asyncio.create_task(others())
            await asyncio.sleep(0.05)  # a render is running, and more are asked for
            start = count[0]
            await asyncio.wait_for(daemon.refresh(), timeout=5)
            renders_seen.append(count[0] - start)
            stop.set()
            await noise
            await daemon.shutdown()

        asyncio.run(go())
        assert 1 <= renders_seen[0] <= 2
