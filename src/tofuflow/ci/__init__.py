"""Run context: which commit, branch, repository and pipeline run a tofuflow run belongs to.

from tofuflow.ci import detect_run_context
ctx = detect_run_context()          # Azure DevOps, GitHub Actions, Airflow or local git
ctx.commit_sha, ctx.branch, ctx.run_url, ctx.requested_for
"""

from typing import TYPE_CHECKING

from tofuflow._lazy import lazy_exports

if TYPE_CHECKING:
    from tofuflow.ci._airflow import airflow_context, airflow_run_context
    from tofuflow.ci._azure_devops import (
        AgentReport,
        AzureDevOpsLog,
        escape_message,
        escape_property,
        neutralise,
        on_agent,
    )
    from tofuflow.ci._context import CISystem, RunContext
    from tofuflow.ci._detect import detect_run_context
    from tofuflow.ci._git import default_branch
    from tofuflow.ci._normalize import strip_url_credentials
    from tofuflow.ci._pipelines import AgentPool, PipelineOptions, azure_devops_pipeline
    from tofuflow.ci._pull_request import PullRequest, console_link

_EXPORTS = {
    "AgentPool": "tofuflow.ci._pipelines",
    "AgentReport": "tofuflow.ci._azure_devops",
    "AzureDevOpsLog": "tofuflow.ci._azure_devops",
    "CISystem": "tofuflow.ci._context",
    "PipelineOptions": "tofuflow.ci._pipelines",
    "RunContext": "tofuflow.ci._context",
    "airflow_context": "tofuflow.ci._airflow",
    "airflow_run_context": "tofuflow.ci._airflow",
    "azure_devops_pipeline": "tofuflow.ci._pipelines",
    "console_link": "tofuflow.ci._pull_request",
    "default_branch": "tofuflow.ci._git",
    "PullRequest": "tofuflow.ci._pull_request",
    "detect_run_context": "tofuflow.ci._detect",
    "escape_message": "tofuflow.ci._azure_devops",
    "escape_property": "tofuflow.ci._azure_devops",
    "neutralise": "tofuflow.ci._azure_devops",
    "on_agent": "tofuflow.ci._azure_devops",
    "strip_url_credentials": "tofuflow.ci._normalize",
}
__all__ = [
    "AgentPool",
    "AgentReport",
    "AzureDevOpsLog",
    "CISystem",
    "PipelineOptions",
    "PullRequest",
    "RunContext",
    "airflow_context",
    "airflow_run_context",
    "azure_devops_pipeline",
    "console_link",
    "default_branch",
    "detect_run_context",
    "escape_message",
    "escape_property",
    "neutralise",
    "on_agent",
    "strip_url_credentials",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
