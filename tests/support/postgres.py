"""A real PostgreSQL server for the tests: Debian's ``postgresql`` package, on loopback.

:class:`PostgresServer` initialises a data directory (``initdb``) and runs ``postgres``
in the foreground on ``127.0.0.1`` and a free port, as an unprivileged user: PostgreSQL
refuses to run as root, so under root it runs as the package's ``postgres`` user (through
``runuser``), in a directory of its own under the system's temporary directory (pytest's
``tmp_path`` is private to root). Durability is switched off (``fsync``, full page writes):
a test database never outlives the session.

One server is started per pytest session (the ``postgres_server`` fixture in
``tests/conftest.py``) and each test that needs it gets a fresh, empty database of its own
(``postgres_url``). The server can be stopped and started again on the same port and data
(the database outage tests). When the binaries are missing or the server does not start,
the fixture fails with the reason: nothing is skipped.

Clients log in as ``postgres`` with :data:`PASSWORD` (scram-sha-256 over TCP).

A pytest killed outright (SIGKILL, an OOM kill: no teardown runs) must not leave its
server running: each running server has a watchdog, a small process of its own holding
the read end of a pipe whose write end only this process has. When the pipe closes
without a word (the process died), the watchdog stops the server (SIGINT, then
SIGKILL) and removes its directory; a ``stop()`` tells it first, and it just exits.
(``PR_SET_PDEATHSIG`` would not do: ``runuser`` forks the server, which does not inherit
it, and it fires when the thread that started the child ends, not the process.)
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from exporter.core.backend import PostgresTarget
from tests.support.faketime import without_faketime
from tests.support.net import free_port, port_open

PASSWORD = "pke-test-password"
STOPPED = b"stopped\n"

# The watchdog (argv: the server's process group, the parent's pid, the directory).
WATCHDOG = """
import os, shutil, signal, sys, time
group, parent, root = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the test run's to handle
said = sys.stdin.buffer.read()
if said == b"stopped\\n" and os.getppid() == parent:
    sys.exit(0)
try:
    os.killpg(group, signal.SIGINT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.1)
        os.killpg(group, 0)
    os.killpg(group, signal.SIGKILL)
except ProcessLookupError:
    pass
shutil.rmtree(root, ignore_errors=True)
"""
USER = "postgres"
_LIB = Path("/usr/lib/postgresql")


def binaries() -> Path | None:
    """The newest installed PostgreSQL's ``bin`` directory, if any."""
    if not _LIB.is_dir():
        return None
    found = sorted(
        (p for p in _LIB.iterdir() if (p / "bin" / "postgres").is_file()),
        key=lambda p: int(p.name) if p.name.isdigit() else 0,
    )
    return found[-1] / "bin" if found else None


def _as_user() -> list[str]:
    # PostgreSQL will not run as root: run it as the package's system user.
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        raise RuntimeError("PostgreSQL cannot run as root and runuser is not installed")
    return [runuser, "-u", USER, "--"]


class PostgresServer:
    """One PostgreSQL server: ``start()``, ``stop()``, ``start()`` again, ``destroy()``."""

    def __init__(self, *, durable: bool = False) -> None:
        # The tests' server skips every flush to disk (fsync and full-page writes off): no
        # test is about a crash of the machine. ``durable`` keeps PostgreSQL's defaults
        # there (a benchmark's server, as an operator runs it).
        self.durable = durable
        bindir = binaries()
        if bindir is None:
            raise RuntimeError(
                "PostgreSQL is not installed (no /usr/lib/postgresql/<v>/bin/postgres): "
                "scripts/test installs the Debian package postgresql"
            )
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="pke-postgres-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.watchdog: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._names = itertools.count(1)
        self._shared: str | None = None
        self._initdb()

    def _initdb(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(PASSWORD + "\n", encoding="utf-8")
        if os.geteuid() == 0:
            shutil.chown(self.root, USER, USER)
            shutil.chown(pwfile, USER, USER)
        argv = [
            *_as_user(),
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            USER,
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
        ]
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=without_faketime(dict(os.environ)),
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.strip()}")

    @property
    def url(self) -> str:
        """The server's URL without a database or password (add both)."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def target(self, database: str, **options: Any) -> PostgresTarget:
        """The store's location of ``database``: the URL without the password, which comes
        apart as a secret does."""
        return PostgresTarget(f"{self.url}/{database}", password=PASSWORD, **options)

    def start(self, timeout: float = 60) -> PostgresServer:
        """Run the server (same port, same data as before a ``stop()``) until it accepts."""
        self._log = self.log_path.open("ab")
        argv = [
            *_as_user(),
            str(self.bindir / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.root}",
            *([] if self.durable else ["-c", "fsync=off", "-c", "full_page_writes=off"]),
            "-c",
            "synchronous_commit=off",
            "-c",
            "max_connections=200",
        ]
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # The real clock, as a real database has while the suite runs under faketime
            # (faked, its lock timeouts never fired and a waiting test hung).
            env=without_faketime(dict(os.environ)),
        )
        self._watch(self.proc.pid)
        deadline = time.monotonic() + timeout
        while not self._accepts():
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {self._tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"postgres did not start in {timeout}s: {self._tail()}")
            time.sleep(0.05)
        return self

    def _watch(self, group: int) -> None:
        """Start the server's watchdog (see the module docstring)."""
        self.watchdog = subprocess.Popen(
            [sys.executable, "-c", WATCHDOG, str(group), str(os.getpid()), str(self.root)],
            stdin=subprocess.PIPE,
            # Its own session: a signal to the test run's process group does not reach it.
            start_new_session=True,
            env=without_faketime(dict(os.environ)),
        )

    def _unwatch(self) -> None:
        """The server is stopped on purpose: the watchdog exits without a thing to do."""
        if self.watchdog is None:
            return
        assert self.watchdog.stdin is not None
        try:
            self.watchdog.stdin.write(STOPPED)
            self.watchdog.stdin.close()
        except BrokenPipeError:
            pass
        self.watchdog.wait(timeout=30)
        self.watchdog = None

    def _accepts(self) -> bool:
        if not port_open(self.port):
            return False
        import psycopg

        try:
            psycopg.connect(self.dsn(), connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def _tail(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
        except OSError as exc:
            return f"(no log: {exc})"

    def stop(self) -> None:
        """Fast shutdown (SIGINT: clients are disconnected, nothing is lost)."""
        if self.proc is not None and self.proc.poll() is None:
            # The server runs as another user: signal the group runuser started.
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._unwatch()
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def admin(self, sql: str) -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE)."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)

    def create_database(self) -> str:
        """A new empty database's name."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        self.admin(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return name

    def create_schema(self) -> PostgresTarget:
        """A store's location in a new, empty schema of the session's shared database: much
        quicker than a database of its own (a CREATE DATABASE copies a template)."""
        if self._shared is None:
            self._shared = self.create_database()
        name = f"s{next(self._names)}"
        return self.target(self._shared, schema=name)

    def drop_schema(self, target: PostgresTarget) -> None:
        assert self._shared is not None
        import psycopg

        dsn = self.dsn(self._shared)
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{target.schema}" CASCADE')

    def drop_database(self, name: str) -> None:
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
