"""Which database holds the state: a SQLite file (the default) or a PostgreSQL server.

``state.url`` names it: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``
(SQLAlchemy's spelling: the path follows the third slash), or
``postgresql://user@host:5432/database`` with the password from ``state.password`` (a
secret: ``{env: NAME}`` or ``{file: PATH}``) and TLS from ``state.sslmode`` and
``state.sslrootcert`` (or the URL's own ``sslmode=`` query). Without a URL, ``state.path``
is the SQLite file, as before. This module only parses and holds the location; the
PostgreSQL driver is imported by the store when it opens one
(:mod:`exporter.core.backend_postgres`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from exporter.core.redact import MASK

APPLICATION = "platform-kpi-exporter"
SCHEMES = ("sqlite", "postgresql", "postgres")


@dataclass(frozen=True)
class PostgresTarget:
    """Where the state lives on PostgreSQL: the URL (no password in it), the password (from
    a secret), TLS options and the timeouts."""

    url: str
    password: str | None = None
    sslmode: str | None = None
    sslrootcert: Path | None = None
    connect_timeout: float = 10.0
    # The schema holding the tables (created if missing); None: the server's search_path.
    schema: str | None = None

    def __str__(self) -> str:
        """The URL as logs may show it: no password, no query."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}{parts.path}"

    def connect_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {
            "connect_timeout": max(1, round(self.connect_timeout)),
            "application_name": APPLICATION,
        }
        if self.password is not None:
            args["password"] = self.password
        if self.sslmode is not None:
            args["sslmode"] = self.sslmode
        if self.sslrootcert is not None:
            args["sslrootcert"] = str(self.sslrootcert)
        return args


def parse_url(url: str) -> Path | tuple[str, str]:
    """A SQLite URL's file path, or ``("postgresql", url)``; ValueError says what is wrong.

    A password in a PostgreSQL URL is refused: it would be printed wherever the URL is
    (logs, ``config show``), so it comes from ``state.password``, a secret.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(
            f"unknown scheme {parts.scheme or '(none)'!r}: use sqlite:///path or postgresql://host/db"
        )
    if scheme == "sqlite":
        if (
            parts.netloc
            or not url.lower().startswith("sqlite:///")
            or len(url) <= len("sqlite:///")
        ):
            raise ValueError("a SQLite URL is sqlite:///relative/path or sqlite:////absolute/path")
        return Path(url[len("sqlite:///") :])
    if parts.password is not None or "password" in dict(parse_qsl(parts.query)):
        raise ValueError("no password in the URL: set state.password ({env: NAME} or {file: PATH})")
    if not parts.hostname:
        raise ValueError("a PostgreSQL URL names its host: postgresql://user@host:5432/database")
    return ("postgresql", url)


def url_user(url: str) -> str | None:
    """The user name a PostgreSQL URL logs in as (its userinfo, or libpq's ``user=``)."""
    parts = urlsplit(url)
    return parts.username or dict(parse_qsl(parts.query)).get("user") or None


def shown_url(url: str) -> str:
    """``url`` as a printed config shows it: the user name and any password masked, in
    the userinfo and in the query (libpq's ``user=`` and ``password=``)."""
    parts = urlsplit(url)
    if parts.scheme.lower() == "sqlite":
        return url
    netloc = parts.netloc.rpartition("@")[2]
    if "@" in parts.netloc:
        netloc = f"{MASK}@{netloc}"
    query = [
        (k, MASK if k in ("user", "password") else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(
        (
            parts.scheme,
            netloc,
            parts.path,
            urlencode(query, safe="*", quote_via=quote),
            parts.fragment,
        )
    )
