"""Test DAG: plan deploy/contended, wait, apply. Two runs of it at once plan against the
same state and then both apply: one applies, the other must plan again (its plan is
stale), never fail with a generic error."""

from __future__ import annotations

import time
from datetime import datetime

from airflow.sdk import dag, task

from tofuflow.airflow import TofuflowApplyOperator, TofuflowHook, TofuflowPlanOperator

COMMON = {"workspace": "deploy/contended", "tofuflow_conn_id": "tofuflow_tests"}


@dag(schedule=None, start_date=datetime(2025, 1, 1), catchup=False, max_active_runs=2,
     params={"replicas": 1}, tags=["tofuflow-deployment"])  # fmt: skip
def deploy_contended() -> None:
    variables = {"dir": "{{ var.value.tofuflow_examples_dir }}",
                 "replicas": "{{ params.replicas }}"}  # fmt: skip
    plan = TofuflowPlanOperator(task_id="plan", variables=variables, **COMMON)

    @task
    def settle() -> None:
        """Waits (up to a minute) until the other DAG run has planned too, so both plans
        are made against the same state before either applies."""
        deadline = time.monotonic() + 60
        with TofuflowHook("tofuflow_tests").control_plane("read") as cp:
            while time.monotonic() < deadline:
                runs = cp.runs(workspace="deploy/contended", limit=50)
                if sum(r["status"] != "planning" for r in runs) >= 2:
                    return
                time.sleep(1)

    apply = TofuflowApplyOperator(
        task_id="apply", run_id=plan.output["run_id"], variables=variables, poll_interval=2,
        **COMMON,
    )  # fmt: skip
    plan >> settle() >> apply


deploy_contended()
