"""A tiny HTTP upstream the test controls: it sleeps, then answers.

``GET /sleep/<seconds>`` waits that long and answers ``200 {"status":"ok"}``;
``GET /status/<code>`` answers with that status at once; ``GET /flaky`` answers
with :attr:`SlowUpstream.flaky_status`, which the test changes at will;
``GET /hold/<s>`` waits until :attr:`SlowUpstream.release` is set (at most
``s`` seconds). Every request path is recorded in :attr:`SlowUpstream.requests`.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class SlowUpstream:
    def __init__(self) -> None:
        self.requests: list[str] = []
        self.lock = threading.Lock()
        # Set to hold every /hold request until released (or the timeout passes).
        self.release = threading.Event()
        self.flaky_status = 200
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                with owner.lock:
                    owner.requests.append(self.path)
                parts = self.path.split("?", 1)[0].strip("/").split("/")
                status = 200
                if parts[0] == "sleep" and len(parts) == 2:
                    time.sleep(float(parts[1]))
                elif parts[0] == "hold" and len(parts) == 2:
                    owner.release.wait(float(parts[1]))
                elif parts[0] == "status" and len(parts) == 2:
                    status = int(parts[1])
                elif parts[0] == "flaky":
                    status = owner.flaky_status
                body = b'{"status":"ok"}' if status == 200 else b'{"status":"error"}'
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SlowUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
