"""Delivery configuration: the catalog's CI refs, the shared delivery rules, the CI sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.config import ConfigError, load_config
from exporter.core.settings import source_block
from exporter.domains.delivery.settings import DeliveryConfig, DeliverySection


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


class TestCIRefs:
    def test_exact_refs_win_over_patterns(self, tmp_path: Path) -> None:
        config = load_config(
            write(
                tmp_path,
                """
services:
  - name: all
    team: t
    ci: [{github: "acme/*"}]
  - name: checkout
    team: t
    ci: [{github: acme/checkout}, {jenkins: pay/checkout-deploy}]
""",
            )
        )
        assert config.service_of_repo("github", "acme/checkout") == "checkout"
        assert config.service_of_repo("github", "ACME/Other") == "all"
        assert config.service_of_repo("jenkins", "pay/checkout-deploy") == "checkout"
        assert config.service_of_repo("gitlab", "acme/checkout") is None

    def test_a_ref_names_exactly_one_system(self, tmp_path: Path) -> None:
        path = write(
            tmp_path,
            """
services:
  - name: checkout
    team: t
    ci: [{github: acme/checkout, gitlab: acme/checkout}]
""",
        )
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert "services[0].ci[0]" in str(err.value)
        assert "exactly one of github, gitlab or jenkins" in str(err.value)
        assert str(path) in str(err.value)

    def test_a_github_ref_is_owner_slash_repo(self, tmp_path: Path) -> None:
        path = write(tmp_path, "services: [{name: a, team: t, ci: [{github: just-a-name}]}]\n")
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert "services[0].ci[0].github" in str(err.value)


class TestSources:
    def test_github_token_or_app_not_both(self, tmp_path: Path) -> None:
        path = write(
            tmp_path,
            """
sources:
  github:
    token: x
    app: {app_id: 1, installation_id: 2, private_key: k}
""",
        )
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert "sources.github" in str(err.value) and "either token or app" in str(err.value)

    def test_jenkins_needs_user_and_token_together(self, tmp_path: Path) -> None:
        path = write(tmp_path, "sources: {jenkins: {base_url: 'https://j', username: u}}\n")
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert "sources.jenkins" in str(err.value)

    def test_a_config_without_ci_sources_is_valid(self, tmp_path: Path) -> None:
        config = load_config(write(tmp_path, "services: []\n"))
        assert source_block(config, "github") is None
        assert DeliverySection.of(config).delivery.backfill_days == 90


class TestDeliveryRules:
    def test_environment_labels_are_bounded(self) -> None:
        rules = DeliveryConfig(production_environments=["prod*"], environments=["staging"])
        assert rules.environment_label("Production-EU") == "production"
        assert rules.environment_label("staging") == "staging"
        assert rules.environment_label("review/feature-x-1234") == "other"

    def test_link_window_is_a_duration(self, tmp_path: Path) -> None:
        config = load_config(write(tmp_path, "delivery: {incident_link_window: 90m}\n"))
        assert config.delivery.incident_link_window == 5400.0
        with pytest.raises(ConfigError) as err:
            load_config(write(tmp_path, "delivery: {incident_link_window: soon}\n"))
        assert "delivery.incident_link_window" in str(err.value)


class TestIncidentRootCause:
    def test_the_default_reads_a_root_cause_line_like_four_keys(self) -> None:
        """A line 'root cause: <sha>' anywhere in the body, any case, optionally in backticks;
        the SHA is returned lowercased; a word that is not hex, or fewer than 7 digits, is
        not a SHA."""
        rules = DeliveryConfig()
        body = "Checkout 500s after the release.\n\nRoot Cause: `3F2A9C1d`\n"
        assert rules.root_cause_sha(body) == "3f2a9c1d"
        assert rules.root_cause_sha("root cause: 0123456789abcdef0123456789abcdef01234567") == (
            "0123456789abcdef0123456789abcdef01234567"
        )
        assert rules.root_cause_sha("root cause: unknown yet") is None
        assert rules.root_cause_sha("root cause: abc12") is None
        assert rules.root_cause_sha(None) is None

    def test_a_custom_pattern_may_name_its_group_sha(self, tmp_path: Path) -> None:
        config = load_config(
            write(
                tmp_path,
                "delivery: {incident_root_cause: '(caused-by|culprit)=(?P<sha>[0-9a-f]+)'}\n",
            )
        )
        assert config.delivery.root_cause_sha("culprit=abcdef1 in prod") == "abcdef1"

    def test_a_bad_pattern_is_a_config_error_naming_the_field(self, tmp_path: Path) -> None:
        for bad in ("'root cause: ([0-9a-f'", "'root cause: [0-9a-f]+'"):
            path = write(tmp_path, f"delivery: {{incident_root_cause: {bad}}}\n")
            with pytest.raises(ConfigError) as err:
                load_config(path)
            assert "delivery.incident_root_cause" in str(err.value)
            assert str(path) in str(err.value)


class TestSquashLeadTime:
    def test_original_commits_by_default_and_only_two_choices(self, tmp_path: Path) -> None:
        assert DeliveryConfig().squash_lead_time == "original_commits"
        path = write(tmp_path, "delivery: {squash_lead_time: squash}\n")
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert "delivery.squash_lead_time" in str(err.value)
