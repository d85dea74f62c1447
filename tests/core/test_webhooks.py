"""The webhook intake: verifiers, the order of checks, idempotent storage, replays, and
the server keeping webhook auth and ``/metrics`` auth apart."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from prometheus_client.core import GaugeMetricFamily
from pydantic import ValidationError

from exporter.core.errors import StateError
from exporter.core.server import MetricsServer
from exporter.core.settings import ServerConfig
from exporter.core.snapshot import Snapshot, SnapshotHolder
from exporter.core.store import Schema, Store, Tx
from exporter.core.webhooks import (
    Endpoint,
    Malformed,
    Parsed,
    PushPacer,
    WebhookAuth,
    WebhookIntake,
    WebhookRequest,
    WebhookSettings,
    json_body,
    verify,
)
from tests.support.net import http_get

SECRET = "It's a Secret to Everybody"


@dataclass(frozen=True)
class Event:
    event_id: str
    value: int


def write_events(tx: Tx, events: Sequence[Event]) -> None:
    for e in events:
        tx.upsert("events", {"event_id": e.event_id, "value": e.value}, ("event_id",))


SCHEMA = Schema(
    (("hooktest", ("CREATE TABLE events (event_id TEXT PRIMARY KEY, value INTEGER)",)),),
    {Event: write_events},
)


def parse(request: WebhookRequest) -> Parsed:
    data = json_body(request.body)
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise Malformed("expected an object with a string id")
    if not isinstance(data.get("value"), int):
        raise Malformed("expected an integer value")
    return Parsed([Event(data["id"], data["value"])], request.headers.get("x-delivery"))


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"x-hub-signature-256": f"sha256={digest}"}


def hmac_settings(**extra: Any) -> WebhookSettings:
    return WebhookSettings(auth={"hmac": {"secret": SECRET}}, **extra)


@pytest.fixture
def store() -> Iterator[Store]:
    s = Store(":memory:", schema=SCHEMA)
    yield s
    s.close()


def intake_of(
    store: Store, settings: WebhookSettings, notes: list[int] | None = None
) -> WebhookIntake:
    endpoint = Endpoint("events", settings, parse, produces=(Event,), writes=frozenset({"t"}))
    notify = (lambda: notes.append(1)) if notes is not None else (lambda: None)
    return WebhookIntake([endpoint], store, lambda: 1_700_000_000.0, notify)


def rows(store: Store) -> list[tuple[str, int]]:
    return [(str(r[0]), int(r[1])) for r in store.query("SELECT event_id, value FROM events")]


class TestVerify:
    BODY = b'{"id":"a","value":1}'

    def test_hmac_of_the_raw_body(self) -> None:
        """GitHub's documented example: secret "It's a Secret to Everybody", payload
        "Hello, World!" signs as 757107ea...8e17 (docs.github.com, "Validating webhook
        deliveries")."""
        auth = WebhookAuth(hmac={"secret": SECRET})
        good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        assert verify(auth, b"Hello, World!", {"x-hub-signature-256": good})
        assert not verify(auth, b"Hello, World?", {"x-hub-signature-256": good})
        assert not verify(auth, b"Hello, World!", {"x-hub-signature-256": good[7:]})
        assert not verify(auth, b"Hello, World!", {})

    def test_token_in_its_header(self) -> None:
        auth = WebhookAuth(token={"token": "t0k"})
        assert verify(auth, self.BODY, {"x-gitlab-token": "t0k"})
        assert not verify(auth, self.BODY, {"x-gitlab-token": "t0K"})
        assert not verify(auth, self.BODY, {"authorization": "Bearer t0k"})

    def test_bearer_token(self) -> None:
        auth = WebhookAuth(bearer_token="b3arer")
        assert verify(auth, self.BODY, {"authorization": "Bearer b3arer"})
        assert verify(auth, self.BODY, {"authorization": "bearer b3arer"})
        assert not verify(auth, self.BODY, {"authorization": "Bearer other"})
        assert not verify(auth, self.BODY, {"authorization": "Basic b3arer"})

    def test_basic_auth(self) -> None:
        auth = WebhookAuth(basic_auth={"username": "am", "password": "pw"})

        def header(user: str, password: str) -> dict[str, str]:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            return {"authorization": f"Basic {token}"}

        assert verify(auth, self.BODY, header("am", "pw"))
        assert not verify(auth, self.BODY, header("am", "px"))
        assert not verify(auth, self.BODY, header("al", "pw"))
        assert not verify(auth, self.BODY, {"authorization": "Basic !!"})

    @pytest.mark.parametrize(
        "auth", [{}, {"bearer_token": "a", "token": {"token": "b"}}], ids=["none", "two"]
    )
    def test_exactly_one_way_of_auth(self, auth: dict[str, Any]) -> None:
        with pytest.raises(ValidationError, match="exactly one of"):
            WebhookSettings(auth=auth)


class TestIntake:
    def test_a_signed_event_is_stored_and_announced(self, store: Store) -> None:
        notes: list[int] = []
        intake = intake_of(store, hmac_settings(), notes)
        body = b'{"id":"e1","value":3}'
        status, ctype, answer = intake.handle("events", "POST", body, signed(body))
        assert (status, ctype) == (200, "application/json")
        assert json.loads(answer) == {"status": "accepted"}
        assert rows(store) == [("e1", 3)]
        assert notes == [1]
        assert intake.counts() == {"events": {"accepted": 1}}

    def test_a_bad_signature_is_401_and_never_parsed(self, store: Store) -> None:
        intake = intake_of(store, hmac_settings())
        body = b"not even json"
        status, _, _ = intake.handle("events", "POST", body, signed(body, "wrong"))
        assert status == 401
        assert rows(store) == []
        assert intake.counts()["events"] == {"unauthorized": 1}

    @pytest.mark.parametrize("body", [b"{", b'{"id": 5, "value": 1}', b"\xff\xfe", b"[]"], ids=str)
    def test_a_malformed_body_is_400_with_nothing_stored(self, store: Store, body: bytes) -> None:
        notes: list[int] = []
        intake = intake_of(store, hmac_settings(), notes)
        status, _, _ = intake.handle("events", "POST", body, signed(body))
        assert status == 400
        assert rows(store) == []
        assert notes == []
        assert intake.counts()["events"] == {"malformed": 1}

    def test_an_oversized_body_is_413_before_its_signature(self, store: Store) -> None:
        intake = intake_of(store, hmac_settings(max_body_bytes=32))
        body = json.dumps({"id": "x" * 40, "value": 1}).encode()
        status, _, _ = intake.handle("events", "POST", body, signed(body))
        assert status == 413
        assert rows(store) == []
        assert intake.counts()["events"] == {"too_large": 1}

    def test_only_post(self, store: Store) -> None:
        intake = intake_of(store, hmac_settings())
        assert intake.handle("events", "GET", b"", {})[0] == 405

    def test_a_replayed_delivery_is_acknowledged_not_stored_again(self, store: Store) -> None:
        notes: list[int] = []
        intake = intake_of(store, hmac_settings(), notes)
        body = b'{"id":"e1","value":3}'
        headers = {**signed(body), "x-delivery": "d-1"}
        assert intake.handle("events", "POST", body, headers)[0] == 200
        status, _, answer = intake.handle("events", "POST", body, headers)
        assert (status, json.loads(answer)) == (200, {"status": "replayed"})
        assert rows(store) == [("e1", 3)]
        assert notes == [1]
        assert intake.counts()["events"] == {"accepted": 1, "replayed": 1}

    def test_the_same_event_twice_is_one_row(self, store: Store) -> None:
        """Without delivery ids, the writer's upsert by upstream id is what makes it once."""
        intake = intake_of(store, hmac_settings())
        body = b'{"id":"e1","value":3}'
        for _ in range(2):
            assert intake.handle("events", "POST", body, signed(body))[0] == 200
        assert rows(store) == [("e1", 3)]

    def test_a_store_that_cannot_write_is_503_and_the_delivery_may_come_again(
        self, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        intake = intake_of(store, hmac_settings())
        body = b'{"id":"e1","value":3}'
        headers = {**signed(body), "x-delivery": "d-1"}

        def refuse(tx: Tx, events: Sequence[Event]) -> None:
            raise StateError("database is locked")

        monkeypatch.setitem(store.schema.writers, Event, refuse)  # type: ignore[index]
        assert intake.handle("events", "POST", body, headers)[0] == 503
        monkeypatch.undo()
        assert intake.handle("events", "POST", body, headers)[0] == 200
        assert rows(store) == [("e1", 3)]
        assert intake.counts()["events"] == {"unavailable": 1, "accepted": 1}

    def test_a_disabled_endpoint_is_not_served(self, store: Store) -> None:
        intake = intake_of(store, hmac_settings(enabled=False))
        assert list(intake.routes()) == []

    def test_its_metrics_count_every_outcome(self, store: Store) -> None:
        intake = intake_of(store, hmac_settings())
        body = b'{"id":"e1","value":3}'
        intake.handle("events", "POST", body, signed(body))
        intake.handle("events", "POST", body, {})
        families = {f.name: f for f in intake.collect()}
        requests = {
            s.labels["outcome"]: s.value
            for s in families["platform_exporter_webhook_requests"].samples
            if s.name.endswith("_total")
        }
        assert requests["accepted"] == 1 and requests["unauthorized"] == 1
        assert requests["malformed"] == 0
        last = families["platform_exporter_webhook_last_accepted_timestamp_seconds"].samples
        assert [s.value for s in last] == [1_700_000_000.0]


def post(
    server: MetricsServer, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("POST", path, body, headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.fixture
def guarded(tmp_path: Path, store: Store) -> Iterator[MetricsServer]:
    """A server whose /metrics needs basic auth (prom:s3cret), with one webhook endpoint
    that takes a bearer token."""
    web = tmp_path / "web.yml"
    digest = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    web.write_text(f"basic_auth_users:\n  prom: {digest}\n", encoding="utf-8")
    g = GaugeMetricFamily("platform_test_ratio", "A test ratio.")
    g.add_metric([], 0.5)
    config = ServerConfig(listen_address="127.0.0.1", port=0, web_config_file=web)
    server = MetricsServer(config, SnapshotHolder(Snapshot.render([g], 1.0)), lambda: True)
    intake = intake_of(store, WebhookSettings(auth={"bearer_token": "hook-token"}))
    for path, route in intake.routes():
        server.add_route(path, route)
    server.start()
    yield server
    server.stop()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class TestServerKeepsTheAuthsApart:
    BODY = b'{"id":"e1","value":3}'

    def test_a_webhook_needs_its_own_token_not_the_metrics_credentials(
        self, guarded: MetricsServer, store: Store
    ) -> None:
        status, _ = post(
            guarded, "/webhooks/events", self.BODY, {"Authorization": "Bearer hook-token"}
        )
        assert status == 200
        assert rows(store) == [("e1", 3)]
        status, _ = post(
            guarded, "/webhooks/events", self.BODY, {"Authorization": basic("prom", "s3cret")}
        )
        assert status == 401

    def test_the_webhook_token_opens_nothing_else(self, guarded: MetricsServer) -> None:
        url = f"http://127.0.0.1:{guarded.port}/metrics"
        assert http_get(url, {"Authorization": "Bearer hook-token"})[0] == 401
        assert http_get(url, {"Authorization": basic("prom", "s3cret")})[0] == 200

    def test_an_unconfigured_webhook_path_is_404(self, guarded: MetricsServer) -> None:
        status, _ = post(guarded, "/webhooks/github", self.BODY, {})
        assert status == 404

    def test_oversized_and_malformed_over_http(self, guarded: MetricsServer) -> None:
        token = {"Authorization": "Bearer hook-token"}
        assert post(guarded, "/webhooks/events", b"{", token)[0] == 400
        big = json.dumps({"id": "x" * (2 * 1024 * 1024), "value": 1}).encode()
        assert post(guarded, "/webhooks/events", big, token)[0] == 413


class TestDaemonIntake:
    def test_a_push_reaches_metrics_without_waiting_for_a_poll(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An endpoint storing delivery incidents: its commit is attributed to the
        delivery domain, a refresh follows within the settle delay, and /metrics then
        counts the request."""
        import asyncio

        import exporter.daemon as daemon_module
        from exporter.config import Config
        from exporter.daemon import Daemon
        from exporter.domains.delivery.records import Incident
        from tests.support.exposition import Exposition

        def parse_incident(request: WebhookRequest) -> Parsed:
            data = json_body(request.body)
            return Parsed([Incident("hook", "a", str(data["id"]), 100.0, 160.0)])

        endpoint = Endpoint(
            "incidents",
            WebhookSettings(auth={"bearer_token": "tok"}),
            parse_incident,
            produces=(Incident,),
            writes=frozenset({"delivery"}),
        )
        monkeypatch.setattr(daemon_module, "webhook_endpoints", lambda config: [endpoint])
        config = Config(
            server={"listen_address": "127.0.0.1", "port": 0},
            state={"path": str(tmp_path / "state.db")},
            services=[{"name": "a", "team": "x"}],
        )
        daemon = Daemon(config, sources=[])

        async def go() -> tuple[int, Exposition, int]:
            server = daemon.start_server()
            before = daemon.store.versions().get("delivery", 0)
            status, _ = await asyncio.to_thread(
                post,
                server,
                "/webhooks/incidents",
                b'{"id": "i-1"}',
                {"Authorization": "Bearer tok"},
            )
            after = daemon.store.versions().get("delivery", 0)
            for _ in range(100):
                metrics = Exposition.parse(daemon.holder.current.text.decode())
                if metrics.value(
                    "platform_exporter_webhook_requests_total",
                    endpoint="incidents",
                    outcome="accepted",
                ):
                    break
                await asyncio.sleep(0.05)
            await daemon.shutdown()
            return status, metrics, after - before

        status, metrics, bumped = asyncio.run(go())
        assert status == 200
        assert bumped == 1
        assert (
            metrics.value(
                "platform_exporter_webhook_requests_total", endpoint="incidents", outcome="accepted"
            )
            == 1
        )


class TestPushPacer:
    """When a pushed refresh may start: after the settle for a lone delivery; under a
    stream, spaced from the last render by ``pace`` times its CPU, at most ``longest``."""

    def test_a_lone_delivery_waits_for_the_settle_only(self) -> None:
        pacer = PushPacer(settle=0.5, pace=4.0, longest=3.0)
        assert pacer.left(100.0) == 0.0
        pacer.rendered(ended=100.0, cpu_seconds=0.2)  # free from 100.8 on
        assert pacer.left(101.0) == 0.0

    def test_a_render_just_ended_spaces_the_next_by_its_cpu(self) -> None:
        pacer = PushPacer(settle=0.5, pace=4.0, longest=3.0)
        pacer.rendered(ended=100.0, cpu_seconds=0.25)  # free from 101.0 on
        assert pacer.left(100.5) == pytest.approx(0.5)
        assert pacer.left(100.0) == pytest.approx(1.0)

    def test_the_spacing_is_bounded(self) -> None:
        pacer = PushPacer(settle=0.5, pace=4.0, longest=3.0)
        pacer.rendered(ended=100.0, cpu_seconds=10.0)  # 40 s of pace, bounded to 3
        assert pacer.left(100.5) == pytest.approx(2.5)
        assert pacer.left(103.0) == 0.0
