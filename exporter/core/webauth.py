"""HTTP basic authentication for the server (RFC 7617), as the exporter-toolkit does it.

Users come from the web config: bcrypt hashes (``basic_auth_users``) or the one
plain-text user of the legacy ``server.basic_auth``. What is kept from the toolkit:

- the scheme name is matched case-insensitively (RFC 7617 section 2, via RFC 7235);
- an unknown user is checked against a fixed hash, so timing does not tell which
  user names exist; plain-text credentials are compared in constant time;
- bcrypt is slow on purpose (about 70 ms at cost 10), so each (user, hash,
  password) outcome is cached, at most 100 entries, and bcrypt runs one at a time
  off the event loop. The cache key is a keyed hash, not the password.

Failed logins (credentials given, and wrong) are logged at WARNING, at most once a
minute, with the count of those not logged since; a request without credentials is
answered 401 and not logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import bcrypt

from exporter.core.redact import excerpt
from exporter.core.webconfig import WebConfig

log = logging.getLogger("exporter.server")

# The toolkit's stand-in for an unknown user: bcrypt of "fakepassword", cost 10.
FAKE_HASH = b"$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"
CACHE_SIZE = 100
WARN_EVERY = 60.0


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(user, password) from an ``Authorization: Basic ...`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


class Authenticator:
    """Checks basic-auth credentials against a :class:`WebConfig`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._key = os.urandom(32)
        self._cache: OrderedDict[bytes, bool] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._bcrypt_lock = threading.Lock()
        self.failures = FailedLogins(clock)

    def quick(self, config: WebConfig, credentials: tuple[str, str] | None) -> bool | None:
        """The outcome if it is known without bcrypt (no or plain credentials, a cached
        answer); None when :meth:`verify` must run (in a worker thread)."""
        if credentials is None:
            return False
        user, password = credentials
        if config.plain_user is not None:
            expected = config.plain_user
            # Both compared, always: the time does not tell which of the two was wrong.
            same_user = hmac.compare_digest(user.encode(), expected.username.encode())
            same_password = hmac.compare_digest(
                password.encode(), expected.password.get_secret_value().encode()
            )
            return same_user and same_password
        with self._cache_lock:
            return self._cache.get(self._cache_key(config, user, password))

    def verify(self, config: WebConfig, credentials: tuple[str, str]) -> bool:
        """Check with bcrypt (slow: call it from a worker thread) and cache the outcome."""
        user, password = credentials
        hashed = config.users.get(user)
        try:
            with self._bcrypt_lock:  # one at a time: bcrypt is CPU-bound by design
                matches = bcrypt.checkpw(password.encode(), hashed or FAKE_HASH)
        except ValueError:  # a password over bcrypt's 72 bytes
            matches = False
        ok = hashed is not None and matches
        key = self._cache_key(config, user, password)
        with self._cache_lock:
            self._cache[key] = ok
            self._cache.move_to_end(key)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return ok

    def _cache_key(self, config: WebConfig, user: str, password: str) -> bytes:
        hashed = config.users.get(user, FAKE_HASH)
        message = b"\0".join((user.encode(), hashed, password.encode()))
        return hmac.new(self._key, message, hashlib.sha256).digest()


class FailedLogins:
    """Failed logins, logged at WARNING at most once per ``every`` seconds."""

    def __init__(self, clock: Callable[[], float], every: float = WARN_EVERY) -> None:
        self.clock = clock
        self.every = every
        self._last: float | None = None
        self._unlogged = 0
        self._lock = threading.Lock()

    def record(self, user: str, peer: str) -> None:
        with self._lock:
            now = self.clock()
            if self._last is not None and now - self._last < self.every:
                self._unlogged += 1
                return
            unlogged, self._unlogged, self._last = self._unlogged, 0, now
        more = f"; {unlogged} more failed since the last warning" if unlogged else ""
        log.warning("basic auth failed for user %r from %s%s", excerpt(user, 64), peer, more)
