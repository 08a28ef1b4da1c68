"""Test DAG: an ephemeral environment per DAG run (create, deploy, outputs, destroy)."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

from tofuflow.airflow import ephemeral_environment


@dag(schedule=None, start_date=datetime(2025, 1, 1), catchup=False, max_active_runs=20,
     tags=["tofuflow-deployment"])  # fmt: skip
def deploy_ephemeral() -> None:
    ephemeral_environment(
        "preview", workspace="deploy/preview", ttl="30m", name_variable="name",
        variables={"dir": "{{ var.value.tofuflow_examples_dir }}"}, poll_interval=2,
        tofuflow_conn_id="tofuflow_tests",
    )  # fmt: skip


deploy_ephemeral()
