"""What reads the stored history opens the state named by ``state.url``: ``report`` and
``once --as-of`` on PostgreSQL print what they print from the same history in SQLite, read
only, and a database that holds no state, or cannot be reached, is one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from exporter.cli import main
from exporter.core.backend import PostgresTarget
from tests.report import seed
from tests.support.postgres import PASSWORD, PostgresServer

ENV = "PKE_REVIEW_STATE_PASSWORD"
AS_OF = "2027-01-04T06:00:00Z"  # seed.AS_OF


@pytest.fixture
def target(pg_schema: PostgresTarget) -> PostgresTarget:
    return pg_schema


def _postgres_state(target: PostgresTarget) -> dict[str, Any]:
    return {"url": target.url, "password": {"env": ENV}, "schema": target.schema}


def _config_file(tmp_path: Path, state: dict[str, Any] | None = None) -> Path:
    path = tmp_path / "config.yml"
    data = seed.config_data(tmp_path, state)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def on_sqlite(tmp_path: Path) -> Path:
    """The seeded history in a SQLite file: the reference."""
    home = tmp_path / "sqlite"
    home.mkdir()
    seed.seeded(home)
    return _config_file(home)


@pytest.fixture
def on_postgres(tmp_path: Path, target: PostgresTarget, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The same history in a PostgreSQL schema, the config naming it by ``state.url`` with
    the password from the environment."""
    home = tmp_path / "postgres"
    home.mkdir()
    seed.store_history(target)
    monkeypatch.setenv(ENV, PASSWORD)
    return _config_file(home, _postgres_state(target))


def _contents(server: PostgresServer, target: PostgresTarget) -> dict[str, list[str]]:
    """Every table's rows (as text, sorted) and the commit sequence: what a write changes."""
    database = target.url.rsplit("/", 1)[1]
    with psycopg.connect(server.dsn(database), options=f"-c search_path={target.schema}") as conn:
        names = [
            str(r[0])
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (target.schema,)
            )
        ]
        out = {n: sorted(str(r) for r in conn.execute(f'SELECT * FROM "{n}"')) for n in names}
        out["state_commits"] = [
            str(conn.execute("SELECT last_value FROM state_commits").fetchone())
        ]
    return out


def _report(config: Path, out: Path) -> dict[str, Any]:
    argv = ["report", "--config", str(config), "--week", seed.WEEK, "--as-of", AS_OF]
    assert main([*argv, "--format", "json", "--out", str(out)]) == 0
    data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return data


class TestReadsPostgres:
    def test_the_review_from_postgresql_is_the_review_from_sqlite(
        self, tmp_path: Path, on_sqlite: Path, on_postgres: Path
    ) -> None:
        """``report`` through ``state.url``: the seeded week's numbers (platform uptime
        13/14, checkout's cost 70) and every other value equal SQLite's."""
        from_postgres = _report(on_postgres, tmp_path / "pg.json")
        assert from_postgres["headlines"][0]["value"]["value"] == pytest.approx(13 / 14)
        assert _report(on_sqlite, tmp_path / "sqlite.json") == from_postgres
        assert "70" in json.dumps(from_postgres)

    def test_once_as_of_prints_what_sqlite_prints_and_writes_nothing(
        self,
        on_sqlite: Path,
        on_postgres: Path,
        postgres_server: PostgresServer,
        target: PostgresTarget,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        before = _contents(postgres_server, target)
        argv = ["once", "--as-of", AS_OF, "--config"]
        assert main([*argv, str(on_postgres)]) == 0
        from_postgres = capsys.readouterr().out
        assert main([*argv, str(on_sqlite)]) == 0
        assert capsys.readouterr().out == from_postgres
        assert "platform_cost{" in from_postgres
        assert _contents(postgres_server, target) == before


class TestNoState:
    def test_a_database_without_the_state_is_one_line_and_creates_nothing(
        self,
        tmp_path: Path,
        target: PostgresTarget,
        postgres_server: PostgresServer,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A schema no exporter wrote: exit 2, one line naming ``state.url`` (no user
        name in it); the schema is still not there afterwards."""
        monkeypatch.setenv(ENV, PASSWORD)
        config = _config_file(tmp_path, _postgres_state(target))
        for argv in (["report"], ["once", "--as-of", AS_OF]):
            assert main([*argv, "--config", str(config)]) == 2
            lines = capsys.readouterr().err.strip().splitlines()
            assert lines == [
                f"config error in {config}: state.url: postgresql://***@127.0.0.1:"
                f"{postgres_server.port}/{target.url.rsplit('/', 1)[1]} (schema "
                f"{target.schema}) holds no state database: "
                + (
                    "report reads a stored history"
                    if argv == ["report"]
                    else "--as-of reports on a stored history"
                )
            ]
        database = target.url.rsplit("/", 1)[1]
        with psycopg.connect(postgres_server.dsn(database)) as conn:
            found = conn.execute(
                "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (target.schema,)
            ).fetchone()
        assert found == (0,)

    def test_a_wrong_password_is_one_line_without_the_user_name(
        self,
        tmp_path: Path,
        target: PostgresTarget,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        monkeypatch.setenv(ENV, "not-the-password")
        config = _config_file(tmp_path, _postgres_state(target))
        assert main(["report", "--config", str(config)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "password authentication failed" in err
        assert err.startswith(f"cannot start in {config}: state.url: cannot use postgresql://***@")
        assert "postgres@" not in err and 'user "postgres"' not in err
        assert "not-the-password" not in err
