"""Authentication and authorisation for the control plane: pure logic, no web framework.

    principal = authenticate_token(bearer, lookup=store.find_token)        # API tokens
    principal = principal_from_claims(verifier.verify(bearer), bindings)   # OIDC tokens
    principal = Authenticator(engine, verifier, bindings).authenticate(authorization_header)
    principal.require(Permission.WRITE_STATE, "app/prod")                  # 403 otherwise

AuthError means HTTP 401 (no valid credential), ForbiddenError HTTP 403 (valid, not
allowed), ConfigError a bad issuer or binding in the server's configuration.
"""

from typing import TYPE_CHECKING

from tofuflow._lazy import lazy_exports

if TYPE_CHECKING:
    from tofuflow.server.auth._authn import Authenticator
    from tofuflow.server.auth._bindings import (
        SAFE_CLAIMS,
        Binding,
        bindings_from_config,
        grants_for,
        principal_from_claims,
        safe_claims,
    )
    from tofuflow.server.auth._oidc import (
        ALLOWED_ALGORITHMS,
        DEFAULT_ALGORITHMS,
        Issuer,
        OidcVerifier,
        issuers_from_config,
    )
    from tofuflow.server.auth._roles import (
        Grant,
        Permission,
        Principal,
        PrincipalKind,
        Role,
        workspace_matches,
    )
    from tofuflow.server.auth._sessions import SESSION_PREFIX, session_principal
    from tofuflow.server.auth._tokens import (
        MAX_TTL,
        TOKEN_PREFIX,
        TokenRecord,
        TokenRow,
        authenticate_token,
        hash_secret,
        new_token,
        parse_ttl,
        split_token,
        token_id_of,
        verify_secret,
    )

# Lazy, so role checks do not import PyJWT and httpx until OIDC is used.
_EXPORTS = {
    "Authenticator": "tofuflow.server.auth._authn",
    "ALLOWED_ALGORITHMS": "tofuflow.server.auth._oidc",
    "Binding": "tofuflow.server.auth._bindings",
    "DEFAULT_ALGORITHMS": "tofuflow.server.auth._oidc",
    "Grant": "tofuflow.server.auth._roles",
    "Issuer": "tofuflow.server.auth._oidc",
    "MAX_TTL": "tofuflow.server.auth._tokens",
    "OidcVerifier": "tofuflow.server.auth._oidc",
    "Permission": "tofuflow.server.auth._roles",
    "Principal": "tofuflow.server.auth._roles",
    "PrincipalKind": "tofuflow.server.auth._roles",
    "Role": "tofuflow.server.auth._roles",
    "SAFE_CLAIMS": "tofuflow.server.auth._bindings",
    "SESSION_PREFIX": "tofuflow.server.auth._sessions",
    "TOKEN_PREFIX": "tofuflow.server.auth._tokens",
    "TokenRecord": "tofuflow.server.auth._tokens",
    "TokenRow": "tofuflow.server.auth._tokens",
    "authenticate_token": "tofuflow.server.auth._tokens",
    "bindings_from_config": "tofuflow.server.auth._bindings",
    "grants_for": "tofuflow.server.auth._bindings",
    "hash_secret": "tofuflow.server.auth._tokens",
    "issuers_from_config": "tofuflow.server.auth._oidc",
    "new_token": "tofuflow.server.auth._tokens",
    "parse_ttl": "tofuflow.server.auth._tokens",
    "principal_from_claims": "tofuflow.server.auth._bindings",
    "safe_claims": "tofuflow.server.auth._bindings",
    "session_principal": "tofuflow.server.auth._sessions",
    "split_token": "tofuflow.server.auth._tokens",
    "token_id_of": "tofuflow.server.auth._tokens",
    "verify_secret": "tofuflow.server.auth._tokens",
    "workspace_matches": "tofuflow.server.auth._roles",
}
__all__ = [
    "ALLOWED_ALGORITHMS",
    "DEFAULT_ALGORITHMS",
    "MAX_TTL",
    "SAFE_CLAIMS",
    "SESSION_PREFIX",
    "TOKEN_PREFIX",
    "Authenticator",
    "Binding",
    "Grant",
    "Issuer",
    "OidcVerifier",
    "Permission",
    "Principal",
    "PrincipalKind",
    "Role",
    "TokenRecord",
    "TokenRow",
    "authenticate_token",
    "bindings_from_config",
    "grants_for",
    "hash_secret",
    "issuers_from_config",
    "new_token",
    "parse_ttl",
    "principal_from_claims",
    "safe_claims",
    "session_principal",
    "split_token",
    "token_id_of",
    "verify_secret",
    "workspace_matches",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
