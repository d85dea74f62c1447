"""No configured secret reaches a log line, the printed config, ``/metrics`` or the state file.

Every HTTP source runs once at DEBUG (httpx and httpcore debug included) against an
upstream that fails and echoes the request back: its line, every header, in the
body of a 500 or a 401, as a JSON error body and as a header dump. Then the log,
``check-config``'s output, the exposition and the state database's bytes are
searched for every secret, in every form an upstream echoes it (plain, base64
``user:token`` as Jenkins' Basic auth sends it, percent-encoded). None is found.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml

from exporter.core.redact import REDACTOR, RedactingFilter
from tests.support.daemon import run_cli

SECRETS = {
    "github": "ghp_S3cretGitHubToken0123456789abcdefAB",
    "gitlab": "glpat-S3cretGitLabToken0123",
    "jenkins": "11S3cretJenkinsApiToken00000000aa",
    "kong": "S3cretKongAdminToken-7f3a",
    "backstage": "S3cretBackstageToken-91c2",
    "azure": "S3cretAzureClientSecret~x8Q",
    "prometheus": "S3cretPrometheusBearer-55d1",
    "probe_header": "S3cretProbeBearer-e0f1",
    "url_password": "S3cretUrlPassw0rd",
    "basic_auth": "S3cretScrapePassw0rd",
    "focus_sig": "S3cretFocusSig-3b9e",
}
JENKINS_USER = "exporter-bot"


def forms(secret: str) -> list[str]:
    """Every spelling of ``secret`` an upstream echo or a log could carry."""
    users = (JENKINS_USER, "probe", "prometheus")
    return [
        secret,
        quote(secret, safe=""),
        base64.b64encode(secret.encode()).decode(),
        *(base64.b64encode(f"{user}:{secret}".encode()).decode() for user in users),
    ]


class EchoUpstream:
    """Answers every request with an error whose body quotes the request, headers and all."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _echo(self) -> None:
                request = f"{self.command} {self.path}\n" + "".join(
                    f"{k}: {v}\n" for k, v in self.headers.items()
                )
                upstream.seen.append(request)
                # GitLab and GitHub answer 401 with a JSON message; a misbehaving proxy
                # echoes the whole request back. Both are quoted into error messages.
                status = 401 if "/gitlab/" in self.path or "/azure/" in self.path else 500
                body = json.dumps(
                    {"message": "failed", "request": request, "headers": dict(self.headers)}
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_HEAD = _echo

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> EchoUpstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def upstream() -> Iterator[EchoUpstream]:
    with EchoUpstream() as server:
        yield server


def config(url: str, state: Path) -> dict[str, Any]:
    host = url.removeprefix("http://")
    s = SECRETS
    return {
        "state": {"path": str(state)},
        "server": {
            "listen_address": "127.0.0.1",
            "port": 0,
            "basic_auth": {"username": "prometheus", "password": s["basic_auth"]},
        },
        "services": [
            {
                "name": "checkout",
                "team": "payments",
                "ci": [
                    {"github": "acme/checkout"},
                    {"gitlab": "acme/checkout"},
                    {"jenkins": "checkout-deploy"},
                ],
                "probes": [
                    {
                        "name": "health",
                        "url": f"{url}/probe/health",
                        "headers": {"Authorization": f"Bearer {s['probe_header']}"},
                        "timeout": "2s",
                    },
                    {
                        "name": "login",
                        "url": f"http://probe:{s['url_password']}@{host}/probe/login",
                        "timeout": "2s",
                    },
                ],
            }
        ],
        "sources": {
            "github": {
                "base_url": f"{url}/github",
                "token": s["github"],
                "orgs": [{"name": "acme"}],
            },
            "gitlab": {"base_url": f"{url}/gitlab", "token": s["gitlab"]},
            "jenkins": {
                "base_url": f"{url}/jenkins",
                "username": JENKINS_USER,
                "api_token": s["jenkins"],
            },
            "kong": {
                "status_url": f"{url}/kong-status",
                "admin_url": f"{url}/kong-admin",
                "admin_token": s["kong"],
            },
            "backstage": {"base_url": f"{url}/backstage/api/catalog", "token": s["backstage"]},
            "azure_cost": {
                "tenant_id": "tenant-1",
                "client_id": "client-1",
                "client_secret": s["azure"],
                "scopes": ["/subscriptions/5a4d7e00-0000-4000-8000-00000000beef"],
                "login_url": f"{url}/azure",
                "management_url": f"{url}/azure",
            },
            "prometheus": {
                "url": f"{url}/prometheus",
                "bearer_token": s["prometheus"],
                "queries": {
                    "requests": "sum by (service) (increase(http_requests_total[1m]))",
                    "errors_5xx": "sum by (service) (increase(http_errors_total[1m]))",
                },
            },
            "focus": {"urls": [f"{url}/focus/export.csv?sig={s['focus_sig']}&sv=2022"]},
            "probe": {"interval": "30s"},
        },
        # The echoing Backstage never lists: the others wait only this long for it.
        "catalog": {"first_load_timeout": 0.5},
    }


def leaks(text: str | bytes) -> list[str]:
    data = text if isinstance(text, str) else text.decode("latin-1")
    return [name for name, secret in SECRETS.items() for form in forms(secret) if form in data]


class TestNoSecretLeaks:
    def test_every_source_at_debug_against_echoing_upstreams_leaks_nothing(
        self, tmp_path: Path, upstream: EchoUpstream
    ) -> None:
        state = tmp_path / "state.db"
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config(upstream.url, state)), encoding="utf-8")

        checked = run_cli("check-config", str(path))
        assert checked.returncode == 0, checked.stderr
        assert leaks(checked.stdout + checked.stderr) == []
        # The printed config still shows where each secret goes, masked.
        printed = json.loads(checked.stdout)
        assert printed["services"][0]["probes"][0]["headers"]["Authorization"] == "***"
        assert ":***@" in printed["services"][0]["probes"][1]["url"]

        once = run_cli("--log-level", "DEBUG", "once", "--config", str(path), timeout=120)
        assert once.returncode == 1, once.stderr  # every source failed, as it should
        log = once.stderr
        assert "httpcore" in log and "DEBUG" in log  # the debug lines were there to leak
        assert "Traceback" not in log
        # Each secret really went upstream and came back in an error body.
        sent = "\n".join(upstream.seen)
        # (The Prometheus source's first poll only sets its starting point: no request.)
        for name in ("github", "gitlab", "kong", "backstage", "probe_header"):
            assert SECRETS[name] in sent, name
        assert forms(SECRETS["jenkins"])[3] in sent
        assert forms(SECRETS["url_password"])[4] in sent
        assert f"sig={SECRETS['focus_sig']}" in sent
        assert leaks(log) == []
        assert leaks(once.stdout) == []  # the exposition
        for file in tmp_path.glob("state.db*"):
            assert leaks(file.read_bytes()) == [], file.name


class TestRedactor:
    """The patterns that hide credentials nobody told the redactor about."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("Authorization: Bearer abc.def", "Authorization: ***"),
            ('{"PRIVATE-TOKEN": "glpat-xyz"}', '{"PRIVATE-TOKEN": "***"}'),
            ("'private-token': 'glpat-xyz'", "'private-token': '***'"),
            ("X-Api-Key=k123", "X-Api-Key=***"),
            ("cookie: session=abc; other=def", "cookie: ***; other=def"),
            ("GET https://bob:hunter22@example.com/x", "GET https://bob:***@example.com/x"),
            ("https://ghp_tok@github.com/a.git", "https://***@github.com/a.git"),
            ("/api?private_token=p1&page=2", "/api?private_token=***&page=2"),
            ("/x?X-Amz-Signature=abc&X-Amz-Date=1", "/x?X-Amz-Signature=***&X-Amz-Date=1"),
            ('{"client_secret": "s3"}', '{"client_secret": "***"}'),
            ("nothing to hide here", "nothing to hide here"),
        ],
    )
    def test_credential_shapes_are_masked(self, text: str, expected: str) -> None:
        assert REDACTOR.text(text) == expected

    def test_log_records_are_escaped_capped_and_redacted(self) -> None:
        import logging

        record = logging.LogRecord(
            "exporter.test", logging.WARNING, __file__, 1, "entity %s: %s", None, None
        )
        record.args = ("evil\nFAKE ERROR line\x00", "Authorization: Basic dXNlcjpwdw==")
        RedactingFilter(max_message=60).filter(record)
        assert record.getMessage() == ("entity evil\\nFAKE ERROR line\\x00: Authorization: ***")
        long = logging.LogRecord("x", logging.INFO, __file__, 1, "y" * 100, None, None)
        RedactingFilter(max_message=60).filter(long)
        assert long.getMessage() == "y" * 60 + "... (40 more characters)"
