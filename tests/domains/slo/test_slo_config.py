"""SLO config: objectives per service, validated against the data they need; OpenSLO v1 input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import Config, ConfigError, load_config
from exporter.domains.slo.spec import all_slos
from exporter.rules import rule_files

PROBE = [{"name": "health", "url": "http://checkout.test/health"}]

OPENSLO = {
    "apiVersion": "openslo/v1",
    "kind": "SLO",
    "metadata": {"name": "api-availability", "displayName": "API availability"},
    "spec": {
        "service": "checkout",
        "budgetingMethod": "Occurrences",
        "timeWindow": [{"duration": "28d", "isRolling": True}],
        "indicator": {
            "metadata": {"name": "api-errors"},
            "spec": {
                "ratioMetric": {
                    "counter": True,
                    "bad": {
                        "metricSource": {
                            "type": "Prometheus",
                            "spec": {"query": 'http_requests_total{job="api",code=~"5.."}'},
                        }
                    },
                    "total": {
                        "metricSource": {
                            "type": "Prometheus",
                            "spec": {"query": 'http_requests_total{job="api"}'},
                        }
                    },
                }
            },
        },
        "objectives": [{"displayName": "good", "target": 0.995}],
    },
}


def _load(tmp_path: Path, slo: dict[str, Any], probes: bool = True) -> Config:
    service: dict[str, Any] = {"name": "checkout", "team": "payments", "slo": slo}
    if probes:
        service["probes"] = PROBE
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"services": [service]}))
    return load_config(path)


def _error(tmp_path: Path, slo: dict[str, Any], probes: bool = True) -> str:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, slo, probes)
    return str(info.value)


class TestBuiltInObjectives:
    def test_defaults_to_a_30_day_window_and_probe_slis(self, tmp_path: Path) -> None:
        config = _load(
            tmp_path,
            {
                "availability": {"objective": 99.9},
                "latency": {"objective": 99, "threshold": "250ms"},
            },
        )
        specs = all_slos(config)
        assert [(s.id, s.objective, s.period, s.sli) for s in specs] == [
            ("checkout-availability", 0.999, 30 * 86400.0, "probe-availability"),
            ("checkout-latency", 0.99, 30 * 86400.0, "probe-latency"),
        ]
        assert specs[1].threshold == 0.25

    def test_objective_given_as_a_ratio_is_rejected(self, tmp_path: Path) -> None:
        msg = _error(tmp_path, {"availability": {"objective": 0.999}})
        assert "services[0].slo.availability.objective" in msg
        assert "percentage such as 99.9" in msg

    def test_objective_of_100_is_rejected(self, tmp_path: Path) -> None:
        assert "strictly between 0 and 100" in _error(
            tmp_path, {"availability": {"objective": 100}}
        )

    def test_latency_threshold_must_be_a_bucket_bound(self, tmp_path: Path) -> None:
        msg = _error(tmp_path, {"latency": {"objective": 99, "threshold": "300ms"}})
        assert "latency.threshold 0.3s is not a bucket bound" in msg
        assert "0.25s, 0.5s" in msg

    def test_probe_sli_needs_probes(self, tmp_path: Path) -> None:
        msg = _error(tmp_path, {"availability": {"objective": 99.9}}, probes=False)
        assert "availability.sli is probe but the service has no probes" in msg

    def test_workbook_windows_need_a_period_of_at_least_3_days(self, tmp_path: Path) -> None:
        msg = _error(tmp_path, {"window": "1d", "availability": {"objective": 99.9}})
        assert "alert_windows: scaled" in msg

    def test_scaled_windows_allow_a_compressed_period(self, tmp_path: Path) -> None:
        config = _load(
            tmp_path,
            {"window": "12h", "alert_windows": "scaled", "availability": {"objective": 99}},
        )
        assert all_slos(config)[0].period == 12 * 3600

    def test_month_is_the_calendar_month(self, tmp_path: Path) -> None:
        config = _load(tmp_path, {"window": "month", "availability": {"objective": 99.9}})
        (spec,) = all_slos(config)
        assert (spec.period, spec.calendar, spec.period_name) == ("month", True, "month")

    def test_a_calendar_month_needs_the_workbook_windows(self, tmp_path: Path) -> None:
        msg = _error(
            tmp_path,
            {"window": "month", "alert_windows": "scaled", "availability": {"objective": 99.9}},
        )
        assert "services[0].slo: window: month is the calendar month" in msg
        assert "alert_windows: workbook" in msg

    def test_a_window_that_is_no_duration_says_month_is_allowed(self, tmp_path: Path) -> None:
        msg = _error(tmp_path, {"window": "1 month", "availability": {"objective": 99.9}})
        assert "services[0].slo.window" in msg
        assert "or month for the calendar month" in msg

    def test_unknown_key_is_an_error(self, tmp_path: Path) -> None:
        msg = _error(tmp_path, {"availability": {"objective": 99.9, "target": 1}})
        assert "services[0].slo.availability.target: unknown key" in msg


class TestOpenSLO:
    def test_inline_slo_document_becomes_rules(self, tmp_path: Path) -> None:
        config = _load(tmp_path, {"openslo": [OPENSLO]}, probes=False)
        (spec,) = all_slos(config)
        assert (spec.id, spec.objective, spec.period) == (
            "checkout-api-availability",
            0.995,
            28 * 86400.0,
        )
        expr = spec.error_ratio(3600)
        assert 'sum(rate(http_requests_total{job="api",code=~"5.."}[1h]))' in expr
        assert 'sum(rate(http_requests_total{job="api"}[1h]))' in expr
        doc = yaml.safe_load(rule_files(config)["slo.rules.yml"])
        records = [r.get("record") for g in doc["groups"] for r in g["rules"]]
        assert "slo:sli_error:ratio_rate28d" in records

    def test_file_with_sli_reference_and_good_query_template(self, tmp_path: Path) -> None:
        sli = {
            "apiVersion": "openslo/v1",
            "kind": "SLI",
            "metadata": {"name": "fast-requests"},
            "spec": {
                "ratioMetric": {
                    "good": {
                        "metricSource": {
                            "type": "prometheus",
                            "spec": {
                                "query": 'sum(rate(req_seconds_bucket{le="0.5"}[{{.window}}]))'
                            },
                        }
                    },
                    "total": {
                        "metricSource": {
                            "type": "prometheus",
                            "spec": {"query": "sum(rate(req_seconds_count[{{.window}}]))"},
                        }
                    },
                }
            },
        }
        slo = {
            "apiVersion": "openslo/v1",
            "kind": "SLO",
            "metadata": {"name": "fast"},
            "spec": {
                "indicatorRef": "fast-requests",
                "objectives": [{"targetPercent": 99}],
            },
        }
        path = tmp_path / "slo.yaml"
        path.write_text(yaml.safe_dump_all([sli, slo]))
        config = _load(tmp_path, {"window": "7d", "openslo": [str(path)]}, probes=False)
        (spec,) = all_slos(config)
        assert (spec.name, spec.objective, spec.period) == ("fast", 0.99, 7 * 86400.0)
        assert spec.error_ratio(300).startswith("1 - (")
        assert 'req_seconds_bucket{le="0.5"}[5m]' in spec.error_ratio(300)

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"apiVersion": "openslo/v1alpha"}, "apiVersion must be openslo/v1"),
            ({"spec": {**OPENSLO["spec"], "budgetingMethod": "Timeslices"}}, "Timeslices"),
            ({"spec": {**OPENSLO["spec"], "service": "search"}}, "is for service 'search'"),
            (
                {
                    "spec": {
                        **OPENSLO["spec"],
                        "timeWindow": [{"duration": "1w", "isRolling": False}],
                    }
                },
                "calendar-aligned timeWindow (isRolling: false) must be 1M",
            ),
            (
                {
                    "spec": {
                        **OPENSLO["spec"],
                        "timeWindow": [
                            {
                                "duration": "1M",
                                "isRolling": False,
                                "calendar": {"timeZone": "Europe/Berlin"},
                            }
                        ],
                    }
                },
                "only UTC months are supported",
            ),
            (
                {
                    "spec": {
                        **OPENSLO["spec"],
                        "timeWindow": [
                            {
                                "duration": "1M",
                                "isRolling": False,
                                "calendar": {"startTime": "2026-01-15 00:00:00"},
                            }
                        ],
                    }
                },
                "must be the 1st of a month at 00:00",
            ),
            ({"spec": {**OPENSLO["spec"], "objectives": [{"target": 99.5}]}}, "target must be"),
        ],
    )
    def test_unsupported_documents_are_config_errors(
        self, tmp_path: Path, change: dict[str, Any], message: str
    ) -> None:
        msg = _error(tmp_path, {"openslo": [{**OPENSLO, **change}]}, probes=False)
        assert "services[0]" in msg and "openslo" in msg
        assert message in msg

    def test_a_calendar_aligned_month_in_utc_is_the_calendar_month_period(
        self, tmp_path: Path
    ) -> None:
        window = {
            "duration": "1M",
            "isRolling": False,
            "calendar": {"startTime": "2026-01-01 00:00:00", "timeZone": "UTC"},
        }
        doc = {**OPENSLO, "spec": {**OPENSLO["spec"], "timeWindow": [window]}}
        config = _load(tmp_path, {"openslo": [doc]}, probes=False)
        (spec,) = all_slos(config)
        assert (spec.period, spec.calendar) == ("month", True)
        # Its bad events are the document's own bad query, summed over the month.
        assert 'http_requests_total{job="api",code=~"5.."}[5m]' in spec.bad(300)

    def test_query_that_is_neither_a_selector_nor_a_template_is_rejected(
        self, tmp_path: Path
    ) -> None:
        doc = yaml.safe_load(yaml.safe_dump(OPENSLO))
        doc["spec"]["indicator"]["spec"]["ratioMetric"]["total"]["metricSource"]["spec"][
            "query"
        ] = "sum(http_requests_total)"
        msg = _error(tmp_path, {"openslo": [doc]}, probes=False)
        assert "must be a counter selector or contain {{.window}}" in msg
