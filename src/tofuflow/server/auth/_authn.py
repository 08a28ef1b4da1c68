"""Who is calling: an API token (``tfw_...``) or an OIDC JWT, from Basic or Bearer auth.

The http backend sends TF_HTTP_PASSWORD as the Basic password (the username is only a
hint), so a token works both as ``Authorization: Basic`` and ``Authorization: Bearer``.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Engine

from tofuflow.errors import AuthError
from tofuflow.server.auth import (
    Binding,
    OidcVerifier,
    Principal,
    TokenRecord,
    authenticate_token,
    principal_from_claims,
    split_token,
    verify_secret,
)
from tofuflow.server.auth._sessions import SESSION_PREFIX, session_principal
from tofuflow.server.auth._tokens import TOKEN_PREFIX
from tofuflow.server.storage._db import ApiToken, utcnow

__all__ = ["Authenticator"]


class Authenticator:
    def __init__(
        self, engine: Engine, verifier: OidcVerifier | None, bindings: Sequence[Binding]
    ) -> None:
        self.engine = engine
        self.verifier = verifier
        self.bindings = tuple(bindings)
        self._verified: dict[str, _Verified] = {}  # token id -> record (see ``cached``)

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

    def cached(self, authorization: str | None) -> Principal | None:
        """The principal of an API token verified here before, if the secret matches and
        the token has not expired; else None (then ``authenticate``).

        Its revocation is NOT read: only a caller that reads it in the transaction of the
        change it makes may use this (``_state_fast`` and ``_state_pg``, which also call
        ``forget``), so a revocation still takes effect at once, on every replica.
        """
        try:
            credential = _credential(authorization)
            if not credential.startswith(TOKEN_PREFIX):
                return None
            token_id, secret = split_token(credential)
        except AuthError:
            return None
        entry = self._verified.get(token_id)
        if entry is None or entry.until < time.monotonic():
            return None
        record, principal = entry.record, entry.principal
        if not verify_secret(secret, record.secret_hash) or record.expires_at <= utcnow():
            return None  # ``authenticate`` says why
        return principal

    def forget(self, token_id: str) -> None:
        self._verified.pop(token_id, None)

    def _api_token(self, token: str) -> Principal:
        token_id, _ = split_token(token)
        record = self._lookup(token_id)
        principal = authenticate_token(token, lambda _: record)
        if record is not None:
            if len(self._verified) >= _CACHE_SIZE:
                self._verified.clear()
            self._verified[token_id] = _Verified(
                record, principal, time.monotonic() + _CACHE_SECONDS
            )
        return principal

    def _lookup(self, token_id: str) -> TokenRecord | None:
        # A plain statement, not an ORM session: it runs for every request, and reading
        # the row each time is what makes a revocation take effect at once, on every replica.
        with self.engine.connect() as connection:
            row = connection.execute(_TOKEN_BY_ID, {"token_id": token_id}).first()
        return None if row is None else TokenRecord.from_row(row)


# The cache holds a token's record and principal, never its secret; a bound on staleness
# for anything not read again in a transaction, and on its size.
_CACHE_SECONDS = 60.0
_CACHE_SIZE = 4096


@dataclass(frozen=True)
class _Verified:
    record: TokenRecord
    principal: Principal
    until: float


_TOKEN_BY_ID = select(ApiToken.__table__).where(
    ApiToken.__table__.c.token_id == bindparam("token_id")
)


def _credential(authorization: str | None) -> str:
    if not authorization:
        raise AuthError(
            "no credentials: set TF_HTTP_PASSWORD to a tofuflow token and TF_HTTP_USERNAME "
            "to any name (the http backend sends no credentials without one), or send "
            "Authorization: Bearer <token>"
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
