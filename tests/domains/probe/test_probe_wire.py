"""One HTTP probe against real servers: one deadline, each failure's reason, TLS facts.

nginx (the Debian binary, on a free loopback port) answers ``/ok`` and ``/down``,
over HTTP and over HTTPS with a certificate chain the test makes (a leaf for
127.0.0.1 signed by a test CA). The target process of :mod:`tests.support.targets`
drips a body one byte at a time and redirects. A port where nothing listens is
the refused target.
"""

from __future__ import annotations

import asyncio
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.domains.probe.sources.http import HttpRequest, basic_auth, probe_http
from exporter.domains.probe.sources.wire import Outcome
from tests.support.net import closed_port
from tests.support.nginx import NginxServer, nginx_available
from tests.support.targets import TargetServer
from tests.support.tls import not_after, signed_chain

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not nginx_available(), reason="nginx is not installed"),
]

ROOT = Path(__file__).resolve().parents[3]
PROMTOOL = "promtool"
LOCATIONS = """
    location = /ok { default_type application/json; return 200 '{"status":"ok"}'; }
    location = /down { default_type application/json; return 503 '{"status":"unavailable"}'; }
"""


@pytest.fixture(scope="module")
def targets() -> Iterator[TargetServer]:
    server = TargetServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxServer]:
    server = NginxServer(tmp_path_factory.mktemp("nginx-http"), LOCATIONS).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A leaf valid 3 days, signed by a CA valid 30 days."""
    return signed_chain(tmp_path_factory.mktemp("tls"), ca_days=30, leaf_days=3)


@pytest.fixture(scope="module")
def secure(
    tmp_path_factory: pytest.TempPathFactory, chain: tuple[Path, Path, Path]
) -> Iterator[NginxServer]:
    full, key, _ca = chain
    server = NginxServer(tmp_path_factory.mktemp("nginx-tls"), LOCATIONS, tls=(full, key)).start()
    yield server
    server.stop()


def probe(url: str, **kw: Any) -> Outcome:
    return asyncio.run(probe_http(HttpRequest(url=url, **kw)))


class TestOneDeadline:
    def test_a_body_trickling_in_times_out_at_the_deadline(self, targets: TargetServer) -> None:
        """40 bytes, one every 100 ms (4 s in all; each gap far under the timeout): with a
        1 s timeout the probe ends `timeout` at 1 s, ± 10%."""
        outcome = probe(f"{targets.url}/drip/40/100", timeout=1.0)
        assert outcome.reason == "timeout"
        assert 0.9 <= outcome.duration <= 1.1

    def test_a_body_that_trickles_in_within_the_deadline_succeeds(
        self, targets: TargetServer
    ) -> None:
        """5 bytes over 0.5 s with a 2 s timeout: success, and the time is in `transfer`."""
        outcome = probe(f"{targets.url}/drip/5/100", timeout=2.0, body_regex="^x{5}$")
        assert outcome.reason == ""
        assert 0.5 <= outcome.duration < 1.0
        assert outcome.phases.seconds["transfer"] >= 0.4

    def test_the_deadline_bounds_the_wait_for_the_answer_too(self, targets: TargetServer) -> None:
        outcome = probe(f"{targets.url}/delay/3000", timeout=0.5)
        assert outcome.reason == "timeout"
        assert 0.45 <= outcome.duration <= 0.55


class TestReasons:
    def test_an_expected_answer_succeeds_with_its_phases_and_version(
        self, web: NginxServer
    ) -> None:
        outcome = probe(f"{web.url}/ok", body_regex='"status":"ok"')
        assert (outcome.reason, outcome.status_code, outcome.http_version) == ("", 200, "1.1")
        assert set(outcome.phases.seconds) == {"resolve", "connect", "processing", "transfer"}
        assert sum(outcome.phases.seconds.values()) <= outcome.duration

    def test_a_503_is_status(self, web: NginxServer) -> None:
        outcome = probe(f"{web.url}/down")
        assert (outcome.reason, outcome.status_code) == ("status", 503)

    def test_a_closed_port_is_connect(self) -> None:
        outcome = probe(f"http://127.0.0.1:{closed_port()}/health")
        assert (outcome.reason, outcome.status_code) == ("connect", None)

    def test_a_body_mismatch_is_body(self, web: NginxServer) -> None:
        outcome = probe(f"{web.url}/ok", body_regex="degraded")
        assert (outcome.reason, outcome.status_code) == ("body", 200)

    def test_a_name_that_does_not_resolve_is_resolve(self) -> None:
        assert probe("http://no-such-host.invalid/health").reason == "resolve"

    def test_the_status_is_judged_before_the_body(self, web: NginxServer) -> None:
        assert probe(f"{web.url}/down", body_regex="unavailable").reason == "status"


class TestRedirects:
    def test_redirects_are_followed_and_counted(self, targets: TargetServer) -> None:
        outcome = probe(f"{targets.url}/redirect/3")
        assert (outcome.reason, outcome.status_code, outcome.redirects) == ("", 200, 3)

    def test_not_following_judges_the_redirect_itself(self, targets: TargetServer) -> None:
        outcome = probe(f"{targets.url}/redirect/3", follow_redirects=False)
        assert (outcome.reason, outcome.status_code, outcome.redirects) == ("status", 302, 0)
        ok = probe(
            f"{targets.url}/redirect/1", follow_redirects=False, expect_status=frozenset({302})
        )
        assert ok.reason == ""


class TestTls:
    def test_an_untrusted_certificate_is_tls(self, secure: NginxServer) -> None:
        outcome = probe(f"{secure.url}/ok")
        assert (outcome.reason, outcome.status_code) == ("tls", None)

    def test_a_trusted_ca_file_makes_it_succeed_and_tells_the_version(
        self, secure: NginxServer, chain: tuple[Path, Path, Path]
    ) -> None:
        outcome = probe(f"{secure.url}/ok", tls_ca_file=str(chain[2]))
        assert (outcome.reason, outcome.status_code) == ("", 200)
        assert outcome.tls.version in ("TLSv1.2", "TLSv1.3")
        assert set(outcome.phases.seconds) == {
            "resolve",
            "connect",
            "tls",
            "processing",
            "transfer",
        }

    def test_a_3_day_certificate_expiry_is_exact_to_the_second(
        self, secure: NginxServer, chain: tuple[Path, Path, Path]
    ) -> None:
        """The leaf (3 days) expires before its CA (30 days): the leaf's notAfter, exactly."""
        outcome = probe(f"{secure.url}/ok", tls_verify=False)
        assert outcome.reason == ""
        assert outcome.tls.not_after == not_after(chain[2].parent / "leaf.crt")

    def test_the_earliest_notafter_in_the_chain_wins(self, tmp_path: Path) -> None:
        """A CA valid 2 days over a leaf valid 3: the CA's notAfter is the chain's expiry."""
        full, key, ca = signed_chain(tmp_path / "tls", ca_days=2, leaf_days=3)
        server = NginxServer(tmp_path / "nginx", LOCATIONS, tls=(full, key)).start()
        try:
            outcome = probe(f"{server.url}/ok", tls_ca_file=str(ca))
        finally:
            server.stop()
        assert outcome.reason == ""
        assert outcome.tls.not_after == not_after(ca)
        assert outcome.tls.not_after < not_after(tmp_path / "tls" / "leaf.crt")

    def test_the_expiry_alert_fires_on_the_probed_value(
        self, secure: NginxServer, tmp_path: Path
    ) -> None:
        """promtool runs the committed alert rule over the probed expiry: 3 days left fires."""
        outcome = probe(f"{secure.url}/ok", tls_verify=False)
        assert outcome.tls.not_after is not None
        # promtool's time() starts at 0: shift the probed expiry by the same amount as now.
        now = time.time()
        remaining = int(outcome.tls.not_after - now)
        assert 2 * 86400 < remaining <= 3 * 86400
        fixture = tmp_path / "cert.test.yml"
        fixture.write_text(
            textwrap.dedent(
                f"""\
                rule_files:
                  - {ROOT / "alerts" / "exporter.rules.yml"}
                evaluation_interval: 1m
                tests:
                  - interval: 1m
                    input_series:
                      - series: platform_probe_tls_cert_expiry_timestamp_seconds{{service="web",team="t",probe="tls"}}
                        values: {remaining}x10
                    alert_rule_test:
                      - eval_time: 5m
                        alertname: PlatformProbeCertificateExpiresSoon
                        exp_alerts:
                          - exp_labels: {{severity: ticket, service: web, team: t, probe: tls}}
                            exp_annotations:
                              summary: TLS certificate of web (tls) expires in under 14 days.
                              description: The earliest certificate in the chain that web serves to probe tls expires within 14 days; renew it.
                """
            ),
            encoding="utf-8",
        )
        proc = subprocess.run(
            [PROMTOOL, "test", "rules", str(fixture)], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


class TestUserinfo:
    """A check URL's ``user:password@`` is sent as Basic auth, as HTTP clients do (RFC 7617)."""

    def test_userinfo_becomes_a_basic_authorization_header(self) -> None:
        # base64("probe:p@ss word") with the percent-escapes of the URL undone.
        assert basic_auth("https://probe:p%40ss%20word@svc.test/health", ()) == [
            ("Authorization", "Basic cHJvYmU6cEBzcyB3b3Jk")
        ]

    def test_a_url_without_user_or_a_check_with_its_own_authorization_adds_none(self) -> None:
        assert basic_auth("https://svc.test/health", ()) == []
        own = (("authorization", "Bearer t"),)
        assert basic_auth("https://probe:pw@svc.test/health", own) == []
