"""The runner side of a run: plan (read-only) and apply (an apply session), anywhere.

Plan and apply may run on different machines and in different directories: the apply
side needs only the run id, a checkout of the same configuration, and the artifact.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tofuflow.errors import ConflictError, TofuError
from tofuflow.project import WorkspaceConfig
from tofuflow.runs._artifact import BACKEND_OVERRIDE, PLAN_FILE, config_digest, pack, unpack
from tofuflow.runs._client import ControlPlane
from tofuflow.tofu import Plan, Tofu
from tofuflow.tofu._process import EventCallback, OutputCallback

__all__ = ["PlanOutcome", "Runner", "apply_run", "plan_workspace"]

EXIT_NO_CHANGES, EXIT_ERROR, EXIT_CHANGES, EXIT_DENIED = 0, 1, 2, 3
_OVERRIDE = 'terraform {\n  backend "http" {}\n}\n'


@dataclass
class Runner:
    """How to run the binary: callbacks and cancellation shared by plan and apply."""

    on_output: OutputCallback | None = None
    on_event: EventCallback | None = None
    cancel_event: threading.Event | None = None
    binary: Any = None


@dataclass(frozen=True)
class PlanOutcome:
    run: Mapping[str, Any]
    plan: Plan

    @property
    def exit_code(self) -> int:
        """0 no changes, 2 changes (approved or awaiting approval), 3 denied by policy."""
        if self.run["status"] == "denied":
            return EXIT_DENIED
        return EXIT_CHANGES if self.plan.has_changes else EXIT_NO_CHANGES


def plan_workspace(
    workspace: WorkspaceConfig,
    control_plane: ControlPlane,
    context: Mapping[str, Any],
    runner: Runner | None = None,
    *,
    destroy: bool = False,
) -> PlanOutcome:
    """Plan with the planner's read-only identity and submit it for the policy check."""
    runner = runner or Runner()
    directory = workspace.directory
    run = control_plane.create_run(
        workspace.name, config_digest(directory), {**context, "tags": list(workspace.tags)}
    )
    tf = _tofu(workspace, control_plane, control_plane.token, runner)
    tf.init(reconfigure=True)
    # -lock=false: a plan only reads, and a read-only identity cannot take the lock.
    tf.plan(out=PLAN_FILE, lock=False, destroy=destroy, var_files=workspace.var_files)
    plan = tf.show_plan(PLAN_FILE)
    control_plane.upload_artifact(run["id"], pack(directory))
    decided = control_plane.upload_plan(run["id"], json.dumps(plan.raw).encode())
    return PlanOutcome(decided, plan)


def apply_run(
    run_id: str,
    workspace: WorkspaceConfig,
    control_plane: ControlPlane,
    runner: Runner | None = None,
) -> Mapping[str, Any]:
    """Apply an approved run from this checkout; refuses changed config or a bad artifact."""
    runner = runner or Runner()
    run = control_plane.run(run_id)
    if run["workspace"] != workspace.name:
        raise ConflictError(
            f"run {run_id} is for workspace {run['workspace']}, not {workspace.name}"
        )
    directory = workspace.directory
    if config_digest(directory) != run["config_digest"]:
        raise ConflictError(
            f"the configuration in {directory} differs from what run {run_id} planned: "
            "check out the planned commit "
            f"({run.get('commit') or 'see `tofuflow runs show`'}), or plan again"
        )
    data, _ = control_plane.artifact(run_id)
    if hashlib.sha256(data).hexdigest() != run["artifact_sha256"]:
        raise ConflictError(f"the artifact of run {run_id} was altered: refusing to apply it")
    unpack(data, directory)
    session = control_plane.open_session(run_id)
    with ControlPlane(control_plane.url, session["session_token"]) as applying:
        tf = _tofu(workspace, applying, applying.token, runner)
        try:
            tf.init(reconfigure=True)
            result = tf.apply(PLAN_FILE)
        except TofuError as exc:
            applying.finish(run_id, "failed", {"error": str(exc)[:2000]})
            raise
        summary = dict(result.change_summary or {})
        return applying.finish(run_id, "applied", {"changes": summary})


def _tofu(
    workspace: WorkspaceConfig, control_plane: ControlPlane, token: str, runner: Runner
) -> Tofu:
    env: dict[str, str] = {}
    if workspace.backend == "tofuflow":
        (workspace.directory / BACKEND_OVERRIDE).write_text(_OVERRIDE)
        address = control_plane.state_url(workspace.name)
        # Everything through the environment: nothing lands in argv or the plan file.
        env = {
            "TF_HTTP_ADDRESS": address,
            "TF_HTTP_LOCK_ADDRESS": f"{address}/lock",
            "TF_HTTP_UNLOCK_ADDRESS": f"{address}/lock",
            "TF_HTTP_USERNAME": "tofuflow",
            "TF_HTTP_PASSWORD": token,
        }
    return Tofu(
        workspace.directory,
        binary=runner.binary,
        env=env,
        variables=workspace.variables,
        secrets=[token],
        on_output=runner.on_output,
        on_event=runner.on_event,
        cancel_event=runner.cancel_event,
    )
