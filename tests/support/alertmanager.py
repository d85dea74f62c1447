"""The real Alertmanager (Debian ``prometheus-alertmanager``) and a webhook receiver for it.

:class:`WebhookReceiver` is a loopback HTTP server that keeps every notification
Alertmanager POSTs (the documented webhook payload: ``status``, ``alerts[]`` with
``status``, ``labels``, ``annotations``, ``startsAt``, ``endsAt``).
:class:`AlertmanagerServer` runs Alertmanager on a free port, clustering off,
routing everything to that receiver with 1s grouping so tests stay quick.
"""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from tests.support.net import free_port
from tests.support.process import ReadyProcess

ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"


class WebhookReceiver:
    """Collects Alertmanager webhook notifications (one JSON document per POST)."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.notifications.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/alerts"

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def alerts(self, status: str | None = None, **labels: str) -> list[dict[str, Any]]:
        """Every alert delivered so far (in order) with that status and those labels."""
        with self._lock:
            found = [a for n in self.notifications for a in n.get("alerts", [])]
        return [
            a
            for a in found
            if (status is None or a.get("status") == status)
            and all(a.get("labels", {}).get(k) == v for k, v in labels.items())
        ]


class AlertmanagerServer:
    """Alertmanager on 127.0.0.1 routing every alert to ``webhook_url``."""

    def __init__(self, tmpdir: Path, webhook_url: str) -> None:
        self.dir = Path(tmpdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = {
            "route": {
                "receiver": "test",
                "group_by": ["alertname", "sloth_id", "severity"],
                "group_wait": "1s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "receivers": [
                {
                    "name": "test",
                    "webhook_configs": [{"url": webhook_url, "send_resolved": True}],
                }
            ],
        }
        self.log_path = self.dir / "alertmanager.log"
        self.process = ReadyProcess("alertmanager", self.log_path)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> AlertmanagerServer:
        conf = self.dir / "alertmanager.yml"
        conf.write_text(yaml.safe_dump(self.config), encoding="utf-8")
        self.process.start(
            [
                ALERTMANAGER,
                f"--config.file={conf}",
                f"--storage.path={self.dir / 'data'}",
                f"--web.listen-address={self.address}",
                "--cluster.listen-address=",  # a single instance: no gossip port
                "--log.level=warn",
            ],
            f"{self.url}/-/ready",
        )
        return self

    def stop(self) -> None:
        self.process.stop()
