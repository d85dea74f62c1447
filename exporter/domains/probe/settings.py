"""Settings of the probe domain: the synthetic checks of a service and the probe source."""

from __future__ import annotations

import re
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from exporter.core.settings import Duration, Name, ServiceFields, SourceConfig, StrictModel


class ProbeCheckConfig(StrictModel):
    """One synthetic HTTP(S) check of a service."""

    name: Name
    url: str
    method: Literal["GET", "HEAD", "POST", "PUT", "OPTIONS"] = "GET"
    expect_status: list[int] = Field(default_factory=lambda: [200])
    body_regex: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = 5.0
    interval: Duration = 30.0
    tls_verify: bool = True

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("expect_status")
    @classmethod
    def _statuses(cls, value: list[int]) -> list[int]:
        if not value or any(not 100 <= s <= 599 for s in value):
            raise ValueError("must list HTTP status codes between 100 and 599")
        return value

    @field_validator("body_regex")
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
    """The synthetic HTTP probe source. Each check keeps its own interval;
    the source wakes every `interval` and runs the checks that are due."""

    interval: Duration = 5.0
    jitter: Duration = 0.0
    concurrency: int = Field(default=16, ge=1, le=512)


class ProbeServiceFields(ServiceFields):
    """A service's synthetic HTTP(S) checks."""

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
