"""The generic pieces of the configuration: strict models, durations, secrets, names,
the server and state sections, what every source block shares, and the bases the
domains' settings extend (``ServiceFields``, ``Section``) and the config is built on
(``ServiceBase``, ``ConfigBase``)."""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "PLATFORM_KPI_"


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


MAX_DURATION = 10 * 365 * 86400.0
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a Prometheus-style duration such as ``1h30m`` or ``500ms``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        parts = _DURATION_PART.findall(text)
        if not text or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"invalid duration {value!r}: use e.g. 30s, 5m, 1h30m, 500ms or 7d")
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    else:
        raise ValueError("expected a duration such as 30s, 5m or 1h")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if not math.isfinite(seconds) or seconds > MAX_DURATION:
        # .inf, .nan or 1e20 would overflow the scheduler's timers or never fire.
        raise ValueError("a duration must be finite and at most 10 years")
    return seconds


def resolve_secret(value: Any) -> Any:
    """Accept a literal secret, ``{env: NAME}`` or ``{file: PATH}``."""
    if isinstance(value, dict):
        if set(value) == {"env"}:
            name = str(value["env"])
            if name not in os.environ:
                raise ValueError(f"environment variable {name} is not set")
            return os.environ[name]
        if set(value) == {"file"}:
            path = Path(str(value["file"]))
            try:
                # Secret mounts usually end with a newline that is not part of the secret.
                return path.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
        raise ValueError("a secret is a string, {env: NAME} or {file: PATH}")
    return value


def parse_percent(value: Any) -> float:
    """An objective as a percentage such as ``99.9`` (strictly between 0 and 100)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("expected a percentage such as 99.9")
    text = str(value).strip().removesuffix("%")
    try:
        percent = float(text)
    except ValueError:
        raise ValueError(f"invalid percentage {value!r}: use e.g. 99.9") from None
    if not 0 < percent < 100:
        raise ValueError("must be a percentage strictly between 0 and 100, e.g. 99.9")
    if percent <= 1:
        raise ValueError(
            f"{value} looks like a ratio; write the objective as a percentage such as 99.9"
        )
    return percent


Duration = Annotated[float, BeforeValidator(parse_duration)]


Percent = Annotated[float, BeforeValidator(parse_percent)]


Secret = Annotated[SecretStr, BeforeValidator(resolve_secret)]


def http_url(value: str) -> str:
    """An upstream's base URL: http(s) with a host, without a trailing slash (paths are added)."""
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


HttpUrl = Annotated[str, AfterValidator(http_url)]


# Names become label values and URL parts: keep them tame.
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BasicAuthConfig(StrictModel):
    username: str = Field(min_length=1)
    password: Secret


class TLSConfig(StrictModel):
    cert_file: Path
    key_file: Path

    @model_validator(mode="after")
    def _files_exist(self) -> TLSConfig:
        for name in ("cert_file", "key_file"):
            path: Path = getattr(self, name)
            if not path.is_file():
                raise ValueError(f"{name} {path} does not exist")
        return self


class ServerConfig(StrictModel):
    """Where ``/metrics``, ``/healthz`` and ``/readyz`` listen."""

    listen_address: str = "0.0.0.0"
    port: int = Field(default=9877, ge=0, le=65535)
    basic_auth: BasicAuthConfig | None = None
    tls: TLSConfig | None = None
    # /readyz turns ready once every source has refreshed, or after this long anyway.
    startup_grace: Duration = 120.0

    @field_validator("listen_address")
    @classmethod
    def _address(cls, value: str) -> str:
        """An IP address, a host name, or "" (every interface)."""
        if value == "":
            return value
        try:
            ipaddress.ip_address(value.strip("[]"))
        except ValueError:
            if not _HOSTNAME.match(value):
                raise ValueError(f"{value!r} is not an IP address or a host name") from None
        return value


class StateConfig(StrictModel):
    """The SQLite state database."""

    path: Path = Path("state/platform-kpi-exporter.db")
    # Raw events older than this are pruned; counters and histograms are kept forever.
    retention: Duration = 35 * 86400.0


class MetricsConfig(StrictModel):
    """How the snapshot is refreshed."""

    # A time-driven provider (rolling windows) without new data is recomputed this often.
    min_refresh: Duration = Field(default=15.0, gt=0)


class SourceConfig(StrictModel):
    """Settings every source shares; each source's section extends it."""

    enabled: bool = True
    # How often the source is polled, with a random delay of up to `jitter` added.
    interval: Duration = 60.0
    jitter: Duration = 0.0
    # Per upstream request, the wait for a connection slot included.
    timeout: Duration = 10.0
    # Per poll: past it the poll is cancelled (what it committed stays).
    # Default: `interval`, or `timeout` if that is longer.
    poll_timeout: Duration | None = None
    # The longest rate-limit pause (Retry-After, reset) a poll waits out; past it, it stops.
    max_pause: Duration = 60.0

    @field_validator("interval", "poll_timeout")
    @classmethod
    def _interval_positive(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("must be positive")
        return value


class ServiceFields(StrictModel):
    """Keys one domain adds to every ``services[]`` entry; the assembled ``ServiceConfig``
    inherits them all (each domain's mixin, in registry order)."""

    def catalog_fields(self) -> dict[str, object]:
        """This service's part of its catalog entry; each mixin adds its own keys."""
        return {}

    def repo_refs(self) -> list[tuple[str, str]]:
        """The ``(kind, name or pattern)`` CI/CD objects this service claims."""
        return []

    @classmethod
    def of(cls, service: ServiceBase) -> Self:
        """``service`` seen through this domain's keys (a typed view, no copy)."""
        if not isinstance(service, cls):
            raise TypeError(f"{type(service).__name__} has no {cls.__name__} keys")
        return service


class ServiceBase(ServiceFields):
    """The keys every service has: its name and its team."""

    name: Name
    team: Name


class Section(BaseModel):
    """Top-level keys one domain adds to the config, and its checks across sections
    (``self`` is then the whole assembled config)."""

    @classmethod
    def of(cls, config: ConfigBase) -> Self:
        """``config`` seen through this domain's sections (a typed view, no copy)."""
        if not isinstance(config, cls):
            raise TypeError(f"{type(config).__name__} has no {cls.__name__} keys")
        return config


class ConfigBase(BaseSettings):
    """The keys every configuration has; ``exporter.config`` assembles the whole model
    from this base, the domains' sections and their ``services[]`` keys."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    server: ServerConfig = Field(default_factory=ServerConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    services: Sequence[ServiceBase] = Field(default_factory=list)
    sources: StrictModel = Field(default_factory=StrictModel)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; the environment overrides it.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _unique_services(self) -> Self:
        names = [s.name for s in self.services]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"service names must be unique: {', '.join(dupes)}")
        return self

    def service(self, name: str) -> ServiceBase | None:
        return next((s for s in self.services if s.name == name), None)


def source_block(config: ConfigBase, kind: str) -> SourceConfig | None:
    """The settings block of source ``kind`` under ``sources:``, if given."""
    block = getattr(config.sources, kind, None)
    return block if isinstance(block, SourceConfig) else None


def source_enabled(config: ConfigBase, kind: str) -> bool:
    """True when source ``kind`` has a block and it is enabled."""
    block = source_block(config, kind)
    return block is not None and block.enabled
