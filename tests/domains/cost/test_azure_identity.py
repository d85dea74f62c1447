"""Azure Cost Management with a workload identity or a managed identity (azure-identity).

* **Workload identity**: AKS mounts the pod's federated service-account token in a
  file; azure-identity presents it as a ``client_assertion`` to the Microsoft
  identity platform. The authority here is the Azure fake served over TLS on
  loopback (azure-identity insists on https), its self-signed certificate trusted
  through ``REQUESTS_CA_BUNDLE``, which azure-core's requests transport honours.
* **Managed identity**: the instance metadata service (IMDS), reached on loopback
  through ``AZURE_POD_IDENTITY_AUTHORITY_HOST`` (the variable azure-identity reads
  for where IMDS is).

Either way the token is then used on the Query API, reused while it is valid, and
every token request is counted as an upstream request of the source.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from exporter.config import Config
from exporter.core.sandbox.app import SandboxServer
from exporter.daemon import Daemon
from exporter.domains.cost.sandbox.azure import AzureCostFake
from tests.support.exposition import Exposition
from tests.support.tls import self_signed

pytest.importorskip("azure.identity")

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC).timestamp()
SCOPE = "/subscriptions/00000000-0000-0000-0000-000000000001"
FEDERATED = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6a3BpIn0.sig"
AZURE_ENV = (
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IMDS_ENDPOINT",
)


def fake_with_costs() -> AzureCostFake:
    # The fake's own clock is the wall clock: azure-identity states expiries by it.
    fake = AzureCostFake(federated_token=FEDERATED)
    fake.costs = {(SCOPE, "2026-11-20"): [("checkout", 3.0, "EUR")]}
    return fake


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in AZURE_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def authority(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> Iterator[tuple[str, AzureCostFake]]:
    """The fake over TLS on loopback, its certificate trusted by azure-identity's transport."""
    fake = fake_with_costs()
    cert, key = self_signed(tmp_path / "tls")
    server = SandboxServer({"/": fake.app()})
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
    clean_env.setenv("REQUESTS_CA_BUNDLE", str(cert))
    server.start()
    try:
        yield server.url.replace("http://", "https://"), fake
    finally:
        server.stop()


def daemon_for(tmp_path: Path, fake: AzureCostFake, **azure: Any) -> Daemon:
    config = Config(
        state={"path": str(tmp_path / "state.db")},
        services=[
            {"name": "checkout", "team": "payments", "cost": {"tags": {"service": "checkout"}}}
        ],
        sources={
            "azure_cost": {
                "scopes": [SCOPE],
                "lookback_days": 3,
                "data_delay_days": 1,
                **azure,
            }
        },
    )
    # The Query API in memory; the token endpoint is wherever azure-identity is sent.
    return Daemon(config, transport=fake.app().transport(), clock=lambda: NOW)


def poll(daemon: Daemon) -> Exposition:
    asyncio.run(daemon.poll(daemon.sources[0]))
    return Exposition.parse(daemon.holder.current.text)


def week(exp: Exposition) -> float | None:
    return exp.value("platform_cost", service="checkout", window="7d", currency="EUR")


def workload_daemon(
    tmp_path: Path, authority: tuple[str, AzureCostFake], federated: str = FEDERATED
) -> Daemon:
    """A daemon whose Azure source presents ``federated`` from its token file."""
    url, fake = authority
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(federated)
    return daemon_for(
        tmp_path,
        fake,
        auth="workload_identity",
        tenant_id="tenant-1",
        client_id="client-1",
        federated_token_file=str(token_file),
        login_url=url,
    )


class TestWorkloadIdentity:
    def test_the_federated_token_is_exchanged_and_the_token_reused(
        self, tmp_path: Path, authority: tuple[str, AzureCostFake]
    ) -> None:
        fake = authority[1]
        daemon = workload_daemon(tmp_path, authority)
        exp = poll(daemon)
        health = daemon.health["azure_cost"]
        assert health.up is True, health.last_error
        assert week(exp) == pytest.approx(3.0)
        assert fake.token_requests == 1
        poll(daemon)
        assert fake.token_requests == 1  # still valid: reused
        # The token request is an upstream request like the queries.
        assert health.requests["200"] == 1 + len(fake.queries)
        asyncio.run(daemon.shutdown())

    def test_ids_and_the_token_file_come_from_the_aks_environment(
        self, tmp_path: Path, authority: tuple[str, AzureCostFake], clean_env: pytest.MonkeyPatch
    ) -> None:
        url, fake = authority
        token_file = tmp_path / "azure-identity-token"
        token_file.write_text(FEDERATED)
        clean_env.setenv("AZURE_TENANT_ID", "tenant-1")
        clean_env.setenv("AZURE_CLIENT_ID", "client-1")
        clean_env.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
        daemon = daemon_for(tmp_path, fake, auth="workload_identity", login_url=url)
        exp = poll(daemon)
        assert daemon.health["azure_cost"].up is True, daemon.health["azure_cost"].last_error
        assert week(exp) == pytest.approx(3.0)
        asyncio.run(daemon.shutdown())

    def test_an_assertion_without_a_federated_record_is_an_auth_error(
        self, tmp_path: Path, authority: tuple[str, AzureCostFake]
    ) -> None:
        fake = authority[1]
        daemon = workload_daemon(tmp_path, authority, "eyJ.some-other-service-account.sig")
        poll(daemon)
        health = daemon.health["azure_cost"]
        assert health.up is False
        assert health.errors["auth"] == 1
        assert "AADSTS70021" in (health.last_error or "")
        assert "some-other-service-account" not in (health.last_error or "")
        assert fake.queries == []
        asyncio.run(daemon.shutdown())


class TestManagedIdentity:
    @pytest.fixture
    def imds(self, clean_env: pytest.MonkeyPatch) -> Iterator[AzureCostFake]:
        fake = fake_with_costs()
        server = SandboxServer({"/": fake.app()}).start()
        clean_env.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", server.url)
        try:
            yield fake
        finally:
            server.stop()

    def test_a_user_assigned_identity_token_from_imds(
        self, tmp_path: Path, imds: AzureCostFake
    ) -> None:
        daemon = daemon_for(tmp_path, imds, auth="managed_identity", client_id="managed-1")
        exp = poll(daemon)
        health = daemon.health["azure_cost"]
        assert health.up is True, health.last_error
        assert week(exp) == pytest.approx(3.0)
        poll(daemon)
        assert imds.token_requests == 1
        assert health.requests["200"] == 1 + len(imds.queries)
        asyncio.run(daemon.shutdown())

    def test_an_unknown_identity_is_an_auth_error(
        self, tmp_path: Path, imds: AzureCostFake
    ) -> None:
        daemon = daemon_for(tmp_path, imds, auth="managed_identity", client_id="not-mine")
        poll(daemon)
        health = daemon.health["azure_cost"]
        assert health.up is False
        assert health.errors["auth"] == 1
        assert imds.queries == []
        asyncio.run(daemon.shutdown())


class TestSettings:
    def test_a_client_secret_with_an_identity_is_refused(self) -> None:
        from pydantic import ValidationError

        from exporter.domains.cost.settings import AzureCostSourceConfig

        with pytest.raises(ValidationError, match="client_secret is not used"):
            AzureCostSourceConfig(scopes=[SCOPE], auth="managed_identity", client_secret="s")
        with pytest.raises(ValidationError, match="needs tenant_id, client_id, client_secret"):
            AzureCostSourceConfig(scopes=[SCOPE])
