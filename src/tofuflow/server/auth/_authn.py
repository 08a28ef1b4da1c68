"""Who is calling: an API token (``tfw_...``) or an OIDC JWT, from Basic or Bearer auth.

The http backend sends TF_HTTP_PASSWORD as the Basic password (the username is only a
hint), so a token works both as ``Authorization: Basic`` and ``Authorization: Bearer``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Engine

from tofuflow.errors import AuthError
from tofuflow.server._runs import SESSION_PREFIX, session_principal
from tofuflow.server.auth import (
    Binding,
    OidcVerifier,
    Principal,
    TokenRecord,
    authenticate_token,
    principal_from_claims,
)
from tofuflow.server.storage._db import ApiToken

__all__ = ["Authenticator"]


class Authenticator:
    def __init__(
        self, engine: Engine, verifier: OidcVerifier | None, bindings: Sequence[Binding]
    ) -> None:
        self.engine = engine
        self.verifier = verifier
        self.bindings = tuple(bindings)

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller behind an ``Authorization`` header; AuthError when there is none."""
        credential = _credential(authorization)
        if credential.startswith("tfw_"):
            return self._api_token(credential)
        if credential.startswith(SESSION_PREFIX):
            return session_principal(self.engine, credential)
        if credential.count(".") == 2:
            if self.verifier is None:
                raise AuthError("OIDC tokens are not accepted: no trusted issuer is configured")
            claims = self.verifier.verify(credential)
            return principal_from_claims(claims, self.bindings)
        raise AuthError("unrecognised credential: send a tofuflow API token or an OIDC JWT")

    def _api_token(self, token: str) -> Principal:
        return authenticate_token(token, self._lookup)

    def _lookup(self, token_id: str) -> TokenRecord | None:
        # A plain statement, not an ORM session: it runs for every request, and reading
        # the row each time is what makes a revocation take effect at once, on every replica.
        with self.engine.connect() as connection:
            row = connection.execute(_TOKEN_BY_ID, {"token_id": token_id}).first()
        return None if row is None else TokenRecord.from_row(row)


_TOKEN_BY_ID = select(ApiToken.__table__).where(
    ApiToken.__table__.c.token_id == bindparam("token_id")
)


def _credential(authorization: str | None) -> str:
    if not authorization:
        raise AuthError(
            "no credentials: set TF_HTTP_PASSWORD to a tofuflow token (http backend) or "
            "send Authorization: Bearer <token>"
        )
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise AuthError("malformed Basic credentials") from exc
        _, _, password = decoded.partition(":")
        if password:
            return password
    raise AuthError("unsupported Authorization header: use Basic (token as password) or Bearer")
