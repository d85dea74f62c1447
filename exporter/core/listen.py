"""Turning a failure to listen into one line naming the field at fault.

The HTTP server binds its socket and loads its web config (TLS files, users) when
it is built; the operating system's errors ("[Errno 98] Address already in use")
name neither the config field nor, for TLS, the file. See :class:`~exporter.core.errors.StartupError`.
"""

from __future__ import annotations

import errno
import socket
import ssl
from pathlib import Path

from exporter.core.errors import StartupError
from exporter.core.webconfig import WebConfigError

CONFIG, ENVIRONMENT = 2, 1


def check_tls_files(cert_file: Path, key_file: Path) -> None:
    """Load the certificate and key as the server will; StartupError if they do not load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert_file), str(key_file))
    except (OSError, ssl.SSLError) as exc:
        detail = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise StartupError(
            f"server.tls: cannot load the certificate {cert_file} with the key {key_file}: "
            f"{str(detail).lower()}",
            CONFIG,
        ) from None


def bind_error(address: str, port: int, exc: OSError) -> StartupError:
    """The one-line error for a failed bind of ``address``:``port``."""
    where = f"{address}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return StartupError(
            f"server.port: {where} is already in use by another process", ENVIRONMENT
        )
    if exc.errno == errno.EACCES:
        return StartupError(
            f"server.port: not allowed to listen on {where} (ports below 1024 need a capability)",
            ENVIRONMENT,
        )
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return StartupError(
            f"server.listen_address: {address!r} is not an address of this host", CONFIG
        )
    return StartupError(f"server: cannot listen on {where}: {exc.strerror or exc}", ENVIRONMENT)


def web_config_error(exc: WebConfigError) -> StartupError:
    """The web config file does not load: one line naming it and the key, exit 2."""
    return StartupError(f"server.web_config_file: {exc}", CONFIG)
