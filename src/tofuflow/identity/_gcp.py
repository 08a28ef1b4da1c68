"""GCP: workload identity federation through an external-account credential file.

    gcp = GcpExchanger("//iam.googleapis.com/projects/123/locations/global/"
                       "workloadIdentityPools/ci/providers/ado",
                       service_account_email="tofu@proj.iam.gserviceaccount.com")
    creds = gcp.exchange(token, workdir=workdir)   # GOOGLE_APPLICATION_CREDENTIALS=<0600 file>

Google's auth libraries read the token file again at every exchange, so the file being
kept fresh (``_refresh``) is what lets a long run keep its access.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tofuflow.errors import ConfigError
from tofuflow.identity._claims import fingerprint, token_claims, token_expiry
from tofuflow.identity._credentials import Credentials
from tofuflow.identity._files import write_private

__all__ = ["GcpExchanger", "checked_service_account", "provider_audience"]

SUBJECT_FILE = "gcp-oidc-token"
CONFIG_FILE = "gcp-external-account.json"
_PROVIDER = re.compile(
    r"^//iam\.googleapis\.com/projects/\d+/locations/global/"
    r"workloadIdentityPools/[a-z0-9-]+/providers/[a-z0-9-]+$"
)
_IMPERSONATE = (
    "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{}:generateAccessToken"
)


def provider_audience(value: str) -> str:
    """The provider's full resource name; ``projects/...`` (as gcloud prints it) is accepted."""
    audience = "//iam.googleapis.com/" + value if value.startswith("projects/") else value
    if not _PROVIDER.match(audience):
        raise ConfigError(
            f"{value!r} is not a workload identity provider; use projects/<number>/locations/"
            "global/workloadIdentityPools/<pool>/providers/<provider>"
        )
    return audience


def checked_service_account(email: str | None) -> str | None:
    if email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.iam\.gserviceaccount\.com", email):
        raise ConfigError(
            f"{email!r} is not a service account email; use name@project.iam.gserviceaccount.com"
        )
    return email


class GcpExchanger:
    """Writes an external-account credential for one workload identity pool provider."""

    cloud = "gcp"

    def __init__(self, audience: str, service_account_email: str | None = None) -> None:
        self.audience = provider_audience(audience)
        self.service_account_email = checked_service_account(service_account_email)

    def __repr__(self) -> str:
        return f"GcpExchanger({self.audience!r}, {self.service_account_email!r})"

    @property
    def default_audience(self) -> str:
        """The token audience a provider accepts by default: its URL with ``https:``."""
        return "https:" + self.audience

    def exchange(self, token: str, *, workdir: Path) -> Credentials:
        token_file = write_private(workdir / SUBJECT_FILE, token)
        config_file = write_private(
            workdir / CONFIG_FILE, json.dumps(self.credential_config(token_file), indent=2)
        )
        return Credentials(
            cloud="gcp",
            env={
                "GOOGLE_APPLICATION_CREDENTIALS": str(config_file),
                "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE": str(config_file),
            },
            secrets=(token,),
            files=(config_file, token_file),
            token_files=(token_file,),
            expires_at=token_expiry(token),
            role=self.service_account_email or self.audience,
            subject_claims=token_claims(token),
            fingerprint=fingerprint(token),
            details={"workload_identity_provider": self.audience},
        )

    def credential_config(self, token_file: Path) -> dict[str, Any]:
        """The external-account document (no secret in it: the token stays in its file)."""
        config: dict[str, Any] = {
            "type": "external_account",
            "audience": self.audience,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": "https://sts.googleapis.com/v1/token",
            "credential_source": {"file": str(token_file), "format": {"type": "text"}},
        }
        if self.service_account_email:
            config["service_account_impersonation_url"] = _IMPERSONATE.format(
                self.service_account_email
            )
        return config
