"""The apply-session token: the credential an approved run's apply writes state with.

    token = f"{SESSION_PREFIX}{run_id}_{secret}"       # handed to the runner once
    principal = session_principal(engine, token)       # applier on that run's workspace

It is valid while its run is applying, until the session's expiry and while the runner's
lease holds; the run row keeps only the secret's SHA-256.
"""

from __future__ import annotations

import hashlib
import hmac

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Engine

from tofuflow.errors import AuthError
from tofuflow.server.auth._roles import Grant, Principal, Role
from tofuflow.server.storage._db import Run, utcnow

__all__ = ["SESSION_PREFIX", "session_principal"]

SESSION_PREFIX = "tfs_"


# Only what a session needs, in one plain statement: every state request of an apply comes
# here, and a whole Run row carries its plan document, megabytes of JSON for a large plan.
_SESSION_OF_RUN = select(
    Run.workspace, Run.status, Run.requester, Run.session_hash, Run.session_expires_at,
    Run.lease_expires_at,
).where(Run.id == bindparam("run_id"))  # fmt: skip


def session_principal(engine: Engine, token: str) -> Principal:
    """The principal of an apply-session token: applier on one workspace, while applying."""
    run_id, _, secret = token[len(SESSION_PREFIX) :].partition("_")
    with engine.connect() as connection:
        run = connection.execute(_SESSION_OF_RUN, {"run_id": run_id}).first()
    if run is None or run.session_hash is None or run.session_expires_at is None:
        raise AuthError("apply session is not open (the run ended or never started applying)")
    digest = hashlib.sha256(secret.encode()).hexdigest()
    if not hmac.compare_digest(digest, run.session_hash):
        raise AuthError("invalid apply-session token")
    now, lease = utcnow(), run.lease_expires_at
    if run.status != "applying" or run.session_expires_at <= now or (lease and lease <= now):
        raise AuthError(f"the apply session of run {run_id} has ended")
    return Principal(
        subject=f"run:{run_id}",
        kind="token",
        grants=(Grant(Role.APPLIER, run.workspace),),
        claims={"sub": f"run:{run_id}", "run_id": run_id, "requester": run.requester},
    )
