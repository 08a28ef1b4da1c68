"""Drift: is the infrastructure still what the last apply left, and what this checkout says?

    from tofuflow.drift import check_drift, render_drift_text
    with ControlPlane(url, planner_token) as cp:
        report = check_drift([project.workspace("app/prod")], cp)
    print(render_drift_text(report))
    sys.exit(report.exit_code)        # 0 no drift, 2 drift, 1 error

``check_drift`` runs a refresh-only plan (objects changed outside tofuflow) and a
``-refresh=false`` plan (configuration drift) per workspace without ever taking the state
lock, and records each result on the control plane beside the run and commit that last
applied the workspace. See docs/drift.md.
"""

from tofuflow.drift._check import (
    check_drift,
    check_workspace,
    drifted_resources,
    locked_message,
)
from tofuflow.drift._render import (
    FORMATS,
    render_drift,
    render_drift_json,
    render_drift_markdown,
    render_drift_text,
)
from tofuflow.drift._report import (
    EXIT_DRIFT,
    EXIT_ERROR,
    EXIT_NONE,
    DriftedOutput,
    DriftedResource,
    DriftReport,
    Findings,
    WorkspaceDrift,
    findings_from_plans,
)

__all__ = [
    "EXIT_DRIFT",
    "EXIT_ERROR",
    "EXIT_NONE",
    "FORMATS",
    "DriftReport",
    "DriftedOutput",
    "DriftedResource",
    "Findings",
    "WorkspaceDrift",
    "check_drift",
    "check_workspace",
    "drifted_resources",
    "findings_from_plans",
    "locked_message",
    "render_drift",
    "render_drift_json",
    "render_drift_markdown",
    "render_drift_text",
]
