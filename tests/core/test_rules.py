"""The rules generator: Sloth-compatible SLO rules and exporter alerts, checked by promtool.

The rule files committed in ``alerts/`` are generated from ``examples/config.yaml``;
the ``promtool test rules`` fixtures in ``alerts/tests/`` pin every alert tier
(page fast and slow, ticket fast and slow), SLI-absent and the exporter-health
alerts, each with a series that fires and one that must not, with one replica
scraped and with two (``replicas.test.yml``, ``slo_replicas.test.yml``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from exporter.config import Config, load_config
from exporter.domains.slo.spec import all_slos
from exporter.domains.slo.windows import burn_windows, prom_duration
from exporter.rules import rule_files
from tests.support.daemon import REPO_ROOT, run_cli

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
ALERTS = REPO_ROOT / "alerts"
EXAMPLE = REPO_ROOT / "examples" / "config.yaml"
DAY = 86400.0
# One copy of each series, however many replicas are scraped (exporter.core.replicas).
ONE = "max without (instance, pod, replica)"


def _config(slo: dict[str, object], probes: bool = True) -> Config:
    service: dict[str, object] = {"name": "checkout", "team": "payments", "slo": slo}
    if probes:
        service["probes"] = [{"name": "health", "url": "http://checkout.test/health"}]
    return Config(services=[service])


def _rules(doc: dict[str, object]) -> dict[str, dict[str, object]]:
    """Every rule of a rule file by (record or alert name + severity + sloth_id)."""
    out = {}
    for group in doc["groups"]:  # type: ignore[attr-defined]
        for rule in group["rules"]:
            labels = rule.get("labels", {})
            key = " ".join(
                filter(
                    None,
                    [
                        rule.get("record") or rule.get("alert"),
                        labels.get("severity"),
                        labels.get("sloth_id"),
                    ],
                )
            )
            out[key] = rule
    return out


class TestCommittedRules:
    def test_committed_files_equal_fresh_output(self) -> None:
        """Regenerating from examples/config.yaml gives the committed files byte for byte."""
        fresh = rule_files(load_config(EXAMPLE))
        committed = {p.name: p.read_text(encoding="utf-8") for p in ALERTS.glob("*.yml")}
        assert fresh == committed, (
            "run: platform-kpi-exporter rules -c examples/config.yaml -o alerts"
        )

    def test_generation_is_deterministic(self) -> None:
        config = load_config(EXAMPLE)
        assert rule_files(config) == rule_files(load_config(EXAMPLE))

    def test_promtool_check_rules_reports_nothing(self) -> None:
        files = sorted(str(p) for p in ALERTS.glob("*.yml"))
        assert len(files) == 2
        proc = subprocess.run(
            [PROMTOOL, "check", "rules", *files], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
        noise = [ln for ln in lines if not ln.startswith(("Checking ", "SUCCESS: "))]
        assert noise == []

    def test_promtool_unit_tests_pass(self) -> None:
        fixtures = sorted(str(p) for p in (ALERTS / "tests").glob("*.yml"))
        assert {Path(f).name for f in fixtures} >= {
            "slo_page.test.yml",
            "slo_ticket.test.yml",
            "slo_absent.test.yml",
            "exporter.test.yml",
            # Two replicas scraped: health alerts per source, SLIs counting each event once.
            "replicas.test.yml",
            "slo_replicas.test.yml",
        }
        proc = subprocess.run(
            [PROMTOOL, "test", "rules", *fixtures], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "FAILED" not in proc.stdout + proc.stderr


class TestCommand:
    def test_rules_command_writes_both_files(self, tmp_path: Path) -> None:
        proc = run_cli("rules", "--config", str(EXAMPLE), "--out", str(tmp_path / "out"))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == [
            str(tmp_path / "out" / "slo.rules.yml"),
            str(tmp_path / "out" / "exporter.rules.yml"),
        ]
        assert (tmp_path / "out" / "slo.rules.yml").read_text() == (
            ALERTS / "slo.rules.yml"
        ).read_text()

    def test_bad_slo_config_exits_2_naming_the_field(self, tmp_path: Path) -> None:
        bad = tmp_path / "bad.yaml"
        bad.write_text(
            "services:\n  - name: checkout\n    team: payments\n"
            "    slo:\n      availability:\n        objective: 0.999\n"
        )
        proc = run_cli("rules", "--config", str(bad), "--out", str(tmp_path / "out"))
        assert proc.returncode == 2
        assert str(bad) in proc.stderr
        assert "services[0].slo.availability.objective" in proc.stderr
        assert "percentage" in proc.stderr
        assert not (tmp_path / "out").exists()


class TestRecordingRules:
    def test_sloth_names_labels_and_windows(self) -> None:
        doc = yaml.safe_load(rule_files(load_config(EXAMPLE))["slo.rules.yml"])
        names = [g["name"] for g in doc["groups"]]
        assert names == [
            "sloth-slo-checkout-availability",
            "sloth-slo-checkout-latency",
            "sloth-slo-payments-api-availability",
            "sloth-slo-search-availability",
        ]
        rules = doc["groups"][0]["rules"]
        sli = [r for r in rules if r.get("record", "").startswith("slo:sli_error:")]
        assert [r["record"] for r in sli] == [
            f"slo:sli_error:ratio_rate{w}"
            for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d")
        ]
        for rule in sli:
            assert rule["labels"]["sloth_id"] == "checkout-availability"
            assert rule["labels"]["sloth_service"] == "checkout"
            assert rule["labels"]["sloth_slo"] == "availability"
            assert rule["record"].endswith(rule["labels"]["sloth_window"])
        meta = [r["record"] for r in rules if "record" in r and r not in sli]
        assert meta == [
            "slo:objective:ratio",
            "slo:error_budget:ratio",
            "slo:time_period:days",
            "slo:current_burn_rate:ratio",
            "slo:period_burn_rate:ratio",
            "slo:period_error_budget_remaining:ratio",
            "sloth_slo_info",
        ]

    def test_period_ratio_is_weighted_by_events(self) -> None:
        """errors / totals over the whole period, not an average of 5m ratios."""
        rules = _rules(yaml.safe_load(rule_files(load_config(EXAMPLE))["slo.rules.yml"]))
        expr = rules["slo:sli_error:ratio_rate28d search-availability"]["expr"]
        assert "avg_over_time" not in expr and "sum_over_time" not in expr
        assert (
            f'sum({ONE} (rate(platform_probe_checks_total{{service="search",result="failure"}}[28d])))'
            in expr
        )
        assert f'sum({ONE} (rate(platform_probe_checks_total{{service="search"}}[28d])))' in expr

    def test_latency_sli_counts_events_from_histogram_buckets(self) -> None:
        rules = _rules(yaml.safe_load(rule_files(load_config(EXAMPLE))["slo.rules.yml"]))
        expr = rules["slo:sli_error:ratio_rate1h checkout-latency"]["expr"]
        assert 'platform_probe_duration_seconds_bucket{service="checkout",le="0.25"}[1h]' in expr
        assert 'platform_probe_duration_seconds_count{service="checkout"}[1h]' in expr

    def test_whole_second_threshold_also_matches_prometheus_3_le_spelling(self) -> None:
        config = _config({"latency": {"objective": 99, "threshold": "1s"}})
        expr = all_slos(config)[0].error_ratio(3600)
        assert 'le=~"1(\\\\.0)?"' in expr

    def test_request_based_availability_reads_the_request_counter(self) -> None:
        config = _config({"availability": {"objective": 99.5, "sli": "requests"}}, probes=False)
        expr = all_slos(config)[0].error_ratio(300)
        assert 'platform_service_requests_total{service="checkout",code_class="5xx"}[5m]' in expr
        assert (
            f'sum({ONE} (rate(platform_service_requests_total{{service="checkout"}}[5m])))' in expr
        )


class TestCalendarMonth:
    """``window: month``: the period is the calendar month (UTC) so far."""

    def rules(self) -> dict[str, dict[str, object]]:
        return _rules(yaml.safe_load(rule_files(load_config(EXAMPLE))["slo.rules.yml"]))

    def group(self) -> list[dict[str, object]]:
        doc = yaml.safe_load(rule_files(load_config(EXAMPLE))["slo.rules.yml"])
        found = [g for g in doc["groups"] if g["name"] == "sloth-slo-payments-api-availability"]
        return list(found[0]["rules"])

    def test_the_period_record_is_the_month_so_far_and_the_alert_windows_stay(self) -> None:
        group = {"rules": self.group()}
        sli = [r for r in group["rules"] if r.get("record", "").startswith("slo:sli_error:")]
        assert [r["labels"]["sloth_window"] for r in sli] == [
            "5m", "30m", "1h", "2h", "6h", "1d", "3d", "month"
        ]  # fmt: skip
        assert sli[-1]["record"] == "slo:sli_error:ratio_rate_month"

    def test_the_month_is_summed_from_days_hours_and_five_minutes_of_this_month(self) -> None:
        expr = str(self.rules()["slo:sli_error:ratio_rate_month payments-api-availability"]["expr"])
        now = "last_over_time(vector(time())[1m:1m] @ end())"
        for field, window in (
            ("month", "[31d:1d]"),
            ("day_of_month", "[1d:1h]"),
            ("hour", "[1h:5m]"),
        ):
            assert f"{field}(vector(time() - 1)) == scalar({field}({now}))" in expr
            assert window in expr
        # Bad events are summed on their own (never ratio x total, which is NaN on a quiet hour),
        # and a month without events has no ratio.
        assert 'result="failure"}[1h]' in expr
        assert expr.rstrip().endswith(") > 0\n)")

    def test_days_and_burn_thresholds_follow_the_month(self) -> None:
        rules = self.rules()
        assert rules["slo:time_period:days payments-api-availability"]["expr"] == "days_in_month()"
        alerts = {
            r["labels"]["severity"]: r  # type: ignore[index]
            for r in self.group()
            if r.get("alert") == "SLOErrorBudgetBurn"
        }
        page = str(alerts["page"]["expr"])
        assert "(0.02 * 24 * scalar(days_in_month()) * 0.001)" in page
        assert "(0.05 * 4 * scalar(days_in_month()) * 0.001)" in page
        ticket = str(alerts["ticket"]["expr"])
        assert "(0.1 * scalar(days_in_month()) * 0.001)" in ticket
        assert "(0.1 * scalar(days_in_month()) / 3 * 0.001)" in ticket

    def test_month_factors_in_months_of_28_to_31_days(self) -> None:
        page, slow_page, ticket, slow_ticket = burn_windows("month", "workbook")
        assert [page.factor_in(d) for d in (28, 29, 30, 31)] == [13.44, 13.92, 14.4, 14.88]
        assert slow_page.factor_in(31) == 6.2
        assert ticket.factor_in(29) == 2.9
        assert slow_ticket.factor_in(30) == 1.0

    def test_scaled_alert_windows_do_not_fit_a_calendar_month(self, tmp_path: Path) -> None:
        config = tmp_path / "c.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "services": [
                        {
                            "name": "checkout",
                            "team": "payments",
                            "probes": [{"name": "health", "url": "http://checkout.test/health"}],
                            "slo": {
                                "window": "month",
                                "alert_windows": "scaled",
                                "availability": {"objective": 99.9},
                            },
                        }
                    ]
                }
            )
        )
        proc = run_cli("rules", "--config", str(config), "--out", str(tmp_path / "out"))
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert "services[0].slo: window: month" in proc.stderr
        assert "alert_windows: workbook" in proc.stderr


class TestBurnWindows:
    def test_30d_is_the_sre_workbook(self) -> None:
        got = [
            (w.severity, w.factor, prom_duration(w.long), prom_duration(w.short))
            for w in burn_windows(30 * DAY, "workbook")
        ]
        assert got == [
            ("page", 14.4, "1h", "5m"),
            ("page", 6.0, "6h", "30m"),
            ("ticket", 3.0, "1d", "2h"),
            ("ticket", 1.0, "3d", "6h"),
        ]

    def test_28d_keeps_windows_and_derives_factors_from_the_same_budget_shares(self) -> None:
        factors = [w.factor for w in burn_windows(28 * DAY, "workbook")]
        # 2% of the budget in 1h of 672h is 13.44x; 5% in 6h is 5.6x; 10% in 24h is 2.8x; 10% in 72h.
        assert factors == [13.44, 5.6, 2.8, 0.933333]

    def test_scaled_windows_shrink_with_the_period_and_keep_the_factors(self) -> None:
        got = [
            (w.factor, prom_duration(w.long), prom_duration(w.short))
            for w in burn_windows(12 * 3600, "scaled")
        ]
        assert got == [
            (14.4, "1m", "5s"),
            (6.0, "6m", "30s"),
            (3.0, "24m", "2m"),
            (1.0, "72m", "6m"),
        ]

    @pytest.mark.parametrize(
        ("seconds", "text"),
        [(300, "5m"), (3600, "1h"), (4320, "72m"), (30 * DAY, "30d"), (2.5, "2500ms"), (90, "90s")],
    )
    def test_prometheus_durations(self, seconds: float, text: str) -> None:
        assert prom_duration(seconds) == text
