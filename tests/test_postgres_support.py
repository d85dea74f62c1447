"""The test PostgreSQL server: started once per session, a fresh database per test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from tests.support.daemon import exporter_env
from tests.support.net import port_open, wait_until
from tests.support.paths import REPO_ROOT
from tests.support.postgres import PostgresServer

# A test run of its own that starts the session's server, says where it is, and waits.
WAITING_TEST = """
import json, os, time
from pathlib import Path

def test_waits(postgres_server):
    data = postgres_server.data / "postmaster.pid"
    server = {
        "port": postgres_server.port,
        "root": str(postgres_server.root),
        "postmaster": int(data.read_text().split()[0]),
    }
    Path(os.environ["PKE_SERVER_FILE"]).write_text(json.dumps(server))
    time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # reaped or not


class TestPostgresSupport:
    def test_each_test_gets_an_empty_database_it_can_write(self, postgres_url: str) -> None:
        """A fresh database has no tables of ours, and accepts a write with the password."""
        with psycopg.connect(postgres_url) as conn:
            tables = conn.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            ).fetchone()
            assert tables == (0,)
            conn.execute("CREATE TABLE t (x BIGINT)")
            conn.execute("INSERT INTO t VALUES (1)")
            assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]

    def test_the_server_runs_unprivileged_on_loopback(
        self, postgres_server: PostgresServer, postgres_url: str
    ) -> None:
        """The server answers on 127.0.0.1, and not as a superuser process of root."""
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute(
                "SELECT inet_server_addr()::text, current_setting('port')"
            ).fetchone()
        assert row == ("127.0.0.1/32", str(postgres_server.port))
        assert postgres_server.proc is not None
        owner = (postgres_server.data / "PG_VERSION").stat().st_uid
        assert owner != 0

    def test_a_wrong_password_is_refused(self, postgres_server: PostgresServer) -> None:
        """Logins over TCP need the password (scram-sha-256), so the tests' secrets matter."""
        url = f"postgresql://postgres:wrong@127.0.0.1:{postgres_server.port}/postgres"
        try:
            psycopg.connect(url, connect_timeout=5).close()
        except psycopg.OperationalError as exc:
            assert "password authentication failed" in str(exc)
        else:
            raise AssertionError("a wrong password was accepted")

    def test_a_test_run_killed_outright_leaves_no_server_running(self, tmp_path: Path) -> None:
        """pytest killed with SIGKILL (no teardown runs): its watchdog stops the server
        (the port closes, the postmaster is gone) and removes its directory."""
        (tmp_path / "test_waiting.py").write_text(WAITING_TEST, encoding="utf-8")
        where = tmp_path / "server.json"
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        # The suite's own fixtures, on a test file of its own.
        argv += [
            "-p",
            "tests.conftest",
            "--rootdir",
            str(tmp_path),
            str(tmp_path / "test_waiting.py"),
        ]
        run = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=exporter_env({"PKE_SERVER_FILE": str(where)}),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(where.exists, timeout=120, interval=0.1, what="the inner run's server")
            server = json.loads(where.read_text())
            assert port_open(server["port"])
            run.send_signal(signal.SIGKILL)
            run.wait(timeout=10)
            killed = time.monotonic()
            wait_until(
                lambda: not alive(server["postmaster"]) and not port_open(server["port"]),
                timeout=30,
                interval=0.1,
                what="the server to stop after its test run was killed",
            )
            wait_until(lambda: not Path(server["root"]).exists(), timeout=10, what="cleanup")
            assert time.monotonic() - killed < 30
        finally:
            if run.poll() is None:
                run.kill()
                run.wait(timeout=10)
