"""OpenTelemetry tracing: a span per poll, a child span per upstream request, over OTLP/HTTP.

The spans are checked in the SDK's in-memory exporter, then once as they reach a real
OTLP/HTTP receiver on loopback (a plain HTTP server that decodes the protobuf body with
``opentelemetry-proto``, as a collector does: ``POST /v1/traces``,
``application/x-protobuf``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from exporter.config import Config
from exporter.core import tracing
from exporter.core.httpclient import send
from exporter.core.source import PollContext
from exporter.daemon import Daemon
from tests.support.daemon import run_cli
from tests.support.fakes import ScriptedSource
from tests.support.net import free_port, wait_until

SECRET = "tok_0123456789abcdefSECRET"


def make_config(tmp_path: Path) -> Config:
    return Config(
        server={"listen_address": "127.0.0.1", "port": 0},
        state={"path": str(tmp_path / "state.db")},
        services=[{"name": "a", "team": "x"}],
    )


def upstream(request: httpx.Request) -> httpx.Response:
    """Two answers: ``/ok`` 200, anything else 503."""
    return httpx.Response(200 if request.url.path == "/ok" else 503, json={})


@pytest.fixture
def spans() -> Iterator[Any]:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracing.setup(exporter=exporter)
    yield exporter
    tracing.shutdown()


def poll_once(tmp_path: Path, behaviour: Any) -> bool:
    src = ScriptedSource(make_config(tmp_path), name="scripted", behaviour=behaviour)
    daemon = Daemon(make_config(tmp_path), sources=[src], transport=httpx.MockTransport(upstream))

    async def go() -> bool:
        try:
            return await daemon.poll(src)
        finally:
            await daemon.shutdown()

    return asyncio.run(go())


class TestSpans:
    def test_a_poll_is_a_span_and_its_requests_its_children(
        self, tmp_path: Path, spans: Any
    ) -> None:
        async def two_requests(ctx: PollContext, n: int) -> None:
            await ctx.client.get(f"http://upstream.test/ok?access_token={SECRET}")
            await ctx.client.get("http://upstream.test/ok")

        assert poll_once(tmp_path, two_requests)
        *requests, poll = spans.get_finished_spans()
        assert poll.name == "poll scripted"
        assert poll.attributes["platform.source"] == "scripted"
        assert poll.attributes["platform.source.kind"] == "scripted"
        assert len(poll.attributes["platform.poll_id"]) == 16
        assert poll.attributes["platform.poll.ok"] is True
        assert [r.name for r in requests] == ["GET", "GET"]
        for r in requests:
            assert r.parent.span_id == poll.context.span_id
            assert r.context.trace_id == poll.context.trace_id
            assert r.attributes["http.response.status_code"] == 200
            assert r.attributes["url.full"] == "http://upstream.test/ok"  # no query: no token
            assert r.attributes["server.address"] == "upstream.test"
            assert poll.start_time <= r.start_time <= r.end_time <= poll.end_time
        assert dict(poll.resource.attributes)["service.name"] == "platform-kpi-exporter"

    def test_a_failing_poll_and_its_failed_requests_carry_an_error_status(
        self, tmp_path: Path, spans: Any
    ) -> None:
        from opentelemetry.trace import StatusCode

        async def unavailable(ctx: PollContext, n: int) -> None:
            async def no_wait(_: float) -> None:
                return None

            await send(ctx.client, "GET", "http://upstream.test/down", attempts=2, sleep=no_wait)

        assert not poll_once(tmp_path, unavailable)
        *requests, poll = spans.get_finished_spans()
        assert poll.status.status_code is StatusCode.ERROR
        assert poll.attributes["platform.poll.ok"] is False
        # Each attempt is a request of its own.
        assert [r.attributes["http.response.status_code"] for r in requests] == [503, 503]
        assert {r.attributes["error.type"] for r in requests} == {"503"}
        assert all(r.status.status_code is StatusCode.ERROR for r in requests)

    def test_without_tracing_nothing_is_recorded(self, tmp_path: Path) -> None:
        async def one(ctx: PollContext, n: int) -> None:
            await ctx.client.get("http://upstream.test/ok")

        assert tracing._tracer is None
        assert poll_once(tmp_path, one)


class Receiver:
    """An OTLP/HTTP trace receiver on loopback: decodes every export request it gets."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        self.received: list[Any] = []
        received = self.received
        self.content_types: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.content_types.append(self.headers["Content-Type"])
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                received.append(request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self) -> list[tuple[str, Any]]:
        """(service.name, span) of every span received."""
        out = []
        for request in self.received:
            for rs in request.resource_spans:
                service = next(
                    a.value.string_value for a in rs.resource.attributes if a.key == "service.name"
                )
                out += [(service, s) for ss in rs.scope_spans for s in ss.spans]
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class TestOverOtlpHttp:
    def test_the_cli_exports_a_failed_poll_s_spans_to_a_receiver(self, tmp_path: Path) -> None:
        """``--otlp-endpoint``: ``once`` polls a GitHub source whose API port is closed and,
        at exit, exports its poll span and the request spans under it."""
        receiver = Receiver()
        try:
            config = tmp_path / "c.yaml"
            data = {
                "state": {"path": str(tmp_path / "state.db")},
                "services": [{"name": "checkout", "team": "payments", "ci": [{"github": "a/b"}]}],
                "sources": {
                    "probe": {"enabled": False},
                    "github": {
                        "base_url": f"http://127.0.0.1:{free_port()}/api/v3",
                        "token": SECRET,
                        "timeout": "2s",
                    },
                },
            }
            config.write_text(yaml.safe_dump(data), encoding="utf-8")
            proc = run_cli("--otlp-endpoint", receiver.url, "once", "--config", str(config))
            assert proc.returncode == 1, proc.stderr  # the source failed
            wait_until(lambda: bool(receiver.spans()), timeout=10, what="spans at the receiver")
        finally:
            receiver.close()
        assert set(receiver.content_types) == {"application/x-protobuf"}
        spans = receiver.spans()
        assert {service for service, _ in spans} == {"platform-kpi-exporter"}
        (poll,) = [s for _, s in spans if s.name == "poll github"]
        attributes = {a.key: a.value for a in poll.attributes}
        assert attributes["platform.source.kind"].string_value == "github"
        assert attributes["platform.poll.ok"].bool_value is False
        requests = [s for _, s in spans if s.parent_span_id == poll.span_id]
        assert requests
        assert {s.name for s in requests} == {"GET"}
        assert all(s.trace_id == poll.trace_id for s in requests)
        errors = {
            a.value.string_value for s in requests for a in s.attributes if a.key == "error.type"
        }
        assert errors == {"ConnectError"}
        assert all(SECRET.encode() not in r.SerializeToString() for r in receiver.received)

    def test_a_url_that_is_not_http_is_a_usage_error(self, tmp_path: Path) -> None:
        proc = run_cli("--otlp-endpoint", "jaeger:4318", "check-config", str(tmp_path / "x.yaml"))
        assert proc.returncode == 2
        assert proc.stderr.strip() == (
            "--otlp-endpoint: 'jaeger:4318' is not an http:// or https:// URL"
        )
