"""Synthetic HTTP(S) probes: each service's configured checks, run on their own intervals.

The source wakes every ``sources.probe.interval`` and runs, concurrently but at
most ``concurrency`` at a time, the checks whose own ``interval`` has elapsed.
A check fails with one bounded reason: ``timeout``, ``connect``, ``tls``,
``status`` (not in ``expect_status``) or ``body`` (``body_regex`` not found).
A failing check is the service's outage, not the source's: the poll succeeds
and commits every result in one transaction, together with one cursor per
check (``<service>/<probe>`` = the start time of its latest result). After a
restart the cursors say when each check last ran, so a check runs again only
once its interval has passed: a restart does not bunch up extra samples.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time

import httpx

from exporter.core.clock import Clock, system_clock
from exporter.core.httpclient import build_client
from exporter.core.settings import ConfigBase
from exporter.core.source import PollContext, Source
from exporter.domains.probe.records import ProbeResult
from exporter.domains.probe.settings import ProbeCheckConfig, ProbeServiceFields, ProbeSourceConfig


def _is_tls_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError | ssl.CertificateError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "SSL" in str(exc) or "CERTIFICATE" in str(exc).upper()


class ProbeSource(Source):
    """Runs every service's HTTP checks; see the module docstring."""

    kind = "probe"
    settings_model = ProbeSourceConfig
    default_on = True
    produces = (ProbeResult,)

    def __init__(self, config: ConfigBase, settings: ProbeSourceConfig) -> None:
        super().__init__(config, settings)
        self.concurrency = settings.concurrency
        self.checks: list[tuple[str, ProbeCheckConfig]] = [
            (svc.name, check)
            for svc in config.services
            for check in ProbeServiceFields.of(svc).probes
        ]
        # When each check is next due, by monotonic clock; restored from the cursors on
        # the first poll (checks with no cursor are due at once).
        self._due: dict[tuple[str, str], float] = {}
        self._restored = False
        self._insecure: httpx.AsyncClient | None = None

    @property
    def active(self) -> bool:
        return bool(self.checks)

    def due_checks(self, mono_now: float) -> list[tuple[str, ProbeCheckConfig]]:
        return [
            (service, check)
            for service, check in self.checks
            if self._due.get((service, check.name), 0.0) <= mono_now
        ]

    @staticmethod
    def cursor_name(service: str, probe: str) -> str:
        return f"{service}/{probe}"

    def _restore(self, ctx: PollContext, mono: float) -> None:
        wall = ctx.now()
        for service, check in self.checks:
            last = ctx.cursor(self.cursor_name(service, check.name))
            if last is not None:
                next_wall = float(last) + check.interval
                self._due[(service, check.name)] = mono + min(next_wall - wall, check.interval)
        self._restored = True

    async def poll(self, ctx: PollContext) -> None:
        mono = time.monotonic()
        if not self._restored:
            self._restore(ctx, mono)
        due = self.due_checks(mono)
        for service, check in due:
            self._due[(service, check.name)] = mono + check.interval
        if not due:
            return
        limit = asyncio.Semaphore(self.concurrency)

        async def bounded(service: str, check: ProbeCheckConfig) -> ProbeResult:
            async with limit:
                client = ctx.client if check.tls_verify else self._insecure_client(ctx)
                return await run_check(client, service, check, ctx.now)

        results = await asyncio.gather(*(bounded(s, c) for s, c in due))
        for r in results:
            if not r.success:
                ctx.log.info(
                    "probe %s/%s failed: %s (status %s, %.3fs)",
                    r.service,
                    r.probe,
                    r.reason,
                    r.status_code,
                    r.duration_seconds,
                )
        ctx.commit(
            results,
            {self.cursor_name(r.service, r.probe): repr(r.started_at) for r in results},
        )

    def _insecure_client(self, ctx: PollContext) -> httpx.AsyncClient:
        if self._insecure is None:
            self._insecure = build_client(ctx.health, timeout=self.settings.timeout, verify=False)
        return self._insecure

    async def aclose(self) -> None:
        if self._insecure is not None:
            await self._insecure.aclose()


async def run_check(
    client: httpx.AsyncClient,
    service: str,
    check: ProbeCheckConfig,
    clock: Clock = system_clock,
) -> ProbeResult:
    """Run one check and classify its outcome. Never raises for the upstream's faults."""
    started = float(clock())
    t0 = time.perf_counter()
    status: int | None = None
    reason = ""
    try:
        response = await client.request(
            check.method, check.url, headers=check.headers, timeout=check.timeout
        )
        status = response.status_code
        if status not in check.expect_status:
            reason = "status"
        elif check.body_regex is not None and not re.search(check.body_regex, response.text):
            reason = "body"
    except httpx.TimeoutException:
        reason = "timeout"
    except httpx.TransportError as exc:
        reason = "tls" if _is_tls_error(exc) else "connect"
    duration = time.perf_counter() - t0
    return ProbeResult(
        service=service,
        probe=check.name,
        started_at=started,
        duration_seconds=duration,
        success=reason == "",
        reason=reason,
        status_code=status,
    )
