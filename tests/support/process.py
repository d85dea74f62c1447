"""Server binaries the tests run in the foreground: started, waited for, stopped.

Prometheus and Alertmanager both serve ``/-/ready``; :class:`ReadyProcess` starts
such a binary with its output in a log file, waits until it answers 200 there
(failing with the log if it exits or never gets ready), and stops it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import IO

from tests.support.net import http_get, wait_until


class ReadyProcess:
    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, argv: list[str], ready_url: str, timeout: float = 30) -> None:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()}")
            return http_get(ready_url, timeout=1)[0] == 200

        try:
            wait_until(ready, timeout=timeout, what=f"{self.name} {ready_url}")
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {self.log_path.read_text()}") from None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
