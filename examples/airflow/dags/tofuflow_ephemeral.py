"""An ephemeral environment per DAG run, destroyed even when the work in it fails.

``create`` (a setup task) only registers the environment — name from the DAG and run ids,
a sealed snapshot of examples/preview's configuration, a 30 minute TTL — so it cannot
half-fail. ``deploy`` applies it, ``outputs`` reads its outputs (the sensitive api_key too,
on request: the provider masks it), the smoke test runs against it and, here, fails on
purpose (param ``fail_smoke_test``), and the ``destroy`` teardown still tears it all down.
Had the destroy failed as well, the control plane's reaper would take over after the TTL.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import dag, get_current_context, task

from tofuflow.airflow import TofuflowHook, ephemeral_environment

log = logging.getLogger(__name__)
FILES_DIR = "{{ var.value.get('tofuflow_examples_dir', '/tmp/tofuflow-airflow-examples') }}"


@dag(
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    params={"fail_smoke_test": True},
    tags=["tofuflow", "example"],
)
def tofuflow_ephemeral() -> None:
    env = ephemeral_environment(
        "preview", workspace="examples/preview", ttl="30m", name_variable="name",
        variables={"dir": FILES_DIR}, include_sensitive=True, poll_interval=5,
    )  # fmt: skip

    @task
    def smoke_test(outputs: dict[str, Any]) -> None:
        # XCom holds a reference to the sensitive output, never its value: read it here,
        # where it is needed (the hook registers it with this task's secret masker).
        api_key = TofuflowHook().sensitive_output(outputs["api_key"])
        log.info("testing %s (api key of %d characters)", outputs["endpoint"], len(api_key))
        missing = [path for path in outputs["replica_files"] if not Path(path).is_file()]
        if missing:
            raise RuntimeError(f"replicas missing: {missing}")
        if get_current_context()["params"]["fail_smoke_test"]:
            raise RuntimeError("smoke test failed (on purpose): the environment is still destroyed")

    env.wrap(smoke_test(env.outputs.output))


ephemeral_dag = tofuflow_ephemeral()

if __name__ == "__main__":  # python tofuflow_ephemeral.py: one run with dag.test()
    ephemeral_dag.test()
