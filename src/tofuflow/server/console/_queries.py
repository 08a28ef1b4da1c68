"""The console's reads that the services do not offer: a cursor-paginated runs list and
the small "has this run changed?" probe behind the live page.

    page = runs_page(engine, principal, RunFilter(workspace="app/prod"), cursor=None)
    page.runs, page.next_cursor
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tofuflow.errors import BadRequestError
from tofuflow.server._paging import one_workspace
from tofuflow.server.auth import Permission, Principal
from tofuflow.server.storage._db import AuditEvent, Environment, Run, Workspace

__all__ = [
    "PAGE_SIZE",
    "RunFilter",
    "RunsPage",
    "derived_environments",
    "newest_event",
    "run_fingerprint",
    "runs_page",
    "workspace_events",
    "workspace_lock",
]

PAGE_SIZE = 50


@dataclass(frozen=True)
class RunFilter:
    workspace: str = ""
    status: str = ""
    requester: str = ""
    commit: str = ""  # a prefix
    # The run context's pipeline (Azure DevOps definition name or id, Airflow dag_id) and
    # its run (build id or number, DAG run id), each exact.
    pipeline: str = ""
    pipeline_run: str = ""


@dataclass(frozen=True)
class RunsPage:
    runs: list[dict[str, Any]]
    next_cursor: str | None


def runs_page(
    engine: Engine, principal: Principal, where: RunFilter, cursor: str | None
) -> RunsPage:
    """Newest first, only runs the principal may read; the cursor is the last row shown."""
    query = select(Run).order_by(Run.created_at.desc(), Run.id.desc())
    if where.workspace:
        query = query.where(Run.workspace == where.workspace)
    if where.status:
        query = query.where(Run.status == where.status)
    if where.requester:
        query = query.where(Run.requester == where.requester)
    if where.commit:
        query = query.where(Run.commit.startswith(where.commit, autoescape=True))
    if where.pipeline:
        query = query.where(_context_is(("pipeline_name", "pipeline_id"), where.pipeline))
    if where.pipeline_run:
        query = query.where(_context_is(("run_id", "run_number"), where.pipeline_run))
    after = _decode(cursor) if cursor else None
    found: list[Run] = []
    with Session(engine) as session:
        while len(found) <= PAGE_SIZE:
            batch_query = query if after is None else query.where(_older_than(*after))
            batch = session.scalars(batch_query.limit(PAGE_SIZE * 2)).all()
            found += [r for r in batch if principal.can(Permission.READ_RUNS, r.workspace)]
            if len(batch) < PAGE_SIZE * 2:
                break
            after = (batch[-1].created_at, batch[-1].id)
        shown = found[:PAGE_SIZE]
        more = len(found) > PAGE_SIZE
        rows = [_row(r) for r in shown]
    return RunsPage(rows, _encode(shown[-1]) if more and shown else None)


def run_fingerprint(engine: Engine, run_id: str) -> tuple[Any, ...]:
    """What changes whenever the run page would: status, last update, newest event."""
    with Session(engine) as session:
        run = session.execute(
            select(Run.status, Run.updated_at, Run.state_version).where(Run.id == run_id)
        ).first()
        newest = session.scalar(select(func.max(AuditEvent.id)).where(AuditEvent.run_id == run_id))
    return (*(tuple(run) if run else ()), newest)


def newest_event(engine: Engine) -> int | None:
    """The newest audit event's id (the primary key: cheap at any size)."""
    with Session(engine) as session:
        return session.scalar(select(func.max(AuditEvent.id)))


def workspace_events(
    engine: Engine, principal: Principal, name: str, limit: int = 50
) -> list[dict[str, Any]]:
    """The workspace's newest audit events, oldest of them first (its story so far)."""
    from tofuflow.server._audit import event_json

    if not principal.can(Permission.READ_RUNS, name):
        return []
    events = AuditEvent.__table__
    with Session(engine) as session:  # plain rows: ORM objects cost more than the query
        rows = session.execute(
            select(events)
            .where(*one_workspace(events.c.workspace, name))
            .order_by(events.c.workspace.desc(), events.c.id.desc())
            .limit(limit)
        ).all()
        return [event_json(row) for row in reversed(rows)]


def workspace_lock(engine: Engine, name: str) -> dict[str, Any] | None:
    """Who holds the workspace's lock, since when, for what; None when it is free."""
    with Session(engine) as session:
        ws = session.scalars(select(Workspace).where(Workspace.name == name)).first()
        if ws is None or ws.lock_id is None:
            return None
        info = ws.lock_info or {}
        return {
            "held_by": ws.locked_by, "since": _utc(ws.locked_at) if ws.locked_at else None,
            "who": info.get("Who"), "operation": info.get("Operation"),
        }  # fmt: skip


def derived_environments(
    engine: Engine, principal: Principal, source: str, limit: int = 20
) -> list[dict[str, Any]]:
    """The live environments made from workspace ``source`` that ``principal`` may read,
    soonest to expire first (at most ``limit``)."""
    query = (
        select(Environment)
        .where(Environment.source_workspace == source, Environment.status != "destroyed")
        .order_by(Environment.expires_at, Environment.name)
        .limit(limit * 4)  # a margin for those the reader may not see
    )
    now = dt.datetime.now(dt.UTC)
    with Session(engine) as session:
        rows = [env for env in session.scalars(query)
                if principal.can(Permission.READ_RUNS, env.name)][:limit]  # fmt: skip
        return [
            {"name": env.name, "owner": env.owner, "status": env.status,
             "expires_at": _utc(env.expires_at),
             "ttl_left_seconds": max(int((_aware(env.expires_at) - now).total_seconds()), 0)}
            for env in rows
        ]  # fmt: skip


def _aware(when: dt.datetime) -> dt.datetime:
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _row(run: Run) -> dict[str, Any]:
    summary = run.summary or {}
    return {
        "id": run.id, "workspace": run.workspace, "status": run.status,
        "requester": run.requester, "commit": run.commit,
        "created_at": _utc(run.created_at), "summary": summary.get("text") or "",
    }  # fmt: skip


def _context_is(fields: tuple[str, ...], value: str) -> Any:
    """One of the run context's ``fields`` holds ``value`` (JSON ->> on PostgreSQL,
    json_extract on SQLite)."""
    return or_(*(Run.context[name].as_string() == value for name in fields))


def _older_than(created_at: dt.datetime, run_id: str) -> Any:
    return or_(Run.created_at < created_at, and_(Run.created_at == created_at, Run.id < run_id))


def _encode(run: Run) -> str:
    # The stored value as it is (naive UTC on SQLite, aware on PostgreSQL, microseconds
    # kept), so the next page compares like with like.
    raw = f"{run.created_at.isoformat()}|{run.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[dt.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, run_id = raw.split("|", 1)
        parsed = dt.datetime.fromisoformat(moment)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise BadRequestError("invalid cursor: start again from the first page") from exc
    return parsed, run_id


def _utc(moment: dt.datetime) -> str:
    return _aware(moment).astimezone(dt.UTC).isoformat(timespec="seconds")
