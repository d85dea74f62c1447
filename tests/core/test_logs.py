"""``--log-format json``: one JSON object per line, tagged with the poll it was logged in."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.core import logs
from exporter.core.redact import REDACTOR, RedactingFilter
from tests.support.daemon import run_cli
from tests.support.net import free_port

POLL_ID = re.compile(r"^[0-9a-f]{16}$")


@dataclass(frozen=True)
class FakeSource:
    name: str
    kind: str


class Poller:
    """Stands for the daemon: its ``poll`` is decorated as the daemon's is."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log

    @logs.per_poll
    async def poll(self, src: FakeSource) -> str:
        self.log.info("polling %s", src.name)
        # A worker thread started by the poll (store housekeeping runs so) keeps its tag.
        await asyncio.to_thread(self.log.info, "in a thread")
        self.log.info("poll done", extra={"duration_seconds": 0.25})
        tag = logs.CURRENT_POLL.get()
        assert tag is not None
        return tag.poll_id


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose one handler is set up as the CLI sets up the root's: redaction, then
    the JSON formatter and the poll tags."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logs.configure(handler, "json")
    log = logging.getLogger("tests.json_log")
    log.handlers, log.propagate, log.level = [handler], False, logging.DEBUG
    yield log, stream
    log.handlers, log.propagate = [], True


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = stream.getvalue().splitlines()
    return [json.loads(line) for line in lines]


class TestJsonRecords:
    def test_a_poll_s_records_carry_its_source_kind_and_id(
        self, json_log: tuple[logging.Logger, io.StringIO]
    ) -> None:
        log, stream = json_log
        poll_id = asyncio.run(Poller(log).poll(FakeSource("gh", "github")))
        first, threaded, done = records(stream)
        assert POLL_ID.match(poll_id)
        for record in (first, threaded, done):
            assert (record["source"], record["kind"], record["poll_id"]) == (
                "gh",
                "github",
                poll_id,
            )
        assert first["message"] == "polling gh"
        assert first["level"] == "INFO"
        assert first["logger"] == "tests.json_log"
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", first["time"])
        assert threaded["message"] == "in a thread"
        assert done["duration_seconds"] == 0.25
        assert "duration_seconds" not in first

    def test_each_poll_has_its_own_id_and_a_record_outside_a_poll_none(
        self, json_log: tuple[logging.Logger, io.StringIO]
    ) -> None:
        log, stream = json_log
        poller = Poller(log)

        async def two() -> list[str]:
            return list(
                await asyncio.gather(
                    poller.poll(FakeSource("a", "probe")), poller.poll(FakeSource("b", "kong"))
                )
            )

        ids = asyncio.run(two())
        log.warning("after the polls")
        out = records(stream)
        assert len(set(ids)) == 2
        assert {r["poll_id"] for r in out if r.get("source") == "a"} == {ids[0]}
        assert {r["poll_id"] for r in out if r.get("source") == "b"} == {ids[1]}
        assert out[-1] == {
            "time": out[-1]["time"],
            "level": "WARNING",
            "logger": "tests.json_log",
            "message": "after the polls",
        }

    def test_secrets_are_redacted_from_message_and_traceback(
        self, json_log: tuple[logging.Logger, io.StringIO]
    ) -> None:
        log, stream = json_log
        secret = "ghp_KnownToTheConfig0123456789"
        REDACTOR.add(secret)
        try:
            raise RuntimeError(f"upstream said: bad credentials {secret}")
        except RuntimeError:
            log.exception("poll failed with Authorization: Bearer %s", secret)
        text = stream.getvalue()
        assert secret not in text
        (record,) = records(stream)
        assert record["message"].startswith("poll failed with Authorization: ")
        assert "RuntimeError: upstream said: bad credentials" in record["exception"]

    def test_a_multi_line_message_is_still_one_line(
        self, json_log: tuple[logging.Logger, io.StringIO]
    ) -> None:
        log, stream = json_log
        log.error('first\nsecond\r\n{"forged": true}')
        assert len(stream.getvalue().splitlines()) == 1
        (record,) = records(stream)
        assert "forged" in record["message"]
        assert "\n" not in record["message"]

    def test_an_unknown_format_is_refused(self) -> None:
        with pytest.raises(ValueError, match="xml"):
            logs.configure(logging.StreamHandler(), "xml")


class TestTheCommandLine:
    @pytest.fixture
    def failing_config(self, tmp_path: Path) -> Path:
        """One GitHub source whose API port is closed: its poll fails fast (connect)."""
        path = tmp_path / "c.yaml"
        data = {
            "state": {"path": str(tmp_path / "state.db")},
            "services": [{"name": "checkout", "team": "payments", "ci": [{"github": "a/b"}]}],
            "sources": {
                "probe": {"enabled": False},
                "github": {
                    "base_url": f"http://127.0.0.1:{free_port()}/api/v3",
                    "token": "ghp_NeverInTheLog0123456789abcdef",
                    "timeout": "2s",
                },
            },
        }
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return path

    def test_json_logs_are_json_lines_with_the_poll_s_fields(self, failing_config: Path) -> None:
        proc = run_cli("--log-format", "json", "once", "--config", str(failing_config))
        assert proc.returncode == 1  # the source failed
        lines = [json.loads(line) for line in proc.stderr.splitlines()]
        (failed,) = [r for r in lines if r["message"].startswith("source github: poll failed")]
        assert failed["level"] == "ERROR"
        assert (failed["source"], failed["kind"]) == ("github", "github")
        assert POLL_ID.match(failed["poll_id"])
        assert 0 < failed["duration_seconds"] < 60
        # Every line of that poll (the client's retries too) carries its id.
        tagged = [r for r in lines if r.get("source") == "github"]
        assert len(tagged) > 1
        assert {r["poll_id"] for r in tagged} == {failed["poll_id"]}
        assert "ghp_NeverInTheLog" not in proc.stderr

    def test_text_stays_the_default(self, failing_config: Path) -> None:
        proc = run_cli("once", "--config", str(failing_config))
        assert proc.returncode == 1
        assert re.search(r" ERROR exporter\.daemon: source github: poll failed", proc.stderr)
        assert not proc.stderr.lstrip().startswith("{")

    def test_an_unknown_format_is_a_usage_error(self, failing_config: Path) -> None:
        proc = run_cli("--log-format", "xml", "once", "--config", str(failing_config))
        assert proc.returncode == 2
        assert "--log-format" in proc.stderr


def test_a_redactor_reset_to_what_it_knew_hides_exactly_that_again() -> None:
    """What the suite's per-test reset relies on: secrets learned since are shown again."""
    from exporter.core.redact import Redactor

    redactor = Redactor()
    redactor.add("first-secret")
    known = redactor.known()
    redactor.add("later-secret")
    assert redactor.text("first-secret later-secret") == "*** ***"
    redactor.reset(known)
    assert redactor.text("first-secret later-secret") == "*** later-secret"
    redactor.reset(frozenset())
    assert redactor.text("first-secret") == "first-secret"
