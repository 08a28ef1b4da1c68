"""OidcVerifier against a real local issuer: JWKS over HTTP, tokens signed with real keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from _services.oidc import LocalIssuer, new_ec_key, new_rsa_key
from tofuflow.errors import AuthError, ForbiddenError
from tofuflow.server.auth import (
    Issuer,
    OidcVerifier,
    Permission,
    Role,
    bindings_from_config,
    principal_from_claims,
)


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer() as local:
        yield local


@pytest.fixture
def verifier(issuer: LocalIssuer) -> Iterator[OidcVerifier]:
    with OidcVerifier([issuer.trusted()]) as trusted:
        yield trusted


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], claims: dict[str, Any], sign: Any = None) -> str:
    """A JWS built by hand, the way an attacker would; ``sign(signing_input) -> bytes``."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{b64url(signature)}"


def refused(verifier: OidcVerifier, token: str) -> str:
    with pytest.raises(AuthError) as caught:
        verifier.verify(token)
    message = str(caught.value)
    signature = token.rsplit(".", 1)[-1]
    assert token not in message and (len(signature) < 8 or signature not in message)
    return message


# -- valid tokens ------------------------------------------------------------------------


def test_valid_token_returns_its_claims(issuer: LocalIssuer, verifier: OidcVerifier) -> None:
    claims = verifier.verify(issuer.mint(sub="sc://contoso/infra/plan", run_id="42"))
    assert claims["sub"] == "sc://contoso/infra/plan"
    assert claims["iss"] == issuer.issuer and claims["aud"] == issuer.audience
    assert claims["run_id"] == "42"


def test_valid_es256_token_returns_its_claims(issuer: LocalIssuer, verifier: OidcVerifier) -> None:
    assert verifier.verify(issuer.mint(alg="ES256", sub="ec-user"))["sub"] == "ec-user"


def test_token_listing_several_audiences_is_accepted_when_one_is_ours(
    issuer: LocalIssuer, verifier: OidcVerifier
) -> None:
    token = issuer.mint(aud=["api://someone-else", issuer.audience])
    assert verifier.verify(token)["aud"] == ["api://someone-else", issuer.audience]


def test_token_expired_within_the_leeway_is_accepted(
    issuer: LocalIssuer, verifier: OidcVerifier
) -> None:
    now = int(time.time())
    assert verifier.verify(issuer.mint(iat=now - 600, nbf=now - 600, exp=now - 30))


def test_token_without_kid_is_accepted_when_the_issuer_publishes_one_key() -> None:
    with LocalIssuer(ec_key=False) as single, OidcVerifier([single.trusted()]) as verifier:
        assert verifier.verify(single.mint(with_kid=False, sub="no-kid"))["sub"] == "no-kid"


# -- time and audience ---------------------------------------------------------------------


def test_expired_token_is_refused(issuer: LocalIssuer, verifier: OidcVerifier) -> None:
    now = int(time.time())
    message = refused(verifier, issuer.mint(iat=now - 900, nbf=now - 900, exp=now - 300))
    assert message.startswith("token expired at ")
    assert "request a fresh token" in message


def test_not_yet_valid_token_is_refused(issuer: LocalIssuer, verifier: OidcVerifier) -> None:
    now = int(time.time())
    message = refused(verifier, issuer.mint(nbf=now + 600, exp=now + 1200))
    assert message.startswith("token not yet valid (nbf ")


def test_token_issued_in_the_future_is_refused(issuer: LocalIssuer, verifier: OidcVerifier) -> None:
    now = int(time.time())
    message = refused(verifier, issuer.mint(iat=now + 600, nbf=None, exp=now + 1200))
    assert message.startswith("token not yet valid (iat ")


def test_wrong_audience_is_refused_naming_the_expected_one(
    issuer: LocalIssuer, verifier: OidcVerifier
) -> None:
    message = refused(verifier, issuer.mint(aud="api://AzureADTokenExchange"))
    assert message.startswith("audience mismatch: expected api://tofuflow")
    assert "api://AzureADTokenExchange" in message


@pytest.mark.parametrize("claim", ["exp", "sub", "aud"])
def test_token_missing_a_required_claim_is_refused(
    issuer: LocalIssuer, verifier: OidcVerifier, claim: str
) -> None:
    without: dict[str, Any] = {claim: None}
    message = refused(verifier, issuer.mint(**without))
    assert message.startswith(f"token has no '{claim}' claim")


# -- issuers -------------------------------------------------------------------------------


def test_token_from_an_untrusted_issuer_is_refused_before_any_key_fetch(
    issuer: LocalIssuer, verifier: OidcVerifier
) -> None:
    with LocalIssuer() as stranger:
        message = refused(verifier, stranger.mint())
        assert message.startswith(f"issuer '{stranger.issuer}' is not trusted")
        assert stranger.jwks_requests == 0 and issuer.jwks_requests == 0


def test_token_claiming_a_trusted_issuer_but_signed_by_another_is_refused(
    issuer: LocalIssuer, verifier: OidcVerifier
) -> None:
    with LocalIssuer() as impostor:
        message = refused(verifier, impostor.mint(iss=issuer.issuer))
    assert f"in the keys of issuer {issuer.issuer}" in message


def test_each_trusted_issuer_verifies_with_its_own_keys() -> None:
    with (
        LocalIssuer(audience="api://a") as first,
        LocalIssuer(audience="api://b") as second,
        OidcVerifier([first.trusted(), second.trusted()]) as verifier,
    ):
        assert verifier.verify(first.mint(sub="one"))["sub"] == "one"
        assert verifier.verify(second.mint(sub="two"))["sub"] == "two"
        # A token for the first issuer's audience is wrong for the second issuer.
        refused(verifier, second.mint(aud="api://a"))


# -- algorithms and keys -------------------------------------------------------------------


def test_alg_none_is_refused_before_any_key_fetch(
    issuer: LocalIssuer, verifier: OidcVerifier
) -> None:
    token = hand_made({"alg": "none", "typ": "JWT"}, issuer.claims(sub="admin"))
    message = refused(verifier, token)
    assert message.startswith("unsigned tokens (alg none) are never accepted")
    assert issuer.jwks_requests == 0


def test_hs256_forged_with_the_rsa_public_key_as_secret_is_refused(
    issuer: LocalIssuer, verifier: OidcVerifier
) -> None:
    # The classic key-confusion attack: the public key (downloadable) used as HMAC secret.
    pem = issuer.public_pem
    token = hand_made(
        {"alg": "HS256", "typ": "JWT", "kid": issuer.kid},
        issuer.claims(sub="admin"),
        sign=lambda data: hmac.new(pem, data, hashlib.sha256).digest(),
    )
    message = refused(verifier, token)
    assert message.startswith("symmetric algorithm HS256 is never accepted")
    assert issuer.jwks_requests == 0


def test_algorithm_outside_the_issuers_allow_list_is_refused(issuer: LocalIssuer) -> None:
    with OidcVerifier([issuer.trusted(algorithms=("ES256",))]) as verifier:
        message = refused(verifier, issuer.mint(alg="RS256"))
    assert message.startswith("algorithm 'RS256' is not allowed")


def test_key_type_must_fit_the_algorithm(issuer: LocalIssuer, verifier: OidcVerifier) -> None:
    # An EC signature claiming the RSA key's kid: never verified with the wrong key type.
    message = refused(verifier, issuer.mint(alg="ES256", kid=issuer.kid))
    assert "is a 'RSA' key and cannot verify ES256" in message


def test_signature_by_a_foreign_key_under_a_known_kid_is_refused(
    issuer: LocalIssuer, verifier: OidcVerifier
) -> None:
    message = refused(verifier, issuer.mint(key=new_rsa_key()))
    assert message.startswith("signature verification failed")


def test_signature_by_an_unknown_key_is_refused(
    issuer: LocalIssuer, verifier: OidcVerifier
) -> None:
    message = refused(verifier, issuer.mint(alg="ES256", key=new_ec_key(), kid="attacker"))
    assert message.startswith("no key with kid 'attacker' in the keys of issuer")


def test_tampered_claims_are_refused(issuer: LocalIssuer, verifier: OidcVerifier) -> None:
    header, _, signature = issuer.mint(sub="reader").split(".")
    forged = b64url(json.dumps(issuer.claims(sub="admin")).encode())
    message = refused(verifier, f"{header}.{forged}.{signature}")
    assert message.startswith("signature verification failed")


def test_token_without_kid_is_refused_when_the_issuer_publishes_several_keys(
    issuer: LocalIssuer, verifier: OidcVerifier
) -> None:
    message = refused(verifier, issuer.mint(with_kid=False))
    assert message.startswith("token has no 'kid' header")


@pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b.c", "a.b.c.d.e", "x" * 20_000])
def test_malformed_tokens_are_refused(verifier: OidcVerifier, token: str) -> None:
    with pytest.raises(AuthError):
        verifier.verify(token)


# -- JWKS fetching and caching --------------------------------------------------------------


def test_jwks_is_cached_between_verifications(issuer: LocalIssuer, verifier: OidcVerifier) -> None:
    verifier.verify(issuer.mint())
    verifier.verify(issuer.mint(alg="ES256"))
    assert issuer.jwks_requests == 1


def test_concurrent_verifications_on_a_cold_cache_fetch_the_jwks_once(
    issuer: LocalIssuer, verifier: OidcVerifier
) -> None:
    tokens = [issuer.mint(sub=f"job-{n}") for n in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        subjects = list(pool.map(lambda token: verifier.verify(token)["sub"], tokens))
    assert subjects == [f"job-{n}" for n in range(8)]
    assert issuer.jwks_requests == 1


def test_jwks_is_fetched_again_once_its_ttl_ran_out(issuer: LocalIssuer) -> None:
    with OidcVerifier([issuer.trusted()], jwks_ttl=0) as verifier:
        verifier.verify(issuer.mint())
        verifier.verify(issuer.mint())
    assert issuer.jwks_requests == 2


def test_key_rotation_unknown_kid_triggers_one_refetch_and_succeeds(
    issuer: LocalIssuer, verifier: OidcVerifier
) -> None:
    verifier.verify(issuer.mint())
    issuer.rotate_key()
    assert verifier.verify(issuer.mint(sub="after-rotation"))["sub"] == "after-rotation"
    assert issuer.jwks_requests == 2


def test_unknown_kid_refetches_are_rate_limited(
    issuer: LocalIssuer, verifier: OidcVerifier
) -> None:
    verifier.verify(issuer.mint())
    for _ in range(3):
        refused(verifier, issuer.mint(key=new_rsa_key(), kid=f"forged-{uuid.uuid4().hex}"))
    assert issuer.jwks_requests == 2  # the first fetch and one refetch, not one per token


def test_unknown_kid_on_the_first_fetch_does_not_fetch_twice(
    issuer: LocalIssuer, verifier: OidcVerifier
) -> None:
    refused(verifier, issuer.mint(key=new_rsa_key(), kid="forged"))
    assert issuer.jwks_requests == 1


def test_jwks_endpoint_failing_is_an_auth_error_naming_the_issuer(
    issuer: LocalIssuer, verifier: OidcVerifier
) -> None:
    issuer.status = 503
    message = refused(verifier, issuer.mint())
    assert message.startswith(f"the keys of issuer {issuer.issuer} could not be fetched")
    assert "HTTP 503" in message


def test_jwks_endpoint_unreachable_is_an_auth_error_naming_the_issuer(issuer: LocalIssuer) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    down = Issuer(issuer.issuer, issuer.audience, f"http://127.0.0.1:{closed_port}/jwks")
    with OidcVerifier([down]) as verifier:
        message = refused(verifier, issuer.mint())
    assert message.startswith(f"the keys of issuer {issuer.issuer} could not be fetched")


def test_issuer_recovering_from_an_outage_is_used_again(
    issuer: LocalIssuer, verifier: OidcVerifier
) -> None:
    issuer.status = 500
    refused(verifier, issuer.mint())
    issuer.status = 200
    assert verifier.verify(issuer.mint(sub="back"))["sub"] == "back"


# -- Azure DevOps ----------------------------------------------------------------------------


def test_azure_devops_pipeline_is_bound_by_subject_glob_to_planner_on_app_workspaces() -> None:
    org_id = str(uuid.uuid4())
    ado_issuer = f"https://vstoken.dev.azure.com/{org_id}"
    bindings = bindings_from_config(
        [
            {
                "role": "planner",
                "workspaces": "app/*",
                "subject": "sc://contoso/infra/plan-*",
                "issuer": ado_issuer,
            },
            {"role": "applier", "workspaces": "app/*", "subject": "sc://contoso/infra/apply"},
        ]
    )
    with (
        LocalIssuer(issuer=ado_issuer, audience="api://AzureADTokenExchange") as ado,
        OidcVerifier([ado.trusted()]) as verifier,
    ):
        token = ado.mint(
            sub="sc://contoso/infra/plan-app",
            org_id=org_id,
            prj_id=str(uuid.uuid4()),
            def_id="17",
            run_id="4711",
            rpo_ref="refs/heads/main",
            unknown_claim="not for the audit log",
        )
        principal = principal_from_claims(verifier.verify(token), bindings)

    assert principal.kind == "oidc" and principal.subject == "sc://contoso/infra/plan-app"
    assert principal.role_for("app/prod") is Role.PLANNER
    assert principal.role_for("net/core") is None
    assert principal.can(Permission.READ_STATE, "app/prod")
    assert not principal.can(Permission.LOCK, "app/prod")
    assert principal.claims["iss"] == ado_issuer and principal.claims["run_id"] == "4711"
    assert "unknown_claim" not in principal.claims
    with pytest.raises(ForbiddenError) as caught:
        principal.require(Permission.WRITE_STATE, "app/prod")
    assert str(caught.value).startswith(
        "sc://contoso/infra/plan-app may not write_state on app/prod: needs applier, has planner"
    )
