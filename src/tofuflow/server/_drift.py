"""Drift reports: what a refresh-only check found, beside the run that last applied it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tofuflow.errors import BadRequestError, NotFoundError
from tofuflow.server import _audit
from tofuflow.server._locks import lock_view
from tofuflow.server._paging import Page, decode_cursor, fill_page, grant_filter
from tofuflow.server._state import RequestContext
from tofuflow.server.auth import Permission
from tofuflow.server.storage._db import DriftReport, Run, StateVersion, Workspace, write_session

__all__ = ["DriftService"]

STATUSES = ("drift", "none", "error")


class DriftService:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(
        self, ctx: RequestContext, workspace: str, status: str, report: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Store one check; the server adds the serial, the run that last applied it and
        the workspace's lock (holder, since when) as it is now, whatever the report says."""
        ctx.principal.require(Permission.CREATE_RUN, workspace)
        if status not in STATUSES:
            raise BadRequestError(f"status must be one of {', '.join(STATUSES)}")
        with write_session(self.engine) as session:
            ws = session.scalars(select(Workspace).where(Workspace.name == workspace)).first()
            applied = last_applied(session, workspace)
            # A planner cannot see who holds a lock anywhere else (the listing says only
            # "locked"), and a check on a locked workspace must name the holder.
            stored = {**report, "lock": lock_view(ws)}
            writer = _state_writer(session, ws, applied)
            if writer is not None:
                stored["written_by"] = writer
            row = DriftReport(
                workspace=workspace, checked_by=ctx.principal.subject, status=status,
                serial=ws.serial if ws else None, report=stored,
                last_applied_run=applied.id if applied else None,
                last_applied_commit=applied.commit if applied else None,
            )  # fmt: skip
            session.add(row)
            session.flush()
            _audit.append(
                session, ctx.actor, "drift.checked", workspace=workspace, serial=row.serial,
                outcome="ok" if status != "error" else "error",
                detail={"status": status, "report_id": row.id,
                        "last_applied_run": row.last_applied_run,
                        "resources": len(report.get("resources") or [])},
                commit=row.last_applied_commit,
            )  # fmt: skip
            return _view(row, applied)

    def latest(
        self, ctx: RequestContext, workspace: str | None, *, limit: int = 100,
        cursor: str | None = None,
    ) -> Page[dict[str, Any]]:  # fmt: skip
        """A page of the newest report of each workspace the caller may read (or of one),
        by workspace name."""
        newest = select(DriftReport.workspace, func.max(DriftReport.id).label("id"))
        if workspace:
            newest = newest.where(DriftReport.workspace == workspace)
        narrow = grant_filter(DriftReport.workspace, ctx.principal)
        if narrow is not None:
            newest = newest.where(narrow)
        newest = newest.group_by(DriftReport.workspace).order_by(DriftReport.workspace)

        def fetch(after: list[Any] | None, n: int) -> list[Any]:
            query = newest if after is None else newest.where(DriftReport.workspace > after[0])
            return list(session.execute(query.limit(n)))

        with Session(self.engine) as session:
            page = fill_page(
                fetch, lambda row: ctx.principal.can(Permission.READ_RUNS, row.workspace),
                lambda row: [row.workspace], kind="drift", limit=limit,
                after=decode_cursor(cursor, "drift", (str,)),
            )  # fmt: skip
            ids = [row.id for row in page.items]
            rows = session.scalars(
                select(DriftReport).where(DriftReport.id.in_(ids)).order_by(DriftReport.workspace)
            ).all()
            run_ids = {row.last_applied_run for row in rows if row.last_applied_run}
            applied = {
                run.id: run for run in session.scalars(select(Run).where(Run.id.in_(run_ids)))
            } if run_ids else {}  # fmt: skip
            views = [_view(row, applied.get(row.last_applied_run or "")) for row in rows]
        if workspace and not views:
            ctx.principal.require(Permission.READ_RUNS, workspace)
            raise NotFoundError(f"workspace {workspace} has no drift report yet: run "
                                "`tofuflow drift` first")  # fmt: skip
        return Page(views, page.next_cursor)


def last_applied(session: Session, workspace: str) -> Run | None:
    query = (
        select(Run)
        .where(Run.workspace == workspace, Run.status == "applied")
        .order_by(Run.updated_at.desc())
        .limit(1)
    )
    return session.scalars(query).first()


def _state_writer(
    session: Session, ws: Workspace | None, applied: Run | None
) -> dict[str, Any] | None:
    """The run that wrote the current state version, when that is not the last applied
    run: an apply that failed or was cancelled half-way saved what it had applied."""
    if ws is None or ws.current_version is None:
        return None
    query = select(StateVersion.run_id).where(
        StateVersion.workspace_id == ws.id, StateVersion.version == ws.current_version
    )
    run_id = session.scalars(query).first()
    if run_id is None or (applied is not None and run_id == applied.id):
        return None
    run = session.get(Run, run_id)
    return {"run": run_id, "status": run.status if run is not None else None}


def _view(row: DriftReport, applied: Run | None) -> dict[str, Any]:
    # The run context is a RunContext (ci/_context.py): pipeline_name, run_id, run_url...
    context = (applied.context or {}) if applied else {}
    result = (applied.result or {}) if applied else {}
    report = row.report or {}
    return {
        "id": row.id, "workspace": row.workspace, "status": row.status,
        "checked_at": row.checked_at.isoformat(), "checked_by": row.checked_by,
        "serial": row.serial,
        "lock": report.get("lock"),
        "written_by": report.get("written_by"),
        "last_applied": None if applied is None else {
            "run": applied.id, "commit": applied.commit,
            "applied_at": applied.updated_at.isoformat(), "requester": applied.requester,
            "requester_name": applied.requester_name,
            "pipeline": context.get("pipeline_name") or context.get("pipeline_id")
            or context.get("dag_id"),
            "build": context.get("run_id") or context.get("run_number"),
            "build_url": context.get("run_url"),
            "branch": context.get("branch"),
            "serial": result.get("serial"), "state_version": applied.state_version,
        },
        "report": report,
    }  # fmt: skip
