"""FOCUS exports where AWS writes them: an S3 prefix, read through boto3 (the ``aws`` extra).

Each configured ``s3://bucket/prefix/`` is listed with ``ListObjectsV2`` (paged).
Every data file under it (``.csv``, ``.csv.gz``, ``.gz``, ``.parquet``) is one
origin, ``s3://bucket/key``, remembered with the ETag and size the listing gives:
an object whose ETag and size are unchanged is not fetched again, and a changed
(restated) object is fetched and replaces what it said before, never adds to it.

AWS Data Exports deliver each billing period's files under
``<prefix>/<export>/data/BILLING_PERIOD=YYYY-MM/`` and, once an execution has
written them all, a ``Manifest.json`` under
``<prefix>/<export>/metadata/BILLING_PERIOD=YYYY-MM/`` whose ``dataFiles`` lists
their S3 URIs (https://docs.aws.amazon.com/cur/latest/userguide/dataexports-export-delivery.html,
https://docs.aws.amazon.com/cur/latest/userguide/dataexports-manifest.html). So in
that layout a period is read only when a manifest lists its files and every file
listed is there; its files that no manifest lists are not read. Files outside
that layout are read as they are.

Objects are listed and fetched in a worker thread (boto3 blocks). Every answer of
S3 (and of STS, for the assumed role) is counted in the source's
``platform_exporter_source_upstream_requests_total{code}``, through botocore's
``response-received`` event, once per HTTP attempt.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from exporter.core.errors import needs_extra

DATA_SUFFIXES = (".csv", ".csv.gz", ".gz", ".parquet")
MANIFEST_SUFFIX = "Manifest.json"
# Assumed-role credentials are renewed this long before they expire.
CREDENTIAL_MARGIN = 300.0
# <...>/<export>/data/<partition>/... and its manifests in <...>/<export>/metadata/<partition>/
_LAYOUT = re.compile(r"^(?P<root>.*/)?data/(?P<partition>[^/]+=[^/]+)/")
_MANIFEST = re.compile(r"^(?P<root>.*/)?metadata/(?P<partition>[^/]+=[^/]+)/")


class S3Settings(Protocol):
    """What an ``s3`` entry of the FOCUS source's settings gives."""

    url: str
    role_arn: str | None
    region: str
    endpoint_url: str | None

    @property
    def external_id(self) -> Any: ...  # a secret: get_secret_value() gives the text


@dataclass(frozen=True, slots=True)
class S3Object:
    """One listed object: its key, ETag and size."""

    key: str
    etag: str
    size: int


def split_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` as (bucket, prefix)."""
    rest = url.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    return bucket, prefix


def _period(key: str, pattern: re.Pattern[str]) -> tuple[str, str] | None:
    match = pattern.match(key)
    if match is None:
        return None
    return match.group("root") or "", match.group("partition")


@dataclass(frozen=True, slots=True)
class Plan:
    """What one listing says to do."""

    # Data objects to read (if changed).
    read: list[S3Object]
    # Data objects of periods still being written: not read now, their stored rows kept.
    held: list[S3Object]
    # Those periods, as ``<root>data/<partition>``.
    waiting: list[str]


def plan(bucket: str, objects: Iterable[S3Object], manifests: dict[str, list[str] | None]) -> Plan:
    """Which data objects to read, given ``manifests`` (each manifest key and the
    ``dataFiles`` it lists, None for one that cannot be read yet).

    A data file in the Data Exports layout is read only if a manifest of its period
    lists it and every file that manifest lists exists; while that is not so, the
    period is waiting and its files are held. A file that a complete manifest does
    not list (left from an earlier execution) is neither read nor held.
    """
    data = [o for o in objects if o.key.lower().endswith(DATA_SUFFIXES)]
    present = {f"s3://{bucket}/{o.key}" for o in data}
    listed: dict[tuple[str, str], set[str]] = {}
    complete: dict[tuple[str, str], bool] = {}
    for key, files in manifests.items():
        period = _period(key, _MANIFEST)
        if period is None:
            continue
        whole = files is not None and all(f in present for f in files)
        listed.setdefault(period, set()).update(files or ())
        complete[period] = complete.get(period, True) and whole
    read: list[S3Object] = []
    held: list[S3Object] = []
    waiting: set[str] = set()
    for o in data:
        period = _period(o.key, _LAYOUT)
        if period is None:
            read.append(o)
        elif not complete.get(period, False):
            held.append(o)
            waiting.add(f"{period[0]}data/{period[1]}")
        elif f"s3://{bucket}/{o.key}" in listed[period]:
            read.append(o)
    return Plan(read, held, sorted(waiting))


class S3Exports:
    """The boto3 side of one ``s3`` entry: listing, manifests and downloads."""

    def __init__(self, settings: S3Settings, timeout: float) -> None:
        self.settings = settings
        self.bucket, self.prefix = split_url(settings.url)
        self.timeout = timeout
        self._client: Any = None
        # When the assumed role's credentials expire (epoch seconds); inf without a role.
        self._expires = float("inf")
        self._lock = threading.Lock()
        # Manifest key -> (ETag, dataFiles): a manifest is fetched again only when it changes.
        self._manifests: dict[str, tuple[str, list[str] | None]] = {}
        #: Told the HTTP status of every answer from S3 or STS (each attempt, retries
        #: included): the source's upstream-requests count. Set by the poll.
        self.on_answer: Callable[[int], None] | None = None

    def _answered(self, response_dict: dict[str, Any] | None = None, **_: Any) -> None:
        # botocore fires response-received once per HTTP attempt; with no answer (a
        # connection error) there is nothing to count.
        if response_dict is not None and self.on_answer is not None:
            self.on_answer(int(response_dict.get("status_code") or 0))

    def _counted(self, client: Any, service: str) -> Any:
        """``client`` with its answers counted (botocore's hierarchical events: every operation)."""
        client.meta.events.register(f"response-received.{service}", self._answered)
        return client

    def renew(self, now: float) -> None:
        """Forget the client if its assumed-role credentials expire within five minutes."""
        with self._lock:
            if self._client is not None and self._expires <= now + CREDENTIAL_MARGIN:
                self._client = None

    def client(self) -> Any:
        """The S3 client, through an assumed role when one is configured (built once)."""
        with self._lock:
            if self._client is None:
                self._client = self._build()
            return self._client

    def _build(self) -> Any:
        with needs_extra("aws", "FOCUS exports in S3"):
            import boto3
            from botocore.config import Config as BotoConfig

        common: dict[str, Any] = {
            "region_name": self.settings.region,
            "config": BotoConfig(
                connect_timeout=self.timeout,
                read_timeout=self.timeout,
                retries={"max_attempts": 3, "mode": "standard"},
                user_agent_extra="platform-kpi-exporter",
            ),
        }
        if self.settings.endpoint_url:
            common["endpoint_url"] = self.settings.endpoint_url
        session = boto3.session.Session()
        if not self.settings.role_arn:
            return self._counted(session.client("s3", **common), "s3")
        params: dict[str, Any] = {
            "RoleArn": self.settings.role_arn,
            "RoleSessionName": "platform-kpi-exporter",
        }
        if self.settings.external_id is not None:
            params["ExternalId"] = self.settings.external_id.get_secret_value()
        sts = self._counted(session.client("sts", **common), "sts")
        creds = sts.assume_role(**params)["Credentials"]
        self._expires = creds["Expiration"].timestamp()
        client = session.client(
            "s3",
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
            **common,
        )
        return self._counted(client, "s3")

    def objects(self) -> Iterator[S3Object]:
        """Every object under the prefix, across pages."""
        paginator = self.client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for item in page.get("Contents") or []:
                yield S3Object(str(item["Key"]), str(item.get("ETag", "")), int(item["Size"]))

    def manifests(self, objects: Iterable[S3Object]) -> dict[str, list[str] | None]:
        """Each Data Exports manifest under the prefix and the ``dataFiles`` it lists."""
        out: dict[str, list[str] | None] = {}
        for o in objects:
            if not o.key.endswith(MANIFEST_SUFFIX) or _period(o.key, _MANIFEST) is None:
                continue
            cached = self._manifests.get(o.key)
            if cached is None or cached[0] != o.etag:
                body = self.client().get_object(Bucket=self.bucket, Key=o.key)["Body"].read()
                cached = (o.etag, _data_files(body))
                self._manifests[o.key] = cached
            out[o.key] = cached[1]
        return out

    def download(self, key: str, dest: Path) -> str:
        """Fetch one object into ``dest``; the ETag it was fetched at."""
        response = self.client().get_object(Bucket=self.bucket, Key=key)
        with dest.open("wb") as f:
            for chunk in response["Body"].iter_chunks(1 << 20):
                f.write(chunk)
        return str(response.get("ETag", ""))


def _data_files(body: bytes) -> list[str] | None:
    """A manifest's ``dataFiles``; None from one that is not (yet) a JSON manifest."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    files = doc.get("dataFiles") if isinstance(doc, dict) else None
    return [str(f) for f in files] if isinstance(files, list) else None
