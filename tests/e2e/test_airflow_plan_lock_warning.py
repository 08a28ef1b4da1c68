"""The Airflow plan task of a locked workspace warns in its log, as the CLI and the Azure
Pipelines agent do (tests/integration/test_plan_lock_warning.py): otherwise the lock
surfaces only when the apply task waits for it."""

from __future__ import annotations

import re

import httpx
from _airflow_harness import E2E_DAGS, Airflow

from tofuflow.runs import ControlPlane

WORKSPACE = "examples/e2e-locked"


def test_the_plan_task_of_a_locked_workspace_logs_a_warning_saying_what_to_do(
    airflow: Airflow,
) -> None:
    # A killed apply left its lock: another principal than the DAG's tasks holds it.
    info = {"ID": "6c1e-lock", "Operation": "OperationTypeApply", "Who": "ci@agent-7",
            "Version": "1.11.4", "Created": "2026-12-06T01:00:00Z", "Path": ""}  # fmt: skip
    with ControlPlane(airflow.plane.url, airflow.plane.token("admin")) as holder:
        lock = f"{holder.state_url(WORKSPACE)}/lock"
        headers = {"Authorization": f"Bearer {holder.token}"}
        taken = httpx.request("LOCK", lock, json=info, headers=headers)
        assert taken.status_code == 200, taken.text
        try:
            run = airflow.run(E2E_DAGS / "tofuflow_e2e_locked.py", "tofuflow_e2e_locked")
        finally:
            httpx.request("UNLOCK", lock, json=info, headers=headers).raise_for_status()
    assert run.state == "success", run.log[-5000:]  # the plan itself still works
    planned = run.xcom("plan")
    assert planned["status"] == "approved", planned
    lines = [line for line in run.log.splitlines() if f"{WORKSPACE}: the state is locked" in line]
    assert len(lines) == 1, run.log[-5000:]
    (warning,) = lines
    assert re.search(r"\[warning\s*\]", warning), warning  # at the warning level
    assert "TofuflowPlanOperator" in warning  # in the plan task's log
    assert "the state is locked by token:" in warning
    assert "(ci@agent-7, OperationTypeApply)" in warning
    assert "this run's apply cannot start until it is released" in warning
    assert f"`tofuflow runs list --workspace {WORKSPACE}`" in warning
    assert f"`tofuflow unlock {WORKSPACE}`" in warning
