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
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from exporter.core.backend import PostgresTarget, parse_url, shown_url

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


# In URLs, host names as container runtimes hand them out (``my_db``) are accepted too.
_URL_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$"
)


def _valid_host(host: str, pattern: re.Pattern[str] = _HOSTNAME) -> bool:
    """An IP address (v6 in brackets or not) or a DNS host name."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return bool(pattern.match(host))
    return True


def check_url(value: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
    """``value`` if it is an absolute URL of one of ``schemes`` with a valid host (and
    port); a ValueError saying what is wrong otherwise."""
    expected = " or ".join(f"{s}://" for s in schemes)
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError(f"must be an {expected} URL without spaces")
    try:
        parts = urlsplit(value)
        port = parts.port  # raises on a port that is not a number in 0..65535
    except ValueError as exc:
        raise ValueError(f"must be an {expected} URL: {exc}") from None
    if parts.scheme.lower() not in schemes or not parts.netloc:
        raise ValueError(f"must be an {expected} URL")
    host = parts.hostname or ""
    if not host or not _valid_host(host, _URL_HOSTNAME):
        raise ValueError(f"must be an {expected} URL with a valid host")
    if port == 0:
        raise ValueError(f"must be an {expected} URL with a port between 1 and 65535")
    return value


def http_url(value: str) -> str:
    """An upstream's base URL: http(s) with a host, without a trailing slash (paths are added)."""
    return check_url(value).rstrip("/")


# A base URL (paths are appended to it) and a full URL (used as it is).
HttpUrl = Annotated[str, AfterValidator(http_url)]
HttpEndpoint = Annotated[str, AfterValidator(check_url)]


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
    """Where ``/metrics``, ``/healthz`` and ``/readyz`` listen, and how clients are held."""

    listen_address: str = "0.0.0.0"
    port: int = Field(default=9877, ge=0, le=65535)
    # TLS and basic auth in the exporter-toolkit format (also --web.config.file).
    web_config_file: Path | None = None
    # The older, simpler keys: one plain-text user, and a certificate with its key.
    basic_auth: BasicAuthConfig | None = None
    tls: TLSConfig | None = None
    # /healthz, /readyz, /-/healthy and /-/ready answer without credentials (probes).
    health_without_auth: bool = False
    # /readyz turns ready once every source has refreshed, or after this long anyway.
    startup_grace: Duration = 120.0
    # A connection with no request under way is closed after this.
    idle_timeout: Duration = 30.0
    # A request (and a TLS handshake) must arrive whole within this of its first byte.
    read_timeout: Duration = 10.0
    # A response the client does not read within this is dropped.
    write_timeout: Duration = 30.0
    # Connections served at once; the next ones are answered 503.
    max_connections: int = Field(default=512, ge=1, le=100_000)
    listen_backlog: int = Field(default=1024, ge=128, le=65535)

    @field_validator("idle_timeout", "read_timeout", "write_timeout")
    @classmethod
    def _timeout_positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @model_validator(mode="after")
    def _one_way_to_secure(self) -> ServerConfig:
        if self.web_config_file is not None:
            if self.tls is not None or self.basic_auth is not None:
                raise ValueError(
                    "web_config_file replaces server.tls and server.basic_auth: "
                    "move them into the web config file"
                )
            if not self.web_config_file.is_file():
                raise ValueError(f"web_config_file {self.web_config_file} does not exist")
        return self

    @field_validator("listen_address")
    @classmethod
    def _address(cls, value: str) -> str:
        """An IP address, a host name, or "" (every interface)."""
        if value != "" and not _valid_host(value):
            raise ValueError(f"{value!r} is not an IP address or a host name")
        return value


class StateConfig(StrictModel):
    """The state database: a SQLite file (the default), or PostgreSQL shared by replicas."""

    path: Path = Path("state/platform-kpi-exporter.db")
    # sqlite:///relative/path.db, sqlite:////absolute/path.db, or
    # postgresql://user@host:5432/database (the password from `password`). Overrides `path`.
    url: str | None = None
    # PostgreSQL's password: {env: NAME} or {file: PATH} (never in the URL).
    password: Secret | None = None
    # PostgreSQL TLS: libpq's sslmode, and the CA bundle that verifies the server.
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None = (
        None
    )
    sslrootcert: Path | None = None
    # PostgreSQL: the schema holding the tables (created if missing); default: search_path.
    schema_name: str | None = Field(default=None, alias="schema", pattern=r"^[a-z_][a-z0-9_]*$")
    connect_timeout: Duration = 10.0
    # PostgreSQL, several replicas: each source is polled by the replica holding its lease;
    # a dead holder's leases are taken over within this. Renewed every third of it.
    lease_ttl: Duration = Field(default=30.0, ge=3.0)
    # This replica's name in the leases and in its health labels (default: the host name,
    # which is the pod's name on Kubernetes). Unique per replica.
    replica: str | None = Field(default=None, min_length=1, max_length=128)
    # Raw events older than this are pruned; counters and histograms are kept forever.
    retention: Duration = 35 * 86400.0
    # How long a write waits for another process's write lock before its poll fails
    # with reason `state` (it is retried at the source's next interval).
    busy_timeout: Duration = 5.0

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_url(value)
        return value

    @field_serializer("url", when_used="json")
    def _shown_url(self, value: str | None) -> str | None:
        # A printed config (check-config) shows no user name or password of the URL.
        return None if value is None else shown_url(value)

    @field_validator("sslrootcert")
    @classmethod
    def _ca_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} does not exist")
        return value

    def location(self) -> Path | PostgresTarget:
        """Where the state is: the SQLite file's path, or the PostgreSQL target."""
        if self.url is None:
            return self.path
        parsed = parse_url(self.url)
        if isinstance(parsed, Path):
            return parsed
        return PostgresTarget(
            self.url,
            password=None if self.password is None else self.password.get_secret_value(),
            sslmode=self.sslmode,
            sslrootcert=self.sslrootcert,
            connect_timeout=self.connect_timeout,
            schema=self.schema_name,
        )


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

    #: True for a source that adds services at run time (a service catalog): names of
    #: services in other blocks cannot be checked against ``services[]`` alone then.
    adds_services: ClassVar[bool] = False

    def service_refs(self) -> list[tuple[str, str]]:
        """``(field path inside this block, service name)`` of every service it names."""
        return []

    @field_validator("interval", "poll_timeout")
    @classmethod
    def _interval_positive(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("must be positive")
        return value


class FieldError(ValueError):
    """A check across sections found a problem at ``path`` (``sources.x.y[0].z``): the
    config loader reports it there, not at the top level."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


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
        """``service`` seen through this domain's keys (a typed view, no copy); for a
        service of a config that does not use the domain, the domain's defaults."""
        if isinstance(service, cls):
            return service
        if type(service).domain_names is not None:
            return _defaults(cls)
        raise TypeError(f"{type(service).__name__} has no {cls.__name__} keys")


_M = TypeVar("_M", bound=BaseModel)
_DEFAULTS: dict[type, BaseModel] = {}


def _defaults(cls: type[_M]) -> _M:
    """The defaults of a domain's keys, as a config that gives none of them has them
    (built once, without validation: a section's checks read the whole config)."""
    found = _DEFAULTS.get(cls)
    if not isinstance(found, cls):
        found = _DEFAULTS[cls] = cls.model_construct()
    return found


class ServiceBase(ServiceFields):
    """The keys every service has: its name and its team."""

    # The names of the domains whose keys the assembled model has (None: not assembled).
    domain_names: ClassVar[frozenset[str] | None] = None

    name: Name
    team: Name


class Section(BaseModel):
    """Top-level keys one domain adds to the config, and its checks across sections
    (``self`` is then the whole assembled config)."""

    def service_refs(self) -> list[tuple[str, str]]:
        """``(field path, service name)`` of every service this section names; each
        override adds its own to ``super().service_refs()``."""
        return []

    def implicit_services(self) -> tuple[str, ...]:
        """Service names that exist without a ``services[]`` entry; overrides add theirs."""
        return ()

    @classmethod
    def of(cls, config: ConfigBase) -> Self:
        """``config`` seen through this domain's sections (a typed view, no copy); for a
        config that does not use the domain (it gives none of its keys), its defaults."""
        if isinstance(config, cls):
            return config
        if type(config).domain_names is not None:
            return _defaults(cls)
        raise TypeError(f"{type(config).__name__} has no {cls.__name__} keys")


class ConfigBase(BaseSettings):
    """The keys every configuration has; ``exporter.config`` assembles the whole model
    from this base, the domains' sections and their ``services[]`` keys."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    # The names of the domains the model was assembled from (None: every domain).
    domain_names: ClassVar[frozenset[str] | None] = None

    server: ServerConfig = Field(default_factory=ServerConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    services: Sequence[ServiceBase] = Field(default_factory=list)
    sources: StrictModel = Field(default_factory=StrictModel)
    # Set once the services are validated (see _unique_services).
    _by_name: dict[str, ServiceBase] = PrivateAttr(default_factory=dict)
    _indexed: Sequence[ServiceBase] | None = PrivateAttr(default=None)

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
        first: dict[str, int] = {}
        for i, svc in enumerate(self.services):
            if svc.name in first:
                raise FieldError(
                    f"services[{i}].name",
                    f"service names must be unique: {svc.name} is also services[{first[svc.name]}]",
                )
            first[svc.name] = i
        self._by_name = {s.name: s for s in self.services}
        self._indexed = self.services
        return self

    @model_validator(mode="after")
    def _known_services(self) -> Self:
        """Every service a section or a source block names is in ``services[]``; with a
        source that adds services at run time (a catalog), names it may add are accepted."""
        known = {s.name for s in self.services} | set(self.implicit_services())
        blocks = [
            (name, block)
            for name, block in self.sources
            if isinstance(block, SourceConfig) and block.enabled
        ]
        if any(block.adds_services for _, block in blocks):
            return self
        refs = list(self.service_refs())
        refs += [
            (f"sources.{name}.{path}", ref)
            for name, block in blocks
            for path, ref in block.service_refs()
        ]
        for path, ref in refs:
            if ref not in known:
                raise FieldError(path, f"service {ref!r} is not in services[]")
        return self

    def service_refs(self) -> list[tuple[str, str]]:
        """``(field path, service name)`` of every service the sections name; each domain's
        section adds its own (cooperatively, through ``super()``)."""
        return []

    def implicit_services(self) -> tuple[str, ...]:
        """Service names that exist without a ``services[]`` entry (cost's ``unallocated``)."""
        return ()

    def service(self, name: str) -> ServiceBase | None:
        """The ``services[]`` entry named ``name``, if any (a dict lookup: the config is
        frozen, and a render may ask once per series)."""
        if self._indexed is not self.services:  # ``model_copy(update=...)`` skips validation
            return next((s for s in self.services if s.name == name), None)
        return self._by_name.get(name)


def source_block(config: ConfigBase, kind: str) -> SourceConfig | None:
    """The settings block of source ``kind`` under ``sources:``, if given."""
    block = getattr(config.sources, kind, None)
    return block if isinstance(block, SourceConfig) else None


def source_enabled(config: ConfigBase, kind: str) -> bool:
    """True when source ``kind`` has a block and it is enabled."""
    block = source_block(config, kind)
    return block is not None and block.enabled
