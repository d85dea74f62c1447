"""Settings of the probe domain: the synthetic checks of a service and the probe source."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from exporter.core.settings import (
    Duration,
    Name,
    ServiceFields,
    SourceConfig,
    StrictModel,
    check_url,
)

# A probe's kind, by the scheme of its URL.
PROBE_KINDS = {"http": "http", "https": "http", "tcp": "tcp", "tls": "tcp", "dns": "dns"}


class ProbeCheckConfig(StrictModel):
    """One synthetic check of a service: HTTP(S), TCP (optionally TLS) or DNS, by URL scheme.

    ``http(s)://host/path``: one request, judged by ``expect_status`` and
    ``body_regex``; ``tcp://host:port`` or ``tls://host:port``: a connection,
    optionally ``send`` then ``expect`` (a regular expression on the answer);
    ``dns://server[:port]``: the question ``query_name`` / ``query_type``, its
    answer records matched against ``expect``. ``timeout`` bounds the whole check.
    """

    name: Name
    url: str
    method: Literal["GET", "HEAD", "POST", "PUT", "OPTIONS"] = "GET"
    expect_status: list[int] = Field(default_factory=lambda: [200])
    body_regex: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = 5.0
    interval: Duration = 30.0
    tls_verify: bool = True
    # A PEM bundle of the CAs to trust instead of the system's.
    tls_ca_file: Path | None = None
    follow_redirects: bool = True
    # Which IP family to connect over when a name has both; the other only if allowed.
    ip_protocol: Literal["ip4", "ip6"] = "ip6"
    ip_protocol_fallback: bool = True
    send: str | None = None
    expect: str | None = None
    query_name: str | None = None
    query_type: Literal["A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT"] = "A"

    @property
    def kind(self) -> str:
        return PROBE_KINDS[self.url.split(":", 1)[0]]

    @field_validator("url")
    @classmethod
    def _probe_url(cls, value: str) -> str:
        kinds = "an http:// or https:// URL, tcp://host:port, tls://host:port or dns://server"
        scheme = value.split(":", 1)[0].lower()
        try:
            check_url(value, (scheme,) if scheme in PROBE_KINDS else ("http", "https"))
        except ValueError as exc:
            problem = str(exc).split(" URL", 1)[-1].strip(": ")
            raise ValueError(f"must be {kinds}{': ' + problem if problem else ''}") from None
        if scheme != value.split(":", 1)[0]:
            raise ValueError(f"must be {kinds} (the scheme in lower case)")
        parts = urlsplit(value)
        if PROBE_KINDS[scheme] == "tcp" and (parts.port is None or parts.path not in ("", "/")):
            raise ValueError(f"must be {kinds}: {scheme}:// needs host:port and no path")
        if scheme == "dns" and parts.path not in ("", "/"):
            raise ValueError(f"must be {kinds}: dns:// takes a server and no path")
        return value

    @model_validator(mode="after")
    def _fields_of_its_kind(self) -> Self:
        if self.kind == "dns" and not self.query_name:
            raise ValueError("a dns:// check needs query_name")
        if self.kind != "dns" and self.query_name is not None:
            raise ValueError("query_name is for dns:// checks")
        if self.kind == "http" and (self.send is not None or self.expect is not None):
            raise ValueError("send and expect are for tcp://, tls:// and dns:// checks")
        if self.kind != "http" and self.body_regex is not None:
            raise ValueError("body_regex is for http:// and https:// checks")
        return self

    @field_validator("expect_status")
    @classmethod
    def _statuses(cls, value: list[int]) -> list[int]:
        if not value or any(not 100 <= s <= 599 for s in value):
            raise ValueError("must list HTTP status codes between 100 and 599")
        return value

    @field_validator("body_regex", "expect")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return value

    @field_validator("timeout", "interval")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value


class ProbeSourceConfig(SourceConfig):
    """The synthetic probe source. Each check runs on its own grid (its interval, at a
    stable offset); the source commits what finished every `interval` (15 s: each commit
    re-renders every check's series; see docs/decisions.md)."""

    interval: Duration = 15.0
    jitter: Duration = 0.0
    concurrency: int = Field(default=16, ge=1, le=512)


class ProbeServiceFields(ServiceFields):
    """A service's synthetic checks (HTTP(S), TCP, DNS)."""

    probes: list[ProbeCheckConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_probes(self) -> Self:
        names = [p.name for p in self.probes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"probe names must be unique within a service: {', '.join(dupes)}")
        return self

    def catalog_fields(self) -> dict[str, object]:
        return {**super().catalog_fields(), "has_probes": bool(self.probes)}
