"""The HTTP endpoints: ``/metrics`` (cached bytes), ``/healthz``, ``/readyz``.

An asyncio server on its own thread and event loop, so neither the daemon's loop
nor a slow client delays a scrape. Each connection is a coroutine
(:mod:`exporter.core.connection`): its TLS handshake, its reads and its writes run
under deadlines, and an idle or trickling client costs a socket, not a thread.
At most ``server.max_connections`` are served at once; the ones past that are
answered 503 and closed. The listen backlog is ``server.listen_backlog``
(at least 128), so a burst of connects waits in the kernel rather than being dropped.

``/metrics`` only reads the current :class:`~exporter.core.snapshot.Snapshot`: it
never calls an upstream and never waits for a refresh. TLS and basic auth come
from the web config (:mod:`exporter.core.webconfig`), re-read when its files
change. Work that may block (bcrypt, routes that sources add with
:meth:`MetricsServer.add_route`) runs on a small, bounded thread pool.
``/-/healthy`` and ``/-/ready`` are aliases, as Prometheus' own components serve them.

Paths under ``/webhooks/`` (:mod:`exporter.core.webhooks`) are apart: each endpoint
checks its own sender's proof, so the web config's basic auth is neither asked for
nor accepted there, and a path there that no endpoint serves is 404.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from exporter.core.connection import MAX_HEAD, Limits, Pieces, Request, Response, serve
from exporter.core.settings import ServerConfig
from exporter.core.snapshot import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE, SnapshotHolder
from exporter.core.webauth import Authenticator, basic_credentials
from exporter.core.webconfig import (
    TLSServer,
    WebConfig,
    WebConfigError,
    WebConfigWatcher,
    legacy_web_config,
    load_web_config,
)
from exporter.core.webhooks import PREFIX as WEBHOOK_PREFIX

log = logging.getLogger("exporter.server")

# (method, body, headers) -> (status, content type, body)
Route = Callable[[str, bytes, dict[str, str]], tuple[int, str, bytes]]

SERVER_HEADER = "platform-kpi-exporter"
WORKER_THREADS = 4
HEALTH_PATHS = frozenset({"/healthz", "/readyz", "/-/healthy", "/-/ready"})
_GET_PATHS = HEALTH_PATHS | {"/metrics", "/"}
_TEXT = "text/plain; charset=utf-8"
_HTML = "text/html; charset=utf-8"
_INDEX = (
    b"<html><head><title>platform-kpi-exporter</title></head><body>"
    b'<h1>platform-kpi-exporter</h1><p><a href="/metrics">Metrics</a></p>'
    b"</body></html>"
)
_CHALLENGE = (("WWW-Authenticate", 'Basic realm="platform-kpi-exporter"'),)
_NOT_FOUND = Response(404, b"not found\n")


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


def web_config_of(settings: ServerConfig) -> WebConfig:
    """The web config the settings name: ``server.web_config_file`` (which
    ``--web.config.file`` sets), or the legacy ``server.tls`` and ``server.basic_auth``."""
    if settings.web_config_file is not None:
        return load_web_config(settings.web_config_file)
    return legacy_web_config(settings.tls, settings.basic_auth)


def bind(settings: ServerConfig) -> socket.socket:
    """The listening socket (OSError if the address cannot be bound)."""
    host = settings.listen_address.strip("[]") or "0.0.0.0"
    family = socket.getaddrinfo(host, settings.port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.create_server(
        (host, settings.port), family=family, backlog=settings.listen_backlog
    )
    sock.setblocking(False)
    return sock


class _RateLimit:
    """The toolkit's ``rate_limit``: a token bucket of ``burst`` tokens, one more every
    ``interval`` seconds; a request finding it empty is answered 429."""

    def __init__(self, interval: float, burst: int) -> None:
        self.interval, self.burst = interval, burst
        self.tokens = float(burst)
        self.at = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(float(self.burst), self.tokens + (now - self.at) / self.interval)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class MetricsServer:
    """Serves a SnapshotHolder on its own thread and event loop, beside the daemon's."""

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
        # Raises WebConfigError before anything is bound.
        self.web = WebConfigWatcher(lambda: web_config_of(settings))
        self.tls = self.web.current().tls is not None
        self.limits = Limits(
            idle_timeout=settings.idle_timeout,
            read_timeout=settings.read_timeout,
            write_timeout=settings.write_timeout,
        )
        self.auth = Authenticator()
        self.sock = bind(settings)
        self.active = 0  # connections open now (read and written on the loop only)
        self._limiter: tuple[tuple[float, int], _RateLimit] | None = None
        self._pool = ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="metrics-http-work")
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = self.settings.listen_address
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        if host in ("::", "[::]"):
            host = "[::1]"
        elif ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.port}"

    def add_route(self, path: str, route: Route) -> None:
        """Serve ``route`` at ``path`` (on the worker pool). Under ``/webhooks/`` it must
        authenticate requests itself: the web config's basic auth is skipped there."""
        self.routes[path] = route

    def start(self) -> None:
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._accepting = self._loop.create_task(self._accept())
            self._loop.call_soon(started.set)
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="metrics-http", daemon=True)
        self._thread.start()
        started.wait(5)

    def stop(self) -> None:
        """Stop accepting, drop every open connection, and free the socket and the threads."""
        if self._thread is not None and self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()
        self.sock.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _shutdown(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- connections -----------------------------------------------------------------

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                accepted = [await loop.sock_accept(self.sock)]
                # Then every connection already queued, without a wait each (as asyncio's
                # own servers do): a burst of connects costs one wake-up.
                while len(accepted) < self.settings.listen_backlog:
                    try:
                        client, address = self.sock.accept()
                    except OSError:  # none left (or EMFILE: the next sock_accept says so)
                        break
                    client.setblocking(False)
                    accepted.append((client, address))
            except OSError as exc:  # EMFILE and the like: back off, do not spin
                log.warning("cannot accept a connection: %s", exc)
                await asyncio.sleep(0.1)
                continue
            for client, address in accepted:
                task = loop.create_task(self._connection(client, address))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _connection(self, client: socket.socket, address: object) -> None:
        peer = _peer(address)
        self.active += 1
        try:
            if self.active > 2 * self.settings.max_connections:
                client.close()  # far over the bound: not even a 503
                return
            over = self.active > self.settings.max_connections
            await self._serve_client(client, peer, over)
        finally:
            self.active -= 1

    async def _serve_client(self, client: socket.socket, peer: str, over: bool) -> None:
        limits = self.limits
        if over:  # answered 503 quickly: its deadlines are short
            limits = Limits(1.0, min(limits.read_timeout, 2.0), min(limits.write_timeout, 2.0))
        try:
            tls = self.web.current().tls
        except WebConfigError:
            if self.tls:
                client.close()  # no handshake until the web config loads again
                return
            tls = None  # plain HTTP: each request is answered 500 until then
        opened = await self._open(client, peer, tls, limits)
        if opened is None:
            return
        reader, writer = opened
        self._writers.add(writer)
        clean = False
        try:
            handler = self._refuse if over else self._handle
            clean = await serve(reader, writer, handler, limits, peer, SERVER_HEADER)
        finally:
            self._writers.discard(writer)
            transport = writer.transport
            if clean:
                writer.close()  # sends what is still buffered (a 408, a 503) first
                # ... within the write timeout: a client that stops reading then is dropped.
                asyncio.get_running_loop().call_later(limits.write_timeout, transport.abort)
            else:
                transport.abort()  # a client that stopped reading: drop what is left

    async def _open(
        self, client: socket.socket, peer: str, tls: TLSServer | None, limits: Limits
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Streams over ``client``, after the TLS handshake when TLS is on (None if it fails)."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=MAX_HEAD, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        try:
            # The handshake runs here, on this connection's own deadline.
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol,
                client,
                ssl=tls.context if tls else None,
                ssl_handshake_timeout=limits.read_timeout if tls else None,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            log.debug("TLS handshake with %s failed: %s", peer, exc)
            client.close()
            return None
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        if tls is not None and tls.allowed_sans is not None and not _san_allowed(writer, tls):
            log.debug("client %s: its certificate has none of the allowed SANs", peer)
            transport.abort()
            return None
        return reader, writer

    # --- requests --------------------------------------------------------------------

    async def _refuse(self, request: Request) -> Response:
        return Response(503, b"too many connections\n", headers=(("Retry-After", "1"),), close=True)

    async def _handle(self, request: Request) -> Response:
        try:
            web = self.web.current()
        except WebConfigError:
            return Response(500, b"web config error: see the exporter's log\n", close=True)
        response = await self._respond(web, request)
        if web.headers:
            response = Response(
                response.status,
                response.body,
                response.content_type,
                response.headers + web.headers,
                response.close,
            )
        return response

    async def _respond(self, web: WebConfig, request: Request) -> Response:
        if not self._rate_allows(web):
            return Response(429, b"too many requests\n")
        if request.method not in ("GET", "HEAD", "POST"):
            return Response(405, b"method not allowed\n", headers=(("Allow", "GET, HEAD"),))
        path = request.path
        if path.startswith(WEBHOOK_PREFIX):
            # Webhooks authenticate their senders themselves: /metrics credentials do not apply.
            return await self._route(request) if path in self.routes else _NOT_FOUND
        open_path = self.settings.health_without_auth and path in HEALTH_PATHS
        if web.auth_required and not open_path and not await self._authorized(web, request):
            return Response(401, b"unauthorized\n", headers=_CHALLENGE)
        if path in self.routes:
            return await self._route(request)
        if request.method == "POST":
            if path in _GET_PATHS:
                return Response(405, b"method not allowed\n", headers=(("Allow", "GET, HEAD"),))
            return Response(404, b"not found\n")
        if path == "/metrics":
            return self._metrics(request)
        if path in ("/healthz", "/-/healthy"):
            return Response(200, b"ok\n")
        if path in ("/readyz", "/-/ready"):
            return Response(200, b"ready\n") if self.ready() else Response(503, b"not ready\n")
        if path == "/":
            return self._page(request)
        return Response(404, b"not found\n")

    def _page(self, request: Request) -> Response:
        """The review rendered with the snapshot (gzipped when the client accepts it, as
        it was compressed when rendered), or the plain index before the first."""
        page = self.holder.current.page
        if not page.html:
            return Response(200, _INDEX, _HTML)
        if wants_gzip(request.headers.get("accept-encoding", "")):
            headers = (("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding"))
            return Response(200, page.gzip, _HTML, headers)
        return Response(200, page.html, _HTML, (("Vary", "Accept-Encoding"),))

    def _rate_allows(self, web: WebConfig) -> bool:
        if web.rate_limit is None:
            return True
        if self._limiter is None or self._limiter[0] != web.rate_limit:
            self._limiter = (web.rate_limit, _RateLimit(*web.rate_limit))
        return self._limiter[1].allow()

    async def _authorized(self, web: WebConfig, request: Request) -> bool:
        credentials = basic_credentials(request.headers.get("authorization"))
        ok = self.auth.quick(web, credentials)
        if ok is None:
            assert credentials is not None
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(self.limits.read_timeout):
                ok = await loop.run_in_executor(self._pool, self.auth.verify, web, credentials)
        if not ok and credentials is not None:
            self.auth.failures.record(credentials[0], request.peer)
        return ok

    async def _route(self, request: Request) -> Response:
        loop = asyncio.get_running_loop()
        route = self.routes[request.path]
        status, ctype, body = await loop.run_in_executor(
            self._pool, route, request.method, request.body, request.headers
        )
        headers: tuple[tuple[str, str], ...] = ()
        if request.path.startswith(WEBHOOK_PREFIX) and status in (405, 503):
            headers = (("Allow", "POST"),) if status == 405 else (("Retry-After", "5"),)
        return Response(status, body, ctype, headers)

    def _metrics(self, request: Request) -> Response:
        snap = self.holder.current  # one read: the whole snapshot or none of it
        if wants_openmetrics(request.headers.get("accept", "")):
            body, ctype = snap.openmetrics_body, OPENMETRICS_CONTENT_TYPE
        else:
            body, ctype = snap.text_body, TEXT_CONTENT_TYPE
        if wants_gzip(request.headers.get("accept-encoding", "")):
            headers = (("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding"))
            zipped = body.gzip
            return Response(200, Pieces(body.gzip_size, lambda: zipped), ctype, headers)
        # Inflated when it is written, on the loop, into one buffer freed once sent: rare
        # (Prometheus asks for gzip), and a few milliseconds per megabyte.
        plain = Pieces(body.size, lambda: (body.joined(),))
        return Response(200, plain, ctype, (("Vary", "Accept-Encoding"),))


def _peer(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


def _san_allowed(writer: asyncio.StreamWriter, tls: TLSServer) -> bool:
    """True if the verified client certificate names one of the allowed SANs (DNS, IP,
    e-mail or URI), as the toolkit's ``client_allowed_sans`` requires."""
    ssl_object = writer.get_extra_info("ssl_object")
    cert = ssl_object.getpeercert() if ssl_object is not None else None
    if not cert:
        return False
    names = {str(value) for _, value in cert.get("subjectAltName", ())}
    return bool(tls.allowed_sans and names & tls.allowed_sans)
