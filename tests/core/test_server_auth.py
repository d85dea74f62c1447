"""The server with a web config file: bcrypt users, client certificates, reloads.

Certificates and the mTLS configs are the exporter-toolkit's own test data (see
tests/data/exporter-toolkit/README.md): ``server.crt`` is signed by the CA in
``tls-ca-chain.pem``, the two client certificates are self-signed (``test``, and
``test3`` with the SAN ``DNS:test3``).
"""

from __future__ import annotations

import base64
import http.client
import logging
import shutil
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
from prometheus_client.core import GaugeMetricFamily

from exporter.core.server import MetricsServer
from exporter.core.settings import ServerConfig
from exporter.core.snapshot import Snapshot, SnapshotHolder
from exporter.core.webauth import FailedLogins, basic_credentials
from tests.support.net import http_get
from tests.support.tls import self_signed

TOOLKIT = Path(__file__).resolve().parents[1] / "data" / "exporter-toolkit"


def snapshot() -> Snapshot:
    g = GaugeMetricFamily("platform_test_ratio", "A test ratio.")
    g.add_metric([], 0.5)
    return Snapshot.render([g], 1.0)


def start(web_config: Path, **settings: object) -> MetricsServer:
    config = ServerConfig(
        listen_address="127.0.0.1", port=0, web_config_file=web_config, **settings
    )
    server = MetricsServer(config, SnapshotHolder(snapshot()), lambda: True)
    server.start()
    return server


def basic(user: str, password: str, scheme: str = "Basic") -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"{scheme} {token}"}


def hashed(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()


@pytest.fixture
def users(tmp_path: Path) -> Iterator[tuple[MetricsServer, Path]]:
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  prom: {hashed('s3cret')}\n", encoding="utf-8")
    server = start(path)
    yield server, path
    server.stop()


class TestCredentials:
    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            ("Basic cHJvbTpzM2NyZXQ=", ("prom", "s3cret")),
            ("basic cHJvbTpzM2NyZXQ=", ("prom", "s3cret")),
            ("BASIC   cHJvbTpzM2NyZXQ=", ("prom", "s3cret")),
            ("Basic cHJvbTpwYTpzcw==", ("prom", "pa:ss")),  # the first colon splits
            ("Bearer cHJvbTpzM2NyZXQ=", None),
            ("Basic not-base64!", None),
            ("Basic cHJvbQ==", None),  # no colon
            ("", None),
            (None, None),
        ],
    )
    def test_basic_credentials(self, header: str | None, expected: object) -> None:
        """RFC 7617: the scheme is case-insensitive; user-pass is split at the first colon."""
        assert basic_credentials(header) == expected


class TestBcryptUsers:
    def test_right_and_wrong_credentials(self, users: tuple[MetricsServer, Path]) -> None:
        server, _ = users
        url = f"{server.url}/metrics"
        status, headers, _ = http_get(url)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic realm=")
        assert http_get(url, basic("prom", "wrong"))[0] == 401
        assert http_get(url, basic("nobody", "s3cret"))[0] == 401
        assert http_get(url, basic("prom", "s3cret"))[0] == 200
        assert http_get(url, basic("prom", "s3cret", scheme="bAsIc"))[0] == 200

    def test_the_toolkits_own_users_log_in(self) -> None:
        """web_config_users_noTLS.good.yml: carol and dave (cost 10), as the toolkit's tests."""
        server = start(TOOLKIT / "web_config_users_noTLS.good.yml")
        try:
            url = f"{server.url}/metrics"
            assert http_get(url, basic("dave", "dave123"))[0] == 200
            assert http_get(url, basic("carol", "carol123"))[0] == 200
            assert http_get(url, basic("carol", "bad"))[0] == 401
            # The stand-in hash for unknown users is bcrypt of "fakepassword": no way in.
            assert http_get(url, basic("fakeuser", "fakepassword"))[0] == 401
        finally:
            server.stop()

    def test_a_new_user_works_from_the_next_request(
        self, users: tuple[MetricsServer, Path]
    ) -> None:
        server, path = users
        url = f"{server.url}/metrics"
        assert http_get(url, basic("grafana", "pw2"))[0] == 401
        path.write_text(f"basic_auth_users:\n  grafana: {hashed('pw2')}\n", encoding="utf-8")
        assert http_get(url, basic("grafana", "pw2"))[0] == 200
        assert http_get(url, basic("prom", "s3cret"))[0] == 401  # removed

    def test_a_broken_file_fails_closed_until_fixed(
        self, users: tuple[MetricsServer, Path], caplog: pytest.LogCaptureFixture
    ) -> None:
        server, path = users
        url = f"{server.url}/metrics"
        text = path.read_text(encoding="utf-8")
        path.write_text("basic_auth_users: [\n", encoding="utf-8")
        with caplog.at_level(logging.ERROR, "exporter.server"):
            assert http_get(url, basic("prom", "s3cret"))[0] == 500
            assert http_get(url, basic("prom", "s3cret"))[0] == 500
        assert [r.getMessage().count("invalid YAML") for r in caplog.records] == [1]
        path.write_text(text, encoding="utf-8")
        assert http_get(url, basic("prom", "s3cret"))[0] == 200

    def test_failed_logins_are_warned_about_once_a_minute(
        self, users: tuple[MetricsServer, Path], caplog: pytest.LogCaptureFixture
    ) -> None:
        server, _ = users
        with caplog.at_level(logging.WARNING, "exporter.server"):
            for i in range(5):
                assert http_get(f"{server.url}/metrics", basic(f"mallory{i}", "hunter2"))[0] == 401
            assert http_get(f"{server.url}/metrics")[0] == 401  # no credentials: not logged
        lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(lines) == 1
        assert lines[0].startswith("basic auth failed for user 'mallory0' from 127.0.0.1:")
        assert "hunter2" not in caplog.text

    def test_the_warning_counts_what_it_did_not_log(self, caplog: pytest.LogCaptureFixture) -> None:
        now = [1000.0]
        failures = FailedLogins(lambda: now[0], every=60)
        with caplog.at_level(logging.WARNING, "exporter.server"):
            failures.record("a", "p:1")
            for _ in range(3):
                now[0] += 10
                failures.record("b", "p:1")
            now[0] += 31
            failures.record("c\nfake line", "p:2")
        lines = [r.getMessage() for r in caplog.records]
        assert lines == [
            "basic auth failed for user 'a' from p:1",
            "basic auth failed for user 'c fake line' from p:2; 3 more failed since the last warning",
        ]


class TestHeadersAndRateLimit:
    def test_configured_headers_are_sent(self) -> None:
        server = start(TOOLKIT / "web_config_headers.good.yml")
        try:
            _, headers, _ = http_get(f"{server.url}/metrics")
            assert headers["X-Frame-Options"] == "deny"
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
        finally:
            server.stop()

    def test_a_spent_bucket_answers_429(self, tmp_path: Path) -> None:
        path = tmp_path / "web.yml"
        path.write_text("rate_limit:\n  interval: 1m\n  burst: 3\n", encoding="utf-8")
        server = start(path)
        try:
            codes = [http_get(f"{server.url}/healthz")[0] for _ in range(5)]
            assert codes == [200, 200, 200, 429, 429]
        finally:
            server.stop()


def toolkit_tls(tmp_path: Path, config: str) -> Path:
    """A toolkit mTLS config in ``tmp_path`` with the certificates beside it."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name in ("server.crt", "server.key", "client_selfsigned.pem", "client2_selfsigned.pem"):
        shutil.copy(TOOLKIT / name, tmp_path)
    shutil.copy(TOOLKIT / config, tmp_path / "web.yml")
    return tmp_path / "web.yml"


def client_context(cert: str | None) -> ssl.SSLContext:
    """A client presenting ``cert`` (a toolkit client certificate), or none.

    It does not verify the server: these tests are about the server verifying clients,
    and OpenSSL rejects the toolkit's CA for server auth ("unsuitable certificate
    purpose": its extended key usage is anyExtendedKeyUsage, which Go accepts).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if cert is not None:
        context.load_cert_chain(str(TOOLKIT / f"{cert}.pem"), str(TOOLKIT / f"{cert}.key"))
    return context


def https_status(server: MetricsServer, context: ssl.SSLContext) -> int | str:
    """The status of GET /metrics over TLS, or the error's class name if it failed."""
    conn = http.client.HTTPSConnection("localhost", server.port, timeout=5, context=context)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().status
    except (ssl.SSLError, ConnectionError, OSError) as exc:
        return type(exc).__name__
    finally:
        conn.close()


class TestClientCertificates:
    def test_require_and_verify(self, tmp_path: Path) -> None:
        """RequireAndVerifyClientCert with client_selfsigned.pem as the CA: that certificate
        gets in; another one, or none, does not."""
        server = start(
            toolkit_tls(tmp_path, "tls_config_noAuth.requireandverifyclientcert.good.yml")
        )
        try:
            assert https_status(server, client_context("client_selfsigned")) == 200
            assert https_status(server, client_context("client2_selfsigned")) != 200
            assert https_status(server, client_context(None)) != 200
            assert https_status(server, client_context("client_selfsigned")) == 200
        finally:
            server.stop()

    def test_allowed_sans(self, tmp_path: Path) -> None:
        """client_allowed_sans: client2 (SAN test3) is let in by the good config only."""
        good = start(toolkit_tls(tmp_path / "good", "web_config_auth_client_san.good.yaml"))
        bad = start(toolkit_tls(tmp_path / "bad", "web_config_auth_client_san.bad.yaml"))
        try:
            assert https_status(good, client_context("client2_selfsigned")) == 200
            assert https_status(bad, client_context("client2_selfsigned")) != 200
        finally:
            good.stop()
            bad.stop()

    def test_verify_if_given(self, tmp_path: Path) -> None:
        """VerifyClientCertIfGiven: no certificate is fine; one that does not verify is not."""
        path = toolkit_tls(tmp_path, "web_config_noAuth.good.yml")
        with path.open("a", encoding="utf-8") as f:
            f.write('  client_ca_file: "client_selfsigned.pem"\n')
        server = start(path)
        try:
            assert https_status(server, client_context(None)) == 200
            assert https_status(server, client_context("client_selfsigned")) == 200
            assert https_status(server, client_context("client2_selfsigned")) != 200
        finally:
            server.stop()

    def test_minimum_version(self, tmp_path: Path) -> None:
        path = toolkit_tls(tmp_path, "web_config_noAuth_someCurves.good.yml")  # min TLS13
        server = start(path)
        try:
            tls12 = client_context(None)
            tls12.maximum_version = ssl.TLSVersion.TLSv1_2
            assert https_status(server, tls12) != 200
            assert https_status(server, client_context(None)) == 200
        finally:
            server.stop()


def served_certificate(server: MetricsServer) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


class TestCertificateReload:
    def test_a_renewed_certificate_is_served_from_the_next_connection(self, tmp_path: Path) -> None:
        old_cert, old_key = self_signed(tmp_path / "old")
        new_cert, new_key = self_signed(tmp_path / "new")
        live = tmp_path / "live"
        live.mkdir()
        shutil.copy(old_cert, live / "tls.crt")
        shutil.copy(old_key, live / "tls.key")
        path = live / "web.yml"
        path.write_text(
            "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n", encoding="utf-8"
        )
        server = start(path)
        try:
            der = ssl.PEM_cert_to_DER_cert
            assert served_certificate(server) == der(old_cert.read_text())
            time.sleep(0.01)  # a new mtime even on coarse clocks
            shutil.copy(new_cert, live / "tls.crt")
            shutil.copy(new_key, live / "tls.key")
            assert served_certificate(server) == der(new_cert.read_text())
        finally:
            server.stop()


class TestCommandLine:
    def config(self, tmp_path: Path, server: dict[str, object]) -> Path:
        import yaml

        path = tmp_path / "config.yaml"
        data = {
            "server": {"listen_address": "127.0.0.1", "port": 0, **server},
            "state": {"path": str(tmp_path / "state.db")},
        }
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return path

    def test_a_bad_web_config_is_one_line_and_exit_2(self, tmp_path: Path) -> None:
        from tests.support.daemon import run_cli

        web = tmp_path / "web.yml"
        web.write_text("tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n")
        config = self.config(tmp_path, {})
        for argv in (
            ["run", "--config", str(config), "--web.config.file", str(web)],
            ["check-config", str(self.config(tmp_path, {"web_config_file": str(web)}))],
        ):
            proc = run_cli(*argv)
            assert proc.returncode == 2, proc.stderr
            (line,) = proc.stderr.strip().splitlines()
            assert f"server.web_config_file: web config {web}: tls_server_config.cert_file:" in line
            assert "Traceback" not in proc.stderr

    def test_the_flag_and_the_legacy_keys_do_not_mix(self, tmp_path: Path) -> None:
        from tests.support.daemon import run_cli

        web = tmp_path / "web.yml"
        web.write_text("")
        config = self.config(tmp_path, {"basic_auth": {"username": "u", "password": "p"}})
        proc = run_cli("run", "--config", str(config), "--web.config.file", str(web))
        assert proc.returncode == 2
        assert proc.stderr.strip() == (
            "--web.config.file replaces server.tls and server.basic_auth: "
            "move them into the web config file"
        )
