"""``POST /webhooks/alertmanager`` on the daemon's own server: notifications in the webhook
format Alertmanager documents (https://prometheus.io/docs/alerting/latest/configuration/
#webhook_config: ``version`` "4", ``groupKey``, ``status``, ``commonLabels``,
``alerts[]`` with ``startsAt``/``endsAt``), its ``http_config`` auth, and the refusals."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exporter.config import Config
from exporter.core.clock import FixedClock
from exporter.daemon import Daemon
from exporter.domains.incident.store import group_key_hash
from tests.domains.delivery.helpers import value
from tests.domains.incident.helpers import NOW, H, dora_incidents, stored

GROUP = '{}/{severity=~"critical|page"}:{alertname="AccountsDown", service="accounts"}'
TOKEN = "am-webhook-token"


def notification(
    status: str, starts: str, ends: str = "0001-01-01T00:00:00Z", **labels: str
) -> dict[str, Any]:
    common = {"alertname": "AccountsDown", "service": "accounts", "severity": "critical", **labels}
    return {
        "version": "4",
        "groupKey": GROUP,
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "exporter",
        "groupLabels": {"alertname": "AccountsDown", "service": "accounts"},
        "commonLabels": common,
        "commonAnnotations": {"summary": "accounts is down"},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": [
            {
                "status": status,
                "labels": {**common, "instance": "accounts-1"},
                "annotations": {"summary": "accounts is down"},
                "startsAt": starts,
                "endsAt": ends,
                "generatorURL": "http://prometheus.example:9090/graph?g0.expr=up",
                "fingerprint": "6e9c6a3d1e0b2f11",
            }
        ],
    }


def daemon_config(tmp_path: Path, **receiver: Any) -> Config:
    return Config(
        server={"listen_address": "127.0.0.1", "port": 0},
        state={"path": str(tmp_path / "state.db")},
        services=[
            {
                "name": "accounts",
                "team": "identity",
                "ci": [{"jenkins": "identity/accounts-deploy"}],
            }
        ],
        sources={"probe": {"enabled": False}},
        delivery={"incident_link_window": "2h"},
        incidents={
            "alertmanager": {
                "auth": {"bearer_token": TOKEN},
                "matchers": ['severity=~"critical|page"'],
                **receiver,
            }
        },
    )


Post = Callable[..., tuple[int, bytes]]


def serve(tmp_path: Path, steps: Callable[[Post, Daemon], None], **receiver: Any) -> Daemon:
    """Run the daemon's server; ``steps(post, daemon)`` on a thread beside it."""
    daemon = Daemon(daemon_config(tmp_path, **receiver), sources=[], clock=FixedClock(NOW))

    async def main() -> None:
        server = daemon.start_server()

        def post(
            body: Any, headers: dict[str, str] | None = None, raw: bytes | None = None
        ) -> tuple[int, bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            try:
                data = raw if raw is not None else json.dumps(body).encode()
                auth = {"Authorization": f"Bearer {TOKEN}"} if headers is None else headers
                conn.request(
                    "POST",
                    "/webhooks/alertmanager",
                    data,
                    {"Content-Type": "application/json", **auth},
                )
                resp = conn.getresponse()
                return resp.status, resp.read()
            finally:
                conn.close()

        try:
            await asyncio.to_thread(steps, post, daemon)
        finally:
            await daemon.shutdown()

    asyncio.run(main())
    return daemon


def iso(t: float) -> str:
    from exporter.core.clock import utc_datetime

    return utc_datetime(t).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


class TestReceiver:
    def test_firing_then_resolved_is_one_incident_restored_in_the_hand_computed_time(
        self, tmp_path: Path
    ) -> None:
        """Fired 2h ago, re-sent (repeat interval), resolved 45 min ago: one incident,
        opened at startsAt, resolved at endsAt, 1h15 to restore."""
        found: dict[str, Any] = {}

        def steps(post: Post, daemon: Daemon) -> None:
            firing = notification("firing", iso(NOW - 2 * H))
            assert post(firing)[0] == 200
            assert post(firing)[0] == 200
            found["open"] = dora_incidents(daemon.store)
            resolved = notification("resolved", iso(NOW - 2 * H), iso(NOW - 0.75 * H))
            assert post(resolved)[0] == 200
            assert post(resolved)[0] == 200  # a redelivery changes nothing
            found["rows"] = stored(daemon.store)
            found["dora"] = dora_incidents(daemon.store)

        serve(tmp_path, steps)
        episode = f"alertmanager/{group_key_hash(GROUP)[:16]}@{NOW - 2 * H:.3f}"
        assert found["open"] == {f"oncall/{episode}": ("accounts", NOW - 2 * H, None)}
        assert found["rows"] == {
            episode: ("accounts", NOW - 2 * H, None, NOW - 0.75 * H, "critical", 1)
        }
        assert found["dora"] == {f"oncall/{episode}": ("accounts", NOW - 2 * H, NOW - 0.75 * H)}

    def test_metrics_show_the_incident_after_the_push(self, tmp_path: Path) -> None:
        def steps(post: Post, daemon: Daemon) -> None:
            assert post(notification("resolved", iso(NOW - 2 * H), iso(NOW - 0.75 * H)))[0] == 200
            import time

            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                text = daemon.holder.current.text
                if value(
                    text,
                    "platform_time_to_restore_samples",
                    service="accounts",
                    team="identity",
                    window="30d",
                ):
                    break
                time.sleep(0.05)
            found["text"] = daemon.holder.current.text

        found: dict[str, Any] = {}
        serve(tmp_path, steps)
        text = found["text"]
        labels = {"service": "accounts", "team": "identity", "window": "30d"}
        assert (
            value(text, "platform_time_to_restore_quantile_seconds", quantile="0.5", **labels)
            == 0.75 * H + 0.5 * H
        )
        assert (
            value(
                text,
                "platform_exporter_webhook_requests_total",
                endpoint="alertmanager",
                outcome="accepted",
            )
            == 1
        )

    def test_a_lost_firing_notification_still_records_the_episode(self, tmp_path: Path) -> None:
        found: dict[str, Any] = {}

        def steps(post: Post, daemon: Daemon) -> None:
            assert post(notification("resolved", iso(NOW - H), iso(NOW - 0.5 * H)))[0] == 200
            found["dora"] = list(dora_incidents(daemon.store).values())

        serve(tmp_path, steps)
        assert found["dora"] == [("accounts", NOW - H, NOW - 0.5 * H)]

    def test_a_group_the_matchers_do_not_select_is_acknowledged_and_ignored(
        self, tmp_path: Path
    ) -> None:
        found: dict[str, Any] = {}

        def steps(post: Post, daemon: Daemon) -> None:
            found["status"] = post(notification("firing", iso(NOW - H), severity="info"))[0]
            found["unknown"] = post(notification("firing", iso(NOW - H), service="nobody"))[0]
            found["rows"] = stored(daemon.store)

        serve(tmp_path, steps)
        assert (found["status"], found["unknown"], found["rows"]) == (200, 200, {})


class TestRefusals:
    def test_bad_auth_malformed_and_oversized(self, tmp_path: Path) -> None:
        found: dict[str, Any] = {}
        good = notification("firing", iso(NOW - H))

        def steps(post: Post, daemon: Daemon) -> None:
            found["no auth"] = post(good, {})[0]
            found["wrong token"] = post(good, {"Authorization": "Bearer nope"})[0]
            found["not json"] = post(None, raw=b'{"version": "4", ')[0]
            found["wrong version"] = post({**good, "version": "3"})[0]
            found["no alerts"] = post({**good, "alerts": []})[0]
            found["bad time"] = post(
                {**good, "alerts": [{**good["alerts"][0], "startsAt": "yesterday"}]}
            )[0]
            found["oversized"] = post(None, raw=json.dumps({**good, "pad": "x" * 5000}).encode())[0]
            found["rows"] = stored(daemon.store)
            found["counts"] = daemon.intake.counts()["alertmanager"]

        serve(tmp_path, steps, max_body_bytes=4096)
        assert found["no auth"] == found["wrong token"] == 401
        assert (
            found["not json"]
            == found["wrong version"]
            == found["no alerts"]
            == found["bad time"]
            == 400
        )
        assert found["oversized"] == 413
        assert found["rows"] == {}
        assert found["counts"] == {"unauthorized": 2, "malformed": 4, "too_large": 1}

    @pytest.mark.parametrize(
        ("auth", "headers", "status"),
        [
            (
                {"basic_auth": {"username": "am", "password": "pw"}},
                {"Authorization": "Basic " + base64.b64encode(b"am:pw").decode()},
                200,
            ),
            (
                {"basic_auth": {"username": "am", "password": "pw"}},
                {"Authorization": "Basic " + base64.b64encode(b"am:px").decode()},
                401,
            ),
        ],
    )
    def test_basic_auth_as_http_config_sends_it(
        self, tmp_path: Path, auth: dict[str, Any], headers: dict[str, str], status: int
    ) -> None:
        found: dict[str, Any] = {}

        def steps(post: Post, daemon: Daemon) -> None:
            found["status"] = post(notification("firing", iso(NOW - H)), headers)[0]

        serve(tmp_path, steps, auth=auth)
        assert found["status"] == status
