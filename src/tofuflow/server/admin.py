"""Operator actions run against the server's own database: tokens, keys, the audit chain.

    token = create_token(engine, role="planner", workspaces="app/*", ttl="2h").token
    rotate_keys(engine, keyring)          # after adding a new [keys.current]
    assert verify_audit(engine).ok

``tofuflow server tokens|keys|audit`` and the embedded control plane use these.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tofuflow.errors import NotFoundError
from tofuflow.server import _audit
from tofuflow.server._audit import VerifyResult
from tofuflow.server._state import state_aad
from tofuflow.server.auth import Role, new_token, parse_ttl
from tofuflow.server.crypto import Keyring
from tofuflow.server.notify._events import audit_verify_failed
from tofuflow.server.storage._db import (
    ApiToken,
    Run,
    StateVersion,
    Workspace,
    utcnow,
    write_session,
)

__all__ = [
    "CreatedToken",
    "VerifyResult",
    "create_token",
    "list_tokens",
    "revoke_token",
    "rotate_keys",
    "verify_audit",
]

_OPERATOR = _audit.Actor("operator:cli")


@dataclass(frozen=True)
class CreatedToken:
    token: str
    token_id: str
    role: str
    workspaces: str
    expires_at: str


def create_token(
    engine: Engine, *, role: str, workspaces: str, ttl: str, description: str = ""
) -> CreatedToken:
    """Create an expiring token; the secret is shown once and only its hash is stored."""
    parsed_role = Role.parse(role)
    expires_at = utcnow() + parse_ttl(ttl)
    token, token_id, secret_hash = new_token()
    with write_session(engine) as session:
        session.add(
            ApiToken(
                token_id=token_id, secret_hash=secret_hash, role=parsed_role.value,
                workspaces=workspaces, description=description, expires_at=expires_at,
            )
        )  # fmt: skip
        _audit.append(
            session, _OPERATOR, "token.create",
            detail={"token_id": token_id, "role": parsed_role.value, "workspaces": workspaces,
                    "expires_at": expires_at.isoformat()},
        )  # fmt: skip
    return CreatedToken(token, token_id, parsed_role.value, workspaces, expires_at.isoformat())


def list_tokens(engine: Engine) -> list[ApiToken]:
    with Session(engine, expire_on_commit=False) as session:
        return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at)).all())


def revoke_token(engine: Engine, token_id: str) -> None:
    with write_session(engine) as session:
        row = session.get(ApiToken, token_id)
        if row is None:
            raise NotFoundError(f"no token {token_id}; `tofuflow server tokens list` shows them")
        row.revoked_at = utcnow()
        _audit.append(session, _OPERATOR, "token.revoke", detail={"token_id": token_id})


def verify_audit(engine: Engine) -> VerifyResult:
    """Check the audit log's hash chain; ``first_bad_id`` names the first altered event."""
    with Session(engine) as session:
        result = _audit.verify(session)
    if not result.ok:
        audit_verify_failed(engine, result.first_bad_id, result.reason)
    return result


def rotate_keys(engine: Engine, keyring: Keyring, batch: int = 200) -> int:
    """Re-wrap every data key not under the current key; ciphertexts stay untouched.

    Runs in small transactions, so the server keeps serving (online rotation).
    """
    rotated = 0
    while True:
        with write_session(engine) as session:
            rows = session.execute(
                select(StateVersion, Workspace.name)
                .join(Workspace, Workspace.id == StateVersion.workspace_id)
                .where(StateVersion.key_id != keyring.current.key_id)
                .limit(batch)
                .with_for_update()
            ).all()
            for version, name in rows:
                version.key_id, version.wrapped_key = keyring.rewrap(
                    version.key_id, version.wrapped_key, state_aad(name, version.version)
                )
            if rows:
                _audit.append(session, _OPERATOR, "keys.rotate", detail={"rewrapped": len(rows)})
            rotated += len(rows)
        if len(rows) < batch:
            return rotated + _rotate_runs(engine, keyring, batch)


def _rotate_runs(engine: Engine, keyring: Keyring, batch: int) -> int:
    """Re-wrap the data keys of run artifacts and plan documents (sealed like state)."""
    from tofuflow.server._runs import run_aad

    rotated, last = 0, ""
    while True:
        with write_session(engine) as session:
            runs = session.scalars(
                select(Run).where(Run.id > last).order_by(Run.id).limit(batch).with_for_update()
            ).all()
            for run in runs:
                for column, what in (("artifact", "artifact"), ("plan_document", "plan")):
                    record = getattr(run, column)
                    if record is None or record["key_id"] == keyring.current.key_id:
                        continue
                    key_id, wrapped = keyring.rewrap(
                        record["key_id"], base64.b64decode(record["wrapped_key"]),
                        run_aad(run, what),
                    )  # fmt: skip
                    setattr(
                        run,
                        column,
                        {
                            **record,
                            "key_id": key_id,
                            "wrapped_key": base64.b64encode(wrapped).decode(),
                        },
                    )
                    rotated += 1
            if runs:
                last = runs[-1].id
        if len(runs) < batch:
            return rotated
