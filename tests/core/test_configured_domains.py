"""Only the domains a config uses are loaded: its model is assembled from them, and the
daemon imports, polls and renders only them. A domain's declaration names the keys it
answers for, so which domains a config uses is known before any domain is imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from exporter.config import load_config
from exporter.domains import domains, needed, of

ROOT = Path(__file__).resolve().parents[2]


def _names(data: dict[str, object], environ: dict[str, str] | None = None) -> list[str]:
    return [d.name for d in needed(data, {} if environ is None else environ)]


class TestDeclarations:
    @pytest.mark.parametrize("domain", domains(), ids=lambda d: d.name)
    def test_the_declared_keys_are_the_keys_of_the_domains_models(self, domain: object) -> None:
        """What a declaration says it answers for is what its models and sources have,
        so a config's keys find their domain without importing it."""
        from exporter.core.domain import Domain

        assert isinstance(domain, Domain)
        section = set(domain.section.model_fields) if domain.section is not None else set()
        service = (
            set(domain.service_fields.model_fields) if domain.service_fields is not None else set()
        )
        assert set(domain.keys) == section
        assert set(domain.service_keys) == service
        assert [r.kind for r in domain.refs] == [c.kind for c in domain.sources]

    @pytest.mark.parametrize("domain", domains(), ids=lambda d: d.name)
    def test_a_domain_used_by_every_config_is_declared_so(self, domain: object) -> None:
        """A source on by default, or the catalog every domain joins on, makes a domain
        one that every config uses."""
        from exporter.core.domain import Domain

        assert isinstance(domain, Domain)
        expected = any(c.default_on for c in domain.sources) or domain.load_catalog is not None
        assert domain.always == expected


class TestNeeded:
    def test_a_config_of_probes_only_uses_the_probe_and_the_catalog(self) -> None:
        data = {
            "services": [
                {"name": "web", "team": "a", "probes": [{"name": "h", "url": "http://x"}]}
            ],
            "sources": {"probe": {"interval": "15s"}},
        }
        assert _names(data) == ["probe", "catalog"]

    def test_a_source_block_brings_its_domain_and_those_its_provider_reads(self) -> None:
        assert _names({"sources": {"aws_cost": {}}}) == ["probe", "cost", "catalog", "traffic"]

    def test_a_services_key_brings_its_domain(self) -> None:
        data = {"services": [{"name": "web", "team": "a", "slo": {}}]}
        assert _names(data) == ["probe", "catalog", "traffic", "slo"]

    def test_a_top_level_key_brings_its_domain(self) -> None:
        assert "incident" in _names({"incidents": {}})

    def test_an_environment_override_brings_the_domain_it_sets(self) -> None:
        env = {"PLATFORM_KPI_SOURCES__PAGERDUTY__ENABLED": "true", "PATH": "/bin"}
        assert _names({}, env) == ["probe", "catalog", "incident"]
        assert "delivery" in _names({}, {"platform_kpi_delivery__lead_time": "x"})

    def test_a_whole_sources_block_from_the_environment_brings_every_domain(self) -> None:
        env = {"PLATFORM_KPI_SOURCES": json.dumps({"kong": {}})}
        assert _names({}, env) == [d.name for d in domains()]

    def test_an_unknown_key_brings_nothing_and_is_refused_by_name(self, tmp_path: Path) -> None:
        from exporter.config import ConfigError

        assert _names({"sources": {"nosuch": {}}}) == ["probe", "catalog"]
        path = tmp_path / "c.yaml"
        path.write_text("sources:\n  nosuch: {}\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=r"sources\.nosuch"):
            load_config(path)


class TestLoadedConfig:
    def test_the_config_knows_the_domains_it_was_assembled_from(self, tmp_path: Path) -> None:
        path = tmp_path / "c.yaml"
        path.write_text("services: [{name: web, team: a}]\n", encoding="utf-8")
        config = load_config(path)
        assert [d.name for d in of(config)] == ["probe", "catalog"]
        assert not hasattr(config.sources, "aws_cost")

    def test_an_unused_domains_keys_read_as_its_defaults(self, tmp_path: Path) -> None:
        """A config that gives none of a domain's keys has that domain's defaults: what
        the review reads of cost is what a config without a ``cost:`` block always had."""
        from exporter.config import Config
        from exporter.domains.cost.settings import CostSection, CostServiceFields

        path = tmp_path / "c.yaml"
        path.write_text("services: [{name: web, team: a}]\n", encoding="utf-8")
        config = load_config(path)
        whole = Config(services=[{"name": "web", "team": "a"}])
        assert CostSection.of(config).cost == CostSection.of(whole).cost
        assert CostServiceFields.of(config.services[0]).cost == whole.services[0].cost


def test_a_daemon_of_probes_imports_no_other_domains_sources_or_providers(
    tmp_path: Path,
) -> None:
    """In a fresh process: a daemon built and rendered from a config of probes imports no
    source or provider module of a domain it does not use, nor boto3 or psycopg."""
    config = tmp_path / "c.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            state: {{path: {tmp_path / "state.db"}}}
            services:
              - name: web
                team: a
                probes: [{{name: home, url: "http://127.0.0.1:9/"}}]
            """
        ),
        encoding="utf-8",
    )
    script = textwrap.dedent(
        """\
        import sys
        from exporter.config import load_config
        from exporter.daemon import Daemon
        daemon = Daemon(load_config(sys.argv[1]))
        daemon.page.render(daemon._render_context([]))
        daemon.store.close()
        print("\\n".join(sorted(sys.modules)))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    used = {"probe", "catalog"}
    unused = [d.name for d in domains() if d.name not in used]
    loaded = [
        m
        for m in out
        for name in unused
        if m.startswith((f"exporter.domains.{name}.sources", f"exporter.domains.{name}.metrics"))
    ]
    assert loaded == []
    assert not {"boto3", "botocore", "psycopg", "dns"} & set(out)
