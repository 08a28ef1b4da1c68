"""Test DAG: apply a real file, then wait (deferred between pokes) until it drifts."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import dag

from tofuflow.airflow import TofuflowApplyOperator, TofuflowDriftSensor

COMMON: dict[str, Any] = {
    "workspace": "examples/e2e-drift",
    "project": str(Path(__file__).resolve().parents[1] / "configs" / "tofuflow.toml"),
    "variables": {"dir": "{{ var.value.tofuflow_examples_dir }}/drift"},
}


@dag(schedule=None, start_date=datetime(2025, 1, 1), catchup=False, tags=["tofuflow-e2e"])
def tofuflow_e2e_drift() -> None:
    apply = TofuflowApplyOperator(task_id="apply", **COMMON)  # plans and applies in one task
    drift = TofuflowDriftSensor(
        task_id="drift", deferrable=True, poke_interval=2, timeout=600, **COMMON
    )
    apply >> drift


drift_dag = tofuflow_e2e_drift()
