"""Stacks as Airflow tasks (examples/airflow/dags/tofuflow_stacks.py) under real Airflow 3,
the real binary and the control plane: the order, the inputs, the reverse destroy.

The example's stacks append ``apply NAME RECEIVED`` / ``destroy NAME`` to one order.log
from their local-exec provisioners, so the test reads what the binary really did, in the
order it did it; the control plane's runs say the same with their times.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

from _airflow_harness import EXAMPLES, Airflow

DAG_FILE = EXAMPLES / "dags" / "tofuflow_stacks.py"
NETWORK, DB, APP = "stacks/network", "stacks/db", "stacks/app"
# network's sensitive output, as the example configuration derives it from the name.
TOKEN = "tok-" + hashlib.sha256(f"token:{NETWORK}".encode()).hexdigest()[:32]


def _occurrences(root: Path, secret: str) -> list[str]:
    needle = secret.encode()
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_stacks_apply_in_dependency_order_with_inputs_and_destroy_in_reverse(
    airflow: Airflow,
) -> None:
    run = airflow.run(DAG_FILE, "tofuflow_stacks")
    assert run.state == "success", run.log[-6000:]
    ids = {"network": "stacks_network", "db": "stacks_db", "app": "stacks_app"}
    assert run.tasks == {
        f"{group}.{task}": "success" for group in ("apply", "destroy") for task in ids.values()
    }
    # What the binary did, in order: dependencies first, then dependants first.
    log = (airflow.files / "stacks" / "order.log").read_text().splitlines()
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    assert log == [
        f"apply {NETWORK}",
        f"apply {DB} subnet=10.42.0.0/24",
        f"apply {APP} subnet=10.42.0.0/24 dsn=db://stacks-db.internal:5432 token_sha256={digest}",
        f"destroy {APP}",
        f"destroy {DB}",
        f"destroy {NETWORK}",
    ]
    # Nothing is left: the files are gone, every state is empty.
    assert sorted(p.name for p in (airflow.files / "stacks").iterdir()) == ["order.log"]
    for workspace in (NETWORK, DB, APP):
        assert airflow.state(workspace)["resources"] == []
    # The control plane agrees: each run started after the runs it waits for had ended.
    runs = {
        (r["workspace"], r["context"]["airflow"]["task_id"].split(".")[0]): r
        for r in airflow.runs_of(run)
    }
    assert len(runs) == 6 and {r["status"] for r in runs.values()} == {"applied"}, runs
    for group, edges in {
        "apply": [(NETWORK, DB), (NETWORK, APP), (DB, APP)],
        "destroy": [(APP, DB), (APP, NETWORK), (DB, NETWORK)],
    }.items():
        for first, then in edges:
            ended = datetime.fromisoformat(runs[(first, group)]["updated_at"])
            started = datetime.fromisoformat(runs[(then, group)]["created_at"])
            assert ended <= started, (group, first, then)
    assert run.xcom("apply.stacks_app")["status"] == "applied"
    assert run.xcom("destroy.stacks_network")["destroy"] == 1
    # The task read its inputs (named, never shown) before it planned.
    assert (
        f"inputs of {APP}: dsn = stacks/db.dsn, network_token = stacks/network.token, "
        "subnet = stacks/network.subnet" in run.log
    )
    # The sensitive output is nowhere in Airflow: not in XCom, logs, rendered fields or
    # the metadata database.
    assert _occurrences(airflow.home, TOKEN) == []
