"""The Helm chart, rendered by a real helm binary and validated against the API schemas.

Three sets of values are rendered: the chart's defaults, tokens from an existing
Secret with the whole monitoring bundle on (``tests/data/helm/external-secret.yaml``),
and several replicas on a shared state database (``tests/data/helm/ha.yaml``; the
exporter's PostgreSQL backend is not in this version, so that set checks what the
chart renders for it). Every object each renders is valid for Kubernetes 1.31 and,
for ServiceMonitor and PrometheusRule, for prometheus-operator's CRDs (strictly: an
unknown field is an error). The plain manifests in ``deploy/manifests/`` are a fresh
render of the chart.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import __version__
from exporter.config import load_config
from exporter.rules import rule_files
from tests.support.helm import CHART, helm, template, template_args, validate
from tests.support.paths import DATA, REPO_ROOT

EXTERNAL_SECRET = DATA / "helm" / "external-secret.yaml"
HA = DATA / "helm" / "ha.yaml"
MANIFESTS = REPO_ROOT / "deploy" / "manifests"
CONFIG_PATH = "/etc/platform-kpi-exporter/config.yaml"


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = of_kind(docs, kind)
    return found


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(docs)["env"]}


def config_of(docs: list[dict[str, Any]], tmp_path: Path) -> Path:
    """The config.yaml of the chart's ConfigMap, written to a file."""
    (cm,) = [d for d in of_kind(docs, "ConfigMap") if "config.yaml" in d["data"]]
    path = tmp_path / "config.yaml"
    path.write_text(cm["data"]["config.yaml"], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def slo_rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``platform-kpi-exporter rules`` for the external-secret values' config: its SLO file."""
    out = tmp_path_factory.mktemp("rules")
    config = out / "config.yaml"
    config.write_text(yaml.safe_dump(yaml.safe_load(EXTERNAL_SECRET.read_text())["config"]))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GITHUB_TOKEN", "unused")
        files = rule_files(load_config(config))
    path = out / "slo.rules.yml"
    path.write_text(files["slo.rules.yml"], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def default_docs() -> list[dict[str, Any]]:
    return template()


@pytest.fixture(scope="module")
def external_docs(slo_rules: Path) -> list[dict[str, Any]]:
    return template([EXTERNAL_SECRET], set_files=[f"prometheusRule.ruleFiles.slo={slo_rules}"])


@pytest.fixture(scope="module")
def ha_docs() -> list[dict[str, Any]]:
    return template([HA])


class TestLint:
    @pytest.mark.parametrize(
        "values", [None, EXTERNAL_SECRET, HA], ids=["default", "external", "ha"]
    )
    def test_helm_lint_is_clean(self, values: Path | None) -> None:
        proc = helm("lint", "--strict", str(CHART), *(["--values", str(values)] if values else []))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "0 chart(s) failed" in proc.stdout

    def test_the_chart_ships_the_exporter_s_version(self) -> None:
        chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
        assert chart["appVersion"] == __version__


class TestEveryRenderedObjectIsValid:
    @pytest.mark.parametrize("variant", ["default", "external", "ha"])
    def test_against_the_kubernetes_and_crd_schemas(
        self, variant: str, request: pytest.FixtureRequest
    ) -> None:
        docs: list[dict[str, Any]] = request.getfixturevalue(f"{variant}_docs")
        assert docs
        for doc in docs:
            validate(doc)

    def test_an_unknown_field_is_refused(self, external_docs: list[dict[str, Any]]) -> None:
        """The validation is strict: a misspelt field fails it, for built-in kinds and CRDs."""
        import jsonschema
        import kubernetes_validate

        monitor = json.loads(json.dumps(one(external_docs, "ServiceMonitor")))
        monitor["spec"]["endpoints"][0]["intervall"] = "30s"
        with pytest.raises(jsonschema.ValidationError, match="intervall"):
            validate(monitor)
        service = json.loads(json.dumps(one(external_docs, "Service")))
        service["spec"]["portz"] = []
        with pytest.raises(kubernetes_validate.ValidationError, match="portz"):
            validate(service)


class TestDefaults:
    def test_what_it_renders(self, default_docs: list[dict[str, Any]]) -> None:
        assert sorted(d["kind"] for d in default_docs) == [
            "ConfigMap",
            "Deployment",
            "PersistentVolumeClaim",
            "Service",
            "ServiceAccount",
        ]

    def test_non_root_with_a_read_only_root_filesystem(
        self, default_docs: list[dict[str, Any]]
    ) -> None:
        pod = one(default_docs, "Deployment")["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        # The image's own user (Dockerfile: useradd --uid 10001, USER 10001).
        assert pod["securityContext"]["runAsUser"] == 10001
        assert "USER 10001" in (REPO_ROOT / "Dockerfile").read_text()
        sc = container(default_docs)["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert pod["automountServiceAccountToken"] is False

    def test_liveness_on_healthz_and_readiness_on_readyz(
        self, default_docs: list[dict[str, Any]]
    ) -> None:
        c = container(default_docs)
        assert c["livenessProbe"]["httpGet"] == {
            "path": "/healthz",
            "port": "http-metrics",
            "scheme": "HTTP",
        }
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["ports"] == [{"name": "http-metrics", "containerPort": 9877, "protocol": "TCP"}]
        assert env(default_docs)["PLATFORM_KPI_SERVER__PORT"] == "9877"

    def test_the_state_file_is_on_the_claim(self, default_docs: list[dict[str, Any]]) -> None:
        deployment = one(default_docs, "Deployment")
        pod = deployment["spec"]["template"]["spec"]
        claim = one(default_docs, "PersistentVolumeClaim")
        (state,) = [v for v in pod["volumes"] if v["name"] == "state"]
        assert state["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        mounts = {m["name"]: m["mountPath"] for m in container(default_docs)["volumeMounts"]}
        assert env(default_docs)["PLATFORM_KPI_STATE__PATH"] == f"{mounts['state']}/state.db"
        # The root filesystem is read-only: temporary files need a volume of their own.
        assert mounts["tmp"] == "/tmp"
        # One pod at a time opens the state file.
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
        assert deployment["spec"]["replicas"] == 1

    def test_the_config_map_holds_a_config_the_exporter_accepts(
        self, default_docs: list[dict[str, Any]], tmp_path: Path
    ) -> None:
        config = load_config(config_of(default_docs, tmp_path))
        assert config.services == []
        c = container(default_docs)
        assert c["args"] == [
            "--log-level",
            "INFO",
            "--log-format",
            "text",
            "run",
            "--config",
            CONFIG_PATH,
        ]
        (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == CONFIG_PATH]
        assert mount["subPath"] == "config.yaml"

    def test_a_new_config_rolls_the_pod(self) -> None:
        def checksum(*sets: str) -> str:
            docs = template(sets=sets)
            annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
            return str(annotations["checksum/config"])

        assert checksum() == checksum()
        assert checksum() != checksum("config.state.retention=7d")

    def test_an_existing_config_map_replaces_the_chart_s(self) -> None:
        docs = template(
            sets=["existingConfigMap.name=pke-config", "existingConfigMap.key=pke.yaml"]
        )
        assert [d for d in of_kind(docs, "ConfigMap")] == []
        pod = one(docs, "Deployment")["spec"]["template"]["spec"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == "config"]
        assert volume["configMap"] == {"name": "pke-config"}
        (mount,) = [m for m in container(docs)["volumeMounts"] if m["name"] == "config"]
        assert (mount["mountPath"], mount["subPath"]) == (CONFIG_PATH, "pke.yaml")


class TestExistingSecrets:
    def test_tokens_come_from_existing_secrets_and_the_chart_creates_none(
        self, external_docs: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        assert of_kind(external_docs, "Secret") == []
        c = container(external_docs)
        assert c["envFrom"] == [{"secretRef": {"name": "platform-kpi-exporter-tokens"}}]
        pod = one(external_docs, "Deployment")["spec"]["template"]["spec"]
        assert {"name": "secret-github-app", "secret": {"secretName": "github-app-key"}} in pod[
            "volumes"
        ]
        assert {
            "name": "secret-github-app",
            "mountPath": "/etc/platform-kpi-exporter/secrets/github-app",
            "readOnly": True,
        } in c["volumeMounts"]
        # The config names the variable, never the token; with the Secret's key set, it loads.
        text = config_of(external_docs, tmp_path).read_text()
        assert "GITHUB_TOKEN" in text
        monkeypatch.setenv("GITHUB_TOKEN", "ghp_from_the_secret")
        config = load_config(config_of(external_docs, tmp_path))
        assert config.sources.github.token.get_secret_value() == "ghp_from_the_secret"


class TestMonitoring:
    def test_the_service_monitor_scrapes_the_service_s_port(
        self, external_docs: list[dict[str, Any]]
    ) -> None:
        monitor = one(external_docs, "ServiceMonitor")
        service = one(external_docs, "Service")
        assert (
            monitor["spec"]["selector"]["matchLabels"].items()
            <= service["metadata"]["labels"].items()
        )
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["monitoring"]}
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert endpoint["path"] == "/metrics"
        # The KPIs' own `service` label is kept, not renamed `exported_service`.
        assert endpoint["honorLabels"] is True
        assert endpoint["basicAuth"]["password"] == {
            "name": "platform-kpi-exporter-scrape",
            "key": "password",
        }
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"

    def test_the_rule_holds_the_rule_files_given(
        self, external_docs: list[dict[str, Any]], slo_rules: Path
    ) -> None:
        rule = one(external_docs, "PrometheusRule")
        assert rule["spec"]["groups"] == yaml.safe_load(slo_rules.read_text())["groups"]
        alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
        assert alerts == {"SLOErrorBudgetBurn", "SLODataAbsent"}

    def test_by_default_the_rule_holds_what_rules_generates_for_the_default_config(
        self, tmp_path: Path
    ) -> None:
        """``platform-kpi-exporter rules`` on the chart's default config: the exporter's own
        health alerts (a config without SLOs has no SLO rules)."""
        docs = template(sets=["prometheusRule.enabled=true"])
        files = rule_files(load_config(config_of(docs, tmp_path)))
        expected = [g for text in files.values() for g in yaml.safe_load(text)["groups"]]
        assert expected
        assert one(docs, "PrometheusRule")["spec"]["groups"] == expected

    def test_every_dashboard_is_a_config_map_for_the_grafana_sidecar(
        self, external_docs: list[dict[str, Any]]
    ) -> None:
        boards = {
            name: cm
            for cm in of_kind(external_docs, "ConfigMap")
            for name in cm["data"]
            if name.endswith(".json")
        }
        committed = sorted((REPO_ROOT / "dashboards").glob("*.json"))
        assert sorted(boards) == [p.name for p in committed]
        for path in committed:
            cm = boards[path.name]
            assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
            assert cm["metadata"]["annotations"] == {"grafana_folder": "Platform"}
            assert json.loads(cm["data"][path.name]) == json.loads(path.read_text())

    def test_all_of_it_is_off_by_default(self, default_docs: list[dict[str, Any]]) -> None:
        kinds = {d["kind"] for d in default_docs}
        assert not kinds & {"ServiceMonitor", "PrometheusRule"}
        assert all("config.yaml" in d["data"] for d in of_kind(default_docs, "ConfigMap"))


class TestSeveralReplicas:
    def test_a_shared_state_database_replaces_the_claim(
        self, ha_docs: list[dict[str, Any]]
    ) -> None:
        deployment = one(ha_docs, "Deployment")
        assert deployment["spec"]["replicas"] == 3
        assert "strategy" not in deployment["spec"]  # rolling updates: replicas overlap
        assert of_kind(ha_docs, "PersistentVolumeClaim") == []
        pod = deployment["spec"]["template"]["spec"]
        assert "state" not in {v["name"] for v in pod["volumes"]}
        variables = env(ha_docs)
        assert variables["PLATFORM_KPI_STATE__URL"] == {
            "secretKeyRef": {"name": "platform-kpi-exporter-state", "key": "url"}
        }
        assert "PLATFORM_KPI_STATE__PATH" not in variables
        # The password from its Secret; each replica named by its pod in the leases.
        assert variables["PLATFORM_KPI_STATE__PASSWORD"] == {
            "secretKeyRef": {"name": "platform-kpi-exporter-state", "key": "password"}
        }
        assert variables["PLATFORM_KPI_STATE__REPLICA"] == {
            "fieldRef": {"fieldPath": "metadata.name"}
        }
        budget = one(ha_docs, "PodDisruptionBudget")
        assert budget["spec"]["minAvailable"] == 1

    def test_tracing_goes_to_the_endpoint_given(self, ha_docs: list[dict[str, Any]]) -> None:
        args = container(ha_docs)["args"]
        at = args.index("--otlp-endpoint")
        assert args[at + 1] == "http://jaeger-collector.tracing:4318/v1/traces"
        assert at < args.index("run")  # a global option: before the command

    def test_replicas_on_one_sqlite_file_are_refused(self) -> None:
        proc = helm(*template_args(sets=["replicaCount=2"]))
        assert proc.returncode != 0
        assert "replicaCount > 1 needs a shared state database" in proc.stderr


class TestValuesSchema:
    @pytest.mark.parametrize(
        ("setting", "complaint"),
        [
            ("persistance.size=2Gi", "persistance"),
            ("replicaCount=0", "replicaCount"),
            ("logLevel=TRACE", "logLevel"),
            ("logFormat=xml", "logFormat"),
            ("tracing.otlpEndpoint=jaeger:4318", "otlpEndpoint"),
            ("probes.scheme=TCP", "scheme"),
            ("serviceMonitor.interval=soon", "interval"),
        ],
    )
    def test_a_wrong_value_is_refused_naming_it(self, setting: str, complaint: str) -> None:
        proc = helm(*template_args(sets=[setting]))
        assert proc.returncode != 0
        assert complaint in proc.stderr

    def test_the_readme_describes_every_value(self) -> None:
        readme = (CHART / "README.md").read_text()
        documented = set(re.findall(r"^\| `([\w.]+)` \|", readme, re.MULTILINE))
        assert sorted(set(leaf_keys(yaml.safe_load((CHART / "values.yaml").read_text())))) == (
            sorted(documented)
        )


# Values passed through whole to Kubernetes or to the exporter: one row each in the README.
FREE_FORM = frozenset({"config", "resources", "podSecurityContext", "securityContext"})


def leaf_keys(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Every value's dotted path; lists, empty maps and free-form maps are one value each."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in FREE_FORM:
            yield from leaf_keys(value, f"{path}.")
        else:
            yield path


class TestPlainManifests:
    def test_they_are_a_fresh_render_of_the_chart(self, tmp_path: Path) -> None:
        proc = subprocess.run(
            ["bash", str(REPO_ROOT / "scripts" / "render-manifests"), str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        fresh = sorted(p.name for p in tmp_path.iterdir())
        assert fresh == sorted(p.name for p in MANIFESTS.iterdir())
        for name in fresh:
            assert (MANIFESTS / name).read_text() == (tmp_path / name).read_text(), (
                f"deploy/manifests/{name} is stale: run scripts/render-manifests"
            )

    def test_they_are_valid_objects(self) -> None:
        for path in sorted(MANIFESTS.glob("*.yaml")):
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
            assert docs, path.name
            for doc in docs:
                validate(doc)
