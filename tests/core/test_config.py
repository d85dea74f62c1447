"""Configuration: loading, validation errors that name the file and field, env overrides, secrets."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from exporter.config import ConfigError, load_config, masked
from exporter.core.settings import parse_duration
from tests.support.daemon import REPO_ROOT

VALID = """
server:
  listen_address: 127.0.0.1
  port: 9100
  basic_auth:
    username: prom
    password: {env: TEST_METRICS_PASSWORD}
state:
  path: /tmp/x/state.db
services:
  - name: checkout
    team: payments
    probes:
      - name: health
        url: http://checkout.internal/healthz
        timeout: 2s
        interval: 1m
sources:
  probe:
    interval: 5s
"""


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("PLATFORM_KPI_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("TEST_METRICS_PASSWORD", "s3cret")


class TestLoading:
    def test_example_config_loads(self) -> None:
        """examples/config.yaml, the commented reference, is a valid config."""
        example = REPO_ROOT / "examples" / "config.yaml"
        config = load_config(example)
        assert config.services, "the example lists services"
        assert config.sources.probe.enabled

    def test_values_are_parsed_into_their_types(self, tmp_path: Path) -> None:
        config = load_config(write(tmp_path, VALID))
        assert config.server.port == 9100
        assert config.state.path == Path("/tmp/x/state.db")
        check = config.services[0].probes[0]
        assert (check.timeout, check.interval) == (2.0, 60.0)
        assert check.expect_status == [200]
        assert config.sources.probe.interval == 5.0

    def test_empty_file_gives_the_defaults(self, tmp_path: Path) -> None:
        config = load_config(write(tmp_path, ""))
        assert config.server.port == 9877
        assert config.services == []


class TestErrors:
    """Each error names the file and the field path, and says what is wrong."""

    def error(self, tmp_path: Path, text: str) -> str:
        path = write(tmp_path, text)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        message = str(info.value)
        assert str(path) in message
        return message

    def test_unknown_key(self, tmp_path: Path) -> None:
        msg = self.error(tmp_path, "server:\n  prot: 9100\n")
        assert "server.prot: unknown key" in msg

    def test_unknown_key_deep_in_a_list(self, tmp_path: Path) -> None:
        msg = self.error(
            tmp_path,
            """
            services:
              - name: a
                team: t
                probes:
                  - name: h
                    url: http://a/
                    expected: [200]
            """,
        )
        assert "services[0].probes[0].expected: unknown key" in msg

    def test_wrong_type(self, tmp_path: Path) -> None:
        msg = self.error(tmp_path, "server:\n  port: lots\n")
        assert "server.port:" in msg and "integer" in msg

    def test_bad_duration(self, tmp_path: Path) -> None:
        msg = self.error(tmp_path, "sources:\n  probe:\n    interval: soon\n")
        assert "sources.probe.interval: invalid duration 'soon'" in msg

    def test_missing_secret_from_env(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("TEST_METRICS_PASSWORD")
        msg = self.error(tmp_path, VALID)
        assert (
            "server.basic_auth.password: environment variable TEST_METRICS_PASSWORD is not set"
            in msg
        )

    def test_missing_secret_file(self, tmp_path: Path) -> None:
        msg = self.error(
            tmp_path,
            f"""
            server:
              basic_auth:
                username: prom
                password: {{file: {tmp_path}/nope}}
            """,
        )
        assert "server.basic_auth.password: cannot read secret file" in msg

    def test_invalid_yaml(self, tmp_path: Path) -> None:
        msg = self.error(tmp_path, "server: [unclosed\n")
        assert "invalid YAML" in msg

    def test_unreadable_file(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="cannot read file"):
            load_config(tmp_path / "missing.yaml")

    def test_duplicate_service_names(self, tmp_path: Path) -> None:
        msg = self.error(tmp_path, "services:\n  - {name: a, team: t}\n  - {name: a, team: u}\n")
        assert "services[1].name: service names must be unique: a is also services[0]" in msg

    def test_bad_probe_url_and_status(self, tmp_path: Path) -> None:
        msg = self.error(
            tmp_path,
            """
            services:
              - name: a
                team: t
                probes:
                  - {name: h, url: "ftp://a/", expect_status: [99]}
            """,
        )
        assert "services[0].probes[0].url: must be an http:// or https:// URL" in msg
        assert "services[0].probes[0].expect_status: must list HTTP status codes" in msg

    def test_name_with_label_unsafe_characters(self, tmp_path: Path) -> None:
        msg = self.error(tmp_path, 'services:\n  - {name: "Check Out", team: t}\n')
        assert "services[0].name:" in msg


class TestEnvironmentOverrides:
    def test_nested_override_wins_over_the_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("PLATFORM_KPI_SERVER__PORT", "9555")
        monkeypatch.setenv("PLATFORM_KPI_SOURCES__PROBE__INTERVAL", "2m")
        config = load_config(write(tmp_path, VALID))
        assert config.server.port == 9555
        assert config.sources.probe.interval == 120.0
        # The rest of the file's sections are kept.
        assert config.server.listen_address == "127.0.0.1"
        assert config.server.basic_auth is not None
        assert config.sources.probe.concurrency == 16

    def test_bad_override_is_a_config_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("PLATFORM_KPI_SERVER__PORT", "many")
        with pytest.raises(ConfigError, match=r"server\.port"):
            load_config(write(tmp_path, VALID))


class TestSecrets:
    def test_secret_from_env(self, tmp_path: Path) -> None:
        config = load_config(write(tmp_path, VALID))
        assert config.server.basic_auth is not None
        assert config.server.basic_auth.password.get_secret_value() == "s3cret"

    def test_secret_from_file_drops_the_trailing_newline(self, tmp_path: Path) -> None:
        (tmp_path / "pw").write_text("from-a-mount\n")
        config = load_config(
            write(
                tmp_path,
                f"server:\n  basic_auth:\n    username: u\n    password: {{file: {tmp_path}/pw}}\n",
            )
        )
        assert config.server.basic_auth is not None
        assert config.server.basic_auth.password.get_secret_value() == "from-a-mount"

    def test_literal_secret(self, tmp_path: Path) -> None:
        config = load_config(
            write(tmp_path, "server:\n  basic_auth:\n    username: u\n    password: plain\n")
        )
        assert config.server.basic_auth is not None
        assert config.server.basic_auth.password.get_secret_value() == "plain"

    def test_secret_with_unknown_shape(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="a secret is a string"):
            load_config(
                write(
                    tmp_path,
                    "server:\n  basic_auth:\n    username: u\n    password: {vault: x}\n",
                )
            )

    def test_masked_output_hides_every_secret(self, tmp_path: Path) -> None:
        data = masked(load_config(write(tmp_path, VALID)))
        assert data["server"]["basic_auth"]["password"] == "**********"
        assert "s3cret" not in repr(data)


class TestDurations:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [("500ms", 0.5), ("30s", 30), ("5m", 300), ("1h30m", 5400), ("7d", 604800), (12, 12)],
    )
    def test_parse(self, text: str | int, seconds: float) -> None:
        assert parse_duration(text) == seconds

    @pytest.mark.parametrize("text", ["", "5", "5x", "1h 30m", "-1s", True])
    def test_reject(self, text: str | bool) -> None:
        with pytest.raises(ValueError):
            parse_duration(text)


class TestSecretOverrides:
    def test_a_secret_can_come_from_a_nested_environment_variable(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("PLATFORM_KPI_SERVER__BASIC_AUTH__PASSWORD", "from-env")
        config = load_config(write(tmp_path, VALID))
        assert config.server.basic_auth is not None
        assert config.server.basic_auth.username == "prom"
        assert config.server.basic_auth.password.get_secret_value() == "from-env"
