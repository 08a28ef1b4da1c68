"""Plan → policy auto-approves → apply → read outputs → use them → destroy.

The plan runs read-only and goes to the control plane's policy check; creating resources is
routine, so the run is approved by policy and the apply task applies exactly that plan. The
outputs task pushes the non-sensitive outputs to XCom (the sensitive api_key stays out), a
task uses them, and the destroy goes through the same lifecycle (the example server config
marks examples/* disposable, so its destroys are routine too).

Connection ``tofuflow_default`` (type ``tofuflow``): no host = the embedded control plane;
extras ``project`` (this example's tofuflow.toml) and ``server_config`` (server.toml).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import dag, task

from tofuflow.airflow import (
    TofuflowApplyOperator,
    TofuflowDestroyOperator,
    TofuflowOutputsOperator,
    TofuflowPlanOperator,
)

WORKSPACE = "examples/lifecycle"
# Where the example's files go (an Airflow Variable, with a default).
FILES_DIR = "{{ var.value.get('tofuflow_examples_dir', '/tmp/tofuflow-airflow-examples') }}"


@dag(schedule=None, start_date=datetime(2025, 1, 1), catchup=False, tags=["tofuflow", "example"])
def tofuflow_lifecycle() -> None:
    plan = TofuflowPlanOperator(task_id="plan", workspace=WORKSPACE, variables={"dir": FILES_DIR})
    apply = TofuflowApplyOperator(
        task_id="apply", workspace=WORKSPACE, run_id=plan.output["run_id"], poll_interval=5
    )
    outputs = TofuflowOutputsOperator(task_id="outputs", workspace=WORKSPACE)

    @task
    def check_service(outputs: dict[str, Any]) -> int:
        """A task that uses the infrastructure: every replica file must be there."""
        files = [Path(path) for path in outputs["replica_files"]]
        missing = [str(path) for path in files if not path.is_file()]
        if missing:
            raise RuntimeError(f"replicas missing at {outputs['endpoint']}: {missing}")
        print(f"{len(files)} replicas up at {outputs['endpoint']}")
        return len(files)

    destroy = TofuflowDestroyOperator(
        task_id="destroy", workspace=WORKSPACE, variables={"dir": FILES_DIR}, poll_interval=5
    )
    apply >> outputs
    check_service(outputs.output) >> destroy


lifecycle_dag = tofuflow_lifecycle()

if __name__ == "__main__":  # python tofuflow_lifecycle.py: one run with dag.test()
    lifecycle_dag.test()
