"""The Airflow provider: plan, approve, apply, destroy and outputs as Airflow 3 tasks.

    from tofuflow.airflow import TofuflowPlanOperator, TofuflowApplyOperator

    plan = TofuflowPlanOperator(task_id="plan", workspace="app/dev")
    apply = TofuflowApplyOperator(task_id="apply", workspace="app/dev",
                                  run_id=plan.output["run_id"])
    stacks = stack_task_group("tofuflow.toml", "apply")   # every stack, in depends_on order

Airflow finds the provider through the ``apache_airflow_provider`` entry point, which
calls :func:`get_provider_info`; importing this package imports nothing from Airflow
(the classes below load on first use). Guide: docs/airflow.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tofuflow._lazy import lazy_exports

if TYPE_CHECKING:
    from tofuflow.airflow.envs import (
        EphemeralEnvironment,
        environment_name,
        ephemeral_environment,
    )
    from tofuflow.airflow.hooks import ConnectionSettings, TofuflowHook
    from tofuflow.airflow.operators import (
        TofuflowApplyOperator,
        TofuflowDestroyOperator,
        TofuflowOutputsOperator,
        TofuflowPlanOperator,
    )
    from tofuflow.airflow.sensors import TofuflowDriftSensor
    from tofuflow.airflow.stacks import stack_task_group
    from tofuflow.airflow.triggers import TofuflowRunTrigger

CONN_TYPE = "tofuflow"
DEFAULT_CONN_ID = "tofuflow_default"
_INTEGRATION = "tofuflow"

_EXPORTS = {
    "ConnectionSettings": "tofuflow.airflow.hooks",
    "EphemeralEnvironment": "tofuflow.airflow.envs",
    "TofuflowHook": "tofuflow.airflow.hooks",
    "TofuflowApplyOperator": "tofuflow.airflow.operators",
    "TofuflowDestroyOperator": "tofuflow.airflow.operators",
    "TofuflowDriftSensor": "tofuflow.airflow.sensors",
    "TofuflowOutputsOperator": "tofuflow.airflow.operators",
    "TofuflowPlanOperator": "tofuflow.airflow.operators",
    "TofuflowRunTrigger": "tofuflow.airflow.triggers",
    "environment_name": "tofuflow.airflow.envs",
    "ephemeral_environment": "tofuflow.airflow.envs",
    "stack_task_group": "tofuflow.airflow.stacks",
}
__all__ = [
    "CONN_TYPE",
    "DEFAULT_CONN_ID",
    "ConnectionSettings",
    "EphemeralEnvironment",
    "TofuflowApplyOperator",
    "TofuflowDestroyOperator",
    "TofuflowDriftSensor",
    "TofuflowHook",
    "TofuflowOutputsOperator",
    "TofuflowPlanOperator",
    "TofuflowRunTrigger",
    "environment_name",
    "ephemeral_environment",
    "get_provider_info",
    "stack_task_group",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


def _text(label: str, description: str, *, secret: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": ["string", "null"]}
    if secret:
        schema["format"] = "password"  # Airflow treats it as sensitive (masked, encrypted)
    return {"label": label, "schema": schema, "description": description}


def get_provider_info() -> dict[str, Any]:
    """What Airflow's ProvidersManager reads (``airflow providers list`` shows it).

    ``package-name`` is the distribution name, ``tofuflow``, so Airflow can match the entry
    point to the installed package.
    """
    modules = {
        "operators": "tofuflow.airflow.operators",
        "sensors": "tofuflow.airflow.sensors",
        "hooks": "tofuflow.airflow.hooks",
        "triggers": "tofuflow.airflow.triggers",
    }
    info: dict[str, Any] = {
        "package-name": "tofuflow",
        "name": _INTEGRATION,
        "description": (
            "Run OpenTofu (or Terraform) from Airflow through tofuflow: plans checked by "
            "policy, approved, applied with short-lived rights, audited; ephemeral "
            "environments that are always torn down."
        ),
        "integrations": [
            {
                "integration-name": _INTEGRATION,
                "external-doc-url": "https://opentofu.org/",
                "tags": ["software"],
            }
        ],
        "asset-uris": [{"schemes": ["tofuflow"], "handler": None}],
        # The tasks' "tofuflow run" button (`airflow providers links` lists it).
        "extra-links": ["tofuflow.airflow.links.TofuflowRunLink"],
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": "tofuflow.airflow.hooks.TofuflowHook",
                "hook-name": _INTEGRATION,
                "conn-fields": _conn_fields(),
                "ui-field-behaviour": {
                    "hidden-fields": ["login"],
                    "relabeling": {
                        "host": "Control plane URL (empty: the embedded control plane)",
                        "schema": "URL scheme when the host has none (default https)",
                        "password": "API token (or OIDC ID token)",
                    },
                    "placeholders": {
                        "host": "https://tofuflow.example.com",
                        "password": "tfw_...",
                        "project": "/opt/airflow/dags/repo/tofuflow.toml",
                        "workspace": "app/dev",
                        "console_url": "https://tofuflow.example.com",
                    },
                },
            }
        ],
    }
    for kind, module in modules.items():
        info[kind] = [{"integration-name": _INTEGRATION, "python-modules": [module]}]
    return info


def _conn_fields() -> dict[str, Any]:
    return {
        "oidc_token_file": _text(
            "OIDC token file",
            "A file holding an OIDC ID token to present instead of the API token (read "
            "at every use, so a refreshed file works).",
        ),
        "apply_token": _text(
            "Apply token",
            "A separate token for apply, cancel and destroy (applier role); default: "
            "the API token.",
            secret=True,
        ),
        "binary": _text("Binary", "Path of the tofu/terraform binary; default: found on PATH."),
        "project": _text(
            "Project file", "Path of tofuflow.toml; operators may override it per task."
        ),
        "workspace": _text("Default workspace", "Used when an operator names no workspace."),
        "server_config": _text(
            "Embedded server config",
            "Server TOML for the embedded control plane (policies, workspace settings); "
            "default: $TOFUFLOW_SERVER_CONFIG.",
        ),
        "work_dir": _text(
            "Working directory",
            "Where tasks copy the configuration to run the binary; default: a temporary "
            "directory, removed after each task.",
        ),
        "console_url": _text(
            "Console URL",
            "Base URL of tofuflow's web console, for the tasks' \"tofuflow run\" links; "
            "default: the control plane's URL (none for the embedded control plane).",
        ),
    }
