"""A real nginx on loopback for tests: proxies to a tiny backend whose delay and status
the request path chooses (``/<anything>/d<ms>/s<status>``), logs JSON, serves stub_status."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from tests.support.nginx import NginxServer as SupportNginx

LOG_FORMAT = (
    'log_format kpi escape=json \'{"msec":"$msec","host":"$host",'
    '"request_uri":"$request_uri","status":"$status","request_time":"$request_time",'
    '"upstream_response_time":"$upstream_response_time","api_key":"$http_x_api_key"}\';'
)


class _Backend(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        m = re.search(r"/d(\d+)/s(\d+)", self.path)
        delay, status = (int(m.group(1)), int(m.group(2))) if m else (0, 200)
        if delay:
            time.sleep(delay / 1000)
        body = b"ok"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class NginxServer:
    """nginx (master + 1 worker) in ``root``, logging JSON to ``root/access.log``,
    in front of a backend whose delay and status the request path chooses."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.access_log = root / "access.log"
        self.backend = ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
        self.backend.daemon_threads = True
        backend_port = self.backend.server_address[1]
        self.nginx = SupportNginx(
            root,
            locations=f"""
        access_log {self.access_log} kpi;
        location = /stub_status {{ stub_status; access_log off; }}
        location / {{
            proxy_pass http://127.0.0.1:{backend_port};
            proxy_set_header Host $host;
        }}""",
            http_extra=f"    {LOG_FORMAT}",
            error_level="notice",
        )

    @property
    def port(self) -> int:
        return self.nginx.port

    @property
    def url(self) -> str:
        return self.nginx.url

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.nginx.proc

    def start(self) -> NginxServer:
        threading.Thread(target=self.backend.serve_forever, daemon=True).start()
        self.nginx.start()
        return self

    def get(self, host: str, path: str, api_key: str | None = None) -> int:
        headers = {"Host": host}
        if api_key:
            headers["X-Api-Key"] = api_key
        return httpx.get(f"{self.url}{path}", headers=headers, timeout=10).status_code

    def run(self, requests: Iterable[tuple[str, str]]) -> list[int]:
        """Send (host, path) requests, 8 at a time."""
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(lambda hp: self.get(*hp), requests))

    def reopen_logs(self) -> None:
        """What logrotate's postrotate does: USR1 makes nginx reopen its log files."""
        assert self.proc is not None
        error_log = self.root / "error.log"
        before = error_log.read_text().count("reopening logs")
        os.kill(self.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        # The master and then the worker each log "reopening logs" at notice level.
        while error_log.read_text().count("reopening logs") < before + 2:
            if time.monotonic() > deadline:
                raise RuntimeError("nginx did not reopen its access log")
            time.sleep(0.02)

    def stop(self) -> None:
        self.nginx.stop()
        self.backend.shutdown()
        self.backend.server_close()


def wait_for_lines(path: Path, n: int, timeout: float = 10) -> None:
    """nginx writes a log line just after answering: wait until ``n`` lines are there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} has fewer than {n} lines")
