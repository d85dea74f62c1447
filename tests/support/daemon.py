"""The exporter as a real process: ``python -m exporter run --config FILE``.

:class:`DaemonProcess` writes the config it is given (YAML-shaped data; the
server port is filled in with a free one), starts the daemon with the repo root
as working directory and on ``PYTHONPATH`` (so the checkout under test is the
one that runs), waits for ``/healthz``, and can stop it with SIGTERM or kill it
with SIGKILL. Its stderr (the log) is kept in ``log_path``.


:class:`DemoProcess` runs ``python -m exporter demo`` (the simulated platform and
the daemon in one process), optionally ``--as-of`` an instant, and reads back the
config it generated.

``run_cli(..., at=)`` runs a command under libfaketime (Debian ``faketime``), its
wall clock starting at that instant and running at the real pace, monotonic time
left real (``FAKETIME_DONT_FAKE_MONOTONIC=1``). The library is preloaded into the
command itself rather than through the ``faketime`` wrapper, which would stand
between the test and the command's signals.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from exporter.core.clock import utc_datetime
from tests.support import internal
from tests.support.faketime import with_sleep_repaired, without_faketime
from tests.support.net import free_port, http_get, wait_until
from tests.support.paths import REPO_ROOT

FAKETIME = shutil.which("faketime") or "/usr/bin/faketime"
# Where Debian's faketime wrapper finds the library ($LIB is the loader's own multiarch dir).
LIBFAKETIME = "/usr/$LIB/faketime/libfaketime.so.1"


def exporter_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a subprocess running this checkout's ``exporter``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLATFORM_KPI_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return with_sleep_repaired(env)


def faketime_env(at: float, env: dict[str, str]) -> dict[str, str]:
    """``env`` for a process whose wall clock starts at ``at`` and runs on (libfaketime).

    The test process may itself run under faketime (the suite is checked that way):
    the child's start is then given afresh, as an absolute instant, not inherited.
    """
    if not Path(FAKETIME).exists():
        raise RuntimeError("faketime is not installed: scripts/test installs the Debian package")
    env = without_faketime(env)
    env["LD_PRELOAD"] = LIBFAKETIME
    # "@..." starts the clock there when the process starts and lets it run; TZ=UTC makes
    # libfaketime read the instant as UTC.
    env["FAKETIME"] = "@" + utc_datetime(at).strftime("%Y-%m-%d %H:%M:%S")
    env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
    env["TZ"] = "UTC"
    return with_sleep_repaired(env)


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, at: float | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m exporter ARGS`` from the repo root (under faketime from ``at``, if given);
    returns the finished process."""
    full_env = exporter_env(env)
    done = subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        cwd=REPO_ROOT,
        env=full_env if at is None else faketime_env(at, full_env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    internal.note_log(" ".join(args[:1]), done.stderr)
    return done


class DaemonProcess:
    def __init__(self, tmpdir: Path, config: dict[str, Any], env: dict[str, str] | None = None):
        self.dir = Path(tmpdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = config
        server = self.config.setdefault("server", {})
        server.setdefault("listen_address", "127.0.0.1")
        if not server.get("port"):
            server["port"] = free_port()
        self.config.setdefault("state", {}).setdefault("path", str(self.dir / "state.db"))
        self.config_path = self.dir / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config), encoding="utf-8")
        self.env = env
        self.log_path = self.dir / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def port(self) -> int:
        return int(self.config["server"]["port"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def state_path(self) -> Path:
        return Path(self.config["state"]["path"])

    def start(self, wait: bool = True) -> DaemonProcess:
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"--- start {self.starts}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "run", "--config", str(self.config_path)],
            cwd=REPO_ROOT,
            env=exporter_env(self.env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if wait:
            wait_until(self._healthy, timeout=20, what=f"exporter /healthz on {self.port}")
        return self

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"exporter exited with {self.proc.returncode}: {self.log()}")
        return http_get(f"{self.url}/healthz", timeout=1)[0] == 200

    def metrics(self) -> bytes:
        status, _, body = http_get(f"{self.url}/metrics")
        assert status == 200, status
        return body

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as in an OOM kill or a node failure."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds it took to exit)."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - t0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate()
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


class DemoProcess:
    """``python -m exporter demo`` in ``tmpdir`` on ``port`` (0: any); ``at`` passes ``--as-of``."""

    def __init__(self, tmpdir: Path, at: float | None = None, port: int = 0) -> None:
        self.dir = Path(tmpdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.at = at
        self.port = port
        self.config_path = self.dir / "demo-config.yaml"
        self.log_path = self.dir / "demo.log"
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> DemoProcess:
        argv = [sys.executable, "-m", "exporter", "demo", "--port", str(self.port)]
        argv += ["--state-dir", str(self.dir), "--write-config", str(self.config_path)]
        if self.at is not None:
            argv += ["--as-of", utc_datetime(self.at).isoformat()]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=exporter_env(),
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        assert self.proc.stdout is not None
        banner = self.proc.stdout.readline()  # "simulated platform on ..."
        line = self.proc.stdout.readline()  # "metrics at http://127.0.0.1:PORT/metrics ..."
        if not line.startswith("metrics at "):
            self.stop()
            raise RuntimeError(f"demo did not start: {banner}{line}{self.log()}")
        self.url = line.split()[2].removesuffix("/metrics")
        return self

    @property
    def address(self) -> str:
        """``host:port`` of its /metrics, for a scrape target."""
        return self.url.removeprefix("http://")

    def config(self) -> dict[str, Any]:
        """The config the demo generated and runs with (YAML-shaped data)."""
        data: dict[str, Any] = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        return data

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
