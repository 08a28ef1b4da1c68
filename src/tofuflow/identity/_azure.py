"""Azure: the azurerm environment contract for OIDC, and a credential for tofuflow's own calls.

    azure = AzureExchanger(client_id, tenant_id, subscription_id,
                           ado_service_connection_id="6f1c...")    # refresh mode
    creds = azure.exchange(token, workdir=workdir)
    blob_credential = azure.client_assertion_credential(source)    # azure-identity

The binary performs the Entra ID exchange itself (provider and azurerm backend). On Azure
DevOps it gets refresh mode: the job's request URL and access token, so it fetches a new
OIDC token whenever it needs one and a long apply or an approval wait cannot outlive its
token. Elsewhere it gets the one token (``ARM_OIDC_TOKEN``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tofuflow.identity._claims import fingerprint, token_claims, token_expiry
from tofuflow.identity._credentials import Credentials
from tofuflow.identity._sources import ADO_AUDIENCE, AzureDevOpsTokenSource, TokenSource

if TYPE_CHECKING:
    from azure.identity import ClientAssertionCredential

__all__ = ["AzureExchanger"]


class AzureExchanger:
    """Hands the binary the azurerm OIDC settings for one service principal / app."""

    cloud = "azure"
    default_audience = ADO_AUDIENCE  # what Entra ID federated credentials expect

    def __init__(
        self,
        client_id: str,
        tenant_id: str,
        subscription_id: str,
        *,
        ado_service_connection_id: str | None = None,
        env: Mapping[str, str] = os.environ,
    ) -> None:
        self.client_id = client_id
        self.tenant_id = tenant_id
        self.subscription_id = subscription_id
        self.ado_service_connection_id = ado_service_connection_id
        self._env = env

    def __repr__(self) -> str:
        return f"AzureExchanger({self.client_id!r}, {self.tenant_id!r}, {self.subscription_id!r})"

    def exchange(self, token: str, *, workdir: Path) -> Credentials:
        """The azurerm env for ``token``; in refresh mode the token only proves, up front,
        that the service connection works (the binary fetches its own)."""
        env = {
            "ARM_CLIENT_ID": self.client_id,
            "ARM_TENANT_ID": self.tenant_id,
            "ARM_SUBSCRIPTION_ID": self.subscription_id,
            "ARM_USE_OIDC": "true",
            # No fallback to the agent's `az login` or managed identity: only this identity.
            "ARM_USE_CLI": "false",
            "ARM_USE_MSI": "false",
        }
        secrets = [token]
        if self.ado_service_connection_id:
            connection = self.ado_service_connection_id
            url, access_token = AzureDevOpsTokenSource(connection, env=self._env).request_details()
            env.update(
                {
                    "ARM_OIDC_REQUEST_TOKEN": access_token,
                    "ARM_OIDC_REQUEST_URL": url,
                    "SYSTEM_OIDCREQUESTURI": url,
                    # Terraform's name, then OpenTofu's (it reads both).
                    "ARM_ADO_PIPELINE_SERVICE_CONNECTION_ID": connection,
                    "ARM_OIDC_AZURE_SERVICE_CONNECTION_ID": connection,
                }
            )
            secrets.append(access_token)
            mode = "ado-refresh"
        else:
            env["ARM_OIDC_TOKEN"] = token
            mode = "one-off-token"
        return Credentials(
            cloud="azure",
            env=env,
            secrets=tuple(secrets),
            expires_at=token_expiry(token),
            role=self.client_id,
            subject_claims=token_claims(token),
            fingerprint=fingerprint(token),
            details={
                "mode": mode,
                "tenant_id": self.tenant_id,
                "subscription_id": self.subscription_id,
                "service_connection_id": self.ado_service_connection_id,
            },
        )

    def client_assertion_credential(
        self, source: TokenSource, *, audience: str | None = None, **kwargs: Any
    ) -> ClientAssertionCredential:
        """An azure-identity credential that asks ``source`` for a fresh token each time it
        needs an Entra ID access token: ``BlobServiceClient(url, credential=...)``.

        ``kwargs`` go to ``ClientAssertionCredential`` (e.g. ``authority``).
        """
        from azure.identity import ClientAssertionCredential

        wanted = audience or self.default_audience
        return ClientAssertionCredential(
            self.tenant_id, self.client_id, lambda: source.token(wanted), **kwargs
        )
