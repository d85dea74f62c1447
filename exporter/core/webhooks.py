"""Webhook intake: endpoints that upstreams push events to, under ``/webhooks/<name>``.

A domain declares its endpoints (``Domain.webhooks(config)``), each one an
:class:`Endpoint`: a name, its :class:`WebhookSettings` (how a sender proves who it
is, the largest body taken) and a parser turning a request into records. There is
no endpoint unless the config gives its settings, and every endpoint must have
one way of authentication. The server routes ``/webhooks/`` apart from everything
else: the ``/metrics`` credentials (web config basic auth) are neither asked for
nor accepted there, and an endpoint's secret opens nothing but its own path.

A request then goes through, in this order (each outcome counted in
``platform_exporter_webhook_requests_total{endpoint,outcome}``):

=========================  ======  ===============================================
check                      status  outcome
=========================  ======  ===============================================
method is not POST         405     ``method_not_allowed``
body over the limit        413     ``too_large``
verifier refuses it        401     ``unauthorized``
parser raises Malformed    400     ``malformed`` (nothing is stored)
delivery id seen before    200     ``replayed`` (nothing is stored again)
store cannot write now     503     ``unavailable`` (with ``Retry-After``; the sender retries)
records committed          200     ``accepted``
=========================  ======  ===============================================

The signature is checked before the body is parsed, so an unauthenticated sender
never reaches a parser. Records are written through their domains' store writers
in one transaction, attributed to the domains they change (see
:mod:`exporter.core.changes`), so upserts by upstream id make a redelivery a
no-op; once committed, ``notify`` asks for a refresh, so ``/metrics`` shows the
event at the next render.

For a domain, an endpoint is::

    def parse(request: WebhookRequest) -> Parsed:
        data = json_body(request.body)           # Malformed on bad JSON
        return Parsed([MyRecord(...)], delivery_id=request.headers.get("x-delivery"))

    Endpoint("myhook", settings, parse, produces=(MyRecord,))
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from pydantic import Field, model_validator

from exporter.core.changes import writing_for
from exporter.core.clock import Clock
from exporter.core.errors import StateError
from exporter.core.provider import ProviderSpec
from exporter.core.redact import excerpt
from exporter.core.settings import BasicAuthConfig, Name, Secret, StrictModel
from exporter.core.store import Store, write_records

log = logging.getLogger("exporter.webhooks")

#: The path prefix every endpoint lives under.
PREFIX = "/webhooks/"
#: The provider input of the intake's own counts (bumped by every request).
INPUT = "webhooks"
#: Delivery ids remembered per endpoint to recognise replays (oldest forgotten first).
REPLAY_MEMORY = 10_000
#: The largest body limit an endpoint may set (the server reads no bigger body anyway).
MAX_BODY_LIMIT = 10 * 1024 * 1024
_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"

OUTCOMES = (
    "accepted",
    "replayed",
    "unauthorized",
    "malformed",
    "too_large",
    "method_not_allowed",
    "unavailable",
    "failed",
)


# --- settings -----------------------------------------------------------------------


class HmacAuth(StrictModel):
    """An HMAC-SHA256 of the raw body with a shared secret, hex, in a header (GitHub's
    ``X-Hub-Signature-256: sha256=<hex>`` by default)."""

    secret: Secret
    header: str = "X-Hub-Signature-256"
    prefix: str = "sha256="


class TokenAuth(StrictModel):
    """A shared token sent as it is in a header (GitLab's ``X-Gitlab-Token`` by default)."""

    token: Secret
    header: str = "X-Gitlab-Token"


class WebhookAuth(StrictModel):
    """How a sender proves who it is: exactly one of the four."""

    hmac: HmacAuth | None = None
    token: TokenAuth | None = None
    # ``Authorization: Bearer <token>`` (Alertmanager's http_config ``authorization``).
    bearer_token: Secret | None = None
    # ``Authorization: Basic ...`` (Alertmanager's http_config ``basic_auth``).
    basic_auth: BasicAuthConfig | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> WebhookAuth:
        given = [k for k in ("hmac", "token", "bearer_token", "basic_auth") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of hmac, token, bearer_token or basic_auth"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self


class WebhookSettings(StrictModel):
    """One webhook endpoint's settings; a domain embeds them where its config wants."""

    enabled: bool = True
    auth: WebhookAuth
    # Bodies larger than this are answered 413 and not parsed.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1, le=MAX_BODY_LIMIT)


# --- verifying ----------------------------------------------------------------------


def verify(auth: WebhookAuth, body: bytes, headers: Mapping[str, str]) -> bool:
    """True if the request carries the configured proof. ``headers`` are by lower-case
    name; every comparison is constant-time."""
    if auth.hmac is not None:
        given = headers.get(auth.hmac.header.lower(), "")
        if not given.startswith(auth.hmac.prefix):
            return False
        key = auth.hmac.secret.get_secret_value().encode()
        expected = hmac.new(key, body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(given[len(auth.hmac.prefix) :].lower(), expected)
    if auth.token is not None:
        given = headers.get(auth.token.header.lower(), "")
        return _same(given, auth.token.token.get_secret_value())
    scheme, _, value = headers.get("authorization", "").strip().partition(" ")
    if auth.bearer_token is not None:
        return scheme.lower() == "bearer" and _same(
            value.strip(), auth.bearer_token.get_secret_value()
        )
    if auth.basic_auth is not None and scheme.lower() == "basic":
        try:
            user, sep, password = (
                base64.b64decode(value.strip(), validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            return False
        ok_user = _same(user, auth.basic_auth.username)
        ok_password = _same(password, auth.basic_auth.password.get_secret_value())
        return bool(sep) and ok_user and ok_password
    return False


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


# --- endpoints ----------------------------------------------------------------------


class Malformed(ValueError):
    """The body is not what the endpoint takes: answered 400, nothing stored. The
    message (capped) is the response body, so it must not quote secrets."""


@dataclass(frozen=True)
class WebhookRequest:
    """What a parser gets: the verified body, headers by lower-case name, the clock's
    now, and the store (to read, e.g., the service catalog; never to write)."""

    endpoint: str
    body: bytes
    headers: Mapping[str, str]
    now: float
    store: Store


@dataclass(frozen=True)
class Parsed:
    """What a request holds: records for the domains' writers (may be empty: an event
    the endpoint ignores), and the sender's delivery id, if it has one, by which a
    replay is recognised and acknowledged without a write."""

    records: Sequence[object] = ()
    delivery_id: str | None = None


Parser = Callable[[WebhookRequest], Parsed]


@dataclass(frozen=True)
class Endpoint:
    """One endpoint, served at ``/webhooks/<name>``. ``produces`` are the record types
    its parser returns; ``writes`` (filled in by :func:`exporter.domains.webhook_endpoints`)
    the domains whose stored data they change."""

    name: Name
    settings: WebhookSettings
    parse: Parser
    produces: tuple[type, ...] = ()
    writes: frozenset[str] = frozenset()

    @property
    def path(self) -> str:
        return PREFIX + self.name


def json_body(body: bytes) -> Any:
    """The JSON value of a body; Malformed if it is not UTF-8 JSON."""
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Malformed(f"body is not JSON: {exc}") from None


# --- the intake ---------------------------------------------------------------------


@dataclass
class _EndpointStats:
    outcomes: dict[str, int] = field(default_factory=dict)
    last_accepted: float | None = None
    seen: OrderedDict[str, None] = field(default_factory=OrderedDict)


# (status, content type, body): what the server's routes return.
Answer = tuple[int, str, bytes]


class WebhookIntake:
    """Every configured endpoint of one daemon: verifies, parses, stores, counts.

    ``notify`` is called (from a server worker thread) after each commit that stored
    something; the daemon turns it into a refresh. :meth:`handle` is thread-safe.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        store: Store,
        clock: Clock,
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        self.endpoints = {e.name: e for e in endpoints if e.settings.enabled}
        self.store = store
        self.clock = clock
        self.notify = notify
        self._lock = threading.Lock()
        self._stats = {name: _EndpointStats() for name in self.endpoints}
        # Requests answered so far: the version of the input INPUT (what collect() shows).
        self.version = 0

    def routes(self) -> Iterator[tuple[str, Callable[[str, bytes, dict[str, str]], Answer]]]:
        """(path, route) of every endpoint, for :meth:`MetricsServer.add_route`."""
        for name, endpoint in self.endpoints.items():
            yield endpoint.path, functools.partial(self.handle, name)

    def handle(self, name: str, method: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """Answer one request to endpoint ``name`` (see the module doc for the order)."""
        endpoint = self.endpoints[name]
        if method != "POST":
            return self._answer(name, "method_not_allowed", 405, b"POST only\n")
        if len(body) > endpoint.settings.max_body_bytes:
            return self._answer(name, "too_large", 413, b"request body too large\n")
        if not verify(endpoint.settings.auth, body, headers):
            return self._answer(name, "unauthorized", 401, b"unauthorized\n")
        request = WebhookRequest(name, body, headers, self.clock(), self.store)
        try:
            parsed = endpoint.parse(request)
        except Malformed as exc:
            return self._answer(name, "malformed", 400, excerpt(str(exc), 300).encode() + b"\n")
        if parsed.delivery_id is not None and self._seen(name, parsed.delivery_id):
            return self._answer(name, "replayed", 200, b'{"status":"replayed"}\n', _JSON)
        return self._store(endpoint, parsed)

    def _store(self, endpoint: Endpoint, parsed: Parsed) -> Answer:
        name = endpoint.name
        try:
            if parsed.records:
                with writing_for(endpoint.writes), self.store.transaction() as tx:
                    write_records(tx, parsed.records)
        except StateError as exc:
            self._forget(name, parsed.delivery_id)
            log.warning("webhook %s: not stored, the state database refused it: %s", name, exc)
            return self._answer(name, "unavailable", 503, b"state database busy; retry\n")
        except Exception:
            self._forget(name, parsed.delivery_id)
            log.exception("webhook %s: storing its records failed", name)
            return self._answer(name, "failed", 500, b"internal error\n")
        with self._lock:
            self._stats[name].last_accepted = self.clock()
        if parsed.records:
            self.notify()
        return self._answer(name, "accepted", 200, b'{"status":"accepted"}\n', _JSON)

    def _answer(
        self, name: str, outcome: str, status: int, body: bytes, ctype: str = _TEXT
    ) -> Answer:
        with self._lock:
            counts = self._stats[name].outcomes
            counts[outcome] = counts.get(outcome, 0) + 1
            self.version += 1
        if outcome in ("unauthorized", "malformed"):
            log.debug("webhook %s: %s (%d)", name, outcome, status)
        return status, ctype, body

    def _seen(self, name: str, delivery_id: str) -> bool:
        """True if ``delivery_id`` was taken before; else remember it."""
        with self._lock:
            seen = self._stats[name].seen
            if delivery_id in seen:
                seen.move_to_end(delivery_id)
                return True
            seen[delivery_id] = None
            while len(seen) > REPLAY_MEMORY:
                seen.popitem(last=False)
            return False

    def _forget(self, name: str, delivery_id: str | None) -> None:
        """A delivery that was not stored may come again: it is no replay then."""
        if delivery_id is not None:
            with self._lock:
                self._stats[name].seen.pop(delivery_id, None)

    def counts(self) -> dict[str, dict[str, int]]:
        """Requests per endpoint and outcome so far (a copy)."""
        with self._lock:
            return {n: dict(s.outcomes) for n, s in self._stats.items()}

    def spec(self) -> ProviderSpec:
        """The intake's metrics as a provider, recomputed when a request was answered."""
        return ProviderSpec(INPUT, self.collect, frozenset({INPUT}), time_driven=False)

    def collect(self, ctx: object = None) -> Iterator[Metric]:
        """The intake's own metrics (a provider: it reads no stored data).

        Sample::

            platform_exporter_webhook_requests_total{endpoint="alertmanager",outcome="accepted"} 12
            platform_exporter_webhook_last_accepted_timestamp_seconds{endpoint="alertmanager"} 1.7e9
        """
        requests = CounterMetricFamily(
            "platform_exporter_webhook_requests_total",
            "Requests to each webhook endpoint since the exporter started, by outcome "
            "(accepted, replayed, unauthorized, malformed, too_large, method_not_allowed, "
            "unavailable, failed).",
            labels=["endpoint", "outcome"],
        )
        last = GaugeMetricFamily(
            "platform_exporter_webhook_last_accepted_timestamp_seconds",
            "Unix time of the last request each webhook endpoint accepted. Absent before one.",
            labels=["endpoint"],
        )
        with self._lock:
            for name, stats in sorted(self._stats.items()):
                for outcome in OUTCOMES:
                    requests.add_metric([name, outcome], stats.outcomes.get(outcome, 0))
                if stats.last_accepted is not None:
                    last.add_metric([name], stats.last_accepted)
        yield requests
        yield last


class PushPacer:
    """When the refresh a webhook asks for may start.

    A lone delivery is shown ``settle`` seconds after it (time for the rest of a burst
    to arrive, so a burst costs one render). Under a steady stream every commit asks
    for a refresh, and rendering each time the settle ends would spend much of the
    process on renders; so a pushed refresh also waits until ``pace`` times the CPU
    the last render used has passed since that render ended (renders then take at
    most 1 / (1 + ``pace``) of a stream's CPU), but never longer than ``longest``
    seconds after it: a value still reaches ``/metrics`` within a bounded time. CPU
    time, not wall time, so that a busy machine does not stretch the wait. Times are
    the process's monotonic seconds.
    """

    def __init__(self, settle: float, pace: float, longest: float) -> None:
        self.settle = settle
        self.pace = pace
        self.longest = longest
        self._free_at = float("-inf")

    def rendered(self, ended: float, cpu_seconds: float) -> None:
        """A render ended at ``ended`` after using ``cpu_seconds`` of CPU."""
        self._free_at = ended + min(self.pace * cpu_seconds, self.longest)

    def left(self, now: float) -> float:
        """Seconds from ``now`` until a pushed refresh may start (0: it may now). Asked
        again when the settle is over, as a render may have ended in between."""
        return max(0.0, self._free_at - now)
