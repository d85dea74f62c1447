"""The FOCUS export source: CSV, gzip CSV and Parquet files built here, with
hand-checked totals, through the real store and metrics provider."""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from exporter.config import Config
from exporter.core.sandbox.app import App, Response, SandboxServer
from exporter.daemon import Daemon
from exporter.domains.cost.focus_schema import EXPORT_HEADER
from exporter.domains.cost.sources import focus as focus_module
from exporter.domains.cost.sources.focus import FocusSource
from tests.support.exposition import Exposition
from tests.support.prometheus import promtool_check_metrics

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC).timestamp()
HEADER = list(EXPORT_HEADER)


def line(
    billed: Any,
    effective: Any,
    day: str,
    *,
    service: str | None = None,
    currency: str = "USD",
    category: str = "Compute",
    charge: str = "Usage",
    charge_class: str = "",
    end: str | None = None,
    provider: str = "AWS",
) -> list[str]:
    start = f"{day}T00:00:00Z"
    stop = end or f"{day}T23:59:59Z"
    tags = json.dumps({"service": service, "env": "prod"}) if service else ""
    return [
        str(billed),
        str(effective),
        currency,
        start,
        stop,
        charge,
        charge_class,
        provider,
        "Amazon EC2",
        category,
        "111122223333",
        "eu-west-1",
        f"i-{service or 'none'}",
        tags,
    ]


# Hand-checked sample: NOW is 2026-11-22 10:00 UTC, so the last closed day is the 21st.
SAMPLE = [
    line(10, 9, "2026-11-20", service="checkout"),
    line(5, 5, "2026-11-21", service="checkout"),
    line(4, 4, "2026-11-21", service="search", category="Storage"),
    line(3, 3, "2026-11-21", category="Networking"),  # no tags -> unallocated
    line(-2, -2, "2026-11-20", service="checkout", charge_class="Correction"),
    line(-1, -1, "2026-11-21", service="checkout", charge="Credit"),
    line(7, 6, "2026-11-21", service="accounts", currency="EUR", provider="Microsoft"),
    line("abc", 1, "2026-11-21", service="checkout"),  # malformed: line 9 of the file
    # A monthly support fee spread over November's 30 days: 1 per day.
    line(
        30, 30, "2026-11-01", service="payments-api", category="Other", end="2026-12-01T00:00:00Z"
    ),
    line(50, 50, "2026-11-22", service="checkout"),  # today: not a closed day
]


def write_csv(path: Path, rows: list[list[str]], gz: bool = False) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(HEADER)
    writer.writerows(rows)
    data = buf.getvalue().encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_parquet(path: Path, rows: list[list[str]], map_tags: bool = False) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols: dict[str, list[Any]] = {h: [r[i] for r in rows] for i, h in enumerate(HEADER)}

    def num(v: str) -> float | None:
        try:
            return float(v)
        except ValueError:
            return None

    def ts(v: str) -> datetime:
        return datetime.fromisoformat(v)

    arrays: dict[str, Any] = {
        "BilledCost": pa.array([num(v) for v in cols["BilledCost"]], pa.float64()),
        "EffectiveCost": pa.array([num(v) for v in cols["EffectiveCost"]], pa.float64()),
        "ChargePeriodStart": pa.array(
            [ts(v) for v in cols["ChargePeriodStart"]], pa.timestamp("us", "UTC")
        ),
        "ChargePeriodEnd": pa.array(
            [ts(v) for v in cols["ChargePeriodEnd"]], pa.timestamp("us", "UTC")
        ),
    }
    if map_tags:
        maps = [list(json.loads(t).items()) if t else None for t in cols["Tags"]]
        arrays["Tags"] = pa.array(maps, pa.map_(pa.string(), pa.string()))
    table = pa.table(
        {h: arrays.get(h, pa.array([v or None for v in cols[h]], pa.string())) for h in HEADER}
    )
    pq.write_table(table, path)
    return path


def config(tmp_path: Path, **focus: Any) -> Config:
    services = [
        ("checkout", "payments"),
        ("payments-api", "payments"),
        ("search", "discovery"),
        ("accounts", "identity"),
    ]
    return Config(
        state={"path": str(tmp_path / "state.db")},
        services=[{"name": n, "team": t, "cost": {"tags": {"service": n}}} for n, t in services],
        sources={"focus": {"paths": [str(tmp_path / "exports")], **focus}},
        cost={"budgets": [{"scope": "team", "name": "payments", "monthly": 100}]},
    )


def run(daemon: Daemon) -> Exposition:
    src = daemon.sources[0]
    asyncio.run(daemon.poll(src))
    return Exposition.parse(daemon.holder.current.text)


def cost(exp: Exposition, service: str, window: str, currency: str = "USD", **labels: str) -> float:
    found = exp.samples(
        "platform_cost", service=service, window=window, currency=currency, **labels
    )
    return sum(v for _, v in found)


@pytest.fixture
def exports(tmp_path: Path) -> Path:
    d = tmp_path / "exports"
    d.mkdir()
    return d


def check_sample_totals(exp: Exposition) -> None:
    # checkout, USD, effective: 21st: 5 - 1 (credit) = 4; week: 9 - 2 (correction) + 5 - 1 = 11.
    assert cost(exp, "checkout", "1d") == pytest.approx(4.0)
    assert cost(exp, "checkout", "7d") == pytest.approx(11.0)
    assert cost(exp, "search", "1d", category="Storage") == pytest.approx(4.0)
    # Untagged cost is kept, as unallocated.
    assert exp.value(
        "platform_cost", service="unallocated", team="unallocated", window="1d", currency="USD"
    ) == pytest.approx(3.0)
    # EUR is its own series, never added to USD.
    assert exp.value(
        "platform_cost", service="accounts", window="1d", currency="EUR", provider="azure"
    ) == pytest.approx(6.0)
    assert cost(exp, "accounts", "1d") == 0.0
    # The monthly fee: 1 per day; 21 closed days this month.
    assert cost(exp, "payments-api", "1d") == pytest.approx(1.0)
    assert cost(exp, "payments-api", "7d") == pytest.approx(7.0)
    assert cost(exp, "payments-api", "mtd") == pytest.approx(21.0)
    assert cost(exp, "payments-api", "30d") == pytest.approx(21.0)
    assert exp.value("platform_exporter_cost_rows_rejected_total", source="focus") == 1
    end = datetime(2026, 11, 22, tzinfo=UTC).timestamp()
    assert exp.value("platform_cost_data_end_timestamp_seconds", source="focus") == end


class TestFormats:
    def test_csv_totals_corrections_credits_currencies_and_untagged(
        self, tmp_path: Path, exports: Path
    ) -> None:
        write_csv(exports / "2026-11.csv", SAMPLE)
        daemon = Daemon(config(tmp_path), clock=lambda: NOW)
        exp = run(daemon)
        check_sample_totals(exp)
        assert daemon.health["focus"].up is True
        asyncio.run(daemon.shutdown())

    def test_gzip_csv_gives_the_same_totals(self, tmp_path: Path, exports: Path) -> None:
        write_csv(exports / "2026-11.csv.gz", SAMPLE, gz=True)
        daemon = Daemon(config(tmp_path), clock=lambda: NOW)
        check_sample_totals(run(daemon))
        asyncio.run(daemon.shutdown())

    def test_parquet_gives_the_same_totals(self, tmp_path: Path, exports: Path) -> None:
        write_parquet(exports / "2026-11.parquet", SAMPLE)
        daemon = Daemon(config(tmp_path), clock=lambda: NOW)
        check_sample_totals(run(daemon))
        asyncio.run(daemon.shutdown())

    def test_parquet_with_map_typed_tags(self, tmp_path: Path, exports: Path) -> None:
        write_parquet(exports / "2026-11.parquet", SAMPLE, map_tags=True)
        daemon = Daemon(config(tmp_path), clock=lambda: NOW)
        check_sample_totals(run(daemon))
        asyncio.run(daemon.shutdown())


class TestMalformedInput:
    def test_a_malformed_row_is_reported_with_file_and_line(
        self, tmp_path: Path, exports: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        path = write_csv(exports / "2026-11.csv", SAMPLE)
        caplog.set_level(logging.WARNING)
        daemon = Daemon(config(tmp_path), clock=lambda: NOW)
        exp = run(daemon)
        assert f"{path.resolve()}:9: could not convert string to float: 'abc'" in caplog.text
        # The rest of the file still counts, and the source is up.
        assert cost(exp, "checkout", "7d") == pytest.approx(11.0)
        assert daemon.health["focus"].up is True
        asyncio.run(daemon.shutdown())

    def test_a_malformed_parquet_row_is_reported_with_its_row_number(
        self, tmp_path: Path, exports: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        path = write_parquet(exports / "2026-11.parquet", SAMPLE)
        caplog.set_level(logging.WARNING)
        daemon = Daemon(config(tmp_path), clock=lambda: NOW)
        run(daemon)
        assert f"{path.resolve()}:row 8: null BilledCost" in caplog.text
        asyncio.run(daemon.shutdown())

    def test_a_file_that_is_not_focus_marks_the_source_down_but_keeps_the_others(
        self, tmp_path: Path, exports: Path
    ) -> None:
        write_csv(exports / "2026-11.csv", SAMPLE)
        (exports / "other.csv").write_text("a,b\n1,2\n")
        daemon = Daemon(config(tmp_path), clock=lambda: NOW)
        exp = run(daemon)
        assert daemon.health["focus"].up is False
        assert daemon.health["focus"].errors["malformed"] == 1
        assert "missing column(s) BilledCost" in (daemon.health["focus"].last_error or "")
        assert cost(exp, "checkout", "7d") == pytest.approx(11.0)
        asyncio.run(daemon.shutdown())

    def test_a_row_with_a_wrong_field_count_or_bad_tags_is_skipped(
        self, tmp_path: Path, exports: Path
    ) -> None:
        rows = [line(1, 1, "2026-11-21", service="checkout")]
        bad_tags = line(1, 1, "2026-11-21", service="checkout")
        bad_tags[-1] = "{not json"
        short = line(1, 1, "2026-11-21", service="checkout")[:5]
        write_csv(exports / "x.csv", [*rows, bad_tags, short])
        daemon = Daemon(config(tmp_path), clock=lambda: NOW)
        exp = run(daemon)
        assert cost(exp, "checkout", "1d") == pytest.approx(1.0)
        assert exp.value("platform_exporter_cost_rows_rejected_total", source="focus") == 2
        asyncio.run(daemon.shutdown())


class TestIncrementalReads:
    def test_a_new_file_adds_and_an_unchanged_file_is_not_read_again(
        self, tmp_path: Path, exports: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        reads: list[str] = []
        real = focus_module.read_file

        def spy(path: Path, *args: Any) -> Any:
            reads.append(path.name)
            return real(path, *args)

        monkeypatch.setattr(focus_module, "read_file", spy)
        write_csv(exports / "a.csv", SAMPLE)
        daemon = Daemon(config(tmp_path), clock=lambda: NOW)
        run(daemon)
        assert reads == ["a.csv"]
        write_csv(exports / "b.csv", [line(100, 100, "2026-11-21", service="checkout")])
        exp = run(daemon)
        assert reads == ["a.csv", "b.csv"]
        assert cost(exp, "checkout", "1d") == pytest.approx(104.0)
        exp = run(daemon)
        assert reads == ["a.csv", "b.csv"]
        assert cost(exp, "checkout", "1d") == pytest.approx(104.0)
        asyncio.run(daemon.shutdown())

    def test_a_rewritten_file_replaces_its_previous_contribution(
        self, tmp_path: Path, exports: Path
    ) -> None:
        path = write_csv(exports / "a.csv", [line(5, 5, "2026-11-21", service="checkout")])
        daemon = Daemon(config(tmp_path), clock=lambda: NOW)
        assert cost(run(daemon), "checkout", "1d") == pytest.approx(5.0)
        write_csv(path, [line(8, 8, "2026-11-21", service="checkout")])
        os.utime(path, ns=(1, 2_000_000_000))
        assert cost(run(daemon), "checkout", "1d") == pytest.approx(8.0)
        asyncio.run(daemon.shutdown())

    def test_a_restart_does_not_double_count(self, tmp_path: Path, exports: Path) -> None:
        write_csv(exports / "a.csv", SAMPLE)
        first = Daemon(config(tmp_path), clock=lambda: NOW)
        run(first)
        asyncio.run(first.shutdown())
        second = Daemon(config(tmp_path), clock=lambda: NOW)
        check_sample_totals(run(second))
        asyncio.run(second.shutdown())


class TestHttpExports:
    def test_a_url_is_fetched_with_conditional_requests(self, tmp_path: Path) -> None:
        body = gzip.compress(
            "\n".join(
                [",".join(HEADER)] + [",".join(csv_quote(v) for v in r) for r in SAMPLE[:3]]
            ).encode()
        )
        seen: list[dict[str, str]] = []
        app = App()

        @app.route("GET", "/exports/focus.csv.gz")
        def export(request: Any) -> Response:
            seen.append(dict(request.headers))
            if request.headers.get("if-none-match") == '"v1"':
                return Response(304)
            return Response(200, body, {"ETag": '"v1"', "Content-Type": "application/gzip"})

        server = SandboxServer({"/": app}).start()
        try:
            url = f"{server.url}/exports/focus.csv.gz"
            cfg = Config(
                state={"path": str(tmp_path / "s.db")},
                services=[
                    {
                        "name": "checkout",
                        "team": "payments",
                        "cost": {"tags": {"service": "checkout"}},
                    }
                ],
                sources={"focus": {"urls": [url]}},
            )
            daemon = Daemon(cfg, clock=lambda: NOW)
            src = daemon.sources[0]

            async def twice() -> tuple[list[bool], Exposition]:
                # One event loop, as in the daemon: its HTTP client keeps its connections.
                polls = [await daemon.poll(src), await daemon.poll(src)]
                exp = Exposition.parse(daemon.holder.current.text)
                await daemon.shutdown()
                return polls, exp

            polls, exp = asyncio.run(twice())
            assert polls == [True, True]
            assert seen[1].get("if-none-match") == '"v1"'
            assert cost(exp, "checkout", "7d") == pytest.approx(14.0)
        finally:
            server.stop()


def csv_quote(value: str) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerow([value])
    return buf.getvalue().strip("\r\n")


class TestExposition:
    def test_the_exposition_passes_promtool(self, tmp_path: Path, exports: Path) -> None:
        write_csv(exports / "a.csv", SAMPLE)
        daemon = Daemon(config(tmp_path), clock=lambda: NOW)
        run(daemon)
        assert promtool_check_metrics(daemon.holder.current.text) == ""
        asyncio.run(daemon.shutdown())

    def test_focus_source_is_discovered_from_config(self, tmp_path: Path) -> None:
        daemon = Daemon(config(tmp_path), clock=lambda: NOW)
        assert [type(s) for s in daemon.sources] == [FocusSource]
        asyncio.run(daemon.shutdown())


class TestConfiguredSources:
    def test_a_missing_path_is_a_config_error_and_other_files_still_count(
        self, tmp_path: Path, exports: Path
    ) -> None:
        write_csv(exports / "a.csv", SAMPLE)
        cfg = config(tmp_path, paths=[str(exports), str(tmp_path / "nowhere")])
        daemon = Daemon(cfg, clock=lambda: NOW)
        exp = run(daemon)
        assert daemon.health["focus"].errors["config"] == 1
        assert "nowhere" in (daemon.health["focus"].last_error or "")
        assert cost(exp, "checkout", "7d") == pytest.approx(11.0)
        asyncio.run(daemon.shutdown())

    def test_data_of_a_source_no_longer_configured_does_not_count(
        self, tmp_path: Path, exports: Path
    ) -> None:
        """Old Cost Explorer rows neither add cost nor hold back cost per transaction."""
        from exporter.core.store import write_records
        from exporter.domains.cost.records import CostContribution, CostDay

        write_csv(exports / "a.csv", SAMPLE)
        daemon = Daemon(config(tmp_path), clock=lambda: NOW)
        with daemon.store.transaction() as tx:
            old = CostDay("2026-11-10", "checkout", "payments", "aws", "unknown", "USD", 99.0, 99.0)
            write_records(
                tx,
                [
                    CostContribution(
                        "aws_cost", "default/2026-11-10", "x", (old,), True, 1, 0, ("2026-11-10",)
                    )
                ],
            )
        exp = run(daemon)
        assert cost(exp, "checkout", "30d") == pytest.approx(11.0)
        assert exp.samples("platform_cost_data_end_timestamp_seconds", source="aws_cost") == []
        asyncio.run(daemon.shutdown())


class TestBatchSums:
    """Clean batches are summed in pyarrow per distinct line key; the totals must be
    exactly those of reading every row."""

    CLEAN = [r for r in SAMPLE if r[0] != "abc"]

    @pytest.mark.parametrize("by", ["tags", "resources and accounts"])
    @pytest.mark.parametrize("fmt", ["csv", "csv.gz", "parquet"])
    def test_grouped_and_row_by_row_reads_agree(
        self, tmp_path: Path, fmt: str, by: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from exporter.domains.cost.allocation import Allocator, ServiceRule
        from exporter.domains.cost.sources import focus_reader

        path = tmp_path / f"clean.{fmt}"
        if fmt == "parquet":
            write_parquet(path, self.CLEAN)
        else:
            write_csv(path, self.CLEAN, gz=fmt == "csv.gz")
        if by == "tags":
            rules = [ServiceRule(s, "t", tags={"service": s}) for s in ("checkout", "search")]
        else:
            # Tags, then resources, then accounts: untagged lines go to search by resource,
            # the other lines no tag claims to accounts by account.
            rules = [
                ServiceRule("checkout", "payments", tags={"service": "checkout"}),
                ServiceRule("search", "discovery", resources=["i-none"]),
                ServiceRule("accounts", "identity", accounts=["1111*"]),
            ]
        alloc = Allocator(rules)
        calls: list[bool] = []
        real = focus_reader._group_batch

        def spy(*args: Any) -> bool:
            calls.append(real(*args))
            return calls[-1]

        monkeypatch.setattr(focus_reader, "_group_batch", spy)
        grouped = focus_reader.read_file(path, alloc)
        assert calls == [True]
        monkeypatch.setattr(focus_reader, "_group_batch", lambda *a: False)
        rows = focus_reader.read_file(path, alloc)

        def table(result: Any) -> dict[tuple[str, ...], tuple[float, float, int]]:
            return {
                (d.day, d.ident, d.service, d.provider, d.category, d.currency): (
                    round(d.billed, 9),
                    round(d.effective, 9),
                    d.lines,
                )
                for d in result.days
            }

        assert table(grouped) == table(rows)
        services = {d.service for d in grouped.days}
        if by == "tags":
            assert services == {"checkout", "search", "unallocated"}
        else:
            assert services == {"checkout", "search", "accounts"}
        assert grouped.rows_read == rows.rows_read == len(self.CLEAN)
        assert grouped.rows_rejected == 0


class TestBudgetMetrics:
    def test_team_budget_forecast_and_used_ratio(self, tmp_path: Path, exports: Path) -> None:
        """Only days the bill proves arrived count: usage lines exist for Nov 20 and 21,
        while the support fee spread over November proves none of Nov 1-19. Payments
        (checkout 9 + 5 - 2 - 1 = 11, payments-api 2 x 1 USD of the fee; budget 100) is
        used 0.13 over 2 days; forecast 13 / 2 days x 30 days = 195."""
        write_csv(exports / "a.csv", SAMPLE)
        daemon = Daemon(config(tmp_path), clock=lambda: NOW)
        exp = run(daemon)

        def value(metric: str, **match: str) -> float:
            # Exposition.value() takes the metric as `name`, so match the label by hand.
            found = [
                v
                for labels, v in exp.samples(metric, scope="team", team="payments", **match)
                if labels["name"] == "payments"
            ]
            assert len(found) == 1, found
            return found[0]

        assert value("platform_budget") == 100
        assert value("platform_budget_used_ratio", window="mtd") == pytest.approx(0.13)
        assert value("platform_budget_samples", window="mtd") == 2
        # No October data: last month has no complete day, so no ratio (0 days behind it).
        assert not exp.samples("platform_budget_used_ratio", window="last_month")
        assert value("platform_budget_samples", window="last_month") == 0
        assert value("platform_budget_forecast") == pytest.approx(13 / 2 * 30)
        assert value("platform_budget_forecast_ratio") == pytest.approx(13 / 2 * 30 / 100)
        asyncio.run(daemon.shutdown())


class TestHttpErrors:
    @pytest.mark.parametrize(
        ("status", "reason"), [(403, "auth"), (404, "http_4xx"), (503, "http_5xx")]
    )
    def test_a_failing_url_marks_the_source_down_with_its_reason(
        self, tmp_path: Path, status: int, reason: str
    ) -> None:
        app = App()

        @app.route("GET", "/exports/focus.csv")
        def export(request: Any) -> Response:
            return Response.json({"message": "nope"}, status)

        cfg = Config(
            state={"path": str(tmp_path / "s.db")},
            services=[{"name": "checkout", "team": "payments"}],
            sources={"focus": {"urls": ["https://exports.example/exports/focus.csv"]}},
        )
        daemon = Daemon(cfg, transport=app.transport(), clock=lambda: NOW)
        asyncio.run(daemon.poll(daemon.sources[0]))
        health = daemon.health["focus"]
        assert health.up is False
        assert health.errors[reason] == 1
        assert f"HTTP {status}" in (health.last_error or "")
        asyncio.run(daemon.shutdown())


class TestCatalogCostTags:
    def test_a_service_only_the_catalog_knows_is_allocated_by_its_cost_tags(
        self, tmp_path: Path, exports: Path
    ) -> None:
        """Backstage lists `ledger` (team payments) with the annotation cost tag service=ledger."""
        from exporter.core.catalog import CatalogEntity
        from exporter.core.store import write_records
        from exporter.domains.catalog.records import CatalogListing

        write_csv(
            exports / "a.csv",
            [
                line(6, 6, "2026-11-21", service="ledger"),
                line(4, 4, "2026-11-21", service="checkout"),
            ],
        )
        cfg = Config(
            state={"path": str(tmp_path / "state.db")},
            services=[
                {"name": "checkout", "team": "payments", "cost": {"tags": {"service": "checkout"}}}
            ],
            sources={
                "focus": {"paths": [str(exports)]},
                "backstage": {"base_url": "http://backstage.test/api/catalog"},
            },
        )
        daemon = Daemon(cfg, clock=lambda: NOW)
        ledger = CatalogEntity(
            source="backstage",
            kind="component",
            namespace="default",
            name="ledger",
            team="payments",
            cost_tags=("service=ledger",),
        )
        with daemon.store.transaction() as tx:
            write_records(tx, [CatalogListing("backstage", NOW, (ledger,))])
        focus = next(s for s in daemon.sources if s.kind == "focus")
        asyncio.run(daemon.poll(focus))
        exp = Exposition.parse(daemon.holder.current.text)
        assert exp.value(
            "platform_cost", service="ledger", team="payments", window="1d"
        ) == pytest.approx(6.0)
        assert cost(exp, "checkout", "1d") == pytest.approx(4.0)
        assert exp.samples("platform_cost", service="unallocated") == []
        asyncio.run(daemon.shutdown())
