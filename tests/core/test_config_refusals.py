"""Configs that must be refused: one line naming the file and the field, exit 2, no traceback.

``check-config`` used to accept these (or die with a traceback on them), and ``run``
then failed later, mid-start.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.cli import main

BASE = "services:\n  - name: checkout\n    team: payments\n"


def refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | bytes) -> str:
    path = tmp_path / "config.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    assert main(["check-config", str(path)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"config error in {path}: "), err
    return err.removeprefix(f"config error in {path}: ")


class TestDurations:
    @pytest.mark.parametrize("value", [".inf", ".nan", "-.inf", "1e20", "100000w"])
    def test_a_duration_must_be_finite_and_bounded(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
    ) -> None:
        text = BASE + f"sources:\n  probe:\n    interval: {value}\n"
        err = refused(tmp_path, capsys, text)
        assert err.startswith("sources.probe.interval: "), err


class TestYaml:
    def test_a_duplicate_key_is_refused_with_its_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        err = refused(tmp_path, capsys, BASE + "state:\n  path: a.db\n  path: b.db\n")
        assert "duplicate key 'path'" in err and "line 6" in err

    def test_a_non_string_key_names_its_path(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert refused(tmp_path, capsys, BASE + "1: x\n") == "1: keys must be strings"
        err = refused(tmp_path, capsys, BASE + "server:\n  true: 1\n")
        assert err == "server[True]: keys must be strings"

    def test_a_key_with_a_line_break_stays_on_one_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        err = refused(tmp_path, capsys, BASE + 'state:\n  "a\\rb.c": 1\n')
        assert err == "state['a\\rb.c']: unknown key", err

    def test_a_file_that_is_not_utf8_is_refused(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        err = refused(tmp_path, capsys, BASE.encode() + b"# caf\xe9\n")
        assert err.startswith("not UTF-8 text (byte ")


class TestListenAddress:
    @pytest.mark.parametrize("value", ["not an address", "300.1.2.3.4:99", "-bad-"])
    def test_an_address_that_is_no_address_is_refused(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
    ) -> None:
        err = refused(tmp_path, capsys, BASE + f"server:\n  listen_address: '{value}'\n")
        assert err.startswith("server.listen_address: "), err

    @pytest.mark.parametrize("value", ["", "0.0.0.0", "::", "[::1]", "localhost", "node-1.example"])
    def test_addresses_and_host_names_are_accepted(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
    ) -> None:
        path = tmp_path / "config.yaml"
        path.write_text(BASE + f"server:\n  listen_address: '{value}'\n", encoding="utf-8")
        assert main(["check-config", str(path)]) == 0
        capsys.readouterr()


class TestUrls:
    """Every URL field takes one of its schemes, a valid host and a valid port."""

    @pytest.mark.parametrize(
        ("block", "why"),
        [
            ("kong:\n    status_url: kong:8100", "must be an http:// or https:// URL"),
            ("kong:\n    status_url: 'http://'", "must be an http:// or https:// URL"),
            ("kong:\n    status_url: 'http://kong:99999'", "Port out of range"),
            ("prometheus:\n    url: 'http://a b:9090'", "without spaces"),
            ("github:\n    base_url: 'api.github.com'", "must be an http:// or https:// URL"),
            ("gitlab:\n    base_url: 'https://-gitlab-/'", "with a valid host"),
            ("jenkins:\n    base_url: 'ftp://ci'", "must be an http:// or https:// URL"),
            ("nginx:\n    access_log: a.log\n    stub_status_url: '/status'", "must be an http"),
            ("focus:\n    urls: ['s3://bucket/x']", "must be an http"),
            (
                "azure_cost:\n    tenant_id: t\n    client_id: c\n    client_secret: s\n"
                "    scopes: [/subscriptions/1]\n    login_url: 'login.example'",
                "must be an http",
            ),
            ("aws_cost:\n    endpoint_url: 'localhost:5000'", "must be an http"),
        ],
    )
    def test_a_url_without_scheme_or_host_is_refused_at_its_field(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], block: str, why: str
    ) -> None:
        text = BASE + "sources:\n  " + block + "\n"
        kind = block.split(":", 1)[0]
        if kind in ("kong", "prometheus"):
            text += {
                "kong": "",
                "prometheus": "    queries: {requests: a, errors_5xx: b}\n",
            }[kind]
        err = refused(tmp_path, capsys, text)
        assert err.startswith(f"sources.{kind}."), err
        assert why in err, err

    @pytest.mark.parametrize(
        "url", ["ftp://x/", "http://", "http://a:0/", "tcp://h", "tcp://h:1/path", "dns://s/x"]
    )
    def test_a_probe_url_is_checked_the_same_way(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str
    ) -> None:
        text = BASE + f"    probes:\n      - {{name: p, url: '{url}', query_name: x}}\n"
        err = refused(tmp_path, capsys, text)
        assert err.startswith("services[0].probes[0].url: must be an http:// or https:// URL"), err

    @pytest.mark.parametrize(
        "url", ["http://my_db:8080/x", "https://[::1]:8443", "http://user:pw@host.example/"]
    )
    def test_host_names_addresses_and_userinfo_are_accepted(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str
    ) -> None:
        path = tmp_path / "config.yaml"
        path.write_text(BASE + f"    probes:\n      - {{name: p, url: '{url}'}}\n", "utf-8")
        assert main(["check-config", str(path)]) == 0
        capsys.readouterr()


class TestServiceReferences:
    """A service named outside ``services[]`` must be one of them; the line names the field."""

    @pytest.mark.parametrize(
        ("text", "path"),
        [
            (
                "capabilities:\n  - name: gw\n    detect: {rule: probe}\n"
                "    cost_services: [unallocated, nope]\n",
                "capabilities[0].cost_services[1]",
            ),
            (
                "sources:\n  cloudwatch:\n    apis:\n      - {name: a, stage: prod, service: checkout}\n"
                "      - {name: b, stage: prod, service: nope}\n",
                "sources.cloudwatch.apis[1].service",
            ),
            (
                "sources:\n  prometheus:\n    url: http://prom:9090\n    scalar_service: nope\n"
                "    queries: {requests: a, errors_5xx: b}\n",
                "sources.prometheus.scalar_service",
            ),
            (
                "cost:\n  budgets:\n    - {scope: service, name: nope, monthly: 5}\n",
                "cost.budgets[0].name",
            ),
        ],
    )
    def test_an_unknown_service_is_refused_at_its_field(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, path: str
    ) -> None:
        err = refused(tmp_path, capsys, BASE + text)
        assert err.startswith(f"{path}: "), err
        assert "'nope'" in err, err

    def test_with_a_catalog_source_names_it_may_add_are_accepted(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Backstage adds services at run time: a CloudWatch API may name one of them."""
        path = tmp_path / "config.yaml"
        path.write_text(
            BASE + "sources:\n  backstage:\n    base_url: http://backstage:7007/api/catalog\n"
            "  cloudwatch:\n    apis:\n      - {name: a, stage: prod, service: from-catalog}\n",
            "utf-8",
        )
        assert main(["check-config", str(path)]) == 0
        capsys.readouterr()

    def test_a_duplicate_service_names_its_field_and_the_first(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        err = refused(tmp_path, capsys, BASE + "  - name: checkout\n    team: other\n")
        assert err == (
            "services[1].name: service names must be unique: checkout is also services[0]"
        )


class TestState:
    def test_busy_timeout_is_a_duration(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        err = refused(tmp_path, capsys, BASE + "state:\n  busy_timeout: forever\n")
        assert err.startswith("state.busy_timeout: invalid duration"), err

    def test_the_store_waits_busy_timeout_for_a_lock(self, tmp_path: Path) -> None:
        from exporter.config import Config
        from exporter.daemon import Daemon

        config = Config(state={"path": str(tmp_path / "s.db"), "busy_timeout": "250ms"})
        daemon = Daemon(config, sources=[])
        try:
            row = daemon.store.query_one("PRAGMA busy_timeout")
            assert row is not None and int(row[0]) == 250
        finally:
            daemon.store.close()
