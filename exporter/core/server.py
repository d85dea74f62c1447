"""The HTTP endpoints: ``/metrics`` (cached bytes), ``/healthz``, ``/readyz``.

A threaded stdlib server with HTTP/1.1 keep-alive. ``/metrics`` only reads the
current :class:`~exporter.core.snapshot.Snapshot`: it never calls an upstream and
never waits for a refresh. Optional basic auth and TLS come from ``server:``.
Sources that need an inbound endpoint (webhooks) add routes with
:meth:`MetricsServer.add_route`.
"""

from __future__ import annotations

import base64
import hmac
import logging
import ssl
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from exporter.core.settings import ServerConfig
from exporter.core.snapshot import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE, SnapshotHolder

log = logging.getLogger("exporter.server")

# (method, body, headers) -> (status, content type, body)
Route = Callable[[str, bytes, dict[str, str]], tuple[int, str, bytes]]


def wants_gzip(accept_encoding: str) -> bool:
    """True if ``Accept-Encoding`` accepts gzip with a non-zero quality."""
    for part in accept_encoding.split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() not in ("gzip", "*"):
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        return q > 0
    return False


def wants_openmetrics(accept: str) -> bool:
    return "application/openmetrics-text" in accept


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    #: The :class:`MetricsServer` whose snapshot, routes and checks the handler serves.
    owner: MetricsServer

    def handle_error(self, request: object, client_address: tuple[str, int] | object) -> None:
        # A scraper that hangs up mid-request is routine; the stdlib would print a traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError | ssl.SSLError):
            log.debug("client %s went away: %s", client_address, exc)
        else:
            log.exception("error serving a request from %s", client_address)


class MetricsServer:
    """Serves a SnapshotHolder; runs in its own threads beside the event loop."""

    def __init__(
        self,
        settings: ServerConfig,
        holder: SnapshotHolder,
        ready: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.holder = holder
        self.ready = ready
        self.routes: dict[str, Route] = {}
        self._auth: bytes | None = None
        if settings.basic_auth is not None:
            token = (
                f"{settings.basic_auth.username}:{settings.basic_auth.password.get_secret_value()}"
            )
            self._auth = b"Basic " + base64.b64encode(token.encode())
        self.httpd = _HTTPServer((settings.listen_address, settings.port), _Handler)
        self.httpd.owner = self
        if settings.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(settings.tls.cert_file), str(settings.tls.key_file))
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.settings.tls else "http"
        host = self.settings.listen_address
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"{scheme}://{host}:{self.port}"

    def add_route(self, path: str, route: Route) -> None:
        self.routes[path] = route

    def start(self) -> None:
        self._thread = threading.Thread(
            # A short poll interval lets stop() return quickly on shutdown.
            target=self.httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="metrics-http",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _authorized(self, header: str | None) -> bool:
        if self._auth is None:
            return True
        return header is not None and hmac.compare_digest(header.encode(), self._auth)


_TEXT = "text/plain; charset=utf-8"
_INDEX = (
    b"<html><head><title>platform-kpi-exporter</title></head><body>"
    b'<h1>platform-kpi-exporter</h1><p><a href="/metrics">Metrics</a></p>'
    b"</body></html>"
)


class _Handler(BaseHTTPRequestHandler):
    """One request to a :class:`MetricsServer` (found through the listening server)."""

    protocol_version = "HTTP/1.1"
    server_version = "platform-kpi-exporter"
    # Headers and body go out in two writes; with Nagle on, the body waits for
    # the client's delayed ACK of the headers (40 ms per keep-alive request).
    disable_nagle_algorithm = True

    @property
    def owner(self) -> MetricsServer:
        assert isinstance(self.server, _HTTPServer)
        return self.server.owner

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _send(
        self, status: int, ctype: str, body: bytes, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._send(200, _TEXT, b"ok\n")
        elif path == "/readyz":
            self._readyz()
        elif path == "/metrics":
            self._metrics()
        elif path in self.owner.routes:
            self._route(path)
        elif path == "/":
            self._send(200, "text/html; charset=utf-8", _INDEX)
        else:
            self._send(404, _TEXT, b"not found\n")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in self.owner.routes:
            self._route(path)
        else:
            self._send(404, _TEXT, b"not found\n")

    def _readyz(self) -> None:
        if self.owner.ready():
            self._send(200, _TEXT, b"ready\n")
        else:
            self._send(503, _TEXT, b"not ready\n")

    def _route(self, path: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, ctype, out = self.owner.routes[path](self.command, body, headers)
        self._send(status, ctype, out)

    def _metrics(self) -> None:
        if not self.owner._authorized(self.headers.get("Authorization")):
            realm = {"WWW-Authenticate": 'Basic realm="platform-kpi-exporter"'}
            self._send(401, _TEXT, b"unauthorized\n", realm)
            return
        snap = self.owner.holder.current  # one read: the whole snapshot or none of it
        gz = wants_gzip(self.headers.get("Accept-Encoding", ""))
        if wants_openmetrics(self.headers.get("Accept", "")):
            plain, zipped = snap.openmetrics()
            ctype = OPENMETRICS_CONTENT_TYPE
        else:
            plain, zipped, ctype = snap.text, snap.text_gzip, TEXT_CONTENT_TYPE
        if gz:
            self._send(200, ctype, zipped, {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
        else:
            self._send(200, ctype, plain, {"Vary": "Accept-Encoding"})
