"""Test DAG: plan and apply deploy/locked (the test holds its state lock meanwhile)."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

from tofuflow.airflow import TofuflowApplyOperator, TofuflowPlanOperator

COMMON = {"workspace": "deploy/locked", "tofuflow_conn_id": "tofuflow_tests"}


@dag(schedule=None, start_date=datetime(2025, 1, 1), catchup=False,
     tags=["tofuflow-deployment"])  # fmt: skip
def deploy_locked() -> None:
    variables = {"dir": "{{ var.value.tofuflow_examples_dir }}"}
    plan = TofuflowPlanOperator(task_id="plan", variables=variables, **COMMON)
    TofuflowApplyOperator(
        task_id="apply", run_id=plan.output["run_id"], variables=variables, poll_interval=2,
        replan=False, **COMMON,
    )  # fmt: skip


deploy_locked()
