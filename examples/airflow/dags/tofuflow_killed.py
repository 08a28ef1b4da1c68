"""An apply that is killed: the binary is stopped gracefully and nothing stays locked.

The apply takes two minutes (a slow local-exec) but the task's execution_timeout is 12 s.
Airflow interrupts the task and calls on_kill; the provider sends the binary SIGINT (then,
after a grace period, SIGKILL), the binary saves its state and releases the state lock,
and the run is recorded as stopped on the control plane. A retry would plan again.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag

from tofuflow.airflow import TofuflowApplyOperator, TofuflowPlanOperator


@dag(schedule=None, start_date=datetime(2025, 1, 1), catchup=False, tags=["tofuflow", "example"])
def tofuflow_killed() -> None:
    plan = TofuflowPlanOperator(
        task_id="plan", workspace="examples/slow", variables={"seconds": 120}
    )
    TofuflowApplyOperator(
        task_id="apply", workspace="examples/slow", run_id=plan.output["run_id"],
        execution_timeout=timedelta(seconds=12), retries=0,
    )  # fmt: skip


killed_dag = tofuflow_killed()

if __name__ == "__main__":  # python tofuflow_killed.py: one run with dag.test()
    killed_dag.test()
