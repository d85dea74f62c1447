"""A real nginx on loopback for tests: proxies to a tiny backend whose delay and status
the request path chooses (``/<anything>/d<ms>/s<status>``), logs JSON, serves stub_status."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

NGINX = "/usr/sbin/nginx"

LOG_FORMAT = (
    'log_format kpi escape=json \'{"msec":"$msec","host":"$host",'
    '"request_uri":"$request_uri","status":"$status","request_time":"$request_time",'
    '"upstream_response_time":"$upstream_response_time","api_key":"$http_x_api_key"}\';'
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    """nginx (master + 1 worker) in ``root``, logging to ``root/access.log``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.backend = ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
        self.backend.daemon_threads = True
        self.access_log = root / "access.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> NginxServer:
        threading.Thread(target=self.backend.serve_forever, daemon=True).start()
        backend_port = self.backend.server_address[1]
        for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.root / d).mkdir(exist_ok=True)
        conf = self.root / "nginx.conf"
        # As root, workers would drop to "nobody", who cannot reach a private temp dir to
        # reopen the logs after rotation.
        user = "user root;" if os.geteuid() == 0 else ""
        conf.write_text(
            f"""
{user}
worker_processes 1;
pid {self.root}/nginx.pid;
error_log {self.root}/error.log notice;
events {{ worker_connections 128; }}
http {{
    client_body_temp_path {self.root}/client_body;
    proxy_temp_path {self.root}/proxy;
    fastcgi_temp_path {self.root}/fastcgi;
    uwsgi_temp_path {self.root}/uwsgi;
    scgi_temp_path {self.root}/scgi;
    {LOG_FORMAT}
    access_log off;
    server {{
        listen 127.0.0.1:{self.port};
        access_log {self.access_log} kpi;
        location = /stub_status {{ stub_status; access_log off; }}
        location / {{
            proxy_pass http://127.0.0.1:{backend_port};
            proxy_set_header Host $host;
        }}
    }}
}}
"""
        )
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(self.root), "-c", str(conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.proc.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                httpx.get(f"{self.url}/stub_status", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not start")

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
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
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
