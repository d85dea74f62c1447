"""The web configuration file (``--web.config.file``) in the exporter-toolkit format.

Prometheus' own exporters share one file for TLS and authentication, read by
prometheus/exporter-toolkit (``docs/web-configuration.md``, ``web/tls_config.go``).
This module reads the same keys with the same defaults and the same checks:
unknown keys are errors, file paths are relative to the file's own directory,
``basic_auth_users`` holds bcrypt hashes, TLS 1.2 is the default minimum, and
client CAs without a client-auth policy are refused.

Where Python's :mod:`ssl` cannot do what Go's ``crypto/tls`` does, a key is
either refused with one line saying so, or accepted with no effect where that
changes nothing a client can rely on (see ``docs/decisions.md``):

- ``client_auth_type: RequireAnyClientCert`` (a certificate required but not
  verified) is refused: OpenSSL through Python verifies every certificate it
  requires. ``RequestClientCert`` asks for no certificate, since the server
  never reads an unverified one.
- ``cipher_suites`` apply to TLS 1.2 and lower; the TLS 1.3 names are accepted
  and, as in Go, change nothing.
- ``curve_preferences``: one curve is applied; with several, OpenSSL's default
  groups apply (Python sets one curve only).
- ``http_server_config.http2`` is accepted; the server speaks HTTP/1.1.

A loaded :class:`WebConfig` is immutable; :class:`WebConfigWatcher` loads it
again when the file or a certificate, key or CA file it names changes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from exporter.core.settings import BasicAuthConfig, Duration, TLSConfig
from exporter.core.yamlfile import UniqueKeyLoader, format_validation_error

log = logging.getLogger("exporter.server")

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

# Go's tls.CipherSuites() (the suites it calls secure), by IANA name, with OpenSSL's
# name; None for the TLS 1.3 suites, which neither Go nor Python lets a server choose.
CIPHER_SUITES: dict[str, str | None] = {
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}

CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1"}
CURVES["X25519"] = "X25519"

CLIENT_AUTH = {
    "": ssl.CERT_NONE,
    "NoClientCert": ssl.CERT_NONE,
    # A certificate asked for but never verified is one the server cannot use.
    "RequestClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
UNVERIFIED_CLIENT_AUTH = ("RequireAnyClientCert", "RequireClientCert")

# The response headers the toolkit lets a user set, with their allowed values (None: any).
EXTRA_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}

# $2a$, $2b$, $2x$ or $2y$, a two-digit cost, 22 characters of salt and 31 of hash.
_BCRYPT = re.compile(r"^\$2[abxy]\$(\d\d)\$[./A-Za-z0-9]{53}$")


class WebConfigError(Exception):
    """The web config cannot be used; ``str()`` is one line naming the file and the key."""

    def __init__(self, file: Path | str, problem: str) -> None:
        self.file = str(file)
        self.problem = problem
        super().__init__(f"web config {file}: {problem}")


class _Strict(BaseModel):
    # Go's yaml.UnmarshalStrict: an unknown key is an error.
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSServerFile(_Strict):
    """``tls_server_config`` as written in the file."""

    cert: str = ""
    key: SecretStr = SecretStr("")
    client_ca: str = ""
    cert_file: str = ""
    key_file: str = ""
    client_auth_type: str = ""
    client_ca_file: str = ""
    client_allowed_sans: list[str] | None = None
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    cipher_suites: list[str] = Field(default_factory=list)
    prefer_server_cipher_suites: bool = True
    curve_preferences: list[str] = Field(default_factory=list)

    @field_validator("client_auth_type")
    @classmethod
    def _client_auth(cls, value: str) -> str:
        if value in UNVERIFIED_CLIENT_AUTH:
            raise ValueError(
                f"{value} (a client certificate required but not verified) is not supported: "
                "use RequireAndVerifyClientCert with client_ca_file"
            )
        if value not in CLIENT_AUTH:
            raise ValueError(f"invalid ClientAuth: {value}")
        return value

    @field_validator("min_version", "max_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if value not in TLS_VERSIONS:
            raise ValueError(f"unknown TLS version: {value}")
        return value

    @field_validator("cipher_suites", "curve_preferences")
    @classmethod
    def _known_names(cls, value: list[str], info: ValidationInfo) -> list[str]:
        known, what = (
            (CIPHER_SUITES, "cipher") if info.field_name == "cipher_suites" else (CURVES, "curve")
        )
        for name in value:
            if name not in known:
                raise ValueError(f"unknown {what}: {name}")
        return value

    def enabled(self) -> bool:
        """TLS is on once any of its keys is set (the toolkit's ``IsEnabled``)."""
        return any(
            (
                self.cert,
                self.key.get_secret_value(),
                self.client_ca,
                self.cert_file,
                self.key_file,
                self.client_ca_file,
                self.client_auth_type,
            )
        )


class HTTPServerFile(_Strict):
    """``http_server_config``: HTTP/2 (accepted, not spoken) and extra response headers."""

    http2: bool = True
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("headers", mode="before")
    @classmethod
    def _scalars_as_text(cls, value: object) -> object:
        # Go's YAML decoder reads `X-XSS-Protection: 1` into a string, as "1".
        if isinstance(value, dict):
            return {k: str(v) if isinstance(v, int | float) else v for k, v in value.items()}
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if name not in EXTRA_HEADERS:
                raise ValueError(f"HTTP header {name!r} can not be configured")
            if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in text):
                raise ValueError(f"{name}: a header value cannot hold control characters")
            allowed = EXTRA_HEADERS[name]
            if allowed is not None and text not in allowed:
                raise ValueError(
                    f"invalid value for {name}: expected one of {', '.join(allowed)}, got {text!r}"
                )
        return value


class RateLimitFile(_Strict):
    """``rate_limit``: a token bucket over every request; an interval of 0 turns it off."""

    interval: Duration = 0.0
    burst: int = Field(default=0, ge=0)


class WebConfigFile(_Strict):
    """The whole file."""

    tls_server_config: TLSServerFile = Field(default_factory=TLSServerFile)
    http_server_config: HTTPServerFile = Field(default_factory=HTTPServerFile)
    rate_limit: RateLimitFile = Field(default_factory=RateLimitFile)
    basic_auth_users: dict[str, SecretStr] | None = None

    @field_validator("basic_auth_users")
    @classmethod
    def _hashes(cls, value: dict[str, SecretStr] | None) -> dict[str, SecretStr] | None:
        for user, secret in (value or {}).items():
            match = _BCRYPT.match(secret.get_secret_value())
            if match is None or not 4 <= int(match.group(1)) <= 31:
                raise ValueError(
                    f"{user}: not a bcrypt hash (make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n')"
                )
        return value


@dataclass(frozen=True)
class TLSServer:
    """What a TLS connection needs: the context, and the client SANs allowed (None: any)."""

    context: ssl.SSLContext
    allowed_sans: frozenset[str] | None = None


@dataclass(frozen=True)
class WebConfig:
    """TLS and authentication for the server, as loaded from one file (or the legacy keys)."""

    tls: TLSServer | None = None
    # bcrypt hashes by user name (basic_auth_users)
    users: dict[str, bytes] = field(default_factory=dict)
    # server.basic_auth: one user with a plain-text password
    plain_user: BasicAuthConfig | None = None
    headers: tuple[tuple[str, str], ...] = ()
    # (seconds between requests, burst), or None for no limit
    rate_limit: tuple[float, int] | None = None
    # Every file the config was read from: a change to any of them reloads it.
    files: tuple[Path, ...] = ()

    @property
    def auth_required(self) -> bool:
        return bool(self.users) or self.plain_user is not None


def load_web_config(path: Path) -> WebConfig:
    """Read and check ``path`` as the toolkit does; WebConfigError names the key at fault."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WebConfigError(path, f"cannot read the file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise WebConfigError(path, f"not UTF-8 text (byte {exc.start})") from None
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        raise WebConfigError(path, f"invalid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise WebConfigError(path, "(top level): must be a mapping")
    try:
        parsed = WebConfigFile.model_validate(data)
    except ValidationError as exc:
        raise WebConfigError(path, format_validation_error(exc)[0]) from None
    return _build(path, parsed)


def _build(path: Path, parsed: WebConfigFile) -> WebConfig:
    tls_file = parsed.tls_server_config
    base = path.parent
    files = [path]
    tls = None
    if tls_file.enabled():
        for name in ("cert_file", "key_file", "client_ca_file"):
            value = getattr(tls_file, name)
            if value:
                files.append(base / value)
        try:
            tls = tls_server(tls_file, base)
        except ValueError as exc:
            raise WebConfigError(path, f"tls_server_config.{exc}") from None
    limit = parsed.rate_limit
    return WebConfig(
        tls=tls,
        users={
            u: s.get_secret_value().encode() for u, s in (parsed.basic_auth_users or {}).items()
        },
        headers=tuple(parsed.http_server_config.headers.items()),
        rate_limit=(limit.interval, limit.burst) if limit.interval > 0 else None,
        files=tuple(files),
    )


def legacy_web_config(tls: TLSConfig | None, basic_auth: BasicAuthConfig | None) -> WebConfig:
    """The equivalent of ``server.tls`` and ``server.basic_auth``: a certificate and a key,
    and one user with a plain-text password."""
    server = None
    files: tuple[Path, ...] = ()
    if tls is not None:
        spec = TLSServerFile(cert_file=str(tls.cert_file), key_file=str(tls.key_file))
        try:
            server = tls_server(spec, Path.cwd())
        except ValueError as exc:
            raise WebConfigError("(server.tls)", str(exc)) from None
        files = (tls.cert_file, tls.key_file)
    return WebConfig(tls=server, plain_user=basic_auth, files=files)


def tls_server(spec: TLSServerFile, base: Path) -> TLSServer:
    """The SSL context for ``spec``; ValueError("<key>: <reason>") if it cannot be built."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _load_certificate(context, spec, base)
    context.minimum_version = TLS_VERSIONS[spec.min_version]
    context.maximum_version = TLS_VERSIONS[spec.max_version]
    if TLS_VERSIONS[spec.min_version] > TLS_VERSIONS[spec.max_version]:
        raise ValueError(f"min_version: {spec.min_version} is above max_version {spec.max_version}")
    legacy = [c for c in (CIPHER_SUITES[n] for n in spec.cipher_suites) if c is not None]
    if legacy:
        try:
            context.set_ciphers(":".join(legacy))
        except ssl.SSLError:
            raise ValueError("cipher_suites: none of them is available in this OpenSSL") from None
    if not spec.prefer_server_cipher_suites:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if len(spec.curve_preferences) == 1:
        context.set_ecdh_curve(CURVES[spec.curve_preferences[0]])
    _client_auth(context, spec, base)
    sans = frozenset(spec.client_allowed_sans) if spec.client_allowed_sans is not None else None
    return TLSServer(context=context, allowed_sans=sans)


def _load_certificate(context: ssl.SSLContext, spec: TLSServerFile, base: Path) -> None:
    if not spec.cert_file and not spec.cert:
        raise ValueError("cert_file: missing one of cert or cert_file")
    if not spec.key_file and not spec.key.get_secret_value():
        raise ValueError("key_file: missing one of key or key_file")
    # A file wins over inline PEM, as in the toolkit.
    cert_key = "cert_file" if spec.cert_file else "cert"
    with (
        _pem_file(base, spec.cert_file, spec.cert, cert_key) as cert,
        _pem_file(base, spec.key_file, spec.key.get_secret_value(), "key_file") as key,
    ):
        try:
            context.load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            reason = exc.reason or str(exc)
            raise ValueError(
                f"{cert_key}: cannot load the certificate with its key: {reason.lower()}"
            ) from None


@contextlib.contextmanager
def _pem_file(base: Path, name: str, inline: str, key: str) -> Iterator[str]:
    """A path to the PEM data: the named file (read to check it), or the inline text
    written to an unnamed in-memory file (ssl loads certificates from paths only)."""
    if name:
        path = base / name
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise ValueError(f"{key}: cannot read {path}: {exc.strerror}") from None
        yield str(path)
        return
    with _memory_file(inline.encode()) as path_text:
        yield path_text


@contextlib.contextmanager
def _memory_file(data: bytes) -> Iterator[str]:
    memfd = getattr(os, "memfd_create", None)
    if memfd is not None and Path("/proc/self/fd").is_dir():
        fd = memfd("web-config-pem", 0)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile(suffix=".pem") as tmp:  # pragma: no cover - not Linux
        tmp.write(data)
        tmp.flush()
        yield tmp.name


def _client_auth(context: ssl.SSLContext, spec: TLSServerFile, base: Path) -> None:
    mode = CLIENT_AUTH[spec.client_auth_type]
    has_ca = bool(spec.client_ca_file or spec.client_ca)
    if has_ca and mode == ssl.CERT_NONE:
        raise ValueError(
            "client_auth_type: client CA's have been configured without a Client Auth Policy"
        )
    if spec.client_allowed_sans is not None and mode == ssl.CERT_NONE:
        raise ValueError("client_allowed_sans: needs a client_auth_type that verifies certificates")
    context.verify_mode = mode
    if mode == ssl.CERT_NONE:
        return
    try:
        if spec.client_ca_file:
            context.load_verify_locations(cafile=str(base / spec.client_ca_file))
        elif spec.client_ca:
            context.load_verify_locations(cadata=spec.client_ca)
        else:
            # Go verifies against the system roots when no client CA is given.
            context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    except FileNotFoundError as exc:
        raise ValueError(f"client_ca_file: cannot read {exc.filename}: no such file") from None
    except (OSError, ssl.SSLError) as exc:
        detail = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise ValueError(f"client_ca_file: cannot load the CA certificates: {detail}") from None


def _signature(files: tuple[Path, ...]) -> tuple[tuple[int, int, int] | None, ...]:
    """What changes when a file is replaced or rewritten (symlink swaps included)."""
    out: list[tuple[int, int, int] | None] = []
    for path in files:
        try:
            st = path.stat()
        except OSError:
            out.append(None)
        else:
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


class WebConfigWatcher:
    """The current WebConfig, loaded again when one of its files changes.

    As in the toolkit, the file is re-read while serving: a new certificate is used
    from the next connection, a new user from the next request. A file that no
    longer loads fails closed: :meth:`current` raises its WebConfigError (the
    server answers 500 and refuses TLS handshakes) until it is fixed; the error is
    logged once per change.
    """

    def __init__(self, load: Callable[[], WebConfig]) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._config: WebConfig | WebConfigError = load()
        assert isinstance(self._config, WebConfig)
        self._files = self._config.files
        self._signature = _signature(self._files)

    def current(self) -> WebConfig:
        """The config to use now (stats its files; re-reads them after a change)."""
        if self._files and _signature(self._files) != self._signature:
            self._reload()
        config = self._config
        if isinstance(config, WebConfigError):
            raise config
        return config

    def _reload(self) -> None:
        with self._lock:
            signature = _signature(self._files)
            if signature == self._signature:
                return
            self._signature = signature
            try:
                self._config = self._load()
            except WebConfigError as exc:
                log.error("%s; refusing requests until it is fixed", exc)
                self._config = exc
                return
            self._files = self._config.files
            self._signature = _signature(self._files)
            log.info("web config reloaded from %s", ", ".join(str(p) for p in self._files))
