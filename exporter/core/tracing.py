"""Optional OpenTelemetry tracing of polls and upstream requests (the ``otel`` extra).

With ``--otlp-endpoint URL`` every poll is a span (``poll <source>``: its source,
kind, poll id and outcome) and every upstream request made in it a child span
(``GET``: method, redacted URL, status code; its time includes any wait at the
source's gate, a rate-limit pause or a full slot queue), exported over OTLP/HTTP (protobuf) to a
collector or Jaeger (``http://jaeger:4318/v1/traces``). So a slow poll shows where
its time went: which requests, how long each, and which of them waited.

Without the flag nothing is imported and both hooks cost one ``None`` check; the
daemon and its tests never need the SDK.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar

import httpx

from exporter import __version__
from exporter.core.errors import needs_extra
from exporter.core.logs import CURRENT_POLL, NamedSource
from exporter.core.redact import REDACTOR

SCOPE = "platform-kpi-exporter"
_provider: Any = None  # the SDK's TracerProvider, once set up
_tracer: Any = None


def setup(endpoint: str | None = None, exporter: Any = None, service_name: str = SCOPE) -> None:
    """Export spans to the OTLP/HTTP ``endpoint`` (or to ``exporter``, a SpanExporter:
    tests pass the SDK's in-memory one, exported synchronously)."""
    global _provider, _tracer
    with needs_extra("otel", "tracing"):
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource = Resource.create({"service.name": service_name, "service.version": __version__})
    provider = TracerProvider(resource=resource)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        with needs_extra("otel", "tracing"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    _provider, _tracer = provider, provider.get_tracer(SCOPE, __version__)


def shutdown() -> None:
    """Export what is still buffered, then stop tracing."""
    global _provider, _tracer
    if _provider is not None:
        _provider.shutdown()
    _provider = _tracer = None


S = TypeVar("S")
Src = TypeVar("Src", bound=NamedSource)


def traced_poll(
    poll: Callable[[S, Src], Awaitable[bool]],
) -> Callable[[S, Src], Awaitable[bool]]:
    """Decorate ``poll(self, source) -> ok``: a span per poll, an error status when it failed.
    Inside :func:`~exporter.core.logs.per_poll`, so the span carries the poll id."""

    @wraps(poll)
    async def traced(self: S, src: Src) -> bool:
        if _tracer is None:
            return await poll(self, src)
        from opentelemetry.trace import Status, StatusCode

        tag = CURRENT_POLL.get()
        attributes = {"platform.source": src.name, "platform.source.kind": src.kind}
        if tag is not None:
            attributes["platform.poll_id"] = tag.poll_id
        with _tracer.start_as_current_span(f"poll {src.name}", attributes=attributes) as span:
            ok = await poll(self, src)
            span.set_attribute("platform.poll.ok", ok)
            if not ok:
                span.set_status(Status(StatusCode.ERROR, "poll failed"))
            return ok

    return traced


class TracingTransport(httpx.AsyncBaseTransport):
    """A span around each request that passes the wrapped transport (a client span)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if _tracer is None:
            return await self.inner.handle_async_request(request)
        from opentelemetry.trace import SpanKind, Status, StatusCode

        attributes = {
            "http.request.method": request.method,
            "url.full": REDACTOR.text(str(request.url.copy_with(query=None))),
            "server.address": request.url.host,
        }
        with _tracer.start_as_current_span(
            request.method, kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            try:
                response = await self.inner.handle_async_request(request)
            except Exception as exc:
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(Status(StatusCode.ERROR, REDACTOR.text(str(exc))[:200]))
                raise
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 400:
                span.set_attribute("error.type", str(response.status_code))
                span.set_status(Status(StatusCode.ERROR))
            return response

    async def aclose(self) -> None:
        await self.inner.aclose()
