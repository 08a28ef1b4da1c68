"""Test DAG: plan → apply → outputs → destroy, for the console links and OpenLineage.

Connection ``tofuflow_console``: the embedded control plane with a ``console_url`` extra,
so every run task gets a "tofuflow run" link; the test runs it with OpenLineage's file
transport and reads the events.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import dag

from tofuflow.airflow import (
    TofuflowApplyOperator,
    TofuflowDestroyOperator,
    TofuflowOutputsOperator,
    TofuflowPlanOperator,
)

PROJECT = Path(__file__).resolve().parents[3] / "examples" / "airflow" / "tofuflow.toml"
COMMON: dict[str, Any] = {
    "workspace": "examples/lifecycle",
    "environment": "examples/e2e-lineage",  # the same configuration, under its own state
    "project": str(PROJECT),
    "tofuflow_conn_id": "tofuflow_console",
    "variables": {"dir": "{{ var.value.tofuflow_examples_dir }}", "name": "examples/e2e-lineage"},
}


@dag(schedule=None, start_date=datetime(2025, 1, 1), catchup=False, tags=["tofuflow-e2e"])
def tofuflow_e2e_lineage() -> None:
    plan = TofuflowPlanOperator(task_id="plan", **COMMON)
    apply = TofuflowApplyOperator(task_id="apply", run_id=plan.output["run_id"], **COMMON)
    outputs = TofuflowOutputsOperator(task_id="outputs", **COMMON)
    destroy = TofuflowDestroyOperator(task_id="destroy", **COMMON)
    apply >> outputs >> destroy


lineage_dag = tofuflow_e2e_lineage()
