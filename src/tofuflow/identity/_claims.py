"""Reading an OIDC token's claims without verifying it, for audit and early expiry checks.

    claims = token_claims(token)     # {"iss": ..., "sub": "sc://org/proj/conn", "aud": ...}
    check_not_expired(token)         # AuthError when exp has passed

The signature is checked by whoever relies on the token (STS, Entra ID, Google STS, the
control plane); the runner only reads it, so it needs no JWT library or JWKS access.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from datetime import UTC, datetime
from typing import Any

from tofuflow.errors import AuthError

__all__ = ["SAFE_CLAIMS", "check_not_expired", "fingerprint", "token_claims", "token_expiry"]

# Claims that identify a workload and are safe to log: standard ones, Azure DevOps pipeline
# claims (org_id, prj_id, def_id, rpo_*, run_id), GitHub Actions claims, the Kubernetes
# service-account claim, and AWS session tags. Anything else is dropped, in case an issuer
# puts something private in its token.
SAFE_CLAIMS = frozenset(
    {
        "iss", "sub", "aud", "exp", "iat", "nbf", "jti",
        "org_id", "prj_id", "def_id", "rpo_id", "rpo_uri", "rpo_ver", "rpo_ref", "run_id",
        "repository", "repository_id", "repository_owner", "ref", "ref_type", "sha",
        "workflow", "workflow_ref", "job_workflow_ref", "run_attempt", "run_number", "actor",
        "environment", "event_name", "runner_environment",
        "kubernetes.io", "https://aws.amazon.com/tags",
    }
)  # fmt: skip
_MAX_TOKEN_CHARS = 16 * 1024  # ID tokens are ~1-2 KiB; refuse to parse anything huge


def token_claims(token: str) -> dict[str, Any]:
    """The safe claims of a JWT, unverified: ``token_claims(t)["sub"]``.

    Raises ``AuthError`` when ``token`` is not a JWT (the message never includes it).
    """
    parts = token.strip().split(".")
    if len(token) > _MAX_TOKEN_CHARS or len(parts) != 3:
        raise AuthError(
            "the OIDC token is not a JWT (expected three dot-separated parts); check the "
            "token source returns an ID token, not an access token or an error page"
        )
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise AuthError(
            "the OIDC token's claims cannot be decoded; check the token source returns an "
            "ID token (a JWT)"
        ) from exc
    if not isinstance(payload, dict):
        raise AuthError("the OIDC token's claims are not a JSON object; it is not an ID token")
    return {name: value for name, value in payload.items() if name in SAFE_CLAIMS}


def token_expiry(token: str) -> datetime | None:
    """When the token expires (UTC), or None when it has no ``exp``."""
    exp = token_claims(token).get("exp")
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        return datetime.fromtimestamp(exp, UTC)
    return None


def check_not_expired(token: str, *, leeway: float = 0.0, now: float | None = None) -> None:
    """Raise ``AuthError`` if the token expired (or expires within ``leeway`` seconds)."""
    expiry = token_expiry(token)
    current = time.time() if now is None else now
    if expiry is not None and expiry.timestamp() <= current + leeway:
        raise AuthError(
            f"the OIDC token expired at {expiry.isoformat(timespec='seconds')}; request a "
            "fresh one (tokens from Azure DevOps and GitHub live only minutes: fetch them "
            "in the step that runs tofuflow, not in an earlier one)"
        )


def fingerprint(value: str) -> str:
    """sha256 hex prefix of a credential: proves which one was used without holding it."""
    return hashlib.sha256(value.encode()).hexdigest()[:16]
