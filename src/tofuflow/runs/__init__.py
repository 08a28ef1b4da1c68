"""The run lifecycle on the runner side: plan, submit, apply from anywhere."""

from tofuflow.runs._artifact import config_digest
from tofuflow.runs._client import ControlPlane
from tofuflow.runs._embedded import EmbeddedControlPlane
from tofuflow.runs._rollback import apply_from_artifact, rollback_workspace
from tofuflow.runs._runner import (
    PlanOutcome,
    Runner,
    apply_run,
    plan_workspace,
    state_backend_env,
)

__all__ = [
    "ControlPlane",
    "EmbeddedControlPlane",
    "PlanOutcome",
    "Runner",
    "apply_from_artifact",
    "apply_run",
    "config_digest",
    "plan_workspace",
    "rollback_workspace",
    "state_backend_env",
]
