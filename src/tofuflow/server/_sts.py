"""Checking a runner's AWS credential issuance with STS itself, not on the runner's word.

    marks = verify_aws_issuance(proof, role_arn, session, fingerprint, sts_endpoint="")
    # {"verification": "verified", "verified_by": "sts:GetCallerIdentity", "verified_arn": …}

The runner relays a GetCallerIdentity request signed (SigV4) with the session's keys. The
server sends it, unchanged, to STS — only to AWS's own STS hosts or the one configured
endpoint, never wherever the runner says — and STS answers with the ARN of the role session
those keys belong to. That ARN must be the reported role, with the session name tofuflow
gives this run and stage, and the signing key id must have the reported fingerprint.
Anything else is refused (400), so a runner cannot record a role it was not given. A proof
for another STS endpoint is not sent anywhere: the issuance is recorded as reported.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import httpx

from tofuflow.errors import BadRequestError

__all__ = ["verify_aws_issuance"]

_AWS_STS_HOST = re.compile(r"https://sts(-fips)?(\.[a-z0-9-]+)?\.amazonaws\.com(\.cn)?/")
_ROLE_ARN = re.compile(
    r"arn:(?P<partition>[a-z-]+):iam::(?P<account>\d{12}):role/(?:.*/)?(?P<name>[^/]+)"
)
_CREDENTIAL = re.compile(r"Credential=(?P<key>[A-Z0-9]{16,128})/")
# Only what SigV4 signed travels on: the runner cannot add headers of its choosing.
_FORWARDED = ("authorization", "x-amz-date", "x-amz-security-token", "content-type")


def verify_aws_issuance(
    proof: Mapping[str, Any],
    role_arn: str,
    session: str,
    reported_fingerprint: str,
    *,
    sts_endpoint: str = "",
) -> dict[str, Any]:
    """Send the relayed request to STS and compare its answer with the report."""
    url, body = str(proof.get("url", "")), str(proof.get("body", ""))
    headers = {str(k).lower(): str(v) for k, v in dict(proof.get("headers") or {}).items()}
    allowed = _AWS_STS_HOST.fullmatch(url) or (sts_endpoint and url == _slash(sts_endpoint))
    if not allowed:  # never sent: the runner does not choose whom the server calls
        return {
            "verification": "reported",
            "verification_note": f"proof for STS at {url[:200]!r} not checked: neither AWS's "
            "STS nor the server's [audit] sts_endpoint",
        }
    if body != "Action=GetCallerIdentity&Version=2011-06-15":
        raise BadRequestError("the credential proof is not a GetCallerIdentity request")
    key = _CREDENTIAL.search(headers.get("authorization", ""))
    # The runner's fingerprint of an access key id (tofuflow.identity): a sha256 prefix.
    if key is None or hashlib.sha256(key["key"].encode()).hexdigest()[:16] != reported_fingerprint:
        raise BadRequestError(
            "the credential proof is signed with other keys than the reported credentials "
            "(fingerprint mismatch)"
        )
    arn = _ask_sts(url, body, {k: v for k, v in headers.items() if k in _FORWARDED})
    role = _ROLE_ARN.fullmatch(role_arn)
    expected = (
        f"arn:{role['partition']}:sts::{role['account']}:assumed-role/{role['name']}/{session}"
        if role
        else None
    )
    if arn != expected:
        raise BadRequestError(
            f"STS says these credentials are {arn}, not a session {session!r} of the reported "
            f"role {role_arn}: the issuance is refused"
        )
    return {"verification": "verified", "verified_by": "sts:GetCallerIdentity", "verified_arn": arn}


def _ask_sts(url: str, body: str, headers: Mapping[str, str]) -> str:
    try:
        response = httpx.post(url, content=body, headers=dict(headers), timeout=10)
    except httpx.HTTPError as exc:
        raise BadRequestError(
            f"cannot reach STS at {url} to verify the credentials: {exc}"
        ) from exc
    if response.status_code != 200:
        code = re.search(r"<Code>([^<]{1,100})</Code>", response.text)
        raise BadRequestError(
            f"STS refused the credential proof ({response.status_code} "
            f"{code.group(1) if code else 'error'}): the credentials are not valid"
        )
    # The answer is a few lines of XML with one <Arn>: no XML parser for a remote document.
    arn = re.search(r"<Arn>(arn:[^<]{1,2048})</Arn>", response.text)
    if arn is None:
        raise BadRequestError(f"STS at {url} did not answer GetCallerIdentity")
    return arn.group(1).strip()


def _slash(url: str) -> str:
    return url.rstrip("/") + "/"
