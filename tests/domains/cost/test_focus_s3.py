"""FOCUS exports in S3 through boto3 against moto in server mode: listing, ETags
(an unchanged object is not fetched again), a restated object, and a billing period
read only once its Data Exports manifest lists every file.

Layout and manifest as AWS Data Exports write them:
https://docs.aws.amazon.com/cur/latest/userguide/dataexports-export-delivery.html
(``<prefix>/<export>/data/BILLING_PERIOD=YYYY-MM/`` and ``.../metadata/BILLING_PERIOD=YYYY-MM/
<export>-Manifest.json``) and https://docs.aws.amazon.com/cur/latest/userguide/dataexports-manifest.html
(``dataFiles``: the S3 URIs of the execution's files).
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.config import Config
from exporter.daemon import Daemon
from tests.domains.cost.test_focus_source import HEADER, NOW, line
from tests.support.exposition import Exposition
from tests.support.moto import fresh_account, moto_server

BUCKET = "billing-exports"
PERIOD = "exports/focus/data/BILLING_PERIOD=2026-11"
MANIFEST = "exports/focus/metadata/BILLING_PERIOD=2026-11/focus-Manifest.json"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def s3(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    import boto3

    fresh_account(moto_url, monkeypatch)
    client = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    return client


def csv_gz(rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(HEADER)
    writer.writerows(rows)
    return gzip.compress(buf.getvalue().encode())


def put(s3: Any, key: str, rows: list[list[str]]) -> None:
    s3.put_object(Bucket=BUCKET, Key=key, Body=csv_gz(rows))


def put_manifest(s3: Any, *keys: str) -> None:
    body = {
        "executionId": "e-1",
        "exportArn": "arn:aws:bcm-data-exports:us-east-1:123456789012:export/focus-1",
        "dataFiles": [f"s3://{BUCKET}/{k}" for k in keys],
    }
    s3.put_object(Bucket=BUCKET, Key=MANIFEST, Body=json.dumps(body).encode())


def daemon_for(tmp_path: Path, moto_url: str, **entry: Any) -> Daemon:
    config = Config(
        state={"path": str(tmp_path / "state.db")},
        services=[
            {"name": "checkout", "team": "payments", "cost": {"tags": {"service": "checkout"}}}
        ],
        sources={
            "focus": {"s3": [{"url": f"s3://{BUCKET}/exports/", "endpoint_url": moto_url, **entry}]}
        },
    )
    return Daemon(config, clock=lambda: NOW)


class Gets:
    """Counts the GetObject calls the source's S3 client makes."""

    def __init__(self, daemon: Daemon) -> None:
        self.keys: list[str] = []
        source: Any = daemon.sources[0]
        client = source.s3[0].client()
        client.meta.events.register("before-call.s3.GetObject", self._count)

    def _count(self, params: dict[str, Any], **_: Any) -> None:
        self.keys.append(str(params["url_path"]).rsplit("/", 1)[-1])


def poll(daemon: Daemon) -> Exposition:
    asyncio.run(daemon.poll(daemon.sources[0]))
    return Exposition.parse(daemon.holder.current.text)


def week(exp: Exposition) -> float | None:
    found = exp.samples("platform_cost", service="checkout", window="7d", currency="USD")
    return sum(v for _, v in found) if found else None


class TestS3Exports:
    def test_listing_through_an_assumed_role(self, tmp_path: Path, s3: Any, moto_url: str) -> None:
        """Every data file under the prefix is read (pages of the listing included):
        9 + 5 on the 20th and 21st; the non-data object is ignored."""
        put(s3, "exports/a.csv.gz", [line(9, 9, "2026-11-20", service="checkout")])
        put(s3, "exports/b/c.csv.gz", [line(5, 5, "2026-11-21", service="checkout")])
        s3.put_object(Bucket=BUCKET, Key="exports/README.txt", Body=b"not billing data")
        daemon = daemon_for(
            tmp_path, moto_url, role_arn="arn:aws:iam::123456789012:role/billing-reader"
        )
        exp = poll(daemon)
        assert daemon.health["focus"].up is True, daemon.health["focus"].last_error
        assert week(exp) == pytest.approx(14.0)
        # Every answer is an upstream request: AssumeRole, one listing, two GETs.
        assert daemon.health["focus"].requests == {"200": 4}
        asyncio.run(daemon.shutdown())

    def test_unchanged_objects_are_not_fetched_again(
        self, tmp_path: Path, s3: Any, moto_url: str
    ) -> None:
        """A second poll lists and fetches nothing; a changed object is the one GET."""
        put(s3, "exports/a.csv.gz", [line(9, 9, "2026-11-20", service="checkout")])
        put(s3, "exports/b.csv.gz", [line(5, 5, "2026-11-21", service="checkout")])
        daemon = daemon_for(tmp_path, moto_url)
        gets = Gets(daemon)
        poll(daemon)
        assert sorted(gets.keys) == ["a.csv.gz", "b.csv.gz"]
        assert daemon.health["focus"].requests == {"200": 3}  # a listing and two GETs
        poll(daemon)
        assert len(gets.keys) == 2
        assert daemon.health["focus"].requests == {"200": 4}  # the listing only
        put(s3, "exports/b.csv.gz", [line(6, 6, "2026-11-21", service="checkout")])
        exp = poll(daemon)
        assert gets.keys[2:] == ["b.csv.gz"]
        assert week(exp) == pytest.approx(15.0)
        asyncio.run(daemon.shutdown())

    def test_an_error_answer_is_counted_with_its_status(
        self, tmp_path: Path, s3: Any, moto_url: str
    ) -> None:
        """A prefix in a bucket that does not exist: S3 answers 404 (NoSuchBucket), the
        source is down, and the answer is counted as an upstream request."""
        config = Config(
            state={"path": str(tmp_path / "state.db")},
            sources={
                "focus": {"s3": [{"url": "s3://no-such-bucket/x/", "endpoint_url": moto_url}]}
            },
        )
        daemon = Daemon(config, clock=lambda: NOW)
        poll(daemon)
        health = daemon.health["focus"]
        assert health.up is False
        assert "NoSuchBucket" in (health.last_error or "")
        assert health.requests == {"404": 1}
        asyncio.run(daemon.shutdown())

    def test_a_restated_object_replaces_its_rows(
        self, tmp_path: Path, s3: Any, moto_url: str
    ) -> None:
        """Mid-month the export is restated in place: 9 + 5 becomes 8 + 5 + 2 (the 19th to
        the 21st), replacing the old rows, never adding to them."""
        key = f"{PERIOD}/focus-00001.csv.gz"
        put(
            s3,
            key,
            [
                line(9, 9, "2026-11-20", service="checkout"),
                line(5, 5, "2026-11-21", service="checkout"),
            ],
        )
        put_manifest(s3, key)
        daemon = daemon_for(tmp_path, moto_url)
        assert week(poll(daemon)) == pytest.approx(14.0)
        put(
            s3,
            key,
            [
                line(2, 2, "2026-11-19", service="checkout"),
                line(8, 8, "2026-11-20", service="checkout"),
                line(5, 5, "2026-11-21", service="checkout"),
            ],
        )
        assert week(poll(daemon)) == pytest.approx(15.0)
        asyncio.run(daemon.shutdown())

    def test_a_half_written_period_waits_for_its_manifest(
        self, tmp_path: Path, s3: Any, moto_url: str
    ) -> None:
        """Part 1 alone, then a manifest listing parts 1 and 2 with part 2 missing: nothing
        of the period is read. Once part 2 is there: 9 + 5. A file the manifest does not
        list (left from an earlier execution) is never read."""
        part1, part2 = f"{PERIOD}/focus-00001.csv.gz", f"{PERIOD}/focus-00002.csv.gz"
        put(s3, part1, [line(9, 9, "2026-11-20", service="checkout")])
        put(
            s3,
            f"{PERIOD}/old/focus-00001.csv.gz",
            [line(100, 100, "2026-11-20", service="checkout")],
        )
        daemon = daemon_for(tmp_path, moto_url)
        gets = Gets(daemon)
        assert week(poll(daemon)) is None
        put_manifest(s3, part1, part2)
        assert week(poll(daemon)) is None
        assert daemon.health["focus"].up is True
        put(s3, part2, [line(5, 5, "2026-11-21", service="checkout")])
        assert week(poll(daemon)) == pytest.approx(14.0)
        # The manifest was fetched once (its ETag did not change after), each data file
        # once, and the unlisted file never.
        assert sorted(gets.keys) == [
            "focus-00001.csv.gz",
            "focus-00002.csv.gz",
            "focus-Manifest.json",
        ]
        asyncio.run(daemon.shutdown())

    def test_assumed_role_credentials_are_renewed_before_they_expire(
        self, tmp_path: Path, s3: Any, moto_url: str
    ) -> None:
        """The client is kept while its credentials have more than five minutes left, and
        built again (a new AssumeRole) after."""
        from exporter.domains.cost.settings import FocusS3Config
        from exporter.domains.cost.sources.focus_s3 import S3Exports

        settings = FocusS3Config(
            url=f"s3://{BUCKET}/exports/",
            endpoint_url=moto_url,
            role_arn="arn:aws:iam::123456789012:role/billing-reader",
        )
        exports = S3Exports(settings, 10.0)
        first = exports.client()
        expires = exports._expires
        exports.renew(expires - 301)
        assert exports.client() is first
        exports.renew(expires - 299)
        assert exports.client() is not first
