"""The one redaction layer: secrets out of every log line and every printed config.

Two kinds of secret are removed from text:

* values the configuration knows are secret (every ``SecretStr``, the password of
  a URL's userinfo, the value of a sensitive header such as a probe's
  ``Authorization``), with their ``user:secret`` base64 and percent-encoded forms,
  since upstreams echo them back that way;
* whatever looks like a credential, known or not: the value of an ``Authorization``,
  ``Private-Token``, ``X-Api-Key``, cookie or similar header (as a header line, in
  JSON or in a Python repr), a URL's userinfo, and query parameters named like
  tokens (``access_token``, ``private_token``, ``api_key``, ``sig``, ...).

:class:`RedactingFilter`, installed on the log handlers by the CLI, passes every
record (httpx's and httpcore's debug lines too) through :data:`REDACTOR`; it also
escapes control characters and caps the message's length, so an upstream string
can neither forge a log line nor flood the log.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, SecretStr

MASK = "***"
MAX_MESSAGE = 4096
# Secrets shorter than this are not searched for as plain text: "1" or "abc" would
# mask innocent text everywhere; the patterns below still hide them in their places.
MIN_KNOWN = 4

SENSITIVE_HEADERS = (
    "authorization",
    "proxy-authorization",
    "private-token",
    "job-token",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "x-gitlab-token",
    "kong-admin-token",
    "cookie",
    "set-cookie",
    "x-amz-security-token",
)
_TOKEN_NAME = (
    r"[\w.-]*(?:token|secret|password|passwd|api[_-]?key|apikey|signature|credential|sig)[\w.-]*"
)

_HEADER = re.compile(
    r"(?i)(?P<name>\b(?:" + "|".join(re.escape(h) for h in SENSITIVE_HEADERS) + r"))"
    r"(?P<sep>['\"]?\s*[:=]\s*[\[(]?\s*(?-i:b)?['\"]?)"
    r"(?P<value>(?:(?:Bearer|Basic|Token|Digest|Negotiate|Bot)\s+)?[^\s'\",;})\]]+)"
)
_USERINFO = re.compile(r"(?i)(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?P<info>[^/\s@'\"<>]+)@")
_QUERY = re.compile(r"(?i)(?P<name>[?&;]" + _TOKEN_NAME + r"=)(?P<value>[^&\s'\"#<>]+)")
# A JSON/repr key named like a secret: "client_secret": "..." or 'password': '...'.
_FIELD = re.compile(r"(?i)(?P<name>['\"]" + _TOKEN_NAME + r"['\"]\s*:\s*['\"])(?P<value>[^'\"]+)")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _escape_control(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r"}.get(char, f"\\x{ord(char):02x}")


class Redactor:
    """Removes secrets from text; learns the known ones from configs."""

    def __init__(self) -> None:
        self._known: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, secret: str, usernames: Iterable[str] = ()) -> None:
        """Hide ``secret`` (and its encoded forms, also as ``user:secret``) from now on."""
        if len(secret) < MIN_KNOWN:
            return
        forms = {secret, quote(secret, safe=""), _b64(secret)}
        for user in usernames:
            forms.add(_b64(f"{user}:{secret}"))
        with self._lock:
            if forms <= self._known:
                return
            self._known |= forms
            ordered = sorted(self._known, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def known(self) -> frozenset[str]:
        """The secrets (in all their forms) hidden now."""
        with self._lock:
            return frozenset(self._known)

    def reset(self, known: frozenset[str]) -> None:
        """Hide exactly ``known`` from now on (what :meth:`known` returned earlier)."""
        with self._lock:
            self._known = set(known)
            ordered = sorted(self._known, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(s) for s in ordered)) if ordered else None

    def learn(self, config: BaseModel) -> None:
        """Every secret a (pydantic) config holds: SecretStr fields, URL userinfo
        passwords, values of sensitive headers; usernames beside them pair up."""
        for secret, users in _secrets(config):
            self.add(secret, users)

    def text(self, text: str) -> str:
        """``text`` with every secret replaced by ``***``."""
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(MASK, text)
        text = _HEADER.sub(lambda m: f"{m['name']}{m['sep']}{MASK}", text)
        text = _USERINFO.sub(lambda m: f"{m['scheme']}{_mask_userinfo(m['info'])}@", text)
        text = _QUERY.sub(lambda m: f"{m['name']}{MASK}", text)
        return _FIELD.sub(lambda m: f"{m['name']}{MASK}", text)

    def data(self, value: Any) -> Any:
        """A copy of JSON-shaped ``value`` with every string redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            out: dict[Any, Any] = {}
            for k, v in value.items():
                sensitive = isinstance(k, str) and k.lower() in SENSITIVE_HEADERS
                out[k] = MASK if sensitive and isinstance(v, str) else self.data(v)
            return out
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value


def _mask_userinfo(info: str) -> str:
    user, sep, _ = info.partition(":")
    # "user:password" keeps the user; a lone token in the user part goes entirely.
    return f"{user}:{MASK}" if sep else MASK


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _secrets(model: Any) -> Iterable[tuple[str, list[str]]]:
    """(secret, usernames beside it) for every secret in a config tree."""
    if isinstance(model, BaseModel):
        fields = {name: getattr(model, name, None) for name in type(model).model_fields}
        users = [
            v
            for k, v in fields.items()
            if isinstance(v, str) and k in ("username", "user", "client_id")
        ]
        for name, value in fields.items():
            if isinstance(value, SecretStr):
                yield value.get_secret_value(), users
            elif isinstance(value, str):
                yield from _in_url(value)
            elif name == "headers" and isinstance(value, Mapping):
                yield from _in_headers(value)
            else:
                yield from _secrets(value)
    elif isinstance(model, Mapping):
        for value in model.values():
            yield from _secrets(value)
    elif isinstance(model, list | tuple):
        for value in model:
            yield from _secrets(value)


_DATABASE_SCHEMES = ("postgresql", "postgres")


def _in_url(value: str) -> Iterable[tuple[str, list[str]]]:
    if "://" not in value or "@" not in value:
        return
    try:
        parts = urlsplit(value)
    except ValueError:
        return
    if parts.password:
        yield parts.password, [parts.username or ""]
    elif parts.username and parts.scheme.lower() not in _DATABASE_SCHEMES:
        # A lone user part is a token (https://TOKEN@host); a database URL's is a role
        # name, masked where a URL shows it but not searched for everywhere as text (a
        # role named postgres would mask every "postgresql").
        yield parts.username, []


def _in_headers(headers: Mapping[str, Any]) -> Iterable[tuple[str, list[str]]]:
    for name, value in headers.items():
        if str(name).lower() in SENSITIVE_HEADERS and isinstance(value, str):
            yield value, []
            scheme, _, credential = value.partition(" ")
            if credential and scheme.lower() in ("bearer", "basic", "token"):
                yield credential, []


REDACTOR = Redactor()


class RedactingFilter(logging.Filter):
    """A handler filter: every record's message and traceback redacted and escaped."""

    def __init__(self, redactor: Redactor = REDACTOR, max_message: int = MAX_MESSAGE) -> None:
        super().__init__()
        self.redactor = redactor
        self.max_message = max_message
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        message = self.redactor.text(record.getMessage())
        message = _CONTROL.sub(_escape_control, message)
        if len(message) > self.max_message:
            extra = len(message) - self.max_message
            message = f"{message[: self.max_message]}... ({extra} more characters)"
        record.msg, record.args = message, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.text(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.text(record.stack_info)
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Put the filter on every handler of ``logger`` (the root logger by default)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def excerpt(text: str, limit: int = 200) -> str:
    """The start of an upstream body for an error message: redacted, then cut, on one line.

    Redacting first matters: a token cut in half would no longer match its known value.
    """
    head = REDACTOR.text(text[: limit * 8])
    return " ".join(head.split())[:limit]
