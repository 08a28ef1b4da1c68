"""Test DAG: an apply whose plan went stale plans again instead of applying it.

Two plans start from the same (empty) state; the second (targeted at one resource) is
applied first, so the first one's base serial is gone. Its apply task must not apply it:
the control plane refuses the stale plan (and records it cancelled), the task plans again
with the inputs the stale run was planned with and applies the fresh run. Runs against a
remote control plane (connection tofuflow_remote).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import dag

from tofuflow.airflow import TofuflowApplyOperator, TofuflowDestroyOperator, TofuflowPlanOperator

PROJECT = Path(__file__).resolve().parents[3] / "examples" / "airflow" / "tofuflow.toml"
FILES_DIR = "{{ var.value.tofuflow_examples_dir }}"
COMMON: dict[str, Any] = {
    "workspace": "examples/lifecycle",
    "environment": "examples/e2e-stale",  # the same configuration, under its own state
    "project": str(PROJECT),
    "tofuflow_conn_id": "tofuflow_remote",
}


def inputs(replicas: int) -> dict[str, Any]:
    return {"dir": FILES_DIR, "name": "examples/e2e-stale", "replicas": replicas}


@dag(schedule=None, start_date=datetime(2025, 1, 1), catchup=False, tags=["tofuflow-e2e"])
def tofuflow_e2e_stale() -> None:
    plan_one = TofuflowPlanOperator(task_id="plan_one", variables=inputs(1), **COMMON)
    plan_two = TofuflowPlanOperator(  # targeted: only the second replica
        task_id="plan_two", variables=inputs(2), targets=["terraform_data.replica[1]"], **COMMON
    )
    apply_two = TofuflowApplyOperator(
        task_id="apply_two", run_id=plan_two.output["run_id"], **COMMON
    )
    # No inputs of its own, as in the examples: it plans again with plan_one's.
    apply_one = TofuflowApplyOperator(
        task_id="apply_one", run_id=plan_one.output["run_id"], **COMMON
    )
    destroy = TofuflowDestroyOperator(task_id="destroy", variables=inputs(1), **COMMON)
    plan_one >> plan_two >> apply_two >> apply_one >> destroy


stale_dag = tofuflow_e2e_stale()
