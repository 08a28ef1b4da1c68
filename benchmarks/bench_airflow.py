"""The Airflow provider's per-task overhead vs a BashOperator running the bare binary.

Two DAGs on the same configuration, one dag.test() run each, side by side in one process:
- bare: one BashOperator, `init` + `plan -out` + `apply PLAN` with the local backend —
  what copy-pasted Airflow samples do (no policy, no approval, state on the worker);
- tofuflow: TofuflowPlanOperator (working copy, `init`, `plan`, `show`, upload, policy check)
  then TofuflowApplyOperator (run read, artifact, apply session, `init`, `apply`, result),
  state in the embedded control plane.
Compared: the task durations Airflow records (start to end of each task instance), so
Airflow's own per-task cost is in both. A first round of each warms caches and is not
counted. Prints the ratio (issue 6 sets no target, so the script always exits 0).

    python benchmarks/bench_airflow.py [--resources 300] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CONFIG = """
resource "terraform_data" "r" {{
  count = {count}
  input = {{ index = count.index, name = "resource-${{count.index}}" }}
}}
"""

DAGS = """
from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

from tofuflow.airflow import TofuflowApplyOperator, TofuflowPlanOperator

BINARY = {binary!r}
BARE = (
    "cd {{{{ dag_run.conf['dir'] }}}} && " + BINARY + " init -input=false -no-color && "
    + BINARY + " plan -input=false -no-color -out=bare.tfplan && "
    + BINARY + " apply -input=false -no-color bare.tfplan"
)

with DAG("bench_bare", schedule=None, start_date=datetime(2025, 1, 1)) as bare_dag:
    BashOperator(task_id="bare", bash_command=BARE, env={env!r}, append_env=True)

with DAG("bench_tofuflow", schedule=None, start_date=datetime(2025, 1, 1)) as flow_dag:
    common = dict(workspace="bench", environment="{{{{ dag_run.conf['ws'] }}}}",
                  asset_host="bench")
    plan = TofuflowPlanOperator(task_id="plan", **common)
    TofuflowApplyOperator(task_id="apply", run_id=plan.output["run_id"], **common)
"""


def _prepare(root: Path, binary: str) -> dict[str, str]:
    """An Airflow home (migrated), a DAG folder, a project; returns the environment."""
    (root / "dags").mkdir()
    (root / "project").mkdir()
    (root / "project" / "tofuflow.toml").write_text('[workspaces.bench]\ndirectory = "template"\n')
    tf_env = {"TF_IN_AUTOMATION": "1", "TF_INPUT": "0", "CHECKPOINT_DISABLE": "1",
              "TF_PLUGIN_CACHE_DIR": str(root / "plugins")}  # fmt: skip
    (root / "dags" / "bench_dags.py").write_text(DAGS.format(binary=binary, env=tf_env))
    connection = {"conn_type": "tofuflow",
                  "extra": {"project": str(root / "project" / "tofuflow.toml")}}  # fmt: skip
    env = {
        "AIRFLOW_HOME": str(root / "home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "AIRFLOW_CONN_TOFUFLOW_DEFAULT": json.dumps(connection),
        "TOFUFLOW_DATA_DIR": str(root / "control-plane"),
        "TF_PLUGIN_CACHE_DIR": str(root / "plugins"),
    }
    os.environ.update(env)
    os.environ.pop("TOFUFLOW_SERVER_CONFIG", None)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True,
                   capture_output=True, env=os.environ)  # fmt: skip
    return env


def _durations(dag_run: Any) -> dict[str, float]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter(
            TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id
        )
        found = {ti.task_id: (ti.state, ti.start_date, ti.end_date) for ti in tis}
    bad = {task: state for task, (state, _, _) in found.items() if state != "success"}
    if bad:
        raise SystemExit(f"{dag_run.dag_id}: tasks did not succeed: {bad}")
    return {task: (end - start).total_seconds() for task, (_, start, end) in found.items()}


def _check(flow_run: Any, bare_dir: Path, resources: int) -> None:
    """Both did the same work: every resource created, in each one's state."""
    applied = flow_run.get_task_instance("apply").xcom_pull(task_ids="apply")
    state = json.loads((bare_dir / "terraform.tfstate").read_text())
    created = len(state["resources"][0]["instances"]) if state["resources"] else 0
    if applied["add"] != resources or applied["status"] != "applied" or created != resources:
        raise SystemExit(f"unequal work: tofuflow {applied}, bare created {created}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    from tofuflow.tofu import find_binary

    binary = str(find_binary().path)
    with tempfile.TemporaryDirectory(prefix="tofuflow-bench-airflow-") as tmp:
        root = Path(tmp)
        _prepare(root, binary)
        template = root / "project" / "template"
        template.mkdir()
        (template / "main.tf").write_text(CONFIG.format(count=args.resources))
        # Airflow reads AIRFLOW_HOME when it is first imported: only now.
        import runpy

        namespace = runpy.run_path(str(root / "dags" / "bench_dags.py"))
        bare_dag, flow_dag = namespace["bare_dag"], namespace["flow_dag"]
        bare, flow, bare_wall, flow_wall = [], [], [], []
        for round_ in range(args.repeat + 1):  # round 0 warms caches, not counted
            workdir = root / f"bare-{round_}"
            workdir.mkdir()
            (workdir / "main.tf").write_text(CONFIG.format(count=args.resources))
            started = time.perf_counter()
            run = bare_dag.test(run_conf={"dir": str(workdir)})
            wall_bare = time.perf_counter() - started
            started = time.perf_counter()
            run_flow = flow_dag.test(run_conf={"ws": f"bench/r{round_}"})
            wall_flow = time.perf_counter() - started
            durations = _durations(run), _durations(run_flow)
            _check(run_flow, workdir, args.resources)
            if round_:
                bare.append(durations[0]["bare"])
                flow.append(durations[1]["plan"] + durations[1]["apply"])
                bare_wall.append(wall_bare)
                flow_wall.append(wall_flow)
                print(f"round {round_}: bare task {durations[0]['bare']:.2f}s; tofuflow plan "
                      f"{durations[1]['plan']:.2f}s + apply {durations[1]['apply']:.2f}s",
                      flush=True)  # fmt: skip
    t_bare, t_flow = statistics.median(bare), statistics.median(flow)
    print(f"dag.test() wall: bare {statistics.median(bare_wall):.2f}s, "
          f"tofuflow {statistics.median(flow_wall):.2f}s")  # fmt: skip
    name = f"airflow tasks, {args.resources} resources"
    print(f"{name:<34} BashOperator init+plan+apply {t_bare:.2f}s  TofuPlan+TofuApply "
          f"{t_flow:.2f}s  ratio {t_flow / t_bare:.2f}x (+{t_flow - t_bare:.2f}s)  "
          "[no target: issue 6 asks for the ratio]")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
