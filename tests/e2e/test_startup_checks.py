"""Startup refuses an unusable state path or listen socket in one line, with its exit code.

Exit 2 when the configuration names something that cannot work (a directory as the
state file, a path on a kernel pseudo-filesystem, an address that is not one); exit 1
when the environment is at fault (a read-only mount, a corrupt file, a state file
written by a newer release, a port another process holds). Never a traceback.
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.cli import main
from tests.support.daemon import run_cli
from tests.support.tmpfs import tmpfs


def write_config(tmp_path: Path, state: Path | str, **server: Any) -> Path:
    path = tmp_path / "config.yaml"
    config = {
        "state": {"path": str(state)},
        "server": {"listen_address": "127.0.0.1", "port": 0, **server},
        "services": [{"name": "checkout", "team": "payments"}],
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def refused(capsys: pytest.CaptureFixture[str], config: Path, code: int) -> str:
    """Run ``run --config`` in-process; assert it exits ``code`` with one line; return it."""
    assert main(["run", "--config", str(config)]) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert str(config) in err
    return err


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs this test may remount read-only; skipped without the right to mount."""
    with tmpfs(tmp_path / "mnt", "1m") as mount:
        yield mount


def remount_read_only(mount: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)


class TestStatePath:
    def test_a_directory_is_a_config_error(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        state = tmp_path / "state.db"
        state.mkdir()
        err = refused(capsys, write_config(tmp_path, state), 2)
        assert f"state.path: {state} is a directory" in err

    def test_a_path_under_proc_is_a_config_error(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        err = refused(capsys, write_config(tmp_path, "/proc/platform-kpi/state.db"), 2)
        assert "state.path: /proc/platform-kpi/state.db is on the kernel's proc filesystem" in err

    def test_a_parent_that_is_a_file_cannot_be_created(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        (tmp_path / "plain").write_text("x")
        err = refused(capsys, write_config(tmp_path, tmp_path / "plain" / "state.db"), 1)
        assert f"state.path: cannot create the directory {tmp_path / 'plain'}" in err

    def test_a_corrupt_file_is_refused_and_left_alone(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        state = tmp_path / "state.db"
        state.write_bytes(b"this is no database " * 300)
        err = refused(capsys, write_config(tmp_path, state), 1)
        assert f"state.path: {state} is not a SQLite database or is corrupt" in err
        assert state.read_bytes() == b"this is no database " * 300

    def test_a_damaged_database_fails_the_integrity_check(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A valid header over damaged pages is caught at start, not by a later poll."""
        state = tmp_path / "state.db"
        conn = sqlite3.connect(state)
        conn.execute("CREATE TABLE t (x TEXT)")
        conn.execute("CREATE INDEX t_x ON t (x)")
        conn.executemany("INSERT INTO t VALUES (?)", [(f"row {i}" * 20,) for i in range(500)])
        conn.commit()
        conn.close()
        data = bytearray(state.read_bytes())
        page = 4096
        data[3 * page : 5 * page] = b"\xff" * (2 * page)  # wreck two b-tree pages
        state.write_bytes(bytes(data))
        err = refused(capsys, write_config(tmp_path, state), 1)
        assert f"state.path: {state}" in err and "corrupt" in err

    def test_a_state_file_from_a_newer_release_is_refused(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        state = tmp_path / "state.db"
        conn = sqlite3.connect(state)
        conn.execute("CREATE TABLE schema_version (component TEXT PRIMARY KEY, version INTEGER)")
        conn.execute("INSERT INTO schema_version VALUES ('core', 99)")
        conn.commit()
        conn.close()
        err = refused(capsys, write_config(tmp_path, state), 1)
        assert f"state.path: {state} has core schema v99, written by a newer release" in err

    def test_a_read_only_mount_is_refused(
        self, tmp_path: Path, mounted: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Both a new state file and an existing one on a read-only mount."""
        existing = mounted / "state.db"
        sqlite3.connect(existing).close()
        existing.write_bytes(existing.read_bytes())
        remount_read_only(mounted)
        for state in (mounted / "new.db", existing):
            err = refused(capsys, write_config(tmp_path, state), 1)
            assert "state.path: cannot write in" in err
            assert "read-only" in err

    def test_the_process_prints_one_line_and_no_traceback(self, tmp_path: Path) -> None:
        state = tmp_path / "state.db"
        state.mkdir()
        config = write_config(tmp_path, state)
        done = run_cli("run", "--config", str(config))
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [
            f"config error in {config}: state.path: {state} is a directory, not a database file"
        ]


class TestListen:
    def test_a_port_in_use_is_an_environment_error(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            config = write_config(tmp_path, tmp_path / "state.db", port=port)
            err = refused(capsys, config, 1)
        assert f"server.port: 127.0.0.1:{port} is already in use" in err

    def test_an_address_of_no_interface_here_is_a_config_error(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never assigned to this host.
        config = write_config(tmp_path, tmp_path / "state.db", listen_address="192.0.2.1")
        err = refused(capsys, config, 2)
        assert "server.listen_address: '192.0.2.1' is not an address of this host" in err

    def test_unloadable_tls_files_are_a_config_error(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
        cert.write_text("not a certificate")
        key.write_text("not a key")
        config = write_config(
            tmp_path, tmp_path / "state.db", tls={"cert_file": str(cert), "key_file": str(key)}
        )
        err = refused(capsys, config, 2)
        assert f"server.tls: cannot load the certificate {cert}" in err
