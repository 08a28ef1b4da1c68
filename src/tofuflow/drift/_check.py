"""Run drift checks: two read-only plans per workspace, recorded on the control plane.

    with ControlPlane(url, planner_token) as cp:
        report = check_drift([project.workspace("app/prod")], cp)
    report.exit_code          # 0 none, 2 drift, 1 error

Per workspace, with the planner's identity (the same rights as ``tofuflow plan``):

1. the lock: a workspace the control plane lists as locked is not checked (an apply may
   be writing its state); the check is recorded as an error naming the holder;
2. ``init -reconfigure``, then ``plan -refresh-only -lock=false`` (objects changed
   outside tofuflow) and ``plan -refresh=false -lock=false`` (the configuration in this
   checkout against the state), each with ``show -json`` only when it found changes;
3. ``POST /v1/workspaces/{ws}/drift``: the control plane adds the serial and the run that
   last applied the workspace, and appends ``drift.checked`` to the audit log.

No lock is ever taken (``-lock=false``; a planner may not lock anyway), so none can be left
behind, whatever happens to the binary. Plan files go to a private temporary directory
that is removed afterwards (they hold a copy of the state).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tofuflow._time import shown_time
from tofuflow.drift._report import (
    DriftReport,
    Findings,
    WorkspaceDrift,
    checkout_of,
    findings_from_plans,
    now_iso,
    outside_output,
)
from tofuflow.errors import TofuflowError
from tofuflow.identity import Credentials
from tofuflow.project import WorkspaceConfig
from tofuflow.runs import ControlPlane, Runner, issued_record, staged
from tofuflow.tofu import Tofu

__all__ = ["check_drift", "check_workspace", "drifted_resources", "locked_message"]

_LOCKED = "workspace is locked: not checked"

ContextFor = Callable[[WorkspaceConfig], Mapping[str, Any]]


def check_drift(
    workspaces: Sequence[WorkspaceConfig],
    control_plane: ControlPlane,
    runner: Runner | None = None,
    *,
    context_for: ContextFor | None = None,
) -> DriftReport:
    """Check each workspace in turn; a failure in one is reported and the rest go on."""
    runner = runner or Runner()
    started = now_iso()
    results = []
    for ws in workspaces:
        if runner.cancel_event is not None and runner.cancel_event.is_set():
            results.append(WorkspaceDrift.failed(
                ws.name, "not checked: the drift check was cancelled", checked_at=now_iso(),
                not_recorded="cancelled before this workspace was checked",
            ))  # fmt: skip
            continue
        context = context_for(ws) if context_for else _detect_context(ws)
        results.append(check_workspace(ws, control_plane, runner, context=context))
    return DriftReport(tuple(results), checked_at=started)


def check_workspace(
    workspace: WorkspaceConfig,
    control_plane: ControlPlane,
    runner: Runner | None = None,
    *,
    context: Mapping[str, Any] | None = None,
) -> WorkspaceDrift:
    """One workspace's check, recorded on the control plane. Never raises for a
    ``TofuflowError``: it becomes the check's ``error``."""
    runner = runner or Runner()
    context = dict(context) if context is not None else _detect_context(workspace)
    base = {"checked_at": now_iso(), "checkout": checkout_of(context)}
    try:
        if workspace.backend == "tofuflow" and _listed_as_locked(workspace, control_plane):
            # Recorded first: the control plane's answer says who holds the lock.
            refused = WorkspaceDrift.failed(workspace.name, _LOCKED, **base)
            recorded = _record(refused, control_plane)
            return replace(recorded, error=locked_message(workspace.name, recorded))
        findings, binary, credentials = _plans(workspace, control_plane, runner, context)
        result = WorkspaceDrift.found(
            workspace.name, findings, binary=binary, credentials=credentials, **base
        )
    except (TofuflowError, OSError) as exc:
        result = WorkspaceDrift.failed(workspace.name, str(exc), **base)
    return _record(result, control_plane)


@contextlib.contextmanager
def _planner(
    workspace: WorkspaceConfig,
    control_plane: ControlPlane,
    runner: Runner,
    context: Mapping[str, Any],
) -> Iterator[tuple[Tofu, Credentials, Path]]:
    """An initialised binary with the plan stage's identity on a private working copy, and
    a private directory for plan files (they hold a copy of the state), removed afterwards."""
    with (
        tempfile.TemporaryDirectory(prefix="tofuflow-drift-") as tmp,
        staged(workspace, "plan", control_plane, context=context, runner=runner) as st,
    ):
        st.tofu.init(reconfigure=True)
        yield st.tofu, st.credentials, Path(tmp)


def drifted_resources(
    workspace: WorkspaceConfig,
    control_plane: ControlPlane,
    runner: Runner,
    context: Mapping[str, Any],
) -> list[str]:
    """Addresses of the resources whose real objects drifted from state: one refresh-only
    plan, without the lock, nothing recorded (the Airflow drift sensor's poke)."""
    with _planner(workspace, control_plane, runner, context) as (tf, _, tmp):
        plan_file = tmp / "refresh.tfplan"
        result = tf.plan(
            out=plan_file, refresh_only=True, lock=False, var_files=workspace.var_files
        )
        if not result.has_changes:
            return []
        plan = tf.show_plan(plan_file)
    outputs = any(outside_output(oc.action) for oc in plan.output_changes.values())
    return sorted({rc.address for rc in plan.resource_drift} or ({"(outputs)"} if outputs else ()))


def _plans(
    workspace: WorkspaceConfig,
    control_plane: ControlPlane,
    runner: Runner,
    context: Mapping[str, Any],
) -> tuple[Findings, str, dict[str, Any] | None]:
    with _planner(workspace, control_plane, runner, context) as (tf, creds, tmp):
        # -lock=false: both plans only read, and a read-only identity cannot take the lock.
        refresh_file, config_file = tmp / "refresh.tfplan", tmp / "config.tfplan"
        common: dict[str, Any] = {"lock": False, "var_files": workspace.var_files}
        refreshed = tf.plan(out=refresh_file, refresh_only=True, **common)
        configured = tf.plan(out=config_file, refresh=False, **common)
        findings = findings_from_plans(
            tf.show_plan(refresh_file) if refreshed.has_changes else None,
            tf.show_plan(config_file) if configured.has_changes else None,
        )
        credentials = issued_record(creds, "plan") if creds.cloud != "none" else None
        return findings, str(tf.binary), credentials


def _listed_as_locked(workspace: WorkspaceConfig, control_plane: ControlPlane) -> bool:
    listed = control_plane.workspaces()
    return any(row.get("name") == workspace.name and row.get("locked") for row in listed)


def locked_message(workspace: str, check: WorkspaceDrift) -> str:
    """Who holds the lock, since when, and what to do about it."""
    lock = check.lock
    if not lock:
        if check.not_recorded:
            return f"workspace {workspace} is locked: not checked ({check.not_recorded})"
        return (
            f"workspace {workspace} was locked when the drift check started and has been "
            "released since: not checked. Run `tofuflow drift` again."
        )
    who = ", ".join(str(lock[k]) for k in ("who", "operation") if lock.get(k))
    held = f"{lock.get('held_by') or 'an unknown holder'}" + (f" ({who})" if who else "")
    since = shown_time(lock["since"]) if lock.get("since") else "an unknown time"
    return (
        f"workspace {workspace} is locked by {held} since {since}"
        f" (lock ID {lock.get('id')}): not checked. A drift check never waits for or breaks a "
        "lock; the lock was left as it was. Wait for the run holding it to finish "
        f"(`tofuflow runs list --workspace {workspace}`) and run `tofuflow drift` again; if "
        f"nothing holds it any more, an admin releases it: `tofuflow unlock {workspace}`."
    )


def _record(result: WorkspaceDrift, control_plane: ControlPlane) -> WorkspaceDrift:
    try:
        view = control_plane.record_drift(result.workspace, result.status, result.body())
    except TofuflowError as exc:
        return replace(result, not_recorded=f"the control plane did not record it: {exc}")
    return result.recorded(view)


def _detect_context(workspace: WorkspaceConfig) -> Mapping[str, Any]:
    from tofuflow.ci import detect_run_context

    try:
        return detect_run_context(cwd=workspace.directory).to_json()
    except TofuflowError:
        return {}
