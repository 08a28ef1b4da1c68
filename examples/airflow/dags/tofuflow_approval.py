"""A change that needs a person: the apply waits for the approval, then applies.

guarded/service is tagged production, so the policy check puts every run of it in
``needs_approval``. The apply task defers to the triggerer (``deferrable=True``: no worker
slot is held while waiting) until someone runs ``tofuflow approve RUN``; the destroy waits
in the worker instead (``deferrable=False``: it polls). Either way nothing is applied
without the approval, and the approver cannot be the identity that planned.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag

from tofuflow.airflow import TofuflowApplyOperator, TofuflowDestroyOperator, TofuflowPlanOperator

WORKSPACE = "guarded/service"
FILES_DIR = "{{ var.value.get('tofuflow_examples_dir', '/tmp/tofuflow-airflow-examples') }}"
# Short for the example; in real use, minutes (a person decides) and hours.
POLL_SECONDS = 2
WAIT = timedelta(minutes=30)


@dag(schedule=None, start_date=datetime(2025, 1, 1), catchup=False, tags=["tofuflow", "example"])
def tofuflow_approval() -> None:
    plan = TofuflowPlanOperator(task_id="plan", workspace=WORKSPACE, variables={"dir": FILES_DIR})
    apply = TofuflowApplyOperator(
        task_id="apply", workspace=WORKSPACE, run_id=plan.output["run_id"],
        deferrable=True, poll_interval=POLL_SECONDS, approval_timeout=WAIT,
    )  # fmt: skip
    destroy = TofuflowDestroyOperator(
        task_id="destroy", workspace=WORKSPACE, variables={"dir": FILES_DIR},
        deferrable=False, poll_interval=POLL_SECONDS, approval_timeout=WAIT,
    )  # fmt: skip
    apply >> destroy


approval_dag = tofuflow_approval()

if __name__ == "__main__":  # python tofuflow_approval.py: one run with dag.test()
    approval_dag.test()
