"""Synthetic probes: each service's configured checks, each on its own fixed grid.

Every check probes once per ``interval`` at a stable per-check offset
(:mod:`exporter.domains.probe.schedule`), in a background loop the source
starts on its first poll; each poll then commits, in one transaction, the
results that finished since the last one, the slots skipped (a probe that
could not start on time is counted, never dropped) and one cursor per check
(``<service>/<probe>`` = the start time of its latest result).

The first poll also starts at once every check that is due (no cursor, or its
interval has passed since the one stored), so a restart after a long stop sees
fresh results; a check that ran recently before a restart waits for its next
slot, so a restart does not bunch up extra samples. Those probes go through the
runner's places like the grid's and the next poll commits them: the first poll
does not wait for them (it would last as long as the slowest check due, past
the source's interval), except as ``once``'s only poll, which commits them itself.

A check's kind follows its URL: ``http://`` / ``https://`` (the HTTP probe,
:mod:`.http`), ``tcp://`` / ``tls://`` (:mod:`.tcp`), ``dns://`` (:mod:`.dns`).
Each fails with one bounded reason (see ``FAILURE_REASONS``); a failing check
is the service's outage, not the source's.

Results whose commit fails (the state disk is full, the database is locked) stay
in memory and go with the next poll's commit, so each is counted once when the
store recovers; at most ``MAX_UNCOMMITTED`` of them, the oldest dropped first.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from exporter.core.clock import Clock, system_clock
from exporter.core.settings import ConfigBase
from exporter.core.source import PollContext, Source
from exporter.domains.probe.records import ProbeResult, ProbeSkipped
from exporter.domains.probe.schedule import Grid, LoopTicker, Ticker
from exporter.domains.probe.settings import ProbeCheckConfig, ProbeServiceFields, ProbeSourceConfig
from exporter.domains.probe.sources.http import HttpRequest, probe_http
from exporter.domains.probe.sources.runner import ProbeRunner
from exporter.domains.probe.sources.stamps import hold_receive_stamping
from exporter.domains.probe.sources.tcp import TcpDialog, probe_tcp
from exporter.domains.probe.sources.wire import Outcome

if TYPE_CHECKING:
    from exporter.domains.probe.sources.dns import DnsQuery

Key = tuple[str, str]  # (service, check name)

# Results kept for the next commit while commits fail: about a day of 70 checks every 30 s.
MAX_UNCOMMITTED = 200_000


def http_request(check: ProbeCheckConfig) -> HttpRequest:
    return HttpRequest(
        url=check.url,
        method=check.method,
        headers=tuple(check.headers.items()),
        expect_status=frozenset(check.expect_status),
        body_regex=check.body_regex,
        timeout=check.timeout,
        tls_verify=check.tls_verify,
        tls_ca_file=str(check.tls_ca_file) if check.tls_ca_file else None,
        follow_redirects=check.follow_redirects,
        ip_protocol=check.ip_protocol,
        ip_fallback=check.ip_protocol_fallback,
    )


def tcp_dialog(check: ProbeCheckConfig) -> TcpDialog:
    return TcpDialog(
        url=check.url,
        send=check.send,
        expect=check.expect,
        timeout=check.timeout,
        tls_verify=check.tls_verify,
        tls_ca_file=str(check.tls_ca_file) if check.tls_ca_file else None,
        ip_protocol=check.ip_protocol,
        ip_fallback=check.ip_protocol_fallback,
    )


def dns_query(check: ProbeCheckConfig) -> DnsQuery:
    # Imported here: dnspython (2 MiB) is loaded only when a config has a dns check.
    from exporter.domains.probe.sources.dns import DnsQuery

    return DnsQuery(
        url=check.url,
        name=check.query_name or "",
        rdtype=check.query_type,
        expect=check.expect,
        timeout=check.timeout,
    )


def prober(check: ProbeCheckConfig) -> Callable[[], Awaitable[Outcome]]:
    """The probe of one check, its request built once."""
    if check.kind == "dns":
        from exporter.domains.probe.sources.dns import probe_dns

        query = dns_query(check)
        return lambda: probe_dns(query)
    if check.kind == "tcp":
        dialog = tcp_dialog(check)
        return lambda: probe_tcp(dialog)
    request = http_request(check)
    return lambda: probe_http(request)


async def run_check(
    service: str,
    check: ProbeCheckConfig,
    clock: Clock = system_clock,
    probe: Callable[[], Awaitable[Outcome]] | None = None,
) -> ProbeResult:
    """Run one check and classify its outcome. Never raises for the upstream's faults."""
    started = float(clock())
    outcome = await (probe or prober(check))()
    return ProbeResult(
        service=service,
        probe=check.name,
        started_at=started,
        duration_seconds=outcome.duration,
        success=outcome.reason == "",
        reason=outcome.reason,
        status_code=outcome.status_code,
        phases=tuple(sorted(outcome.phases.seconds.items())),
        http_version=outcome.http_version,
        tls_version=outcome.tls.version,
        cert_not_after=outcome.tls.not_after,
        redirects=outcome.redirects,
    )


class ProbeSource(Source):
    """Runs every service's checks on their grids; see the module docstring."""

    kind = "probe"
    settings_model = ProbeSourceConfig
    default_on = True
    produces = (ProbeResult, ProbeSkipped)

    def __init__(
        self, config: ConfigBase, settings: ProbeSourceConfig, ticker: Ticker | None = None
    ) -> None:
        super().__init__(config, settings)
        self.concurrency = settings.concurrency
        self.checks: dict[Key, ProbeCheckConfig] = {
            (svc.name, check.name): check
            for svc in config.services
            for check in ProbeServiceFields.of(svc).probes
        }
        self._probes = {key: prober(check) for key, check in self.checks.items()}
        self.ticker: Ticker = ticker or LoopTicker()
        self.runner: ProbeRunner[Key, ProbeResult] | None = None
        # What a failed commit handed back: results and skip counts not stored yet.
        self._uncommitted: list[ProbeResult] = []
        self._uncommitted_skips: dict[Key, int] = {}
        self._stamping: socket.socket | None = None

    @property
    def active(self) -> bool:
        return bool(self.checks)

    @staticmethod
    def cursor_name(service: str, probe: str) -> str:
        return f"{service}/{probe}"

    async def _check(self, key: Key) -> ProbeResult:
        return await run_check(key[0], self.checks[key], self.clock, self._probes[key])

    async def _start(self, ctx: PollContext) -> None:
        """Start the grid loop from each check's next slot, and the checks due now at once."""
        wall, tick = ctx.now(), self.ticker.now()
        if self._stamping is None:
            self._stamping = hold_receive_stamping()
        grid = Grid.of(
            {k: c.interval for k, c in self.checks.items()},
            {k: self.cursor_name(*k) for k in self.checks},
            wall,
            tick,
        )
        last: dict[Key, float | None] = {}
        for key in self.checks:
            stored = ctx.cursor(self.cursor_name(*key))
            last[key] = float(stored) if stored is not None else None
        due = [k for k, at in last.items() if at is None or at + self.checks[k].interval <= wall]
        self.clock = ctx.now
        first = {k: grid.first_after(k, wall if k in due else at or wall) for k, at in last.items()}
        self.runner = ProbeRunner(grid, self.ticker, self._check, self.concurrency)
        # Through the runner's places like every other probe; the next poll commits them,
        # so a first poll never lasts as long as the slowest check due at start.
        self.runner.launch_now(due)
        self.runner.start(first)
        if ctx.only_poll:
            await self.runner.settle(due)

    async def poll(self, ctx: PollContext) -> None:
        if self.runner is None:
            await self._start(ctx)
        else:
            failure = self.runner.failure()
            if failure is not None:
                self.runner = None  # the next poll starts a new loop
                raise failure
        assert self.runner is not None
        results, skipped = self.runner.drain()
        for r in results:
            if r.status_code is not None:
                ctx.health.count_request(r.status_code)
            if not r.success:
                ctx.log.info(
                    "probe %s/%s failed: %s (status %s, %.3fs)",
                    r.service,
                    r.probe,
                    r.reason,
                    r.status_code,
                    r.duration_seconds,
                )
        await self._commit(ctx, results, skipped)

    async def _commit(
        self, ctx: PollContext, fresh: list[ProbeResult], fresh_skips: dict[Key, int]
    ) -> None:
        """Commit ``fresh`` with what earlier failed commits handed back."""
        results, self._uncommitted = [*self._uncommitted, *fresh], []
        skipped, self._uncommitted_skips = dict(self._uncommitted_skips), {}
        for key, n in fresh_skips.items():
            skipped[key] = skipped.get(key, 0) + n
        latest: dict[str, float] = {}
        for r in results:
            name = self.cursor_name(r.service, r.probe)
            latest[name] = max(r.started_at, latest.get(name, r.started_at))
        cursors = {name: repr(at) for name, at in latest.items()}
        skips = [ProbeSkipped(s, p, n) for (s, p), n in sorted(skipped.items())]

        def hand_back() -> None:
            if len(results) > MAX_UNCOMMITTED:
                ctx.log.warning(
                    "state store still failing: %d probe result(s) dropped, oldest first",
                    len(results) - MAX_UNCOMMITTED,
                )
            self._uncommitted = results[-MAX_UNCOMMITTED:]
            self._uncommitted_skips = skipped

        await ctx.commit([*results, *skips], cursors, on_rollback=hand_back)

    async def aclose(self) -> None:
        if self.runner is not None:
            await self.runner.aclose()
            self.runner = None
        if self._stamping is not None:
            self._stamping.close()
            self._stamping = None
