"""The run lifecycle as the operators use it: plan, read outputs, summaries.

Everything goes through ``tofuflow.runs`` (``plan_workspace``, ``apply_run``,
``staged``); what is here only adapts it to the operators.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tofuflow.project import WorkspaceConfig
from tofuflow.runs import ControlPlane, PlanOutcome, Runner, plan_workspace, staged
from tofuflow.tofu import StateOutput

__all__ = ["WAITING", "plan_run", "read_outputs", "run_summary"]

# Statuses in which a run is still waiting for the policy check or a person.
WAITING = frozenset({"planning", "needs_approval"})


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
    return plan_workspace(
        workspace, control_plane, context, runner, destroy=destroy, targets=targets
    )


def read_outputs(
    workspace: WorkspaceConfig, control_plane: ControlPlane, runner: Runner
) -> dict[str, StateOutput]:
    """The workspace's root outputs from its current state (``output -json``); sensitive
    values are registered with the driver's redactor as they are read."""
    with staged(workspace, "read", control_plane, runner=runner) as st:
        st.tofu.init(reconfigure=True)
        return st.tofu.output()


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
