"""The weekly review's numbers, on the hand-checked history of seed.py.

Every number of the json format is compared with the reference worked out in
seed.py's docstring; the html and markdown formats must show each of them, as
the shared formatting writes it. Hostile names from the catalog, the repos and
the gateways stay text. A stale source marks exactly the numbers it feeds.
"""

from __future__ import annotations

import gc
import json
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.cli import main
from exporter.core.clock import FixedClock
from exporter.core.health import SourceHealth
from exporter.domains import open_store, render_context
from exporter.domains.probe.records import ProbeResult
from exporter.review import formats
from exporter.review.build import build_review
from exporter.review.command import review_of
from exporter.review.model import Review, as_dict
from exporter.review.render import html, markdown
from exporter.review.weeks import IsoWeek
from tests.report import seed

H = 3600.0
CHECKOUT_BUDGET = 1 - (1 / 14) / 0.01


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return seed.seeded(tmp_path_factory.mktemp("review"))


@pytest.fixture(scope="module")
def review(cfg: Any) -> Review:
    return review_of(cfg, seed.AS_OF, IsoWeek.parse(seed.WEEK))


def _cell(value: float | None, stale: bool = False) -> dict[str, Any]:
    return {"value": value, "stale": stale}


def _by(rows: list[dict[str, Any]], key: str = "name") -> dict[str, dict[str, Any]]:
    return {r[key]: r for r in rows}


class TestNumbers:
    """The json numbers equal the hand-checked reference."""

    def test_the_week_and_its_neighbours(self, review: Review) -> None:
        data = as_dict(review)
        assert (data["week"], data["previous_week"]) == ("2026-W53", "2026-W52")
        assert (data["start"], data["end"]) == (
            seed.t("2026-12-28T00:00:00"),
            seed.t("2027-01-04T00:00:00"),
        )
        assert data["complete"] is True
        assert data["trend_weeks"][0] == "2026-W42" and data["trend_weeks"][-1] == "2026-W53"
        assert data["stale_inputs"] == []

    def test_headline(self, review: Review) -> None:
        heads = _by(as_dict(review)["headlines"], "key")
        assert heads["uptime"]["value"] == _cell(pytest.approx(13 / 14))
        assert heads["uptime"]["previous"] == _cell(1.0)
        assert heads["uptime"]["change"] == pytest.approx(13 / 14 - 1)
        assert heads["uptime"]["trend"][-2:] == [1.0, pytest.approx(13 / 14)]
        assert heads["uptime"]["trend"][:-2] == [None] * 10
        # All of checkout's 1000 latencies lie in (0.1, 0.25]: 0.1 + 0.15 * 0.95.
        assert heads["p95_latency"]["value"] == _cell(pytest.approx(0.2425))
        assert heads["p95_latency"]["previous"]["value"] is None
        assert heads["cost_per_transaction"]["value"] == _cell(pytest.approx(12 / 1500))
        # Three catalog services, each adopting the gateway: 3/3; W52 had the probe rule's 2.
        assert heads["adoption"]["value"] == _cell(1.0)
        assert heads["adoption"]["previous"]["value"] == pytest.approx(2 / 3)
        assert heads["time_to_production"]["value"] == _cell(2 * H)
        assert heads["time_to_production"]["previous"]["value"] is None
        assert heads["time_to_production"]["change"] is None

    def test_services(self, review: Review) -> None:
        rows = _by(as_dict(review)["services"])
        assert list(rows) == [seed.HOSTILE, "search", "checkout"]  # by team, then name
        c = rows["checkout"]
        assert (c["team"], c["uptime"], c["slo_objective"]) == ("payments", _cell(0.9), 0.99)
        assert c["budget_left"]["value"] == pytest.approx(CHECKOUT_BUDGET)
        assert c["p95_latency"]["value"] == pytest.approx(0.2425)
        assert (c["requests"], c["cost"]) == (_cell(1000.0), _cell(70.0))
        assert c["cost_per_transaction"]["value"] == pytest.approx(0.01)
        d = c["dora"]
        assert (d["deploys"], d["per_day"]["value"]) == (_cell(2.0), pytest.approx(2 / 7))
        assert (d["lead_time"], d["change_failure"], d["restore"]) == (
            _cell(3 * H),
            _cell(0.5),
            _cell(1.5 * H),
        )
        assert d["level"] == "low"
        assert (c["adopted"], c["adoption"]) == (["api-gateway", "observability"], _cell(1.0))
        s = rows["search"]
        assert (s["uptime"], s["requests"], s["cost"]) == (_cell(1.0), _cell(500.0), _cell(14.0))
        assert s["cost_per_transaction"]["value"] == pytest.approx(0.004)
        # No latency distribution, no SLO, no CI: no data, never 0.
        assert s["p95_latency"] == s["budget_left"] == _cell(None)
        assert s["slo_objective"] is None
        assert s["dora"]["per_day"] == s["dora"]["lead_time"] == _cell(None)
        x = rows[seed.HOSTILE]
        assert (x["team"], x["requests"], x["uptime"], x["cost"]) == (
            seed.HOSTILE_TEAM,
            _cell(100.0),
            _cell(None),
            _cell(None),
        )
        assert (x["adopted"], x["adoption"]) == (["api-gateway"], _cell(0.5))

    def test_teams_take_their_services_together(self, review: Review) -> None:
        rows = _by(as_dict(review)["teams"])
        assert rows["payments"]["uptime"] == _cell(0.9)
        assert rows["payments"]["services"] == 1
        assert rows["discovery"]["cost"] == _cell(14.0)
        assert rows["payments"]["dora"]["change_failure"] == _cell(0.5)

    def test_what_changed(self, review: Review) -> None:
        data = as_dict(review)
        movers = [
            (m["service"], m["cost"]["value"], m["previous"]["value"], m["change"])
            for m in data["cost_movers"]
        ]
        assert movers == [("checkout", 70.0, 35.0, 35.0), ("search", 14.0, 14.0, 0.0)]
        assert [
            (o["service"], o["registered_at"], o["time_to_first_deploy"]) for o in data["onboarded"]
        ] == [(seed.HOSTILE, seed.t("2026-12-30T09:00:00"), _cell(None))]
        burns = data["slo_burns"]
        assert [(b["service"], b["slo"], b["window"]) for b in burns] == [
            ("checkout", "availability", "30d")
        ]
        assert burns[0]["budget_left"]["value"] == pytest.approx(CHECKOUT_BUDGET)
        assert burns[0]["previous"] == _cell(1.0)
        assert [(i["key"], i["time_to_restore"]) for i in data["incidents"]] == [
            ("github/" + seed.HOSTILE_INCIDENT, _cell(1.5 * H))
        ]

    def test_data_health(self, review: Review) -> None:
        fresh = {f["source"]: f for f in as_dict(review)["freshness"]}
        assert set(fresh) == {"probe", "nginx", "focus", "github", "backstage"}
        assert not any(f["stale"] for f in fresh.values())
        assert fresh["focus"]["newest"] == seed.t("2027-01-04T00:00:00")  # through Jan 3
        assert fresh["probe"]["newest"] == seed.t("2027-01-03T23:59:00")


def _numbers(review: Review) -> list[str]:
    """Every number of the review as the formats write it."""
    cur = review.currency
    out = []
    for h in review.headlines:
        out += [
            formats.number(h.value.value, h.unit, cur),
            formats.number(h.previous.value, h.unit, cur),
        ]
        out.append(formats.change(h.change, h.unit, cur))
    for row in (*review.teams, *review.services):
        out += [
            formats.number(row.uptime.value, "ratio"),
            formats.number(row.budget_left.value, "ratio"),
            formats.number(row.p95_latency.value, "seconds"),
            formats.number(row.requests.value, "count"),
            formats.number(row.cost.value, "money", cur),
            formats.number(row.cost_per_transaction.value, "money", cur),
            formats.number(row.dora.per_day.value, "per_day"),
            formats.number(row.dora.lead_time.value, "seconds"),
            formats.number(row.dora.change_failure.value, "ratio"),
            formats.number(row.dora.restore.value, "seconds"),
            formats.number(row.adoption.value, "ratio"),
        ]
    for m in review.cost_movers:
        out.append(formats.change(m.change, "money", cur))
    for i in review.incidents:
        out.append(formats.number(i.time_to_restore.value, "seconds"))
    return out


class TestFormats:
    def test_html_and_markdown_show_every_number(self, review: Review) -> None:
        page, md = html(review), markdown(review)
        numbers = _numbers(review)
        assert "12.0 min" not in numbers
        for text in numbers:
            assert text in page, text
            assert text in md, text
        assert "0.00800 USD" in numbers and "242 ms" in numbers and "92.86 %" in numbers

    def test_no_data_is_written_no_data(self, review: Review) -> None:
        assert formats.number(None, "money") == "no data"
        search = next(r for r in review.services if r.name == "search")
        assert search.p95_latency.value is None
        assert "no data" in markdown(review).split("| search |")[1].split("\n")[0]

    def test_html_is_self_contained(self, review: Review) -> None:
        page = html(review)
        assert "<script" not in page.lower().replace("&lt;script", "")
        # The one link is the empty icon, so a browser asks for no favicon.
        assert page.count("<link") == 1 and '<link rel="icon" href="data:,">' in page
        for needle in ("http://", "https://", "@import", "url(", "@font-face"):
            assert needle not in page.replace('xmlns="http://www.w3.org/2000/svg"', ""), needle
        assert page.count("<svg") == 5

    def test_the_command_writes_each_format(self, tmp_path: Path) -> None:
        """``report --week --as-of --format --out``: json with the reference numbers, and
        the html and markdown files show them."""
        seed.seeded(tmp_path)
        path = tmp_path / "config.yml"
        path.write_text(yaml.safe_dump(seed.config_data(tmp_path)), encoding="utf-8")
        texts = {}
        for fmt in ("json", "html", "markdown"):
            out = tmp_path / f"review.{fmt}"
            argv = ["report", "--config", str(path), "--week", seed.WEEK]
            argv += ["--as-of", "2027-01-04T06:00:00Z", "--format", fmt, "--out", str(out)]
            assert main(argv) == 0
            texts[fmt] = out.read_text(encoding="utf-8")
        data = json.loads(texts["json"])
        assert data["headlines"][0]["value"]["value"] == pytest.approx(13 / 14)
        assert "92.86 %" in texts["html"] and "92.86 %" in texts["markdown"]

    def test_a_bad_week_is_one_line_and_exit_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        seed.seeded(tmp_path)
        path = tmp_path / "config.yml"
        path.write_text(yaml.safe_dump(seed.config_data(tmp_path)), encoding="utf-8")
        for week, message in (
            ("2025-W53", "report --week: 2025 has no ISO week 53\n"),
            ("2027-W02", "report --week: 2027-W02 starts after the review's instant\n"),
        ):
            argv = [
                "report",
                "--config",
                str(path),
                "--week",
                week,
                "--as-of",
                "2027-01-04T06:00:00Z",
            ]
            assert main(argv) == 2
            assert capsys.readouterr().err == message


class _Text(HTMLParser):
    """The page's elements and text, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.attrs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [name for name, _ in attrs]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


class TestEscaping:
    """Names from the catalog (service, team), the repos (an incident) and the gateways
    (the traffic of the hostile service) render as text."""

    def test_html(self, review: Review) -> None:
        parser = _Text()
        parser.feed(html(review))
        assert "script" not in parser.tags and "img" not in parser.tags and "b" not in parser.tags
        assert "onerror" not in parser.attrs
        text = "".join(parser.text)
        for name in (seed.HOSTILE, seed.HOSTILE_TEAM, seed.HOSTILE_INCIDENT):
            assert name in text

    def test_markdown(self, review: Review) -> None:
        md = markdown(review)
        assert "<script>" not in md and "<img" not in md and "<b>" not in md
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md
        # A pipe or brackets in a name cannot open a cell or a link.
        assert "&lt;img src=x onerror=alert(2)&gt;\\|\\*team\\*" in md
        assert "\\[x\\](javascript:alert(3))" in md
        for line in md.splitlines():
            if line.startswith("| checkout | github/"):
                assert line.count("|") - line.count("\\|") == 6


STALE_FIELDS = (
    "uptime",
    "budget_left",
    "p95_latency",
    "requests",
    "cost",
    "cost_per_transaction",
    "adoption",
)


def _stale(review: Review) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {"headline": {h.key for h in review.headlines if h.value.stale}}
    for row in review.services:
        fields = {f for f in STALE_FIELDS if getattr(row, f).stale}
        if row.dora.deploys.stale:
            fields.add("dora")
        out[row.name] = fields
    return out


class TestStaleMarkers:
    def _review(self, cfg: Any, at: float, health: list[SourceHealth]) -> Review:
        store = open_store(str(cfg.state.path), FixedClock(at))
        try:
            ctx = replace(render_context(cfg, store, at), health=tuple(health))
            return build_review(ctx, IsoWeek.parse(seed.WEEK))
        finally:
            store.close()

    def test_a_gateway_down_marks_exactly_what_traffic_feeds(self, cfg: Any) -> None:
        down = SourceHealth("nginx", "nginx", 60.0, up=False, last_error="timeout")
        review = self._review(cfg, seed.AS_OF, [down])
        assert review.stale_inputs == ("traffic",)
        # adoption: the gateway_traffic rule reads traffic.
        fed = {"p95_latency", "requests", "cost_per_transaction", "adoption"}
        stale = _stale(review)
        assert stale["headline"] == {"p95_latency", "cost_per_transaction", "adoption"}
        assert stale["checkout"] == stale["search"] == stale[seed.HOSTILE] == fed
        nginx = next(f for f in review.freshness if f.source == "nginx")
        assert (nginx.stale, nginx.reason) == (True, "last poll failed: timeout")
        assert "⚠" in markdown(review) and 'class="mark"' in html(review)

    def test_probe_data_that_stops_marks_exactly_what_probes_feed(self, tmp_path: Path) -> None:
        """The probes' last check of the week is on Saturday noon: every uptime and the
        probe-based SLO budget are marked, nothing else."""
        kept = [r for r in seed.records() if not isinstance(r, ProbeResult)]
        last = ProbeResult("checkout", "health", seed.t("2027-01-02T12:00:00"), 0.05, True, "")
        cfg = seed.seeded(tmp_path, [*kept, last])
        review = self._review(cfg, seed.AS_OF, [])
        assert review.stale_inputs == ("probe",)
        stale = _stale(review)
        assert stale["headline"] == {"uptime"}
        assert stale["checkout"] == {"uptime", "budget_left"}
        assert stale["search"] == stale[seed.HOSTILE] == {"uptime"}
        assert [b.budget_left.stale for b in review.slo_burns] == []  # 1 good check: no burn
        probe = next(f for f in review.freshness if f.source == "probe")
        assert (probe.stale, probe.reason) == (True, "data ends before the review's end")


class TestTheBuildLeavesTheCollectorAsItWas:
    """A review is built with Python's cycle collector held off (its objects live until
    it ends); after it, whether it succeeded or failed, the collector is as it was."""

    def test_on_and_off(self, cfg: Any) -> None:
        store = open_store(str(cfg.state.path), FixedClock(seed.AS_OF))
        ctx = render_context(cfg, store, seed.AS_OF)
        try:
            assert gc.isenabled()
            build_review(ctx)
            assert gc.isenabled()
            gc.disable()
            try:
                build_review(ctx)
                assert not gc.isenabled()
            finally:
                gc.enable()
        finally:
            store.close()

    def test_after_a_failure(self, cfg: Any) -> None:
        store = open_store(str(cfg.state.path), FixedClock(seed.AS_OF))
        ctx = render_context(cfg, store, seed.AS_OF)
        store.close()  # every read of the build now fails
        with pytest.raises(Exception, match="closed"):
            build_review(ctx)
        assert gc.isenabled()
