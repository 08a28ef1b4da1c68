"""What one stage's identity hands the binary: environment, files, and what audit may see.

creds.environ(os.environ)        # the binary's env: parent's cloud credentials removed
creds.audit_record("plan")       # JSON-safe, no secrets: stage, role, subject, fingerprint
creds.secrets                    # every value the redactor must mask
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

__all__ = ["CLOUDS", "CLOUD_CREDENTIAL_VARS", "Cloud", "Credentials"]

Cloud = Literal["aws", "azure", "gcp", "none"]
CLOUDS: tuple[str, ...] = get_args(Cloud)

# Variables through which a cloud SDK would pick up credentials of the parent process (the
# agent's own keys, profiles, managed identity). They are removed from the binary's
# environment for the stage's cloud, so the stage's role is the only one it can use.
CLOUD_CREDENTIAL_VARS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "aws": (
            "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
            "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE",
            "AWS_SHARED_CREDENTIALS_FILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_ROLE_SESSION_NAME", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        ),
        "azure": (
            "ARM_CLIENT_ID", "ARM_CLIENT_SECRET", "ARM_CLIENT_CERTIFICATE",
            "ARM_CLIENT_CERTIFICATE_PATH", "ARM_CLIENT_CERTIFICATE_PASSWORD", "ARM_TENANT_ID",
            "ARM_SUBSCRIPTION_ID", "ARM_ACCESS_KEY", "ARM_SAS_TOKEN", "ARM_USE_MSI",
            "ARM_MSI_ENDPOINT", "ARM_USE_CLI", "ARM_USE_OIDC", "ARM_OIDC_TOKEN",
            "ARM_OIDC_TOKEN_FILE_PATH", "ARM_OIDC_REQUEST_TOKEN", "ARM_OIDC_REQUEST_URL",
            "ARM_USE_AKS_WORKLOAD_IDENTITY", "ARM_ADO_PIPELINE_SERVICE_CONNECTION_ID",
            "ARM_OIDC_AZURE_SERVICE_CONNECTION_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET",
            "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_CERTIFICATE_PATH",
            "AZURE_USERNAME", "AZURE_PASSWORD",
        ),
        "gcp": (
            "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CREDENTIALS", "GOOGLE_CLOUD_KEYFILE_JSON",
            "GCLOUD_KEYFILE_JSON", "GOOGLE_OAUTH_ACCESS_TOKEN",
            "GOOGLE_IMPERSONATE_SERVICE_ACCOUNT",
            "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE", "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE",
        ),
        "none": (),
    }
)  # fmt: skip
# The pipeline's own token-request credentials: the binary never needs them (Azure refresh
# mode gets the job token as ARM_OIDC_REQUEST_TOKEN), so a configured stage drops them.
_PIPELINE_TOKEN_VARS = ("SYSTEM_ACCESSTOKEN", "ACTIONS_ID_TOKEN_REQUEST_TOKEN")


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, repr=False)
class Credentials:
    """Short-lived credentials of one stage, as the binary receives them.

        creds = Credentials(cloud="none")                  # no cloud identity configured
        subprocess.run(argv, env=creds.environ(os.environ))

    ``env`` is what the binary gets; ``static_env`` holds session keys for tofuflow's own
    SDK calls (AWS only; in the binary's env only with ``mode = "static"``);
    ``secrets`` are the values to mask (tokens, keys);
    ``files`` live in the run's private directory; ``token_files`` are the files holding
    the OIDC token, rewritten with fresh tokens while the run lasts; ``fingerprint`` is
    ``sha256(identifying secret)[:16]`` (the AWS access key id, else the token), so the
    audit log proves freshness without holding the credential; ``source`` is the token
    source's kind (``static-dev`` marks a development token); ``details`` holds
    cloud-specific, non-secret facts for the audit log (session name, assumed principal).
    """

    cloud: Cloud = "none"
    env: Mapping[str, str] = field(default_factory=dict)
    static_env: Mapping[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    files: tuple[Path, ...] = ()
    expires_at: datetime | None = None
    role: str = ""
    subject_claims: Mapping[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    source: str = ""
    token_files: tuple[Path, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)
    issued_at: datetime = field(default_factory=_now)
    # What lets the control plane check the issuance itself (AWS: a GetCallerIdentity
    # request signed with the new keys, which it sends to STS). Holds a session token:
    # sent to the control plane only, never in the audit record, a log or a repr.
    proof: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cloud not in CLOUDS:
            raise ValueError(f"cloud {self.cloud!r} is not one of {', '.join(CLOUDS)}")
        # Read-only copies: a caller adding to env must build its own dict (see environ()).
        for name in ("env", "static_env", "subject_claims", "details", "proof"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    def environ(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` without the parent's credentials for this cloud, plus ``env``.

        With no cloud configured the base passes through unchanged: a developer's own
        login is then what the binary uses, by choice.
        """
        drop = set(CLOUD_CREDENTIAL_VARS[self.cloud])
        if self.cloud != "none":
            drop.update(_PIPELINE_TOKEN_VARS)
        merged = {name: value for name, value in base.items() if name not in drop}
        merged.update(self.env)
        return merged

    def audit_record(self, stage: str) -> dict[str, Any]:
        """One audit event for this issuance, JSON-safe and free of secrets."""
        # Keys match the control plane's POST /v1/runs/{id}/credentials body.
        return {
            "stage": stage,
            "cloud": self.cloud,
            "role": self.role,
            "source": self.source,
            "subject_claims": dict(self.subject_claims),
            "issued_at": self.issued_at.isoformat(timespec="seconds"),
            "expires_at": self.expires_at.isoformat(timespec="seconds")
            if self.expires_at
            else None,
            "fingerprint": self.fingerprint,
            "env_names": sorted(self.env),
            "details": dict(self.details),
        }

    def __repr__(self) -> str:
        # Names only: reprs end up in tracebacks, logs and pytest output.
        expires = self.expires_at.isoformat(timespec="seconds") if self.expires_at else None
        return (
            f"Credentials(cloud={self.cloud!r}, role={self.role!r}, source={self.source!r}, "
            f"fingerprint={self.fingerprint!r}, expires_at={expires!r}, "
            f"env=<{', '.join(sorted(self.env))}>, secrets=<{len(self.secrets)} hidden>)"
        )

    __str__ = __repr__
