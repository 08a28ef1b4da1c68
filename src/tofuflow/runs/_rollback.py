"""Rollback: re-plan the configuration an earlier run applied, through the normal path.

    outcome = rollback_workspace(ws, "3f2a...", client, context)   # a new run: policy decides
    apply_from_artifact(outcome.run["id"], ws, client)             # once approved

Not a state overwrite: the configuration snapshot stored in the earlier run's artifact is
planned, with the variables and var files that run was planned with (a run-time var file,
given by an absolute path, is read afresh), against today's state, so the binary works
out what to re-create and what to remove, and the policy check and approvals apply as for
any change. (Restoring a state version, `POST /v1/workspaces/{ws}/rollback`, stays the
admin-only break-glass path.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tofuflow.errors import ConflictError, ForbiddenError
from tofuflow.project import WorkspaceConfig
from tofuflow.runs._artifact import restore_config, restore_inputs
from tofuflow.runs._client import ControlPlane
from tofuflow.runs._runner import PlanOutcome, apply_run, plan_workspace
from tofuflow.runs._staged import Runner

__all__ = ["CONFIG_FROM_ARTIFACT", "apply_from_artifact", "planned_inputs", "rollback_workspace"]

# A run whose configuration came from an artifact (not a checkout) says so in its context.
CONFIG_FROM_ARTIFACT = "artifact"


def rollback_workspace(
    workspace: WorkspaceConfig,
    to_run: str,
    control_plane: ControlPlane,
    context: Mapping[str, Any],
    runner: Runner | None = None,
) -> PlanOutcome:
    """Plan ``workspace`` back to the configuration run ``to_run`` applied."""
    try:
        target = control_plane.run(to_run)
    except ForbiddenError as err:  # most often another workspace's run: a wrong id
        raise ConflictError(
            f"run {to_run} is not a run of {workspace.name} that this identity may read "
            f"({err}): roll back to a run of {workspace.name} (`tofuflow runs list "
            f"--workspace {workspace.name}` shows them)"
        ) from err
    if target["workspace"] != workspace.name:
        raise ConflictError(
            f"run {to_run} is for workspace {target['workspace']}, not {workspace.name}"
        )
    if target["status"] != "applied":
        raise ConflictError(
            f"run {to_run} is {target['status']}: roll back to a run that was applied "
            f"(`tofuflow runs list --workspace {workspace.name}` shows them)"
        )
    data = _artifact(control_plane, target)
    with tempfile.TemporaryDirectory(prefix="tofuflow-rollback-") as tmp:
        snapshot = _as_planned(workspace, data, Path(tmp))
        ctx = {
            **context,
            "operation": "rollback",
            "rollback_to": to_run,
            "rolled_back_from_commit": context.get("commit_sha") or context.get("commit"),
            "commit_sha": target.get("commit"),
            "config_source": CONFIG_FROM_ARTIFACT,
        }
        return plan_workspace(snapshot, control_plane, ctx, runner)


def apply_from_artifact(
    run_id: str,
    workspace: WorkspaceConfig,
    control_plane: ControlPlane,
    runner: Runner | None = None,
) -> Mapping[str, Any]:
    """Apply a run whose configuration lives in its own artifact (a rollback)."""
    run = control_plane.run(run_id)
    data = _artifact(control_plane, run)
    with tempfile.TemporaryDirectory(prefix="tofuflow-apply-") as tmp:
        # The inputs too: today's variables would make the binary warn that it ignores
        # them (a saved plan keeps its own), which reads as if the rollback's were dropped.
        return apply_run(run_id, _as_planned(workspace, data, Path(tmp)), control_plane, runner)


@contextmanager
def planned_inputs(
    workspace: WorkspaceConfig, control_plane: ControlPlane, run_id: str
) -> Iterator[WorkspaceConfig]:
    """``workspace`` (today's configuration) with the variables and var files run
    ``run_id`` was planned with, restored for the block: to plan a stale run again from
    a task that was given the run, not its inputs (an older artifact without inputs
    keeps ``workspace``'s)."""
    data = _artifact(control_plane, control_plane.run(run_id))
    with tempfile.TemporaryDirectory(prefix="tofuflow-replan-") as tmp:
        yield _with_inputs_of(workspace, data, Path(tmp))


def _as_planned(workspace: WorkspaceConfig, data: bytes, tmp: Path) -> WorkspaceConfig:
    """``workspace`` with the configuration, variables and var files an artifact holds,
    restored under ``tmp`` (an older artifact without inputs keeps today's)."""
    snapshot = dataclasses.replace(workspace, directory=restore_config(data, tmp / "config"))
    return _with_inputs_of(snapshot, data, tmp / "var-files")


def _with_inputs_of(workspace: WorkspaceConfig, data: bytes, tmp: Path) -> WorkspaceConfig:
    """``workspace`` with the variables and var files (restored under ``tmp``) the
    artifact ``data`` was planned with; as it is for an older artifact without them."""
    planned = restore_inputs(data, tmp)
    if planned is None:
        return workspace
    return dataclasses.replace(
        workspace, variables=planned.variables, var_files=planned.var_files,
        run_time_var_files=planned.run_time_var_files,
    )  # fmt: skip


def _artifact(control_plane: ControlPlane, run: Mapping[str, Any]) -> bytes:
    data, _ = control_plane.artifact(run["id"])
    if hashlib.sha256(data).hexdigest() != run.get("artifact_sha256"):
        raise ConflictError(f"the artifact of run {run['id']} was altered: refusing to use it")
    return data
