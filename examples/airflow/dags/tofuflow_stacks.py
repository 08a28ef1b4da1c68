"""Stacks as Airflow tasks: apply every stack in dependency order, then destroy in reverse.

``stack_task_group`` reads ``tofuflow.toml`` when the DAG is parsed and builds one task
per stack, with the edges ``depends_on`` gives — the graph ``tofuflow run-all`` runs:

    apply:    network >> db >> app,  network >> app
    destroy:  app >> db >> network,  app >> network

Each apply task plans (reading its ``inputs`` from its dependencies' current state: app
gets network's subnet and its sensitive token, and db's dsn), the policy approves
(creating is routine), and the task applies. The destroys are routine too: the example
server config marks ``stacks/*`` disposable. How many stacks run at once is Airflow's
business: ``max_active_tasks`` here, pools, the executor's slots.

Connection ``tofuflow_default`` as in tofuflow_lifecycle.py (the project path is given
here, relative to this file).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

from tofuflow.airflow import stack_task_group

# Where the example's files go (an Airflow Variable, with a default).
FILES_DIR = "{{ var.value.get('tofuflow_examples_dir', '/tmp/tofuflow-airflow-examples') }}"


@dag(
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_tasks=4,  # at most 4 stacks at once (run-all's --parallelism)
    tags=["tofuflow", "example"],
)
def tofuflow_stacks() -> None:
    common = {"variables": {"dir": FILES_DIR}, "poll_interval": 5}
    workspaces = ["stacks/app"]  # and everything it depends on (destroy: depends on it)
    apply = stack_task_group(
        "../tofuflow.toml", "apply", group_id="apply", workspaces=workspaces, **common
    )
    destroy = stack_task_group(
        "../tofuflow.toml", "destroy", group_id="destroy", workspaces=["stacks/network"],
        **common,
    )  # fmt: skip
    apply >> destroy


stacks_dag = tofuflow_stacks()

if __name__ == "__main__":  # python tofuflow_stacks.py: one run with dag.test()
    stacks_dag.test()
