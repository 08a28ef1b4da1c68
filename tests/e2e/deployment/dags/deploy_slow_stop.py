"""Test DAG: plan and apply deploy/slow-stop, whose binary needs ``seconds`` to stop
(it waits for a read from ``slow_url`` that answers after that long).

The deployment test marks the apply task failed while the binary runs: Airflow's
supervisor SIGTERMs the task and SIGKILLs it 5 s later, long before the binary stops.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

from tofuflow.airflow import TofuflowApplyOperator, TofuflowPlanOperator

COMMON = {"workspace": "deploy/slow-stop", "tofuflow_conn_id": "tofuflow_tests"}


@dag(schedule=None, start_date=datetime(2025, 1, 1), catchup=False, max_active_runs=1,
     params={"seconds": 20, "slow_url": ""}, tags=["tofuflow-deployment"])  # fmt: skip
def deploy_slow_stop() -> None:
    variables = {"seconds": "{{ params.seconds }}", "slow_url": "{{ params.slow_url }}"}
    plan = TofuflowPlanOperator(task_id="plan", variables=variables, **COMMON)
    TofuflowApplyOperator(
        task_id="apply", run_id=plan.output["run_id"], variables=variables, poll_interval=2,
        **COMMON,
    )  # fmt: skip


deploy_slow_stop()
