"""Run context: which commit, branch, repository and pipeline run a tofuflow run belongs to.

from tofuflow.ci import detect_run_context
ctx = detect_run_context()          # Azure DevOps, GitHub Actions, Airflow or local git
ctx.commit_sha, ctx.branch, ctx.run_url, ctx.requested_for
"""

from typing import TYPE_CHECKING

from tofuflow._lazy import lazy_exports

if TYPE_CHECKING:
    from tofuflow.ci._airflow import airflow_context
    from tofuflow.ci._context import CISystem, RunContext
    from tofuflow.ci._detect import detect_run_context
    from tofuflow.ci._normalize import strip_url_credentials

_EXPORTS = {
    "CISystem": "tofuflow.ci._context",
    "RunContext": "tofuflow.ci._context",
    "airflow_context": "tofuflow.ci._airflow",
    "detect_run_context": "tofuflow.ci._detect",
    "strip_url_credentials": "tofuflow.ci._normalize",
}
__all__ = [
    "CISystem",
    "RunContext",
    "airflow_context",
    "detect_run_context",
    "strip_url_credentials",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
