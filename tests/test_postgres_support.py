"""The test PostgreSQL server: started once per session, a fresh database per test."""

from __future__ import annotations

import psycopg

from tests.support.postgres import PostgresServer


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
