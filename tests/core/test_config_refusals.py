"""Configs that must be refused: one line naming the file and the field, exit 2, no traceback.

``check-config`` used to accept these (or die with a traceback on them), and ``run``
then failed later, mid-start.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.cli import main

BASE = "services:\n  - name: checkout\n    team: payments\n"


def refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | bytes) -> str:
    path = tmp_path / "config.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    assert main(["check-config", str(path)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"config error in {path}: "), err
    return err.removeprefix(f"config error in {path}: ")


class TestDurations:
    @pytest.mark.parametrize("value", [".inf", ".nan", "-.inf", "1e20", "100000w"])
    def test_a_duration_must_be_finite_and_bounded(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
    ) -> None:
        text = BASE + f"sources:\n  probe:\n    interval: {value}\n"
        err = refused(tmp_path, capsys, text)
        assert err.startswith("sources.probe.interval: "), err


class TestYaml:
    def test_a_duplicate_key_is_refused_with_its_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        err = refused(tmp_path, capsys, BASE + "state:\n  path: a.db\n  path: b.db\n")
        assert "duplicate key 'path'" in err and "line 6" in err

    def test_a_non_string_key_names_its_path(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert refused(tmp_path, capsys, BASE + "1: x\n") == "1: keys must be strings"
        err = refused(tmp_path, capsys, BASE + "server:\n  true: 1\n")
        assert err == "server[True]: keys must be strings"

    def test_a_file_that_is_not_utf8_is_refused(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        err = refused(tmp_path, capsys, BASE.encode() + b"# caf\xe9\n")
        assert err.startswith("not UTF-8 text (byte ")


class TestListenAddress:
    @pytest.mark.parametrize("value", ["not an address", "300.1.2.3.4:99", "-bad-"])
    def test_an_address_that_is_no_address_is_refused(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
    ) -> None:
        err = refused(tmp_path, capsys, BASE + f"server:\n  listen_address: '{value}'\n")
        assert err.startswith("server.listen_address: "), err

    @pytest.mark.parametrize("value", ["", "0.0.0.0", "::", "[::1]", "localhost", "node-1.example"])
    def test_addresses_and_host_names_are_accepted(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
    ) -> None:
        path = tmp_path / "config.yaml"
        path.write_text(BASE + f"server:\n  listen_address: '{value}'\n", encoding="utf-8")
        assert main(["check-config", str(path)]) == 0
        capsys.readouterr()
