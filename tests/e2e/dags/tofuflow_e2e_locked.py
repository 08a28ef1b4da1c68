"""Test DAG: plan a workspace whose state lock someone else holds (the test takes it).

The plan itself goes through (plans never take the lock); its task log warns that the
apply will wait for the lock and says how a dead holder's lock is released.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import dag

from tofuflow.airflow import TofuflowPlanOperator

PROJECT = Path(__file__).resolve().parents[3] / "examples" / "airflow" / "tofuflow.toml"


@dag(schedule=None, start_date=datetime(2025, 1, 1), catchup=False, tags=["tofuflow-e2e"])
def tofuflow_e2e_locked() -> None:
    TofuflowPlanOperator(
        task_id="plan",
        workspace="examples/lifecycle",
        environment="examples/e2e-locked",  # the same configuration, under its own state
        project=str(PROJECT),
        variables={"dir": "{{ var.value.tofuflow_examples_dir }}", "name": "examples/e2e-locked"},
    )


locked_dag = tofuflow_e2e_locked()
