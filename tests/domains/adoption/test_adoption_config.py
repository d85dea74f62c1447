"""Config for capabilities and the Backstage source: errors name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.config import ConfigError, load_config


def load(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    load_config(path)


class TestCapabilityConfig:
    def test_an_unknown_rule_names_the_field(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError) as err:
            load(tmp_path, "capabilities:\n  - name: x\n    detect: {rule: vibes}\n")
        assert "capabilities[0].detect" in str(err.value)

    def test_a_catalog_rule_needs_exactly_one_of_tag_or_annotation(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError) as err:
            load(tmp_path, "capabilities:\n  - name: x\n    detect: {rule: catalog}\n")
        assert "give exactly one of annotation or tag" in str(err.value)

    def test_a_template_rule_needs_a_pattern(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError) as err:
            load(tmp_path, "capabilities:\n  - name: x\n    detect: {rule: pipeline_template}\n")
        assert "workflow_paths, gitlab_includes or pipeline_names" in str(err.value)

    def test_capability_names_are_unique(self, tmp_path: Path) -> None:
        text = "capabilities:\n" + "  - {name: x, detect: {rule: probe}}\n" * 2
        with pytest.raises(ConfigError) as err:
            load(tmp_path, text)
        assert "capability names must be unique: x" in str(err.value)

    def test_registered_at_needs_a_zone(self, tmp_path: Path) -> None:
        text = "services:\n  - {name: a, team: t, registered_at: '2026-01-01T00:00:00'}\n"
        with pytest.raises(ConfigError) as err:
            load(tmp_path, text)
        assert "services[0].registered_at" in str(err.value)


class TestBackstageConfig:
    def test_base_url_must_be_http(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError) as err:
            load(tmp_path, "sources:\n  backstage: {base_url: backstage.local}\n")
        assert "sources.backstage.base_url" in str(err.value)

    def test_a_token_from_the_environment_must_exist(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("NO_SUCH_TOKEN", raising=False)
        text = "sources:\n  backstage: {base_url: 'http://b/api/catalog', token: {env: NO_SUCH_TOKEN}}\n"
        with pytest.raises(ConfigError) as err:
            load(tmp_path, text)
        assert "NO_SUCH_TOKEN" in str(err.value)
