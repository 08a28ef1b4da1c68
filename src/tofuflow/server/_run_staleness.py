"""What makes a run stale without its own doing: an apply session's lease lapsing (the
runner is lost — the run fails and the lock its session holds is released, audited),
and another run's apply changing the state it was planned against (superseded)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tofuflow.server import _audit
from tofuflow.server._run_rules import _lapsed
from tofuflow.server.storage._db import Run, Workspace, utcnow

__all__ = ["Audit", "lose_runner", "release_lost_runners", "supersede_stale"]

# (run, action, detail): append an audit event for ``run`` as the caller.
Audit = Callable[[Run, str, dict[str, Any]], None]


def release_lost_runners(session: Session, workspace: str | None) -> list[str]:
    """Fail every applying run (of ``workspace``, or all) whose lease lapsed."""
    query = select(Run).where(Run.status == "applying", Run.lease_expires_at.is_not(None))
    if workspace is not None:
        query = query.where(Run.workspace == workspace)
    lost = [
        r for r in session.scalars(query.with_for_update()).all() if _lapsed(r.lease_expires_at)
    ]
    for run in lost:
        lose_runner(session, run)
    return [run.id for run in lost]


def lose_runner(session: Session, run: Run) -> None:
    """``run``'s runner is gone: failed, its session dead, its session's lock released,
    audited by ``tofuflow:lease``."""
    lapsed = run.lease_expires_at.isoformat() if run.lease_expires_at else "-"
    run.status, run.updated_at = "failed", utcnow()
    run.result = {"reason": f"runner lost: its apply session's lease lapsed at {lapsed}",
                  "runner_lost": True}  # fmt: skip
    run.session_hash = run.session_expires_at = run.lease_expires_at = None
    actor = _audit.Actor("tofuflow:lease", {}, None)
    _audit.append(
        session, actor, "run.runner_lost", workspace=run.workspace, serial=run.base_serial,
        detail={"status": "failed", **run.result}, run_id=run.id, commit=run.commit,
    )  # fmt: skip
    ws = session.scalars(
        select(Workspace).where(Workspace.name == run.workspace).with_for_update()
    ).first()
    if ws is not None and ws.locked_by == f"run:{run.id}":
        _audit.append(
            session, actor, "state.force_unlock", workspace=run.workspace,
            serial=ws.serial, detail={"lock_id": ws.lock_id, "held_by": ws.locked_by,
                                      "reason": "runner lost"},
        )  # fmt: skip
        ws.lock_id = ws.lock_info = ws.locked_by = ws.locked_at = None
    run.state_version = ws.current_version if ws else None


def supersede_stale(session: Session, newer: Run, serial: int | None, audit: Audit) -> None:
    """Once ``newer`` has changed the workspace's state (now at ``serial``), the runs still
    waiting to be approved or applied were planned against a state that is gone: they are
    marked superseded at once, so nobody approves or applies a dead plan. (A newer plan
    alone supersedes nothing: a pull request's speculative plan must not cancel main's.)"""
    older = session.scalars(
        select(Run)
        .where(
            Run.workspace == newer.workspace,
            Run.id != newer.id,
            Run.status.in_(("needs_approval", "approved")),
        )
        .with_for_update()
    ).all()
    for run in older:
        if run.base_serial == serial:
            continue  # planned against the state as it is (an apply that changed nothing)
        run.status = "superseded"
        run.result = {"reason": "superseded", "by": newer.id,
                      "planned_serial": run.base_serial, "current_serial": serial}  # fmt: skip
        run.updated_at = utcnow()
        audit(run, "run.superseded", run.result)
