"""The exporter-toolkit web config file: the toolkit's own examples load unchanged, its
bad ones are refused with one line naming the key, and the TLS keys map onto OpenSSL.

The files under tests/data/exporter-toolkit are copied from prometheus/exporter-toolkit
(docs/web-config.yml, web/web-config.yml, web/testdata/); see the README there.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from exporter.core.webconfig import (
    CIPHER_SUITES,
    WebConfigError,
    WebConfigWatcher,
    load_web_config,
)

TOOLKIT = Path(__file__).resolve().parents[1] / "data" / "exporter-toolkit"

LOADS = [
    "docs-web-config.yml",
    "web-web-config.yml",
    "tls_config_noAuth.requireandverifyclientcert.good.yml",
    "web_config_noAuth.good.yml",
    "web_config_noAuth.good.blocking.yml",
    "web_config_noAuth_allCiphers.good.yml",
    "web_config_noAuth_allCurves.good.yml",
    "web_config_noAuth_noHTTP2.good.yml",
    "web_config_noAuth_someCiphers.good.yml",
    "web_config_noAuth_someCiphers_noOrder.good.yml",
    "web_config_noAuth_someCurves.good.yml",
    "web_config_noAuth_tlsInline.good.yml",
    "web_config_users.good.yml",
    "web_config_users_noTLS.good.yml",
    "web_config_headers.good.yml",
    "web_config_empty.yml",
    "web_config_rate_limiter_nonblocking.yaml",
    "web_config_rate_limiter_one_second.yaml",
    "web_config_auth_client_san.good.yaml",
    # Refused by the toolkit only when a client connects (a SAN not allowed, no CA to
    # verify against), or only for HTTP/2, which this server does not speak:
    "web_config_auth_client_san.bad.yaml",
    "web_config_auth_clientCAs_missing.bad.yml",
    "web_config_noAuth_noHTTP2Cipher.bad.yml",
]

REFUSED = {
    "web_config_auth_clientCAs_invalid.bad.yml": "tls_server_config.client_auth_type: client CA's have been configured without a Client Auth Policy",
    "web_config_auth_user_list_invalid.bad.yml": "basic_auth_users: john: not a bcrypt hash",
    "web_config_headers_content_type_options.bad.yml": "http_server_config.headers: invalid value for X-Content-Type-Options",
    "web_config_headers_extra_header.bad.yml": "http_server_config.headers: HTTP header 'Content-Type' can not be configured",
    "web_config_headers_frame_options.bad.yml": "http_server_config.headers: invalid value for X-Frame-Options",
    "web_config_junk.yml": "(top level): must be a mapping",
    "web_config_junk_key.yml": "tls_server_config.cert_filse: unknown key",
    "web_config_noAuth.bad.yml": "tls_server_config.client_auth_type: client CA's have been configured without a Client Auth Policy",
    "web_config_noAuth_certPath_empty.bad.yml": "tls_server_config.cert_file: missing one of cert or cert_file",
    "web_config_noAuth_certPath_invalid.bad.yml": "tls_server_config.cert_file: cannot read",
    "web_config_noAuth_certPath_keyPath_empty.bad.yml": "tls_server_config.client_auth_type: invalid ClientAuth: x",
    "web_config_noAuth_certPath_keyPath_invalid.bad.yml": "tls_server_config.cert_file: cannot read",
    "web_config_noAuth_cert_empty.bad.yml": "tls_server_config.cert_file: missing one of cert or cert_file",
    "web_config_noAuth_inventedCiphers.bad.yml": "tls_server_config.cipher_suites: unknown cipher: TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA2048",
    "web_config_noAuth_inventedCurves.bad.yml": "tls_server_config.curve_preferences: unknown curve: CurveP257",
    "web_config_noAuth_keyPath_empty.bad.yml": "tls_server_config.key_file: missing one of key or key_file",
    "web_config_noAuth_keyPath_invalid.bad.yml": "tls_server_config.cert_file: cannot read",
    "web_config_noAuth_key_empty.bad.yml": "tls_server_config.key_file: missing one of key or key_file",
    "web_config_noAuth_wrongTLSVersion.bad.yml": "tls_server_config.min_version: unknown TLS version: TLS111",
    # A certificate required but not verified: Python's ssl cannot do that (see the module).
    "tls_config_noAuth.requireanyclientcert.good.yml": "tls_server_config.client_auth_type: RequireAnyClientCert (a client certificate required but not verified) is not supported",
    "tls_config_noAuth.requireanyclientcertkeyinline.good.yml": "tls_server_config.client_auth_type: RequireAnyClientCert (a client certificate required but not verified) is not supported",
}


class TestToolkitFiles:
    def test_every_toolkit_file_is_listed_here(self) -> None:
        """Each copied config is either expected to load or expected to be refused."""
        files = {p.name for p in TOOLKIT.iterdir() if p.suffix in (".yml", ".yaml")}
        assert files == set(LOADS) | set(REFUSED)

    @pytest.mark.parametrize("name", LOADS)
    def test_loads_unchanged(self, name: str) -> None:
        load_web_config(TOOLKIT / name)

    @pytest.mark.parametrize(("name", "message"), sorted(REFUSED.items()))
    def test_refused_with_the_key_named(self, name: str, message: str) -> None:
        with pytest.raises(WebConfigError) as caught:
            load_web_config(TOOLKIT / name)
        text = str(caught.value)
        assert text.startswith(f"web config {TOOLKIT / name}: {message}")
        assert "\n" not in text

    def test_the_documented_sample(self) -> None:
        """docs/web-config.yml: TLS from files beside it, two bcrypt users, 1 request/s with
        bursts of 20."""
        config = load_web_config(TOOLKIT / "docs-web-config.yml")
        assert config.tls is not None
        assert config.tls.context.verify_mode == ssl.CERT_NONE
        assert config.tls.context.minimum_version == ssl.TLSVersion.TLSv1_2
        assert config.tls.context.maximum_version == ssl.TLSVersion.TLSv1_3
        assert sorted(config.users) == ["alice", "bob"]
        assert config.users["alice"].startswith(b"$2y$10$")
        assert config.rate_limit == (1.0, 20)
        assert config.files == (
            TOOLKIT / "docs-web-config.yml",
            TOOLKIT / "server.crt",
            TOOLKIT / "server.key",
        )

    def test_client_auth_and_versions(self) -> None:
        verify = load_web_config(TOOLKIT / "tls_config_noAuth.requireandverifyclientcert.good.yml")
        assert verify.tls is not None and verify.tls.context.verify_mode == ssl.CERT_REQUIRED
        if_given = load_web_config(TOOLKIT / "web_config_noAuth.good.yml")
        assert if_given.tls is not None and if_given.tls.context.verify_mode == ssl.CERT_OPTIONAL
        tls13 = load_web_config(TOOLKIT / "web_config_noAuth_someCurves.good.yml")
        assert tls13.tls is not None
        assert tls13.tls.context.minimum_version == ssl.TLSVersion.TLSv1_3

    def test_cipher_suites_for_tls12(self) -> None:
        config = load_web_config(TOOLKIT / "web_config_noAuth_someCiphers.good.yml")
        assert config.tls is not None
        tls12 = {c["name"] for c in config.tls.context.get_ciphers() if c["protocol"] == "TLSv1.2"}
        assert tls12 == {"ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384"}

    def test_prefer_server_cipher_suites_false(self) -> None:
        config = load_web_config(TOOLKIT / "web_config_noAuth_someCiphers_noOrder.good.yml")
        assert config.tls is not None
        assert not config.tls.context.options & ssl.OP_CIPHER_SERVER_PREFERENCE

    def test_allowed_sans(self) -> None:
        config = load_web_config(TOOLKIT / "web_config_auth_client_san.good.yaml")
        assert config.tls is not None
        assert config.tls.allowed_sans == {"one", "test3", "two"}

    def test_headers(self) -> None:
        config = load_web_config(TOOLKIT / "web_config_headers.good.yml")
        assert dict(config.headers)["X-Frame-Options"] == "deny"
        assert dict(config.headers)["X-XSS-Protection"] == "1"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_cipher_names_match_openssl() -> None:
    """The IANA (Go) names map to the OpenSSL names ``openssl ciphers -stdname`` prints."""
    out = subprocess.run(
        ["openssl", "ciphers", "-stdname", "ALL"], capture_output=True, text=True, check=True
    ).stdout
    by_iana = {}
    for line in out.splitlines():
        iana, _, rest = line.partition(" - ")
        by_iana[iana.strip()] = rest.split()[0]
    for iana, openssl_name in CIPHER_SUITES.items():
        assert by_iana[iana] == (openssl_name or iana), iana


class TestProblems:
    def write(self, tmp_path: Path, text: str) -> Path:
        path = tmp_path / "web.yml"
        path.write_text(text, encoding="utf-8")
        return path

    def test_duplicate_keys_are_refused(self, tmp_path: Path) -> None:
        path = self.write(tmp_path, "basic_auth_users:\n  a: x\n  a: y\n")
        with pytest.raises(WebConfigError, match="duplicate key 'a'"):
            load_web_config(path)

    def test_a_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(WebConfigError, match=r"web config .*nope.yml: cannot read the file"):
            load_web_config(tmp_path / "nope.yml")

    def test_min_above_max(self, tmp_path: Path) -> None:
        shutil.copy(TOOLKIT / "server.crt", tmp_path)
        shutil.copy(TOOLKIT / "server.key", tmp_path)
        path = self.write(
            tmp_path,
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            "  min_version: TLS13\n  max_version: TLS12\n",
        )
        with pytest.raises(WebConfigError, match="min_version: TLS13 is above max_version TLS12"):
            load_web_config(path)

    def test_a_key_that_does_not_match_the_certificate(self, tmp_path: Path) -> None:
        shutil.copy(TOOLKIT / "server.crt", tmp_path)
        shutil.copy(TOOLKIT / "client_selfsigned.key", tmp_path)
        path = self.write(
            tmp_path,
            "tls_server_config:\n  cert_file: server.crt\n  key_file: client_selfsigned.key\n",
        )
        with pytest.raises(WebConfigError, match="cert_file: cannot load the certificate with"):
            load_web_config(path)

    def test_a_hash_is_never_printed(self, tmp_path: Path) -> None:
        path = self.write(tmp_path, "basic_auth_users:\n  john: hunter2\n")
        with pytest.raises(WebConfigError) as caught:
            load_web_config(path)
        assert "hunter2" not in str(caught.value)


class TestWatcher:
    def test_reloads_after_a_change_and_fails_closed_on_a_bad_one(self, tmp_path: Path) -> None:
        path = tmp_path / "web.yml"
        path.write_text("rate_limit:\n  interval: 1s\n  burst: 5\n", encoding="utf-8")
        watcher = WebConfigWatcher(lambda: load_web_config(path))
        assert watcher.current().rate_limit == (1.0, 5)
        path.write_text("rate_limit:\n  interval: 2s\n  burst: 7\n", encoding="utf-8")
        assert watcher.current().rate_limit == (2.0, 7)
        path.write_text("rate_limit: [\n", encoding="utf-8")
        with pytest.raises(WebConfigError, match="invalid YAML"):
            watcher.current()
        path.write_text("rate_limit:\n  interval: 3s\n  burst: 1\n", encoding="utf-8")
        assert watcher.current().rate_limit == (3.0, 1)
