"""Operator actions run against the server's own database: tokens, keys, the audit chain.

    token = create_token(engine, role="planner", workspaces="app/*", ttl="2h").token
    rotate_keys(engine, keyring)          # after adding a new [keys.current]
    assert verify_audit(engine).ok

``tofuflow server tokens|keys|audit`` and the embedded control plane use these.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, undefer

from tofuflow.errors import ConfigError, ConflictError, NotFoundError
from tofuflow.server import _audit
from tofuflow.server._audit import VerifyResult
from tofuflow.server._state import state_aad
from tofuflow.server.auth import TOKEN_PREFIX, Role, new_token, parse_ttl, token_id_of
from tofuflow.server.crypto import Keyring
from tofuflow.server.notify._events import audit_verify_failed
from tofuflow.server.storage._db import (
    ApiToken,
    Environment,
    Run,
    RunLog,
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
    "prune_tokens",
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
    """Create an expiring token; the secret is shown once and only its hash is stored.
    ConfigError for a glob that matches no workspace name (empty, or with spaces) and a
    description with a line break (it would forge a row of `tokens list`)."""
    parsed_role = Role.parse(role)
    _check_token_fields(workspaces, description)
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


def _check_token_fields(workspaces: str, description: str) -> None:
    if not workspaces:
        raise ConfigError(
            "--workspaces is empty: the token would match no workspace; give a glob such "
            "as 'app/*', or '*' for every workspace"
        )
    if any(char.isspace() for char in workspaces):
        raise ConfigError(
            f"--workspaces has spaces ({workspaces!r}): workspace names never do, so the "
            "token would match none; give one glob such as 'app/*' (a token has one)"
        )
    if any(not char.isprintable() for char in description):
        raise ConfigError(
            "--description has a line break or another control character; give it on "
            "one line (it is shown as one row of `tokens list` and in the audit log)"
        )


def list_tokens(engine: Engine) -> list[ApiToken]:
    with Session(engine, expire_on_commit=False) as session:
        return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at)).all())


def prune_tokens(engine: Engine, older_than: dt.timedelta) -> list[str]:
    """Delete the tokens revoked, or expired, more than ``older_than`` ago; returns their
    ids, sorted. One ``token.prune`` event names them: the audit log keeps each one's
    ``token.create`` and ``token.revoke``, and runs keep their requester's name."""
    before = utcnow() - older_than
    dead = or_(ApiToken.revoked_at < before, ApiToken.expires_at < before)
    with write_session(engine) as session:
        ids = sorted(session.scalars(select(ApiToken.token_id).where(dead)))
        if ids:
            session.execute(delete(ApiToken).where(ApiToken.token_id.in_(ids)))
            _audit.append(
                session, _OPERATOR, "token.prune",
                detail={"token_ids": ids, "dead_before": before.isoformat()},
            )  # fmt: skip
    return ids


def revoke_token(engine: Engine, token_id: str, *, delete: bool = False) -> str:
    """Revoke the token ``token_id`` names (see ``token_id_of``); returns its id. With
    ``delete`` its row goes too (a token minted for one command, whose story the audit
    log holds), and the ``token.revoke`` event says so. ConflictError, changing nothing,
    for a token revoked already."""
    token_id = token_id_of(token_id)
    with write_session(engine) as session:
        row = session.get(ApiToken, token_id)
        if row is None:
            raise NotFoundError(
                f"no token {TOKEN_PREFIX}{token_id}; `tofuflow server tokens list` shows them"
            )
        detail: dict[str, Any] = {"token_id": token_id}
        if delete:
            session.delete(row)
            detail["deleted"] = True
        elif row.revoked_at is not None:
            # Revoked already: its time stays what the incident timeline says.
            raise ConflictError(
                f"{TOKEN_PREFIX}{token_id} was revoked already, at "
                f"{row.revoked_at.isoformat(timespec='seconds')}: nothing changed"
            )
        else:
            row.revoked_at = utcnow()
        _audit.append(session, _OPERATOR, "token.revoke", detail=detail)
    return token_id


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
            return rotated + _rotate_records(engine, keyring, batch)


def _rotate_records(engine: Engine, keyring: Keyring, batch: int) -> int:
    """Re-wrap the data keys of the sealed records (``_sealed``): run artifacts and plan
    documents, apply-log chunks and environment snapshots, each under its own AAD."""
    from tofuflow.server._envs import environment_aad
    from tofuflow.server._run_rules import run_aad

    def runs(row: Any) -> list[tuple[Any, str, bytes]]:
        (run,) = row
        return [(run, "artifact", run_aad(run, "artifact")),
                (run, "plan_document", run_aad(run, "plan"))]  # fmt: skip

    def logs(row: Any) -> list[tuple[Any, str, bytes]]:
        log, run = row
        return [(log, "sealed", run_aad(run, f"log:{log.seq}"))]

    def environments(row: Any) -> list[tuple[Any, str, bytes]]:
        (env,) = row
        return [(env, "snapshot", environment_aad(env.name))]

    kinds: list[tuple[str, Any, Any, Callable[[Any], list[tuple[Any, str, bytes]]]]] = [
        ("runs", select(Run).options(undefer(Run.artifact), undefer(Run.plan_document)),
         Run.id, runs),
        ("run logs", select(RunLog, Run).join(Run, Run.id == RunLog.run_id), RunLog.id, logs),
        ("environments", select(Environment).options(undefer(Environment.snapshot)),
         Environment.name, environments),
    ]  # fmt: skip
    rotated = 0
    for kind, query, key, sealed_in in kinds:
        last: Any = None
        while True:
            with write_session(engine) as session:
                page = query if last is None else query.where(key > last)
                rows = session.execute(page.order_by(key).limit(batch).with_for_update()).all()
                done = sum(
                    _rewrap_record(keyring, owner, column, aad)
                    for row in rows for owner, column, aad in sealed_in(row)
                )  # fmt: skip
                if done:
                    _audit.append(session, _OPERATOR, "keys.rotate",
                                  detail={"rewrapped": done, "records": kind})  # fmt: skip
                rotated += done
                if rows:
                    last = getattr(rows[-1][0], key.key)
            if len(rows) < batch:
                break
    return rotated


def _rewrap_record(keyring: Keyring, owner: Any, column: str, aad: bytes) -> int:
    """1 when ``owner.column`` (a sealed record) was re-wrapped under the current key."""
    record = getattr(owner, column)
    if record is None or record["key_id"] == keyring.current.key_id:
        return 0
    key_id, wrapped = keyring.rewrap(record["key_id"], base64.b64decode(record["wrapped_key"]), aad)
    rewrapped = {**record, "key_id": key_id, "wrapped_key": base64.b64encode(wrapped).decode()}
    setattr(owner, column, rewrapped)
    return 1
