"""The PostgreSQL backend's own behaviour: its failures are ``state``, a broken connection is
replaced without a restart, replicas see each other's commits, and ``state.url`` selects it."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest
import yaml

from exporter.core.backend import PostgresTarget
from exporter.core.errors import StartupError, StateError, classify
from exporter.core.store import Store
from exporter.domains import open_store
from exporter.domains.probe import store as probe_store
from exporter.domains.probe.records import ProbeResult
from tests.support.daemon import run_cli
from tests.support.postgres import PASSWORD, PostgresServer


def _raw(server: PostgresServer, target: PostgresTarget) -> psycopg.Connection[tuple[object, ...]]:
    """A connection of our own to the test's schema (another client of the database)."""
    conn = psycopg.connect(
        server.dsn(target.url.rsplit("/", 1)[1]),
        autocommit=True,
        options=f"-c search_path={target.schema}",
    )
    return conn


def _end_sessions(admin: psycopg.Connection[tuple[object, ...]]) -> None:
    """End every session of the store's (what a server restart does to them)."""
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'platform-kpi-exporter' AND pid <> pg_backend_pid()"
    )


@pytest.fixture
def target(pg_schema: PostgresTarget) -> PostgresTarget:
    return pg_schema


class TestFailures:
    def test_a_row_locked_by_another_replica_fails_after_the_busy_timeout(
        self, postgres_server: PostgresServer, target: PostgresTarget
    ) -> None:
        """A write that waits past ``busy_timeout`` for another's lock fails with reason
        ``state`` and keeps nothing; once the lock is gone, writes go on."""
        store = Store(target, busy_timeout=0.1)
        with store.transaction() as tx:
            tx.incr("events_total", {"service": "a"})
        other = _raw(postgres_server, target)
        other.execute("BEGIN")
        other.execute("UPDATE counters SET value = value WHERE metric = 'events_total'")
        with pytest.raises(StateError, match="lock timeout") as caught, store.transaction() as tx:
            tx.incr("events_total", {"service": "a"}, 5)
        assert classify(caught.value) == "state"
        other.execute("ROLLBACK")
        other.close()
        with store.transaction() as tx:
            tx.incr("events_total", {"service": "a"})
        assert store.counters("events_total") == [({"service": "a"}, 2.0)]
        store.close()

    def test_a_dropped_connection_fails_one_write_and_the_next_reconnects(
        self, postgres_server: PostgresServer, target: PostgresTarget
    ) -> None:
        """The server ends our sessions (a restart, a failover, a proxy's idle cut) while a
        write is under way (its transaction has begun and written a row there): it fails as
        ``state`` with nothing kept; the next one reconnects."""
        store = Store(target)
        admin = _raw(postgres_server, target)
        with pytest.raises(StateError) as caught, store.transaction() as tx:
            tx.incr("events_total", {"service": "a"}, 5)
            tx.execute(
                "INSERT INTO cursors (source, name, value, updated_at) VALUES ('s', 'c', 'v', 0)"
            )
            _end_sessions(admin)
            tx.incr("events_total", {"service": "b"})
        assert classify(caught.value) == "state"
        admin.close()
        with store.transaction() as tx:
            tx.incr("events_total", {"service": "a"})
        assert store.counters("events_total") == [({"service": "a"}, 1.0)]
        assert store.cursors("s") == {}
        store.close()

    def test_a_write_begun_on_a_connection_ended_while_idle_runs_on_a_new_one(
        self, postgres_server: PostgresServer, target: PostgresTarget
    ) -> None:
        """The sessions ended between two writes (nothing of the next one had reached the
        server): the next write, BEGIN and all, runs once on a new connection."""
        store = Store(target)
        with store.transaction() as tx:
            tx.incr("events_total", {"service": "a"})
        admin = _raw(postgres_server, target)
        _end_sessions(admin)
        admin.close()
        with store.transaction() as tx:
            tx.incr("events_total", {"service": "a"}, 2)
            tx.execute(
                "INSERT INTO cursors (source, name, value, updated_at) VALUES ('s', 'c', 'v', 0)"
            )
        assert store.counters("events_total") == [({"service": "a"}, 3.0)]
        assert store.cursors("s") == {"c": "v"}
        store.close()

    def test_an_unreachable_server_is_one_line_at_start(
        self, postgres_server: PostgresServer
    ) -> None:
        """Nothing listens there: the store refuses to open, naming ``state.url`` and the
        URL without its password, in one line."""
        target = PostgresTarget(
            "postgresql://kpi@127.0.0.1:1/kpi", password="s3cret", connect_timeout=2
        )
        with pytest.raises(StartupError) as refused:
            Store(target)
        message = str(refused.value)
        assert message.startswith("state.url: cannot use postgresql://kpi@127.0.0.1:1/kpi: ")
        assert "\n" not in message and "s3cret" not in message


class TestLiteralBinding:
    """A statement's parameters go into its text as literals (client-side binding, which
    keeps SQLite's loose typing), made without psycopg's parse of the text."""

    VALUES = ("it's", "back\\slash", "100%", None, True, False, 7, -2.5, 0.125, "")

    def test_the_statement_sent_is_the_client_side_cursors(self, target: PostgresTarget) -> None:
        """Byte for byte what psycopg's ``ClientCursor`` makes of the same statement and
        parameters: quotes, backslashes, NULL, booleans as 0 and 1, a literal ``%``."""
        from exporter.core.backend_postgres import PgConnection
        from exporter.core.dialect import to_postgres

        conn = PgConnection(target, lock_timeout=5.0)
        sql = "SELECT " + ", ".join("?" for _ in self.VALUES) + ", 'a%b'"
        made = conn._inline(sql, self.VALUES)
        expected = conn.raw().cursor().mogrify(to_postgres(sql), self.VALUES)
        assert made is not None and made.decode() == expected
        conn.close()

    def test_values_read_back_as_written(self, target: PostgresTarget) -> None:
        store = Store(target)
        row = store.query("SELECT " + ", ".join("?" for _ in self.VALUES), self.VALUES)[0]
        assert tuple(row) == ("it's", "back\\slash", "100%", None, 1, 0, 7, -2.5, 0.125, "")
        store.close()

    def test_a_wrong_parameter_count_is_psycopgs_error(self, target: PostgresTarget) -> None:
        store = Store(target)
        with pytest.raises(psycopg.ProgrammingError, match="2 placeholders but 1 parameters"):
            store.query("SELECT ?, ?", (1,))
        store.close()


class TestReplicas:
    def test_a_commit_by_another_replica_changes_every_input_version(
        self, target: PostgresTarget
    ) -> None:
        """A render on one replica recomputes after another replica committed (as SQLite's
        ``data_version`` tells of another process), and not after only its own commits."""
        one, two = open_store(target), open_store(target)
        one.versions()
        with one.transaction() as tx:
            tx.incr("events_total", {})
        mine = one.versions()
        assert one.versions() == mine  # our own commit is counted once, by the change log
        before = one.versions()["*"]
        with two.transaction() as tx:
            tx.incr("events_total", {})
        assert one.versions()["*"] == before + 1
        one.close()
        two.close()

    def test_replicas_writing_the_same_results_count_them_once(
        self, target: PostgresTarget
    ) -> None:
        """Idempotent upserts across connections: the same probe results written by two
        stores (a re-poll after a takeover) are one row and one count."""
        one, two = open_store(target), open_store(target)
        results = [ProbeResult("svc", "health", 100.0, 0.02, True, "", 200)]
        for store in (one, two):
            with store.transaction() as tx:
                probe_store.write(tx, results)
        counts = {lb["result"]: v for lb, v in one.counters(probe_store.CHECKS_TOTAL) if v}
        assert counts == {"success": 1.0}
        assert len(two.query("SELECT service FROM probe_results")) == 1


class TestStateUrl:
    def test_the_daemon_keeps_its_state_on_postgresql(
        self, tmp_path: Path, postgres_server: PostgresServer, target: PostgresTarget
    ) -> None:
        """``state.url`` with the password from the environment: ``once`` migrates the
        database and commits there, and the password is printed nowhere."""
        config = {
            "state": {
                "url": target.url,
                "password": {"env": "PKE_STATE_PASSWORD"},
                "schema": target.schema,
            },
            "services": [],
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        done = run_cli("once", "--config", str(path), env={"PKE_STATE_PASSWORD": PASSWORD})
        assert done.returncode == 0, done.stderr
        assert PASSWORD not in done.stdout + done.stderr
        # The log names the database by its URL without the user name.
        assert "postgresql://***@127.0.0.1" in done.stderr and "postgres@" not in done.stderr
        again = Store(target)
        assert again.schema_version("probe") == len(probe_store.MIGRATIONS)
        again.close()

    def test_a_wrong_password_is_one_line_and_exit_1(
        self, tmp_path: Path, target: PostgresTarget
    ) -> None:
        config = {"state": {"url": target.url, "password": "wrong"}, "services": []}
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        done = run_cli("once", "--config", str(path))
        assert done.returncode == 1
        lines = [line for line in done.stderr.splitlines() if "state.url" in line]
        assert len(lines) == 1 and "password authentication failed" in lines[0]
        # libpq names the user; the line does not.
        assert 'user "***"' in lines[0] and "postgres@" not in lines[0]
        assert "Traceback" not in done.stderr

    @pytest.mark.parametrize(
        ("url", "says"),
        [
            ("postgresql://kpi:hunter2@db/kpi", "no password in the URL"),
            ("postgresql://db/kpi?user=kpi&password=hunter2", "no password in the URL"),
            ("mysql://db/kpi", "unknown scheme 'mysql'"),
            ("sqlite://state.db", "a SQLite URL is sqlite:///relative/path"),
        ],
    )
    def test_a_bad_url_is_one_line_naming_the_field_exit_2(
        self, tmp_path: Path, url: str, says: str
    ) -> None:
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump({"state": {"url": url}}), encoding="utf-8")
        done = run_cli("check-config", str(path))
        assert done.returncode == 2
        assert done.stderr.strip().count("\n") == 0
        assert "state.url" in done.stderr and says in done.stderr
        assert "hunter2" not in done.stderr

    def test_a_sqlite_url_is_the_file_after_the_third_slash(self, tmp_path: Path) -> None:
        from exporter.core.backend import parse_url

        assert parse_url("sqlite:///state/x.db") == Path("state/x.db")
        assert parse_url(f"sqlite:///{tmp_path}/x.db") == tmp_path / "x.db"


class TestReplicasStartingTogether:
    def test_replicas_opening_an_empty_schema_at_once_all_start(
        self, postgres_server: PostgresServer
    ) -> None:
        """Replicas started together on an empty database each create its schema, commit
        sequence and version table if missing; none fails because another created one
        a moment before (PostgreSQL's IF NOT EXISTS alone is not safe against that)."""
        if postgres_server.proc is None:
            postgres_server.start()
        fresh = postgres_server.create_schema()
        together = threading.Barrier(6)
        failures: list[BaseException] = []

        def open_one() -> None:
            together.wait()
            try:
                Store(fresh).close()
            except BaseException as exc:  # collected: the test fails on any
                failures.append(exc)

        threads = [threading.Thread(target=open_one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        try:
            assert failures == []
        finally:
            postgres_server.drop_schema(fresh)


class TestOutage:
    def test_the_store_reconnects_after_the_database_comes_back(
        self, postgres_server: PostgresServer, target: PostgresTarget
    ) -> None:
        """PostgreSQL stops: writes and reads fail as ``state`` (nothing half-kept); it starts
        again: the same store writes and reads on new connections, without a restart, and
        what was committed before is all there, once."""
        store = Store(target, busy_timeout=1.0)
        with store.transaction() as tx:
            tx.incr("events_total", {"service": "a"})
        postgres_server.stop()
        try:
            with pytest.raises(StateError) as caught, store.transaction() as tx:
                tx.incr("events_total", {"service": "a"})
            assert classify(caught.value) == "state"
            with pytest.raises(psycopg.OperationalError) as read:
                store.counters("events_total")
            assert classify(read.value) == "state"
        finally:
            postgres_server.start()
        with store.transaction() as tx:
            tx.incr("events_total", {"service": "a"})
        assert store.counters("events_total") == [({"service": "a"}, 2.0)]
        store.close()
