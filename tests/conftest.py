"""Fixtures shared by the whole suite.

Real servers (each on 127.0.0.1, an ephemeral port, files in ``tmp_path``,
stopped at teardown):

* ``nginx``: a factory ``nginx(locations, http_extra="", tls=None) -> NginxServer``
  (``tls=tests.support.tls.self_signed(dir)`` serves HTTPS).
* ``slow_upstream``: a :class:`~tests.support.slow.SlowUpstream` (``/sleep/<s>``,
  ``/hold/<s>``, ``/status/<code>``) for nginx to proxy to.
* ``prometheus``: a factory ``prometheus(targets, job=None, rule_files=None) -> PrometheusServer``.
* ``daemon_process``: a factory ``daemon_process(config_dict, env=None) -> DaemonProcess``
  running ``python -m exporter run`` (not started: call ``.start()``).
* ``demo_process``: a factory ``demo_process(at=None, port=0) -> DemoProcess`` running
  ``python -m exporter demo`` (started), ``--as-of`` the instant ``at`` if given.
* ``postgres_server``: one :class:`~tests.support.postgres.PostgresServer` for the whole
  session (started at its first use, stopped at the end); ``postgres_url``: a fresh empty
  database on it for one test (its URL, password included), dropped after.
* ``state_location``: parametrised over both backends, where a store test keeps its
  state: a SQLite file in ``tmp_path``, or a fresh PostgreSQL database
  (:class:`~exporter.core.backend.PostgresTarget`). A test asking for it runs on both.

And plain helpers: ``free_port`` (a function), ``tests.support.exposition.Exposition``
to read values back, ``tests.support.daemon.run_cli`` to run the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.core.backend import PostgresTarget
from exporter.core.redact import REDACTOR
from tests.support import internal
from tests.support.daemon import DaemonProcess, DemoProcess
from tests.support.environ import pin_environ
from tests.support.faketime import repair_sleep
from tests.support.net import free_port as _free_port
from tests.support.nginx import NginxServer, nginx_available
from tests.support.postgres import PostgresServer
from tests.support.prometheus import PrometheusServer
from tests.support.slow import SlowUpstream

# Under faketime (how the suite is checked on other dates), time.sleep may need repair.
repair_sleep()
# Before any test starts a thread: tests change the environment while servers' threads read it.
pin_environ()


@pytest.fixture(autouse=True)
def forget_the_secrets_a_test_taught() -> Iterator[None]:
    """The redactor is process-wide, as in the daemon: a word one test used as a secret
    (``wrong``) would otherwise be starred out of a later test's paths and messages."""
    known = REDACTOR.known()
    yield
    REDACTOR.reset(known)


@pytest.fixture(autouse=True)
def no_internal_reason(request: pytest.FixtureRequest) -> Iterator[None]:
    """Reason ``internal`` is kept for real bugs: a test that sees one fails, unless it is
    marked ``internal_reason`` (it provokes a bug on purpose)."""
    with internal.watch() as seen:
        yield
        if seen and request.node.get_closest_marker("internal_reason") is None:
            pytest.fail(
                "a poll failed with reason internal (a bug; mark the test internal_reason "
                "if it provokes one on purpose):\n" + "\n".join(seen[:5]),
                pytrace=False,
            )


@pytest.fixture
def free_port() -> Callable[[], int]:
    return _free_port


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[..., NginxServer]]:
    if not nginx_available():
        pytest.fail("nginx is not installed: scripts/test installs the Debian package")
    started: list[NginxServer] = []

    def start(
        locations: str, http_extra: str = "", tls: tuple[Path, Path] | None = None
    ) -> NginxServer:
        server = NginxServer(tmp_path / f"nginx{len(started)}", locations, http_extra, tls)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def slow_upstream() -> Iterator[SlowUpstream]:
    upstream = SlowUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[..., PrometheusServer]]:
    started: list[PrometheusServer] = []

    def start(targets: list[str], **kwargs: Any) -> PrometheusServer:
        server = PrometheusServer(tmp_path / f"prometheus{len(started)}", targets, **kwargs)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def daemon_process(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    made: list[DaemonProcess] = []

    def make(config: dict[str, Any], env: dict[str, str] | None = None) -> DaemonProcess:
        proc = DaemonProcess(tmp_path / f"daemon{len(made)}", config, env)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.stop()
        internal.note_log("daemon", proc.log())


@pytest.fixture
def demo_process(tmp_path: Path) -> Iterator[Callable[..., DemoProcess]]:
    started: list[DemoProcess] = []

    def start(at: float | None = None, port: int = 0) -> DemoProcess:
        demo = DemoProcess(tmp_path / f"demo{len(started)}", at, port)
        started.append(demo)
        return demo.start()

    yield start
    for demo in started:
        demo.stop()
        internal.note_log("demo", demo.log())


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session; a test needing it fails (never skips) when it
    cannot start, with the reason."""
    try:
        server = PostgresServer()
    except RuntimeError as exc:
        pytest.fail(f"PostgreSQL unavailable: {exc}", pytrace=False)
    try:
        server.start()
    except RuntimeError as exc:
        server.destroy()
        pytest.fail(f"PostgreSQL did not start: {exc}", pytrace=False)
    yield server
    server.destroy()


@pytest.fixture
def pg_schema(postgres_server: PostgresServer) -> Iterator[PostgresTarget]:
    """A fresh schema of the session's PostgreSQL server, dropped after the test (the
    server started again first if the test stopped it)."""
    if postgres_server.proc is None:
        postgres_server.start()
    made = postgres_server.create_schema()
    yield made
    if postgres_server.proc is None:
        postgres_server.start()
    postgres_server.drop_schema(made)


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> Iterator[str]:
    """The name of a fresh, empty database of the session's server, dropped after the test."""
    if postgres_server.proc is None:
        postgres_server.start()  # a test before stopped it and failed before restarting
    name = postgres_server.create_database()
    yield name
    if postgres_server.proc is None:
        postgres_server.start()
    postgres_server.drop_database(name)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, postgres_database: str) -> str:
    """A fresh, empty database's URL, password included (for psycopg itself)."""
    return postgres_server.dsn(postgres_database)


@pytest.fixture(params=["sqlite", "postgresql"])
def state_location(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Path | PostgresTarget]:
    """Where a store test keeps its state, once per backend (PostgreSQL: a fresh schema of
    the session's one server, started only when a test asks for it)."""
    if request.param == "sqlite":
        yield tmp_path / "state.db"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    if server.proc is None:
        server.start()
    target = server.create_schema()
    yield target
    if server.proc is None:
        server.start()
    server.drop_schema(target)
