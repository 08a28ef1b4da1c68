"""The run lifecycle on the runner side: plan, submit, apply from anywhere.

    with connect("plan", url=server_url(project.server_url)) as client:
        outcome = plan_workspace(project.workspace("app/dev"), client, context)
    with connect("apply", url=...) as client:
        apply_run(outcome.run["id"], project.workspace("app/dev"), client)

``connect`` is the one way to reach the control plane (remote or embedded) and
``staged`` the one way to get a driver for a workspace and stage (a private working
copy, the stage's credentials, the state backend, the redactor).
"""

from tofuflow.runs._artifact import FORMAT as ARCHIVE_FORMAT
from tofuflow.runs._artifact import config_digest, restore_config, snapshot_config
from tofuflow.runs._client import ControlPlane
from tofuflow.runs._connect import (
    STAGE_ROLES,
    STAGE_TOKEN_VARIABLES,
    Stage,
    check_no_stray_token,
    connect,
    server_url,
)
from tofuflow.runs._errored import next_state_version
from tofuflow.runs._inputs import (
    Clients,
    Inputs,
    input_reference,
    read_outputs,
    resolve_inputs,
    with_inputs,
)
from tofuflow.runs._rollback import (
    CONFIG_FROM_ARTIFACT,
    apply_from_artifact,
    planned_inputs,
    rollback_workspace,
)
from tofuflow.runs._runner import (
    INTERRUPTED,
    PlanOutcome,
    apply_run,
    ignored_variable,
    interrupted_summary,
    lock_warning,
    plan_workspace,
    planned_changes,
    renewing,
)
from tofuflow.runs._staged import (
    Runner,
    Staged,
    StageName,
    issued_record,
    local_state_file,
    staged,
    state_backend_env,
)
from tofuflow.runs._workcopy import Configuration, configuration, working_copy

__all__ = [
    "ARCHIVE_FORMAT",
    "CONFIG_FROM_ARTIFACT",
    "INTERRUPTED",
    "STAGE_ROLES",
    "STAGE_TOKEN_VARIABLES",
    "Clients",
    "Configuration",
    "ControlPlane",
    "Inputs",
    "PlanOutcome",
    "Runner",
    "Stage",
    "StageName",
    "Staged",
    "apply_from_artifact",
    "apply_run",
    "check_no_stray_token",
    "config_digest",
    "configuration",
    "connect",
    "ignored_variable",
    "input_reference",
    "interrupted_summary",
    "issued_record",
    "local_state_file",
    "lock_warning",
    "next_state_version",
    "plan_workspace",
    "planned_changes",
    "planned_inputs",
    "read_outputs",
    "renewing",
    "resolve_inputs",
    "restore_config",
    "rollback_workspace",
    "server_url",
    "snapshot_config",
    "staged",
    "state_backend_env",
    "with_inputs",
    "working_copy",
]
