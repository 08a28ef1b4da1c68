"""Test DAG: a sensitive output named ``result`` through XCom, templates and logs.

``outputs`` pushes a reference for it (include_sensitive), ``templated`` renders the
whole outputs XCom into a templated field, and ``use`` resolves the value and logs it
(Airflow's masker must hide it although its name is not a secret-looking one).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from airflow.sdk import dag, task

from tofuflow.airflow import TofuflowApplyOperator, TofuflowHook, TofuflowOutputsOperator

COMMON = {"workspace": "deploy/canary", "tofuflow_conn_id": "tofuflow_tests"}
log = logging.getLogger(__name__)


@dag(schedule=None, start_date=datetime(2025, 1, 1), catchup=False,
     tags=["tofuflow-deployment"])  # fmt: skip
def deploy_canary() -> None:
    apply = TofuflowApplyOperator(task_id="apply", poll_interval=2, **COMMON)
    outputs = TofuflowOutputsOperator(task_id="outputs", include_sensitive=True, **COMMON)

    @task(templates_dict={"outputs": "{{ ti.xcom_pull(task_ids='outputs') }}"})
    def templated(templates_dict: dict[str, Any] | None = None) -> str:
        return str((templates_dict or {})["outputs"])

    @task
    def use(outputs: dict[str, Any]) -> int:
        value = TofuflowHook("tofuflow_tests").sensitive_output(outputs["result"])
        log.info("the result is %s", value)
        print(f"printed: {value}")
        return len(value)

    apply >> outputs >> templated()
    use(outputs.output)


deploy_canary()
