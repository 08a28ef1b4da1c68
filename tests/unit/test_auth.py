"""tofuflow.server.auth: roles and permissions, API tokens, issuer config, role bindings."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

import tofuflow.server.auth as auth
from tofuflow.errors import AuthError, ConfigError, ForbiddenError
from tofuflow.server.auth import (
    Binding,
    Grant,
    Issuer,
    OidcVerifier,
    Permission,
    Principal,
    Role,
    TokenRecord,
    authenticate_token,
    bindings_from_config,
    grants_for,
    hash_secret,
    issuers_from_config,
    new_token,
    parse_ttl,
    principal_from_claims,
    split_token,
    verify_secret,
)

P = Permission
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
ADO_ISS = "https://vstoken.dev.azure.com/00000000-0000-0000-0000-000000000001"


def test_auth_public_api_is_pinned() -> None:
    assert set(auth.__all__) == {
        "ALLOWED_ALGORITHMS", "Authenticator", "Binding", "DEFAULT_ALGORITHMS", "Grant", "Issuer",
        "MAX_TTL",
        "OidcVerifier", "Permission", "Principal", "PrincipalKind", "Role", "SAFE_CLAIMS",
        "SESSION_PREFIX", "TOKEN_PREFIX", "TokenRecord", "TokenRow", "authenticate_token",
        "bindings_from_config", "grants_for", "hash_secret", "issuers_from_config", "new_token",
        "parse_ttl", "principal_from_claims", "safe_claims", "session_principal", "split_token",
        "token_id_of", "verify_secret",
        "workspace_matches",
    }  # fmt: skip
    for name in auth.__all__:
        assert getattr(auth, name) is not None


# -- roles and permissions -----------------------------------------------------------------


def test_roles_are_ordered_by_power_not_alphabetically() -> None:
    assert Role.READER < Role.PLANNER < Role.APPLIER < Role.APPROVER < Role.ADMIN
    assert max([Role.ADMIN, Role.READER]) is Role.ADMIN
    assert sorted([Role.ADMIN, Role.APPROVER, Role.APPLIER, Role.READER, Role.PLANNER]) == list(
        Role
    )


def test_role_parse_accepts_any_case() -> None:
    assert Role.parse(" Applier ") is Role.APPLIER


@pytest.mark.parametrize("value", ["owner", "", "auditor"])
def test_role_parse_refuses_unknown_roles_listing_the_valid_ones(value: str) -> None:
    with pytest.raises(ConfigError, match="use one of reader, planner, applier, approver, admin"):
        Role.parse(value)


_READS = {P.READ_STATE, P.LIST_VERSIONS, P.READ_RUNS}
_APPLIES = _READS | {P.CREATE_RUN, P.LOCK, P.WRITE_STATE, P.UNLOCK, P.APPLY_RUN}
EXPECTED_PERMISSIONS = {
    Role.READER: _READS,
    Role.PLANNER: _READS | {P.CREATE_RUN},
    Role.APPLIER: _APPLIES,
    Role.APPROVER: _APPLIES | {P.APPROVE_RUN},
    Role.ADMIN: set(Permission),
}


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("permission", list(Permission))
def test_permission_matrix(role: Role, permission: Permission) -> None:
    principal = Principal("someone", "oidc", (Grant(role, "*"),))
    assert principal.can(permission, "app/prod") == (permission in EXPECTED_PERMISSIONS[role])


def test_planner_cannot_lock_because_plans_run_without_a_lock() -> None:
    assert P.LOCK not in Role.PLANNER.permissions
    assert P.LOCK.minimum_role is Role.APPLIER


def test_each_role_includes_the_permissions_of_the_roles_below() -> None:
    roles = list(Role)
    for lower, higher in itertools.pairwise(roles):
        assert lower.permissions <= higher.permissions


def test_grant_star_matches_across_slashes() -> None:
    grant = Grant(Role.READER, "app/*")
    assert grant.matches("app/prod") and grant.matches("app/eu/prod")
    assert not grant.matches("application/prod") and not grant.matches("App/prod")


def test_grant_needs_a_workspace_pattern() -> None:
    with pytest.raises(ConfigError, match="use '\\*' for every workspace"):
        Grant(Role.READER, " ")


def test_role_for_is_the_highest_matching_grant() -> None:
    principal = Principal(
        "sc://contoso/infra/ops",
        "oidc",
        (Grant(Role.READER, "*"), Grant(Role.APPLIER, "app/*"), Grant(Role.PLANNER, "app/prod")),
    )
    assert principal.role_for("app/prod") is Role.APPLIER
    assert principal.role_for("net/core") is Role.READER


def test_role_for_is_none_without_a_matching_grant() -> None:
    principal = Principal("x", "oidc", (Grant(Role.ADMIN, "sandbox/*"),))
    assert principal.role_for("app/prod") is None
    assert not principal.can(P.READ_STATE, "app/prod")


def test_require_names_subject_permission_workspace_and_the_roles() -> None:
    principal = Principal("token:tfw_ab12", "token", (Grant(Role.PLANNER, "app/*"),))
    principal.require(P.READ_STATE, "app/prod")
    with pytest.raises(ForbiddenError) as caught:
        principal.require(P.WRITE_STATE, "app/prod")
    assert str(caught.value).startswith(
        "token:tfw_ab12 may not write_state on app/prod: needs applier, has planner"
    )
    assert str(caught.value).endswith("Ask an admin for an applier grant or binding on app/prod.")
    with pytest.raises(ForbiddenError, match="Ask an admin for a planner grant"):
        Principal("token:tfw_cd34", "token", (Grant(Role.READER, "*"),)).require(
            P.CREATE_RUN, "app/prod"
        )


def test_require_says_when_there_is_no_role_at_all() -> None:
    principal = Principal("sc://contoso/infra/x", "oidc")
    with pytest.raises(ForbiddenError, match="needs reader, has no role there"):
        principal.require(P.READ_STATE, "app/prod")


def test_principal_claims_are_a_read_only_copy() -> None:
    claims = {"sub": "x"}
    principal = Principal("x", "oidc", claims=claims)
    claims["sub"] = "changed"
    assert principal.claims["sub"] == "x"
    with pytest.raises(TypeError):
        principal.claims["sub"] = "y"  # type: ignore[index]


def test_principal_kind_is_token_oidc_or_anonymous() -> None:
    assert Principal("anonymous", "anonymous").role_for("app/prod") is None
    with pytest.raises(ConfigError):
        Principal("x", "basic")  # type: ignore[arg-type]


# -- API tokens ----------------------------------------------------------------------------


def test_new_token_has_the_documented_format() -> None:
    token, token_id, secret_hash = new_token()
    assert re.fullmatch(r"tfw_[A-Za-z0-9]{12}_[A-Za-z0-9_-]{43}", token)
    assert token.startswith(f"tfw_{token_id}_")
    assert secret_hash == hash_secret(token.split("_", 2)[2]) and secret_hash not in token


def test_new_tokens_are_unique() -> None:
    tokens = {new_token()[0] for _ in range(200)}
    assert len(tokens) == 200


def test_split_token_splits_by_position_even_when_the_secret_has_underscores() -> None:
    secret = "_" * 10 + "-" * 10 + "a" * 23
    assert split_token(f"tfw_abcDEF123456_{secret}") == ("abcDEF123456", secret)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "tfw_",
        "tfw_abcDEF123456",
        "tfw_abcDEF123456_short",
        "tfx_abcDEF123456_" + "a" * 43,
        "tfw_abc_EF123456_" + "a" * 43,
        "tfw_abcDEF123456_" + "a" * 44,
        "Bearer tfw_abcDEF123456_" + "a" * 43,
    ],
)
def test_split_token_refuses_malformed_tokens_without_echoing_them(token: str) -> None:
    with pytest.raises(AuthError, match="malformed API token") as caught:
        split_token(token)
    assert len(token) <= len("tfw_") or token not in str(caught.value)


def test_hash_secret_is_sha256_hex() -> None:
    assert hash_secret("s3cret") == hashlib.sha256(b"s3cret").hexdigest()


def test_verify_secret_accepts_only_the_right_secret() -> None:
    stored = hash_secret("right")
    assert verify_secret("right", stored)
    assert not verify_secret("wrong", stored)
    assert not verify_secret("right", stored.upper())
    assert not verify_secret("right", "")


def test_verify_secret_survives_a_garbage_stored_hash() -> None:
    assert not verify_secret("right", "nicht-hex-\u00e4")


def test_verify_secret_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # Timing cannot be measured reliably in a unit test; pin the constant-time primitive.
    compared: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert verify_secret("right", hash_secret("right"))
    assert compared == [(hash_secret("right").encode(), hash_secret("right").encode())]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3600s", timedelta(seconds=3600)),
        ("90m", timedelta(minutes=90)),
        ("12h", timedelta(hours=12)),
        ("30d", timedelta(days=30)),
        (" 365d ", timedelta(days=365)),
    ],
)
def test_parse_ttl(text: str, expected: timedelta) -> None:
    assert parse_ttl(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "use a number and a unit"),
        ("30", "use a number and a unit"),
        ("1w", "use a number and a unit"),
        ("-5d", "use a number and a unit"),
        ("1.5h", "use a number and a unit"),
        ("never", "use a number and a unit"),
        ("0d", "tokens always expire"),
        ("366d", "maximum of 365d"),
        ("9000h", "maximum of 365d"),
    ],
)
def test_parse_ttl_refuses(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        parse_ttl(text)


def issue(ttl: str = "30d", **kwargs: Any) -> tuple[str, TokenRecord]:
    return TokenRecord.issue(
        Role.PLANNER, "app/*", ttl=parse_ttl(ttl), description="nightly drift", now=NOW, **kwargs
    )


def test_issued_token_authenticates_to_a_token_principal() -> None:
    token, record = issue()
    token_id, secret = split_token(token)
    principal = record.authenticate(secret, now=NOW + timedelta(days=1))
    assert token_id == record.token_id and record.expires_at == NOW + timedelta(days=30)
    assert principal.kind == "token" and principal.token_id == token_id
    assert principal.subject == f"token:tfw_{token_id}"
    assert principal.role_for("app/prod") is Role.PLANNER
    assert principal.claims["description"] == "nightly drift"
    assert secret not in repr(principal) and record.secret_hash not in repr(principal)


def test_token_expires_at_its_expiry_time() -> None:
    _, record = issue("1h")
    record.check(NOW + timedelta(minutes=59))
    with pytest.raises(AuthError, match=r"expired at 2025-06-01T13:00:00\+00:00"):
        record.check(NOW + timedelta(hours=1))


def test_revoked_token_is_refused_before_it_expires() -> None:
    token, record = issue()
    record.revoke(NOW + timedelta(hours=1))
    record.check(NOW + timedelta(minutes=30))  # still valid before the revocation time
    with pytest.raises(AuthError, match="was revoked at"):
        record.authenticate(split_token(token)[1], now=NOW + timedelta(hours=2))


def test_wrong_secret_learns_nothing_about_expiry_or_revocation() -> None:
    _, record = issue("1h")
    record.revoke(NOW)
    with pytest.raises(AuthError, match="invalid API token") as caught:
        record.authenticate("x" * 43, now=NOW + timedelta(days=2))
    assert "expired" not in str(caught.value) and "revoked" not in str(caught.value)


def test_authenticate_token_refuses_unknown_ids_like_wrong_secrets() -> None:
    token, record = issue()
    other_token, _ = issue()
    store = {record.token_id: record}
    assert authenticate_token(token, store.get, now=NOW).token_id == record.token_id
    with pytest.raises(AuthError) as unknown:
        authenticate_token(other_token, store.get, now=NOW)
    wrong = token[: -len("x" * 43)] + "x" * 43
    with pytest.raises(AuthError) as mismatch:
        authenticate_token(wrong, store.get, now=NOW)
    assert str(unknown.value) == str(mismatch.value)


def test_record_from_a_store_row_parses_the_role_and_reads_naive_times_as_utc() -> None:
    row = SimpleNamespace(
        token_id="abcDEF123456",
        secret_hash=hash_secret("s"),
        role="applier",
        workspaces="app/*",
        description="ci",
        created_at=datetime(2025, 6, 1, 12, 0),  # naive, as SQLite hands it back
        expires_at=datetime(2025, 6, 1, 13, 0),
        revoked_at=None,
    )
    record = TokenRecord.from_row(row)
    assert record.role is Role.APPLIER and record.expires_at.tzinfo is UTC
    record.check(datetime(2025, 6, 1, 12, 59, tzinfo=UTC))
    with pytest.raises(AuthError, match="expired"):
        record.check(datetime(2025, 6, 1, 15, 0, tzinfo=UTC))


def test_issue_refuses_a_lifetime_beyond_the_maximum() -> None:
    with pytest.raises(ConfigError, match="at most 365 days"):
        TokenRecord.issue(Role.READER, "*", ttl=timedelta(days=400))


# -- issuer configuration -------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "HS256", "HS512", "RS1"])
def test_issuer_refuses_unsigned_and_symmetric_algorithms(alg: str) -> None:
    with pytest.raises(ConfigError, match=f"algorithm '{alg}' refused"):
        Issuer(ADO_ISS, "api://AzureADTokenExchange", f"{ADO_ISS}/.well-known/jwks", (alg,))


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://vstoken.dev.azure.com/x/.well-known/jwks", True),
        ("http://127.0.0.1:8080/jwks", True),
        ("http://localhost/jwks", True),
        ("http://vstoken.dev.azure.com/x/.well-known/jwks", False),
        ("ftp://example.com/jwks", False),
        ("/.well-known/jwks", False),
    ],
)
def test_issuer_jwks_url_must_be_https_except_on_loopback(url: str, ok: bool) -> None:
    if ok:
        assert Issuer(ADO_ISS, "api://x", url).jwks_url == url
    else:
        with pytest.raises(ConfigError, match="jwks_url"):
            Issuer(ADO_ISS, "api://x", url)


def test_issuer_accepts_one_or_several_audiences() -> None:
    url = "https://example.com/jwks"
    assert Issuer(ADO_ISS, "api://a", url).audiences == ("api://a",)
    assert Issuer(ADO_ISS, ["api://a", "api://b"], url).audiences == ("api://a", "api://b")
    with pytest.raises(ConfigError, match="audience"):
        Issuer(ADO_ISS, [], url)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"issuer": ADO_ISS, "audience": "a"}, r"oidc issuers\[1\].jwks_url is required"),
        (
            {"issuer": ADO_ISS, "audiance": "a", "jwks_url": "https://x/j"},
            r"oidc issuers\[1\]: unknown key 'audiance'",
        ),
        (
            {
                "issuer": ADO_ISS,
                "audience": "a",
                "jwks_url": "https://x/j",
                "algorithms": ["HS256"],
            },
            r"oidc issuers\[1\]: .*algorithm 'HS256' refused",
        ),
    ],
)
def test_issuers_from_config_names_the_entry_and_key(entry: dict[str, Any], message: str) -> None:
    good = {"issuer": "https://a", "audience": "api://a", "jwks_url": "https://a/jwks"}
    with pytest.raises(ConfigError, match=message):
        issuers_from_config([good, entry])


def test_verifier_refuses_an_issuer_configured_twice() -> None:
    issuer = Issuer(ADO_ISS, "api://a", "https://example.com/jwks")
    with pytest.raises(ConfigError, match="configured twice"):
        OidcVerifier([issuer, issuer])


# -- role bindings ------------------------------------------------------------------------


def ado_claims(**extra: Any) -> dict[str, Any]:
    return {"iss": ADO_ISS, "sub": "sc://contoso/infra/plan-app", "aud": "api://x", **extra}


def test_binding_matches_a_subject_glob() -> None:
    binding = Binding(Role.PLANNER, "app/*", subject="sc://contoso/infra/plan-*")
    assert binding.matches(ado_claims())
    assert not binding.matches(ado_claims(sub="sc://contoso/infra/apply-app"))
    assert not binding.matches(ado_claims(sub="sc://Contoso/infra/plan-app"))
    assert not binding.matches({"iss": ADO_ISS})


def test_subject_glob_star_crosses_slashes() -> None:
    binding = Binding(Role.READER, "*", subject="sc://contoso/*")
    assert binding.matches(ado_claims(sub="sc://contoso/other-project/conn"))


def test_binding_groups_match_any_of_the_groups_or_roles_claim() -> None:
    binding = Binding(Role.APPLIER, "app/*", groups=("sre", "platform"))
    assert binding.matches(ado_claims(groups=["dev", "platform"]))
    assert binding.matches(ado_claims(roles=["sre"]))
    assert binding.matches(ado_claims(roles="sre"))
    assert not binding.matches(ado_claims(groups=["dev"], roles=["sre-lead"]))
    assert not binding.matches(ado_claims())


def test_binding_claims_must_all_glob_match() -> None:
    binding = Binding(
        Role.APPLIER,
        "app/*",
        claims={"rpo_ref": "refs/heads/main", "def_id": "17", "ref_protected": "true"},
    )
    assert binding.matches(ado_claims(rpo_ref="refs/heads/main", def_id=17, ref_protected=True))
    assert not binding.matches(ado_claims(rpo_ref="refs/heads/main", def_id=17))
    assert not binding.matches(
        ado_claims(rpo_ref="refs/heads/feature", def_id=17, ref_protected=True)
    )


def test_binding_issuer_must_match_exactly() -> None:
    binding = Binding(Role.PLANNER, "*", subject="sc://contoso/*", issuer=ADO_ISS)
    assert binding.matches(ado_claims())
    assert not binding.matches(ado_claims(iss=ADO_ISS + "/"))
    assert not binding.matches(ado_claims(iss="https://token.actions.githubusercontent.com"))


def test_binding_needs_every_matcher_it_sets() -> None:
    binding = Binding(Role.ADMIN, "*", subject="sc://contoso/*", groups=("sre",))
    assert binding.matches(ado_claims(groups=["sre"]))
    assert not binding.matches(ado_claims())
    assert not binding.matches(ado_claims(sub="p://contoso/infra/x", groups=["sre"]))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"issuer": ADO_ISS},
        {"subject": "*"},
        {"subject": "**", "issuer": ADO_ISS},
        {"claims": {"repository": "*"}},
        {"subject": "?*", "claims": {"ref": "*"}},
    ],
)
def test_binding_matching_every_identity_is_refused_as_too_broad(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="too broad"):
        Binding(Role.READER, "*", **kwargs)


def test_bindings_from_config_builds_bindings() -> None:
    bindings = bindings_from_config(
        [
            {"role": "Planner", "workspaces": "app/*", "subject": "sc://contoso/*"},
            {"role": "admin", "workspaces": "*", "groups": "sre", "issuer": ADO_ISS},
            {"role": "applier", "workspaces": "app/prod", "claims": {"rpo_ref": "refs/heads/*"}},
        ]
    )
    assert bindings[0] == Binding(Role.PLANNER, "app/*", subject="sc://contoso/*")
    assert bindings[1].groups == ("sre",) and bindings[1].issuer == ADO_ISS
    assert dict(bindings[2].claims) == {"rpo_ref": "refs/heads/*"}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("planner", r"bindings\[1\] must be a mapping"),
        ({"workspaces": "*", "subject": "x"}, r"bindings\[1\]\.role is required"),
        ({"role": "planner", "subject": "x"}, r"bindings\[1\]\.workspaces is required"),
        ({"role": "owner", "workspaces": "*", "subject": "x"}, r"bindings\[1\]\.role: unknown"),
        (
            {"role": "reader", "workspaces": "*", "subjet": "x"},
            r"bindings\[1\]: unknown key 'subjet'",
        ),
        ({"role": "reader", "workspaces": "*", "subject": 7}, r"bindings\[1\]\.subject must"),
        ({"role": "reader", "workspaces": "*", "groups": [1]}, r"bindings\[1\]\.groups must"),
        (
            {"role": "reader", "workspaces": "*", "claims": {"def_id": 17}},
            r"bindings\[1\]\.claims\.def_id must be a non-empty string",
        ),
        ({"role": "reader", "workspaces": "*", "issuer": ADO_ISS}, r"bindings\[1\]: .*too broad"),
    ],
)
def test_bindings_from_config_names_the_entry_and_key(entry: Any, message: str) -> None:
    good = {"role": "reader", "workspaces": "*", "groups": ["sre"]}
    with pytest.raises(ConfigError, match=message):
        bindings_from_config([good, entry])


def test_grants_for_collects_matching_bindings_without_duplicates() -> None:
    bindings = [
        Binding(Role.PLANNER, "app/*", subject="sc://contoso/infra/*"),
        Binding(Role.PLANNER, "app/*", groups=("dev",)),
        Binding(Role.APPLIER, "app/dev", subject="sc://contoso/infra/plan-app"),
        Binding(Role.ADMIN, "*", groups=("sre",)),
    ]
    assert grants_for(ado_claims(groups=["dev"]), bindings) == (
        Grant(Role.PLANNER, "app/*"),
        Grant(Role.APPLIER, "app/dev"),
    )


def test_principal_from_claims_keeps_only_audit_safe_claims() -> None:
    claims = ado_claims(
        run_id="4711", groups=["sre"], exp=1_900_000_000, email_verified_secret="x", nested={}
    )
    principal = principal_from_claims(claims, [Binding(Role.ADMIN, "*", groups=("sre",))])
    assert principal.kind == "oidc" and principal.token_id is None
    assert principal.subject == "sc://contoso/infra/plan-app"
    assert principal.role_for("anything") is Role.ADMIN
    assert dict(principal.claims) == {
        "iss": ADO_ISS,
        "sub": "sc://contoso/infra/plan-app",
        "aud": "api://x",
        "run_id": "4711",
        "groups": ["sre"],
        "exp": 1_900_000_000,
    }


def test_principal_from_claims_without_a_binding_has_no_role() -> None:
    principal = principal_from_claims(ado_claims(), [])
    assert principal.grants == () and principal.role_for("app/prod") is None


def test_principal_from_claims_needs_a_subject() -> None:
    with pytest.raises(AuthError, match="no 'sub' claim"):
        principal_from_claims({"iss": ADO_ISS}, [])
