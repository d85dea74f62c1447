"""Validation of the cost settings: errors name the field and the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from exporter.config import ConfigError, load_config


def write(tmp_path: Path, data: dict[str, object]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


SERVICES = [{"name": "checkout", "team": "payments", "cost": {"tags": {"service": "checkout"}}}]


class TestCostConfig:
    def test_a_full_cost_config_loads(self, tmp_path: Path) -> None:
        config = load_config(
            write(
                tmp_path,
                {
                    "services": SERVICES,
                    "sources": {
                        "focus": {
                            "paths": [str(tmp_path)],
                            "urls": ["https://exports.example/f.csv.gz"],
                        },
                        "aws_cost": {
                            "metric": "AmortizedCost",
                            "group_by": [
                                {"type": "TAG", "key": "service"},
                                {"type": "DIMENSION", "key": "LINKED_ACCOUNT"},
                            ],
                            "accounts": [
                                {"name": "prod", "role_arn": "arn:aws:iam::111122223333:role/ce"}
                            ],
                            "daily_call_cap": 20,
                        },
                        "azure_cost": {
                            "tenant_id": "t",
                            "client_id": "c",
                            "client_secret": "s",
                            "scopes": ["/subscriptions/abc"],
                        },
                        "request_totals": {"url": "http://prometheus:9090/"},
                    },
                    "cost": {
                        "amount": "billed",
                        "budgets": [{"scope": "team", "name": "payments", "monthly": 1000}],
                    },
                },
            )
        )
        assert config.sources.aws_cost is not None
        assert config.sources.aws_cost.data_delay_days == 3
        assert config.sources.request_totals is not None
        assert config.sources.request_totals.url == "http://prometheus:9090"
        assert config.cost.budgets[0].currency == "USD"

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (
                {"sources": {"aws_cost": {"group_by": [{"type": "TAG", "key": "a"}] * 3}}},
                "sources.aws_cost.group_by: List should have at most 2 items",
            ),
            (
                {"sources": {"aws_cost": {"accounts": [{"name": "x", "role_arn": "role/x"}]}}},
                "sources.aws_cost.accounts[0].role_arn",
            ),
            (
                {"sources": {"aws_cost": {"metric": "BlendedCost"}}},
                "sources.aws_cost.metric",
            ),
            ({"sources": {"focus": {}}}, "give at least one entry in paths, urls or s3"),
            (
                {"sources": {"focus": {"urls": ["ftp://x"]}}},
                "sources.focus.urls[0]: must be an http:// or https:// URL",
            ),
            (
                {"cost": {"budgets": [{"scope": "team", "name": "nobody", "monthly": 5}]}},
                "cost.budgets[0].name: team 'nobody' is not in the service catalog",
            ),
            (
                {
                    "cost": {
                        "budgets": [
                            {"scope": "team", "name": "payments", "monthly": 5, "currency": "usd"}
                        ]
                    }
                },
                "cost.budgets[0].currency",
            ),
            (
                {
                    "sources": {
                        "azure_cost": {
                            "tenant_id": "t",
                            "client_id": "c",
                            "client_secret": "s",
                            "scopes": ["subscriptions/x"],
                        }
                    }
                },
                "must start with / and not end with /",
            ),
        ],
    )
    def test_bad_values_are_named(
        self, tmp_path: Path, data: dict[str, object], message: str
    ) -> None:
        path = write(tmp_path, {"services": SERVICES, **data})
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert str(path) in str(err.value)
        assert message in str(err.value)
