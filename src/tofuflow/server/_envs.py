"""Ephemeral environments on the control plane: registration, TTL, claims, back-off.

An environment is a workspace with an owner, an expiry and a sealed snapshot of the
configuration it was made from, so that whoever destroys it (its owner, a scheduler, the
reaper) needs no checkout. The destroy itself is a normal run — plan, policy, apply session
— made by the destroying process; this service only keeps the books:

    active ──(expired or `env destroy`)──▶ destroying ──▶ destroyed
                                              │ a destroy failed: retry after back-off
                                              └──(orphan_after failures)──▶ orphaned (retried)

A claim is a lease: a reaper killed mid-destroy stops renewing it, and the next pass takes
the environment over, ends the dead run and releases the lock that run's session held.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tofuflow.errors import BadRequestError, ConflictError, NotFoundError
from tofuflow.server import _audit
from tofuflow.server._paging import Page, cursor_time, decode_cursor, fill_page, grant_filter
from tofuflow.server._state import RequestContext, StateService
from tofuflow.server.auth import Permission
from tofuflow.server.storage._db import (
    Environment,
    Run,
    StateVersion,
    Workspace,
    utcnow,
    write_session,
)

__all__ = ["EnvironmentService", "ReapPolicy", "environment_aad", "is_due"]

_OWNER = re.compile(r"[^\x00-\x1f]{1,255}")
_UNFINISHED = {"planning", "needs_approval", "approved", "applying"}
# Resource counts by the SHA-256 of the state body they were counted in (a count is a
# function of the body), so a list opens each state version once per process, not per page.
_COUNTED: dict[str, int] = {}
_COUNTED_MAX = 20_000


@dataclass(frozen=True)
class ReapPolicy:
    retry_backoff: dt.timedelta = dt.timedelta(seconds=30)
    max_backoff: dt.timedelta = dt.timedelta(hours=1)
    orphan_after: int = 3
    max_ttl: dt.timedelta = dt.timedelta(days=7)

    def backoff(self, attempts: int) -> dt.timedelta:
        """30 s, 1 min, 2 min, ... up to max_backoff (attempts counts failures so far)."""
        factor = 1 << min(max(attempts - 1, 0), 30)
        return min(self.retry_backoff * factor, self.max_backoff)


class EnvironmentService:
    def __init__(self, engine: Engine, state: StateService, policy: ReapPolicy) -> None:
        self.engine = engine
        self.state = state
        self.policy = policy

    # -- registration -------------------------------------------------------------------

    def create(
        self,
        ctx: RequestContext,
        name: str,
        *,
        source_workspace: str,
        ttl: dt.timedelta,
        owner: str,
        context: Mapping[str, Any],
        snapshot: bytes,
    ) -> dict[str, Any]:
        ctx.principal.require(Permission.CREATE_RUN, name)
        if ttl <= dt.timedelta(0) or ttl > self.policy.max_ttl:
            raise BadRequestError(
                f"ttl must be positive and at most {_span(self.policy.max_ttl)} "
                "(the server's environments.max_ttl)"
            )
        if not _OWNER.fullmatch(owner):
            raise BadRequestError("owner must be 1-255 printable characters, e.g. an email")
        if name == source_workspace:
            raise BadRequestError(
                f"an environment needs its own state: name it differently from {name!r}"
            )
        with write_session(self.engine) as session:
            env = session.get(Environment, name, with_for_update=True)
            if env is not None and env.status != "destroyed":
                raise ConflictError(
                    f"environment {name} already exists ({env.status}, owner {env.owner}): "
                    f"pick another name; `tofuflow env destroy {name}` removes it, "
                    f"`tofuflow env extend {name}` keeps it longer"
                )
            ws = session.scalars(select(Workspace).where(Workspace.name == name)).first()
            if env is None and ws is not None and ws.current_version is not None:
                raise ConflictError(
                    f"workspace {name} already holds state and is not an environment: "
                    "pick another name"
                )
            if env is None:
                env = Environment(name=name)
                session.add(env)
            now = utcnow()
            env.source_workspace, env.owner = source_workspace, owner
            env.created_by, env.created_at = ctx.principal.subject, now
            env.expires_at, env.status, env.context = now + ttl, "active", dict(context)
            env.snapshot = self.state.seal_record(snapshot, environment_aad(name))
            env.snapshot_sha256 = hashlib.sha256(snapshot).hexdigest()
            env.attempts, env.next_attempt_at, env.last_error = 0, None, None
            env.claimed_by = env.claim_expires_at = env.last_run_id = env.destroyed_at = None
            self._audit(session, ctx, env, "environment.created",
                        {"source_workspace": source_workspace, "owner": owner,
                         "ttl_seconds": int(ttl.total_seconds())})  # fmt: skip
            return self._view(env, None)

    def extend(self, ctx: RequestContext, name: str, ttl: dt.timedelta) -> dict[str, Any]:
        """Expire ``ttl`` after the current expiry; an expired one is the reaper's."""
        ctx.principal.require(Permission.CREATE_RUN, name)
        with write_session(self.engine) as session:
            env = self._env(session, name, for_update=True)
            if env.status != "active":
                raise ConflictError(
                    f"environment {name} is {env.status}: only an active one can be extended"
                )
            if _passed(env.expires_at, utcnow()):
                # Due for the reaper (its time ran out, or someone asked to destroy it):
                # extending would undo that, and a planner may extend but not destroy.
                raise ConflictError(
                    f"environment {name} has expired (at {_iso(env.expires_at)}) and the "
                    "reaper destroys it at its next pass: it cannot be extended any more; "
                    "create it again when it is gone"
                )
            start = _utc(env.expires_at)
            if start + ttl - utcnow() > self.policy.max_ttl:
                raise BadRequestError(
                    f"that would keep {name} for more than {_span(self.policy.max_ttl)} "
                    "(the server's environments.max_ttl)"
                )
            env.expires_at = start + ttl
            self._audit(session, ctx, env, "environment.extended",
                        {"expires_at": env.expires_at.isoformat()})  # fmt: skip
            return self._view(env, None)

    def expire_now(self, ctx: RequestContext, name: str) -> dict[str, Any]:
        """Destroy ``name`` now (the console's Destroy): it expires at once, so the reaper
        destroys it as it does any expired environment (claim, plan -destroy, apply,
        close). Whoever may ``env destroy`` it may do this: appliers and above."""
        ctx.principal.require(Permission.APPLY_RUN, name)
        with write_session(self.engine) as session:
            env = self._env(session, name, for_update=True)
            if env.status != "active":
                raise ConflictError(
                    f"environment {name} is {env.status}: the reaper already destroys it "
                    "(or has), nothing to ask for"
                )
            if _passed(env.expires_at, utcnow()):
                raise ConflictError(
                    f"environment {name} has expired already (at {_iso(env.expires_at)}): "
                    "the reaper destroys it at its next pass (or run `tofuflow env reap`)"
                )
            env.expires_at = utcnow()
            self._audit(session, ctx, env, "environment.destroy_requested",
                        {"expires_at": env.expires_at.isoformat()})  # fmt: skip
            return self._view(env, None)

    # -- reads --------------------------------------------------------------------------

    def exists(self, name: str) -> bool:
        """Whether ``name`` is a (not yet destroyed) environment: policies see this."""
        with Session(self.engine) as session:
            env = session.get(Environment, name)
            return env is not None and env.status != "destroyed"

    def get(self, ctx: RequestContext, name: str) -> dict[str, Any]:
        ctx.principal.require(Permission.READ_RUNS, name)
        with Session(self.engine) as session:
            env = self._env(session, name)
            return self._view(env, self._resource_counts(session, [name])[name])

    def list(
        self, ctx: RequestContext, *, due: bool, include_destroyed: bool, limit: int = 100,
        cursor: str | None = None,
    ) -> Page[Any]:  # fmt: skip
        """A page of the environments the caller may read, oldest first; ``due``: those a
        reaper should destroy now."""
        now, kind = utcnow(), "environments"
        key = decode_cursor(cursor, kind, (str, str))
        start = None if key is None else [cursor_time(key[0], kind), key[1]]
        base = select(Environment).order_by(Environment.created_at, Environment.name)
        if not include_destroyed:
            base = base.where(Environment.status != "destroyed")
        narrow = grant_filter(Environment.name, ctx.principal)
        if narrow is not None:
            base = base.where(narrow)

        def fetch(after: list[Any] | None, n: int) -> list[Environment]:
            query = base.limit(n)
            if after is not None:
                later = and_(Environment.created_at == after[0], Environment.name > after[1])
                query = query.where(or_(Environment.created_at > after[0], later))
            return list(session.scalars(query))

        def keep(env: Environment) -> bool:
            readable = ctx.principal.can(Permission.READ_RUNS, env.name)
            return readable and (not due or is_due(env, now))

        with Session(self.engine) as session:
            page = fill_page(
                fetch, keep, lambda env: [env.created_at, env.name], kind=kind, limit=limit,
                after=start,
            )  # fmt: skip
            counts = self._resource_counts(session, [env.name for env in page.items])
            views = [self._view(env, counts[env.name]) for env in page.items]
            return Page(views, page.next_cursor)

    def snapshot(self, ctx: RequestContext, name: str) -> bytes:
        """The configuration snapshot (variables included: appliers only)."""
        ctx.principal.require(Permission.APPLY_RUN, name)
        with write_session(self.engine) as session:
            env = self._env(session, name)
            record, digest = dict(env.snapshot), env.snapshot_sha256
            self._audit(session, ctx, env, "environment.snapshot_read", {})
        data = self.state.open_record(record, environment_aad(name), what=f"environment {name}")
        if hashlib.sha256(data).hexdigest() != digest:
            raise ConflictError(f"the snapshot of environment {name} does not match its digest")
        return data

    # -- destroying ---------------------------------------------------------------------

    def claim(
        self, ctx: RequestContext, name: str, holder: str, lease: dt.timedelta, *, force: bool
    ) -> dict[str, Any]:
        """Take (or renew) the right to destroy ``name``; ``force``: even before expiry."""
        ctx.principal.require(Permission.APPLY_RUN, name)
        now = utcnow()
        with write_session(self.engine) as session:
            env = self._env(session, name, for_update=True)
            if env.status == "destroyed":
                raise ConflictError(f"environment {name} is already destroyed")
            mine = env.claimed_by == holder
            if env.claimed_by and not mine and not _passed(env.claim_expires_at, now):
                raise ConflictError(
                    f"environment {name} is being destroyed by {env.claimed_by} (its claim "
                    f"runs until {_iso(env.claim_expires_at)}); try again after that"
                )
            if not force and not mine and not is_due(env, now):
                raise ConflictError(
                    f"environment {name} is not due for destruction (it expires "
                    f"{_iso(env.expires_at)}); use `tofuflow env destroy` to destroy it now"
                )
            taken_over = None if mine else self._end_dead_run(session, ctx, env)
            env.status = "destroying" if env.status != "orphaned" else "orphaned"
            env.claimed_by, env.claim_expires_at = holder, now + lease
            detail = {"holder": holder, "forced": force, "took_over_run": taken_over}
            self._audit(session, ctx, env, "environment.claimed", detail)
            return self._view(env, None)

    def record_run(self, ctx: RequestContext, name: str, holder: str, run_id: str) -> None:
        ctx.principal.require(Permission.APPLY_RUN, name)
        with write_session(self.engine) as session:
            env = self._claimed(session, name, holder)
            env.last_run_id = run_id
            self._audit(session, ctx, env, "environment.destroy_run", {"run": run_id})

    def destroyed(self, ctx: RequestContext, name: str, holder: str) -> dict[str, Any]:
        """Close the books: only when the environment's state holds no resources."""
        ctx.principal.require(Permission.APPLY_RUN, name)
        with write_session(self.engine) as session:
            env = self._claimed(session, name, holder)
            left = self._resources(session, name)
            if left:
                raise ConflictError(
                    f"environment {name} still has {left} resources in its state: "
                    "it is not destroyed"
                )
            env.status, env.destroyed_at = "destroyed", utcnow()
            env.claimed_by = env.claim_expires_at = None
            self._audit(session, ctx, env, "environment.destroyed",
                        {"run": env.last_run_id, "attempts": env.attempts + 1})  # fmt: skip
            return self._view(env, 0)

    def failed(self, ctx: RequestContext, name: str, holder: str, error: str) -> dict[str, Any]:
        """A destroy attempt failed: retry after back-off; orphaned after orphan_after."""
        ctx.principal.require(Permission.APPLY_RUN, name)
        with write_session(self.engine) as session:
            env = self._claimed(session, name, holder)
            env.attempts += 1
            env.last_error = error[:2000]
            env.next_attempt_at = utcnow() + self.policy.backoff(env.attempts)
            env.claimed_by = env.claim_expires_at = None
            orphaned = env.attempts >= self.policy.orphan_after
            env.status = "orphaned" if orphaned else "destroying"
            detail = {"attempts": env.attempts, "error": env.last_error,
                      "next_attempt_at": env.next_attempt_at.isoformat()}  # fmt: skip
            action = "environment.orphaned" if orphaned else "environment.destroy_failed"
            self._audit(session, ctx, env, action, detail, outcome="error")
            return self._view(env, None)

    # -- internals ----------------------------------------------------------------------

    def _end_dead_run(self, session: Session, ctx: RequestContext, env: Environment) -> Any:
        """A previous destroyer stopped: fail its run and release its session's lock."""
        if env.last_run_id is None:
            return None
        run = session.get(Run, env.last_run_id, with_for_update=True)
        if run is None or run.status not in _UNFINISHED:
            return None
        run.status = "failed" if run.status == "applying" else "cancelled"
        run.updated_at = utcnow()
        run.result = {"reason": "abandoned: the process destroying the environment stopped"}
        run.session_hash = run.session_expires_at = None
        _audit.append(session, ctx.actor, f"run.{run.status}", workspace=run.workspace,
                      detail={"status": run.status, **run.result}, run_id=run.id,
                      commit=run.commit)  # fmt: skip
        ws = session.scalars(select(Workspace).where(Workspace.name == env.name)).first()
        if ws is not None and ws.lock_id is not None and ws.locked_by == f"run:{run.id}":
            _audit.append(session, ctx.actor, "state.force_unlock", workspace=env.name,
                          serial=ws.serial, detail={"lock_id": ws.lock_id, "held_by": ws.locked_by,
                                                    "reason": "its run was abandoned"})  # fmt: skip
            ws.lock_id = ws.lock_info = ws.locked_by = ws.locked_at = None
        return run.id

    def _claimed(self, session: Session, name: str, holder: str) -> Environment:
        env = self._env(session, name, for_update=True)
        if env.claimed_by != holder:
            raise ConflictError(
                f"environment {name} is not claimed by {holder} (claimed by "
                f"{env.claimed_by or 'nobody'}): claim it first"
            )
        return env

    def _env(self, session: Session, name: str, *, for_update: bool = False) -> Environment:
        env = session.get(Environment, name, with_for_update=for_update)
        if env is None:
            raise NotFoundError(f"no environment {name!r}; `tofuflow env list` shows them")
        return env

    def _resources(self, session: Session, name: str) -> int:
        """Resource instances in the environment's current state (0 when it has none)."""
        body = self.state.current_body(session, name)
        return 0 if body is None else _count_resources(body)

    def _resource_counts(self, session: Session, names: Sequence[str]) -> dict[str, int]:
        """``_resources`` of each of ``names``, for a page: one query reads the SHA-256 of
        every current version; a body is opened only when its count is not known yet."""
        counts: dict[str, int] = dict.fromkeys(names, 0)
        current = (
            select(Workspace.name, StateVersion.sha256)
            .join(StateVersion, StateVersion.workspace_id == Workspace.id)
            .where(StateVersion.version == Workspace.current_version, Workspace.name.in_(names))
        )
        for name, digest in session.execute(current) if names else ():
            count = _COUNTED.get(digest)
            if count is None:
                body = self.state.current_body(session, name)
                if body is None:
                    continue
                count = _count_resources(body)
                if len(_COUNTED) >= _COUNTED_MAX:
                    _COUNTED.clear()
                _COUNTED[hashlib.sha256(body).hexdigest()] = count
            counts[name] = count
        return counts

    def _view(self, env: Environment, resources: int | None) -> dict[str, Any]:
        now = utcnow()
        expires = _utc(env.expires_at)
        return {
            "name": env.name, "source_workspace": env.source_workspace, "owner": env.owner,
            "created_by": env.created_by, "created_at": _iso(env.created_at),
            "expires_at": _iso(expires), "status": env.status,
            "age_seconds": int((now - _utc(env.created_at)).total_seconds()),
            "ttl_left_seconds": max(int((expires - now).total_seconds()), 0),
            "resources": resources, "attempts": env.attempts,
            "next_attempt_at": _iso(env.next_attempt_at), "claimed_by": env.claimed_by,
            "last_run_id": env.last_run_id, "last_error": env.last_error,
            "destroyed_at": _iso(env.destroyed_at), "context": env.context or {},
            "snapshot_sha256": env.snapshot_sha256,
        }  # fmt: skip

    def _audit(
        self, session: Session, ctx: RequestContext, env: Environment, action: str,
        detail: Mapping[str, Any], *, outcome: str = "ok",
    ) -> None:  # fmt: skip
        context = env.context or {}
        _audit.append(session, ctx.actor, action, workspace=env.name, outcome=outcome,
                      detail={"status": env.status, **detail},
                      commit=str(context.get("commit") or "")[:64] or None)  # fmt: skip


def _count_resources(body: bytes) -> int:
    """Managed resource instances in a state body (0 when it is not a JSON state)."""
    try:
        state = json.loads(body)
    except ValueError:
        return 0
    if not isinstance(state, dict):
        return 0
    return sum(
        len(resource.get("instances") or [])
        for resource in state.get("resources") or []
        if resource.get("mode") == "managed"
    )


def is_due(env: Environment, now: dt.datetime) -> bool:
    """Whether a reaper should destroy ``env`` now: expired, or a retry whose wait is over,
    and nobody holds a live claim on it."""
    if env.status == "destroyed":
        return False
    if env.claimed_by and not _passed(env.claim_expires_at, now):
        return False  # someone is on it
    if env.status == "active":
        return _passed(env.expires_at, now)
    return env.next_attempt_at is None or _passed(env.next_attempt_at, now)


def environment_aad(name: str) -> bytes:
    return f"tofuflow-environment:v1;name={name};snapshot".encode()


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _passed(moment: dt.datetime | None, now: dt.datetime) -> bool:
    return moment is None or _utc(moment) <= now


def _iso(moment: dt.datetime | None) -> str | None:
    return _utc(moment).isoformat() if moment is not None else None


def _span(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
