"""Azure tokens through azure-identity (the ``azure`` extra): workload and managed identity.

* **Workload identity** (AKS): the pod's service-account token, mounted as a
  federated token file, is exchanged for an access token with the client
  credentials grant (``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer``,
  ``POST {login_url}/{tenant}/oauth2/v2.0/token``). ``tenant_id``, ``client_id``
  and ``federated_token_file`` default to the ``AZURE_TENANT_ID``,
  ``AZURE_CLIENT_ID`` and ``AZURE_FEDERATED_TOKEN_FILE`` that the AKS webhook sets
  (https://learn.microsoft.com/azure/aks/workload-identity-overview).
* **Managed identity**: the platform's token endpoint (IMDS on a VM or AKS node,
  ``IDENTITY_ENDPOINT`` in App Service and Functions); ``client_id`` picks a
  user-assigned identity.

azure-identity blocks, so tokens are got in a worker thread. Its credential is
built once and caches its token; every answer of the token endpoint is handed to
``on_answer`` (azure-core's ``raw_response_hook``), so it counts as an upstream
request of the source like every other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from exporter.core.clock import system_clock
from exporter.core.errors import AuthError, needs_extra
from exporter.core.redact import excerpt
from exporter.domains.cost.settings import AzureCostSourceConfig


class IdentityTokens:
    """Access tokens of one Azure source from its workload or managed identity."""

    def __init__(self, settings: AzureCostSourceConfig) -> None:
        self.settings = settings
        self.on_answer: Callable[[int], None] | None = None
        self._credential: Any = None
        self._lock = threading.Lock()

    def get(self, scope: str) -> tuple[str, float]:
        """(access token, seconds it stays valid) for ``scope``; :class:`AuthError` if refused."""
        with needs_extra("azure", f"Azure {self.settings.auth.replace('_', ' ')}"):
            from azure.core.exceptions import AzureError
        credential = self._get_credential()
        try:
            token = credential.get_token(scope)
        except AzureError as exc:
            raise AuthError(
                f"Azure {self.settings.auth.replace('_', ' ')} token refused: {excerpt(str(exc))}"
            ) from None
        # azure-identity states the expiry as wall-clock epoch seconds: what remains of it
        # is what the source's own clock may count down.
        return str(token.token), float(token.expires_on) - system_clock()

    def _get_credential(self) -> Any:
        with self._lock:
            if self._credential is None:
                self._credential = self._build()
            return self._credential

    def _build(self) -> Any:
        with needs_extra("azure", f"Azure {self.settings.auth.replace('_', ' ')}"):
            from azure.identity import ManagedIdentityCredential, WorkloadIdentityCredential
        az = self.settings
        hook: dict[str, Any] = {"raw_response_hook": self._answered}
        if az.auth == "managed_identity":
            return ManagedIdentityCredential(client_id=az.client_id, **hook)
        try:
            return WorkloadIdentityCredential(
                tenant_id=az.tenant_id,
                client_id=az.client_id,
                token_file_path=az.federated_token_file,
                authority=az.login_url,
                # The authority is the config's: not to be validated against Microsoft's list.
                disable_instance_discovery=True,
                **hook,
            )
        except ValueError as exc:  # tenant, client or token file neither configured nor in env
            raise AuthError(f"Azure workload identity: {exc}") from None

    def _answered(self, response: Any) -> None:
        if self.on_answer is not None:
            self.on_answer(int(response.http_response.status_code))
