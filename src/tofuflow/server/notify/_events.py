"""Which audit events are worth a notification, and the outbox row each one becomes.

``from_audit(session, event)`` runs inside ``_audit.append``: the outbox row is written in
the same transaction as the change and its audit event, so it commits (or rolls back)
with them — nothing is lost between the commit and the send, and nothing is sent for a
change that did not happen. Events found by a scan (an environment about to expire, a
lock held too long, a broken audit chain) go through ``enqueue`` with a ``dedup_key``.

A payload names things and counts them; it never carries a state value, a plan
attribute, a variable or a token (see ``_run``: counts, never the plan's text).
"""

from __future__ import annotations

import threading
import uuid
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.orm import Session

from tofuflow.server.storage._db import (
    AuditEvent,
    DriftReport,
    Environment,
    NotificationEvent,
    Run,
    utcnow,
)

__all__ = [
    "EVENTS",
    "SCHEMA",
    "audit_verify_failed",
    "disable",
    "enable",
    "enabled",
    "enqueue",
    "from_audit",
    "wakeup",
]

SCHEMA = "tofuflow.notification/v1"

EVENTS = (
    "run.needs_approval",
    "run.approved",
    "run.rejected",
    "run.applied",
    "run.failed",
    "run.cancelled",
    "run.denied",
    "drift.found",
    "drift.cleared",
    "environment.expiring",
    "environment.destroyed",
    "environment.orphaned",
    "audit.verify_failed",
    "lock.held",
)

# Databases (engines) whose server has destinations: only they get outbox rows, so a
# plane without notifications (every embedded one) writes nothing extra.
_ENABLED: weakref.WeakSet[Any] = weakref.WeakSet()
# Set after a commit that wrote an outbox row: the sender wakes at once instead of polling.
wakeup = threading.Event()


def enable(engine: Any) -> None:
    _ENABLED.add(engine)


def disable(engine: Any) -> None:
    _ENABLED.discard(engine)


def enabled(session: Session) -> bool:
    return session.get_bind() in _ENABLED


def enqueue(
    session: Session,
    event: str,
    workspace: str | None,
    payload: Mapping[str, Any],
    *,
    dedup_key: str | None = None,
) -> NotificationEvent | None:
    """Add one outbox row in the caller's transaction (None when notifications are off)."""
    if not enabled(session):
        return None
    now = utcnow()
    row = NotificationEvent(
        uid=uuid.uuid4().hex, created_at=now, event=event, workspace=workspace,
        dedup_key=dedup_key, fanned_out=False,
        payload={"schema": SCHEMA, "event": event, "occurred_at": _iso(now),
                 "workspace": workspace, **payload},
    )  # fmt: skip
    session.add(row)
    if not sa_event.contains(session, "after_commit", _wake):
        sa_event.listen(session, "after_commit", _wake, once=True)
    return row


def _wake(_session: Session) -> None:
    wakeup.set()


def from_audit(session: Session, audit: AuditEvent) -> None:
    """The notification an audit event calls for, if any, in the same transaction."""
    if not enabled(session):
        return
    build = _BUILDERS.get(audit.action.split(".", 1)[0])
    found = build(session, audit) if build else None
    if found is not None:
        name, payload = found
        enqueue(session, name, audit.workspace, {"actor": audit.actor, **payload})


Found = tuple[str, dict[str, Any]] | None

_RUN_EVENTS = {
    "run.approved": "run.approved",
    "run.applied": "run.applied",
    "run.failed": "run.failed",
    "run.runner_lost": "run.failed",
    "run.ended": "run.failed",
    "run.cancelled": "run.cancelled",
    "run.stale": "run.cancelled",
}


def _run_event(session: Session, audit: AuditEvent) -> Found:
    detail = audit.detail or {}
    name: str | None
    if audit.action == "run.policy_decided":
        name = {"needs_approval": "run.needs_approval", "denied": "run.denied"}.get(
            str(detail.get("status"))
        )
    else:
        name = _RUN_EVENTS.get(audit.action)
    if name is None or audit.run_id is None:
        return None
    run = session.get(Run, audit.run_id)
    if run is None:
        return None
    waited = name == "run.cancelled" and detail.get("was") == "needs_approval"
    if waited and audit.actor != run.requester:
        name = "run.rejected"  # someone other than the requester turned it down
    return name, {"run": _run(run, detail)}


def _run(run: Run, detail: Mapping[str, Any]) -> dict[str, Any]:
    summary, decision = run.summary or {}, run.decision or {}
    context = run.context or {}
    changes = {k: int(summary.get(k) or 0) for k in ("add", "change", "destroy", "replace")}
    reason = detail.get("reason")
    return {
        "id": run.id, "status": run.status, "requester": run.requester,
        "requester_name": run.requester_name, "commit": run.commit,
        "changes": changes if run.summary is not None else None,
        "policy": None if not decision else {
            "outcome": decision.get("outcome"),
            "denies": len(decision.get("denies") or []),
            "warnings": len(decision.get("warnings") or []),
            "approval_reasons": len(decision.get("approval_reasons") or []),
        },
        "reason": str(reason)[:300] if isinstance(reason, str) else None,
        "pipeline": _pipeline(context),
    }  # fmt: skip


def _pipeline(context: Mapping[str, Any]) -> dict[str, Any]:
    """The CI run that asked (the run context's own words: self-reported)."""

    def text(*keys: str) -> str | None:
        for key in keys:
            value = context.get(key)
            if value not in (None, ""):
                return str(value)[:300]
        return None

    return {
        "system": text("ci_system"), "name": text("pipeline_name", "pipeline_id", "dag_id"),
        "run": text("run_number", "run_id"), "url": text("run_url"), "branch": text("branch"),
        "pull_request": text("pull_request_id"),
    }  # fmt: skip


def _environment_event(session: Session, audit: AuditEvent) -> Found:
    name = {"environment.destroyed": "environment.destroyed",
            "environment.orphaned": "environment.orphaned"}.get(audit.action)  # fmt: skip
    if name is None or audit.workspace is None:
        return None
    env = session.get(Environment, audit.workspace)
    if env is None:
        return None
    return name, {"environment": environment_view(env)}


def environment_view(env: Environment, lead_seconds: int | None = None) -> dict[str, Any]:
    view = {
        "name": env.name, "source_workspace": env.source_workspace, "owner": env.owner,
        "status": env.status, "expires_at": _iso(env.expires_at), "attempts": env.attempts,
        "last_run": env.last_run_id,
    }  # fmt: skip
    if lead_seconds is not None:
        view["expires_in_seconds"] = lead_seconds
    return view


def _drift_event(session: Session, audit: AuditEvent) -> Found:
    """Drift found on the way into drift, cleared on the way out (not on every check)."""
    detail = audit.detail or {}
    status, report_id = detail.get("status"), detail.get("report_id")
    if audit.action != "drift.checked" or status not in {"drift", "none"}:
        return None
    before = session.scalars(
        select(DriftReport.status)
        .where(DriftReport.workspace == audit.workspace, DriftReport.id < int(report_id or 0),
               DriftReport.status != "error")
        .order_by(DriftReport.id.desc())
        .limit(1)
    ).first()  # fmt: skip
    if status == "drift" and before != "drift":
        name = "drift.found"
    elif status == "none" and before == "drift":
        name = "drift.cleared"
    else:
        return None
    return name, {"drift": {"report_id": report_id, "resources": detail.get("resources"),
                            "last_applied_run": detail.get("last_applied_run")}}  # fmt: skip


_BUILDERS: dict[str, Callable[[Session, AuditEvent], Found]] = {
    "run": _run_event,
    "environment": _environment_event,
    "drift": _drift_event,
}


def _iso(moment: Any) -> str | None:
    import datetime as dt

    if moment is None:
        return None
    aware = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    return str(aware.astimezone(dt.UTC).isoformat())


def audit_verify_failed(engine: Any, first_bad_id: int | None, reason: str) -> None:
    """A verification found the audit chain broken: tell someone, once per break."""
    from sqlalchemy.exc import IntegrityError

    from tofuflow.server.storage._db import write_session

    if engine not in _ENABLED:
        return
    key = f"audit:{first_bad_id}:{reason}"[:255]
    try:
        with write_session(engine) as session:
            enqueue(session, "audit.verify_failed", None,
                    {"actor": "tofuflow:audit",
                     "audit": {"first_bad_id": first_bad_id, "reason": reason}},
                    dedup_key=key)  # fmt: skip
    except IntegrityError:
        pass  # this break was reported already
