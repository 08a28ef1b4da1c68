"""The run lifecycle as the operators use it: plan (with targets), read outputs, summaries.

Everything goes through ``tofuflow.runs`` (``plan_workspace``, ``apply_run``); only what
it lacks is here: ``plan_workspace`` takes no ``targets`` yet, so a targeted plan repeats
its few steps with the runner's own stage helpers (see ``_targeted_plan``).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping, Sequence
from typing import Any

from tofuflow.project import WorkspaceConfig
from tofuflow.runs import ControlPlane, PlanOutcome, Runner, plan_workspace
from tofuflow.tofu import StateOutput, Tofu

__all__ = ["WAITING", "plan_run", "read_outputs", "run_summary"]

# Statuses in which a run is still waiting for the policy check or a person.
WAITING = frozenset({"planning", "needs_approval"})
_OVERRIDE_FILE = "tofuflow_backend_override.tf"
_OVERRIDE = 'terraform {\n  backend "http" {}\n}\n'


def plan_run(
    workspace: WorkspaceConfig,
    control_plane: ControlPlane,
    context: Mapping[str, Any],
    runner: Runner,
    *,
    destroy: bool = False,
    targets: Sequence[str] = (),
) -> PlanOutcome:
    """``plan_workspace``, with ``-target`` addresses when given."""
    if not targets:
        return plan_workspace(workspace, control_plane, context, runner, destroy=destroy)
    if "targets" in inspect.signature(plan_workspace).parameters:  # once the runner has it
        return plan_workspace(  # type: ignore[call-arg,unused-ignore]
            workspace, control_plane, context, runner, destroy=destroy, targets=list(targets)
        )
    return _targeted_plan(workspace, control_plane, context, runner, destroy, targets)


def _targeted_plan(
    workspace: WorkspaceConfig,
    control_plane: ControlPlane,
    context: Mapping[str, Any],
    runner: Runner,
    destroy: bool,
    targets: Sequence[str],
) -> PlanOutcome:
    """``plan_workspace`` step by step, adding ``-target``. Remove once the runner takes
    ``targets=`` (the same steps, the same identity rules, the same audit trail)."""
    from tofuflow.runs._artifact import PLAN_FILE, config_digest, pack
    from tofuflow.runs._runner import _quietly, _stage, _tofu

    directory = workspace.directory
    run = control_plane.create_run(
        workspace.name, config_digest(directory), {**context, "tags": list(workspace.tags)}
    )
    try:
        with _stage(workspace, "plan", run["id"], context, control_plane) as (creds, redactor):
            tf = _tofu(workspace, control_plane, control_plane.token, runner, creds, redactor)
            tf.init(reconfigure=True)
            tf.plan(
                out=PLAN_FILE, lock=False, destroy=destroy, var_files=workspace.var_files,
                targets=list(targets),
            )  # fmt: skip
            plan = tf.show_plan(PLAN_FILE)
        control_plane.upload_artifact(run["id"], pack(directory))
    except BaseException as exc:
        _quietly(control_plane.cancel, run["id"], f"plan failed: {exc}"[:500])
        raise
    decided = control_plane.upload_plan(run["id"], json.dumps(plan.raw).encode())
    return PlanOutcome(decided, plan)


def read_outputs(
    workspace: WorkspaceConfig, control_plane: ControlPlane, runner: Runner
) -> dict[str, StateOutput]:
    """The workspace's root outputs from its current state (``output -json``); sensitive
    values are registered with the driver's redactor as they are read."""
    env: dict[str, str] = {}
    if workspace.backend == "tofuflow":
        (workspace.directory / _OVERRIDE_FILE).write_text(_OVERRIDE)
        address = control_plane.state_url(workspace.name)
        env = {
            "TF_HTTP_ADDRESS": address,
            "TF_HTTP_LOCK_ADDRESS": f"{address}/lock",
            "TF_HTTP_UNLOCK_ADDRESS": f"{address}/lock",
            "TF_HTTP_USERNAME": "tofuflow",
            "TF_HTTP_PASSWORD": control_plane.token,
        }
    tf = Tofu(
        workspace.directory, binary=runner.binary, env=env, secrets=[control_plane.token],
        on_output=runner.on_output, cancel_event=runner.cancel_event,
    )  # fmt: skip
    tf.init(reconfigure=True)
    return tf.output()


def refresh_only(
    workspace: WorkspaceConfig, control_plane: ControlPlane, runner: Runner
) -> list[str]:
    """Addresses of the resources whose real objects drifted from state (a refresh-only
    plan, without taking the lock: nothing is written)."""
    env: dict[str, str] = {}
    if workspace.backend == "tofuflow":
        (workspace.directory / _OVERRIDE_FILE).write_text(_OVERRIDE)
        address = control_plane.state_url(workspace.name)
        env = {
            "TF_HTTP_ADDRESS": address,
            "TF_HTTP_USERNAME": "tofuflow",
            "TF_HTTP_PASSWORD": control_plane.token,
        }
    tf = Tofu(
        workspace.directory, binary=runner.binary, env=env, variables=workspace.variables,
        secrets=[control_plane.token], on_output=runner.on_output,
        cancel_event=runner.cancel_event,
    )  # fmt: skip
    tf.init(reconfigure=True)
    result = tf.plan(
        out="tofuflow-drift.tfplan", refresh_only=True, lock=False, var_files=workspace.var_files
    )
    if not result.has_changes:
        return []
    plan = tf.show_plan("tofuflow-drift.tfplan")
    return sorted({rc.address for rc in plan.resource_drift} or {"(outputs)"})


def run_summary(run: Mapping[str, Any]) -> dict[str, Any]:
    """What goes to XCom about a run: ids, status and counts — never a value."""
    summary = run.get("summary") or {}
    result = run.get("result") or {}
    decision = run.get("decision") or {}
    return {
        "run_id": run["id"],
        "workspace": run["workspace"],
        "status": run["status"],
        "has_changes": bool(run.get("has_changes")),
        "add": int(summary.get("add", 0)),
        "change": int(summary.get("change", 0)),
        "destroy": int(summary.get("destroy", 0)),
        "replace": int(summary.get("replace", 0)),
        "summary": summary.get("text"),
        "decision": decision.get("outcome"),
        "state_version": run.get("state_version"),
        "serial": result.get("serial"),
    }
