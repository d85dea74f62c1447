"""Failover of real daemon processes sharing one PostgreSQL state: ``kill -9`` of the replica
holding the Cost Explorer lease in the middle of its poll.

Cost Explorer is moto in server mode, reached through boto3 as in production, with a
counting front of the test's own in between (one port per replica, so each call is
counted at the upstream and known by who made it). A poll reads two pages
(``NextPageToken``); the front holds the answer to the second page, so the holder is
killed with its poll half done: its first page paid for, the second asked and never
answered. The lease then moves to another replica, which polls the source from the
start.

The same kill in a single-replica deployment (killed, started again on the same state)
is the reference, run beside the replicas (each run has a schema and a front of its
own; process starts dominate the test's time): the replicas together pay for exactly as
many calls, the survivors pay nothing more once every day is settled, and every replica
serves the counters and costs that are stored, once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import psycopg
import pytest

from exporter.core.backend import PostgresTarget
from tests.support.daemon import DaemonProcess
from tests.support.exposition import Exposition
from tests.support.moto import TEST_CREDENTIALS, fresh_account, moto_server
from tests.support.net import wait_until
from tests.support.postgres import PASSWORD, PostgresServer

pytestmark = pytest.mark.integration

# Long enough that a replica starved of CPU (a loaded machine, libfaketime) still renews in
# time: a lease lost to a late renewal makes its poll start again, and pay again.
TTL = 6.0
# moto's account for the default credentials (TEST_CREDENTIALS).
ACCOUNT = "123456789012"
# GetCostAndUsage over JSON 1.1: the operation is named in this header
# (https://docs.aws.amazon.com/aws-cost-management/latest/APIReference/API_GetCostAndUsage.html).
OPERATION = "AWSInsightsIndexService.GetCostAndUsage"


class CostExplorerFront:
    """An HTTP front for moto, one port per replica: counts each GetCostAndUsage call at
    the upstream, by replica; while ``hold_second_page`` is set, forwards a request with
    a ``NextPageToken`` to moto but keeps its answer until :attr:`release` is set."""

    def __init__(self, moto_url: str, replicas: int) -> None:
        self.moto_url = moto_url
        self.calls: list[tuple[int, bool]] = []  # (replica, with a page token)
        self.lock = threading.Lock()
        self.hold_second_page = threading.Event()
        self.held = threading.Event()
        self.held_by: int | None = None
        self.release = threading.Event()
        self.servers = [self._server(i) for i in range(replicas)]

    def _server(self, replica: int) -> ThreadingHTTPServer:
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                paged = b"NextPageToken" in body
                if self.headers.get("X-Amz-Target") == OPERATION:
                    with front.lock:
                        front.calls.append((replica, paged))
                answer = front.forward(self.path, dict(self.headers.items()), body)
                if paged and front.hold_second_page.is_set():
                    front.held_by = replica
                    front.held.set()
                    front.release.wait(60)
                try:
                    self.send_response(answer.status_code)
                    for name in ("Content-Type", "x-amzn-RequestId"):
                        if name in answer.headers:
                            self.send_header(name, answer.headers[name])
                    self.send_header("Content-Length", str(len(answer.content)))
                    self.end_headers()
                    self.wfile.write(answer.content)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the replica was killed while its answer was held

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def forward(self, path: str, headers: dict[str, str], body: bytes) -> httpx.Response:
        skip = {"host", "content-length", "connection"}
        kept = {k: v for k, v in headers.items() if k.lower() not in skip}
        return httpx.post(f"{self.moto_url}{path}", headers=kept, content=body, timeout=30)

    def url(self, replica: int) -> str:
        return f"http://127.0.0.1:{self.servers[replica].server_address[1]}"

    def counted(self, replica: int | None = None) -> int:
        with self.lock:
            return sum(1 for r, _ in self.calls if replica is None or r == replica)

    def stop(self) -> None:
        self.release.set()
        for server in self.servers:
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def moto(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    return fresh_account(moto_url, monkeypatch)


@pytest.fixture
def schema(postgres_server: PostgresServer) -> Iterator[Callable[[], PostgresTarget]]:
    """A factory of fresh schemas in the session's PostgreSQL, dropped after the test."""
    made: list[PostgresTarget] = []

    def make() -> PostgresTarget:
        if postgres_server.proc is None:
            postgres_server.start()
        made.append(postgres_server.create_schema())
        return made[-1]

    yield make
    for target in made:
        postgres_server.drop_schema(target)


class Bill:
    """Two days of cost on two pages, dated from the clock the replicas share (the
    machine's, faked or not): the two days before today, UTC."""

    def __init__(self) -> None:
        today = datetime.now(UTC).date()
        self.days = [today - timedelta(days=2), today - timedelta(days=1)]
        self.amounts = [1.5, 2.25]

    def _day(self, n: int) -> dict[str, Any]:
        start = self.days[n]
        return {
            "TimePeriod": {"Start": start.isoformat(), "End": (start + timedelta(1)).isoformat()},
            "Total": {},
            "Groups": [
                {
                    "Keys": ["service$checkout"],
                    "Metrics": {"UnblendedCost": {"Amount": str(self.amounts[n]), "Unit": "USD"}},
                }
            ],
            "Estimated": False,
        }

    def queue(self, moto: str) -> None:
        """Page one (with a NextPageToken) and page two. moto answers the same request
        with the same page again, so a poll repeated from the start reads the same bill."""
        pages = [
            {"ResultsByTime": [self._day(0)], "NextPageToken": "page-2"},
            {"ResultsByTime": [self._day(1)]},
        ]
        response = httpx.post(
            f"{moto}/moto-api/static/ce/cost-and-usage-results",
            json={"results": pages, "account_id": ACCOUNT},
        )
        assert response.status_code == 201

    @property
    def total(self) -> float:
        return sum(self.amounts)


def replica_config(target: PostgresTarget, name: str, endpoint: str) -> dict[str, Any]:
    return {
        "server": {"startup_grace": "1s"},
        "metrics": {"min_refresh": "0.5s"},
        "state": {
            "url": target.url,
            "password": {"env": "PKE_STATE_PASSWORD"},
            "schema": target.schema,
            "replica": name,
            "lease_ttl": f"{TTL:g}s",
        },
        "services": [
            {"name": "checkout", "team": "payments", "cost": {"tags": {"service": "checkout"}}}
        ],
        "sources": {
            "aws_cost": {
                "endpoint_url": endpoint,
                "interval": "1s",
                "timeout": "20s",
                # The first poll imports boto3: on a loaded machine it may take a while.
                "poll_timeout": "120s",
                "lookback_days": 3,
                # Every closed day is settled: a completed poll leaves nothing to ask again.
                "data_delay_days": 0,
            }
        },
    }


ENV = {**TEST_CREDENTIALS, "PKE_STATE_PASSWORD": PASSWORD}


def start_all(group: list[DaemonProcess]) -> None:
    for d in group:
        d.start(wait=False)
    for d in group:
        wait_until(lambda d=d: d._healthy(), timeout=120, what=f"replica /healthz on {d.port}")


def exposition(d: DaemonProcess) -> Exposition:
    return Exposition.parse(d.metrics())


def serves_the_bill(d: DaemonProcess, bill: Bill, paid: int) -> bool:
    exp = exposition(d)
    cost = exp.value("platform_cost", service="checkout", window="7d", provider="aws")
    calls = exp.value("platform_exporter_paid_api_calls_total", source="aws_cost")
    return cost is not None and abs(cost - bill.total) < 1e-9 and calls == paid


class Stored:
    """What the replicas committed, read from PostgreSQL directly."""

    def __init__(self, server: PostgresServer, target: PostgresTarget) -> None:
        self.conn = psycopg.connect(
            server.dsn(target.url.rsplit("/", 1)[1]),
            autocommit=True,
            options=f"-c search_path={target.schema}",
        )

    def one(self, sql: str) -> Any:
        row = self.conn.execute(sql).fetchone()
        return None if row is None else row[0]

    def holder(self) -> str | None:
        """The replica holding the Cost Explorer lease now (none once it expired)."""
        return self.one(  # type: ignore[no-any-return]
            "SELECT holder FROM leases WHERE source = 'aws_cost' "
            "AND expires_at > EXTRACT(EPOCH FROM clock_timestamp())"
        )

    def close(self) -> None:
        self.conn.close()


def kill_mid_poll(front: CostExplorerFront, group: list[DaemonProcess]) -> int:
    """Wait for the holder's poll to ask for page two, kill -9 it there; its index."""
    assert front.held.wait(60), "no replica asked for the second page"
    assert front.held_by is not None
    victim = front.held_by
    group[victim].kill()
    front.hold_second_page.clear()
    front.release.set()
    return victim


def last_success(d: DaemonProcess) -> float | None:
    """When ``d`` last polled the source successfully (its own health)."""
    exp = exposition(d)
    return exp.value("platform_exporter_source_last_success_timestamp_seconds", source="aws_cost")


def polled_again(d: DaemonProcess, since: float | None) -> bool:
    last = last_success(d)
    return last is not None and since is not None and last > since


class Run:
    """One deployment under test: its replicas, its front for moto, its schema."""

    def __init__(
        self,
        names: list[str],
        moto: str,
        target: PostgresTarget,
        server: PostgresServer,
        daemon_process: Callable[..., DaemonProcess],
    ) -> None:
        self.front = CostExplorerFront(moto, len(names))
        self.front.hold_second_page.set()
        self.target = target
        self.group = [
            daemon_process(replica_config(target, name, self.front.url(i)), env=ENV)
            for i, name in enumerate(names)
        ]
        self.stored = Stored(server, target)

    def stop(self) -> None:
        for d in self.group:
            d.stop()
        self.front.stop()


class TestFailover:
    def test_kill_9_of_the_holder_mid_poll_the_lease_moves_and_the_replicas_pay_as_one(
        self,
        moto: str,
        schema: Callable[[], PostgresTarget],
        postgres_server: PostgresServer,
        daemon_process: Callable[..., DaemonProcess],
    ) -> None:
        """The single replica (the reference): page one of the killed poll, page two asked
        and never answered, then both pages of the poll after its restart: 4 calls at the
        upstream (the exporter counts the 3 answered). Three replicas: the holder is killed
        with page two asked; another holds the lease within the TTL and polls from the
        start: 4 calls as well, 2 by the killed one, 2 by the one that took over, none by
        the third. Later polls ask nothing. Every replica serves the stored paid-call
        counter and the stored cost, once."""
        bill = Bill()
        bill.queue(moto)
        solo = Run(["solo"], moto, schema(), postgres_server, daemon_process)
        ha = Run(["r0", "r1", "r2"], moto, schema(), postgres_server, daemon_process)
        try:
            start_all(solo.group + ha.group)
            kill_mid_poll(solo.front, solo.group)
            solo.group[0].start(wait=False)  # the single replica's only way back
            victim = kill_mid_poll(ha.front, ha.group)
            killed = time.monotonic()
            gone = (f"r{victim}", None)
            assert ha.stored.holder() in gone
            wait_until(
                lambda: ha.stored.holder() not in gone,
                timeout=3 * TTL,
                interval=0.05,
                what="another replica holding the lease",
            )
            takeover = time.monotonic() - killed
            assert takeover <= TTL, f"lease taken over {takeover:.2f}s after the kill"
            taker = int(str(ha.stored.holder()).removeprefix("r"))
            survivors = [d for i, d in enumerate(ha.group) if i != victim]
            for d in [*survivors, solo.group[0]]:
                wait_until(
                    lambda d=d: serves_the_bill(d, bill, 3), timeout=120, what="the bill served"
                )
            # One more poll by each holder after the bill: every day is settled, it asks nothing.
            for d in (ha.group[taker], solo.group[0]):
                since = last_success(d)
                wait_until(
                    lambda d=d, since=since: polled_again(d, since),
                    timeout=10,
                    what="another poll",
                )
            assert solo.front.counted() == 4
            assert ha.front.counted() == solo.front.counted()
            assert ha.front.counted(victim) == 2
            assert ha.front.counted(taker) == 2
            for d in survivors:
                exp = exposition(d)
                assert serves_the_bill(d, bill, 3)
                leased = exp.value("platform_exporter_source_leased", source="aws_cost")
                assert leased == (1 if d is ha.group[taker] else 0)
        finally:
            solo.stop()
            ha.stop()
        for run in (solo, ha):
            stored = run.stored
            assert stored.one("SELECT SUM(calls) FROM cost_paid_calls") == 3
            counter = (
                "SELECT value FROM counters WHERE metric = 'platform_exporter_paid_api_calls_total'"
            )
            assert stored.one(counter) == 3
            # One row per day with cost: the killed poll committed none, the next one once.
            assert stored.one("SELECT COUNT(*) FROM cost_daily WHERE billed > 0") == 2
            assert stored.one("SELECT SUM(billed) FROM cost_daily") == pytest.approx(bill.total)
            stored.close()
