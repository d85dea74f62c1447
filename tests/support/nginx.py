"""A real nginx on loopback, started from the Debian binary with a generated config.

``NginxServer(tmpdir, locations)`` writes ``nginx.conf`` into ``tmpdir`` (pid,
logs and every temp dir live there too), listens on ``127.0.0.1:<free port>``
and runs ``nginx -p tmpdir -c nginx.conf -g 'daemon off;'`` in the foreground,
so the test owns the process and stops it. ``locations`` is the body of the
``server`` block (``tls=(cert, key)`` serves HTTPS), e.g.::

    location = /ok { return 200 '{"status":"ok"}'; }
    location /slow/ { proxy_pass http://127.0.0.1:PORT/; }
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.support.net import free_port, port_open, wait_until

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_available() -> bool:
    return os.access(NGINX, os.X_OK)


class NginxServer:
    def __init__(
        self,
        tmpdir: Path,
        locations: str,
        http_extra: str = "",
        tls: tuple[Path, Path] | None = None,
        error_level: str = "warn",
    ) -> None:
        self.dir = Path(tmpdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.locations = locations
        self.http_extra = http_extra
        # (certificate, key): serve HTTPS instead of HTTP.
        self.tls = tls
        # "notice" also logs signals handled, such as "reopening logs" after USR1.
        self.error_level = error_level
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        d = self.dir
        # As root, nginx would hand requests to 'nobody', who cannot enter a private tmpdir.
        user = "user root root;\n" if os.geteuid() == 0 else ""
        temps = "\n".join(
            f"    {kind}_temp_path {d / (kind + '_temp')};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        listen = f"listen 127.0.0.1:{self.port}"
        if self.tls:
            cert, key = self.tls
            listen += f" ssl;\n        ssl_certificate {cert};\n        ssl_certificate_key {key}"
        return f"""{user}worker_processes 1;
pid {d / "nginx.pid"};
error_log {d / "error.log"} {self.error_level};
events {{ worker_connections 256; }}
http {{
    access_log {d / "access.log"};
{temps}
    default_type application/octet-stream;
{self.http_extra}
    server {{
        {listen};
        server_name localhost;
{self.locations}
    }}
}}
"""

    def start(self) -> NginxServer:
        conf = self.dir / "nginx.conf"
        conf.write_text(self.config_text(), encoding="utf-8")
        self.proc = subprocess.Popen(
            [
                NGINX,
                "-p",
                str(self.dir),
                "-c",
                str(conf),
                "-e",
                str(self.dir / "error.log"),
                "-g",
                "daemon off;",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_until(
                lambda: (
                    self.proc is not None and (self.proc.poll() is not None or port_open(self.port))
                ),
                timeout=10,
                what=f"nginx on port {self.port}",
            )
        except TimeoutError:
            self.stop()
            raise
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            log = (self.dir / "error.log").read_text() if (self.dir / "error.log").exists() else ""
            raise RuntimeError(f"nginx exited with {self.proc.returncode}: {err}\n{log}")
        return self

    def access_log(self) -> list[str]:
        path = self.dir / "access.log"
        return path.read_text().splitlines() if path.exists() else []

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # fast shutdown
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
