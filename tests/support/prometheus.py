"""The real Prometheus server and promtool, from the Debian ``prometheus`` package.

:class:`PrometheusServer` scrapes the given targets every second (config and
TSDB in a temp dir, web on a free loopback port) and reads series back through
the HTTP API. :func:`promtool_check_metrics` runs ``promtool check metrics``
on an exposition and returns what it printed (empty when it is clean).

Prometheus 2.42 scrapes a new target only after its discovery throttle, about
5 s after start (or after a reload), so a test that needs several fresh
Prometheus servers can instead keep one on an unchanged target and
:meth:`PrometheusServer.wipe` it (``admin_api=True``) between uses.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.support.net import free_port
from tests.support.process import ReadyProcess

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def promtool_check_metrics(exposition: bytes) -> str:
    """What ``promtool check metrics`` prints for ``exposition`` (stdout and stderr)."""
    proc = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=exposition, capture_output=True, timeout=30
    )
    return (proc.stdout + proc.stderr).decode().strip()


class PrometheusServer:
    """``targets`` are ``host:port`` strings; ``job`` options are merged into the scrape job."""

    def __init__(
        self,
        tmpdir: Path,
        targets: list[str],
        job: dict[str, Any] | None = None,
        rule_files: list[str] | None = None,
        extra: dict[str, Any] | None = None,
        admin_api: bool = False,
    ) -> None:
        self.dir = Path(tmpdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        scrape = {
            "job_name": "exporter",
            "scrape_interval": "1s",
            "scrape_timeout": "1s",
            "static_configs": [{"targets": targets}],
            **(job or {}),
        }
        self.config: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [scrape],
            **(extra or {}),
        }
        if rule_files:
            self.config["rule_files"] = rule_files
        self.admin_api = admin_api
        self.log_path = self.dir / "prometheus.log"
        self.process = ReadyProcess("prometheus", self.log_path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        conf = self.dir / "prometheus.yml"
        conf.write_text(yaml.safe_dump(self.config), encoding="utf-8")
        self.process.start(
            [
                PROMETHEUS,
                f"--config.file={conf}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                *(["--web.enable-admin-api"] if self.admin_api else []),
                "--log.level=warn",
            ],
            f"{self.url}/-/ready",
        )
        return self

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the ``data`` member of a successful answer."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as resp:
            payload = json.load(resp)
        if payload.get("status") != "success":
            raise RuntimeError(f"prometheus API error: {payload}")
        return payload["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; the result vector."""
        data = self.api("query", query=promql)
        return list(data["result"])

    def now(self) -> float:
        """Prometheus' own clock (epoch seconds): the time its samples are stamped with."""
        return float(self.api("query", query="time()")["result"][1])

    def wipe(self) -> None:
        """Delete every sample stored so far (scraped or recorded by rules); needs ``admin_api``.

        The deletion ends at Prometheus' own "now" (its clock, which faketime does not
        move), so the samples it appends afterwards are kept.
        """
        now = self.now()
        for path, params in (
            ("delete_series", {"match[]": '{__name__=~".+"}', "end": f"{now:.3f}"}),
            ("clean_tombstones", {}),
        ):
            query = urllib.parse.urlencode(params)
            request = urllib.request.Request(
                f"{self.url}/api/v1/admin/tsdb/{path}?{query}", method="POST"
            )
            with urllib.request.urlopen(request, timeout=30) as resp:
                assert resp.status == 204, (path, resp.status)

    def targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets")["activeTargets"])

    def stop(self) -> None:
        self.process.stop()
