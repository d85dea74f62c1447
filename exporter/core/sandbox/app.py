"""A tiny request router shared by every fake upstream, and its two adapters.

``App`` maps (method, path pattern) to a handler ``(Request) -> Response``.
:meth:`App.transport` makes it an ``httpx.MockTransport`` for unit tests, and
:func:`serve` runs several apps over real HTTP/1.1 on loopback, each under its
own path prefix (``/github``, ``/services``, ...).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes = b""
    params: dict[str, str] = field(default_factory=dict)  # from the path pattern

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # Seconds to wait before answering: the latency of the simulated upstream.
    delay: float = 0.0

    @classmethod
    def json(
        cls, data: Any, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> Response:
        return cls(
            status,
            json.dumps(data, separators=(",", ":")).encode(),
            {"Content-Type": "application/json; charset=utf-8", **(headers or {})},
        )

    @classmethod
    def text(
        cls, text: str, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> Response:
        return cls(
            status, text.encode(), {"Content-Type": "text/plain; charset=utf-8", **(headers or {})}
        )


Handler = Callable[[Request], Response]


class App:
    """Routes with ``{name}`` placeholders (one path segment; ``{name:path}`` spans segments)."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        regex = re.sub(r"\{(\w+):path\}", r"(?P<\1>.+)", pattern)
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", regex)
        compiled = re.compile(f"^{regex}$")

        def register(handler: Handler) -> Handler:
            self._routes.append((method.upper(), compiled, handler))
            return handler

        return register

    def handle(self, request: Request) -> Response:
        allowed = False
        for method, regex, handler in self._routes:
            match = regex.match(request.path)
            if not match:
                continue
            allowed = True
            if method == request.method or (method == "GET" and request.method == "HEAD"):
                request.params = match.groupdict()
                return handler(request)
        if allowed:
            return Response.json({"message": "Method Not Allowed"}, 405)
        return Response.json({"message": "Not Found"}, 404)

    def transport(self) -> httpx.MockTransport:
        """This app as an httpx transport (delays are awaited, so timeouts behave)."""

        async def handler(req: httpx.Request) -> httpx.Response:
            request = Request(
                method=req.method,
                path=req.url.path,
                query=parse_qs(req.url.query.decode(), keep_blank_values=True),
                headers={k.lower(): v for k, v in req.headers.items()},
                body=req.content,
            )
            response = self.handle(request)
            if response.delay:
                await asyncio.sleep(response.delay)
            return httpx.Response(response.status, headers=response.headers, content=response.body)

        return httpx.MockTransport(handler)


class _Listener(ThreadingHTTPServer):
    # socketserver's default backlog is 5: a client opening dozens of connections at once
    # (a CI/CD source with 48 in flight) then has handshakes dropped and waits seconds for
    # their retransmission. Real upstreams accept far more.
    request_queue_size = 256
    daemon_threads = True


class SandboxServer:
    """Several apps served over HTTP on loopback, each under its own prefix."""

    def __init__(self, apps: Mapping[str, App], host: str = "127.0.0.1", port: int = 0) -> None:
        self.apps = dict(apps)
        mounts = sorted(self.apps.items(), key=lambda kv: -len(kv[0]))

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _dispatch(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                for prefix, app in mounts:
                    if url.path == prefix or url.path.startswith(prefix.rstrip("/") + "/"):
                        path = url.path[len(prefix.rstrip("/")) :] or "/"
                        request = Request(
                            method=self.command,
                            path=path,
                            query=parse_qs(url.query, keep_blank_values=True),
                            headers={k.lower(): v for k, v in self.headers.items()},
                            body=body,
                        )
                        response = app.handle(request)
                        break
                else:
                    response = Response.json({"message": "Not Found"}, 404)
                if response.delay:
                    # A lock's timeout rather than time.sleep: libfaketime (running the demo
                    # on another date) breaks time.sleep on Python 3.11 (libfaketime#426).
                    threading.Event().wait(response.delay)
                try:
                    self.send_response(response.status)
                    for k, v in response.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(response.body)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(response.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a probe timeout): nothing to tell it

            do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _dispatch

        self.httpd = _Listener((host, port), _Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> SandboxServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="sandbox", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
