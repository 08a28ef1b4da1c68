"""The provider in a real Airflow 3 deployment: what ``dag.test()`` cannot show.

One deployment per module (tests/e2e/_deployment.py): api-server, scheduler,
dag-processor and triggerer as separate processes, LocalExecutor, metadata on
PostgreSQL, connections in Airflow's database, a `tofuflow server` on PostgreSQL. DAG
runs are triggered and read through Airflow's REST API v2, as a user's tooling would.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _deployment import (
    FINISHED,
    SESSION_LEASE,
    Deployment,
    SlowStateServer,
    airflow_deployment,
    wait_for,
)

from tofuflow._time import shown_time

DAG_IDS = [
    "tofuflow_lifecycle",
    "tofuflow_approval",
    "tofuflow_stacks",
    "deploy_slow_stop",
    "deploy_contended",
    "deploy_locked",
    "deploy_canary",
    "deploy_ephemeral",
]
# What deploy/canary's sensitive output `result` holds (infra/canary/main.tf).
CANARY = "canary-" + hashlib.sha256(b"tofuflow-canary:result").hexdigest()[:24]
EPHEMERAL_RUNS = 20


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    try:
        import airflow as _  # noqa: F401
    except ImportError as exc:
        pytest.fail(
            f"these tests run Apache Airflow 3 and it is not importable ({exc}): install the "
            "dev extra, `.venv/bin/pip install -e '.[dev]'`", pytrace=False,
        )  # fmt: skip
    from tofuflow.errors import BinaryError
    from tofuflow.tofu import find_binary

    try:
        find_binary()
    except BinaryError as exc:
        pytest.fail(f"these tests drive the real binary and none is usable: {exc}", pytrace=False)
    with airflow_deployment(tmp_path_factory.mktemp("airflow-deployment"), DAG_IDS) as running:
        yield running


@pytest.fixture(scope="module")
def slow_state() -> Iterator[SlowStateServer]:
    server = SlowStateServer()
    yield server
    server.close()


def _authority(deployment: Deployment) -> str:
    return deployment.server.url.removeprefix("http://")


def _holding(deployment: Deployment, secret: str) -> set[Path]:
    """Files under AIRFLOW_HOME (logs, process output) holding ``secret``."""
    return {p.relative_to(deployment.home) for p in deployment.home.rglob("*")
            if p.is_file() and secret.encode() in p.read_bytes()}  # fmt: skip


def _lock(deployment: Deployment, workspace: str) -> dict[str, Any]:
    """The workspace's lock as the control plane reports it ({} when unlocked)."""
    with deployment.control_plane() as admin:
        rows = [r for r in admin.workspaces() if r.get("name") == workspace]
    return dict(rows[0].get("lock") or {}) if rows else {}


def test_the_lifecycle_example_runs_and_its_asset_events_name_the_remote_control_plane(
    deployment: Deployment,
) -> None:
    run_id = deployment.trigger("tofuflow_lifecycle")
    states = deployment.wait_run("tofuflow_lifecycle", run_id)
    assert states == {
        "__run__": "success", "plan": "success", "apply": "success", "outputs": "success",
        "check_service": "success", "destroy": "success",
    }, deployment.log("tofuflow_lifecycle", run_id, "apply")  # fmt: skip
    plan = deployment.xcom("tofuflow_lifecycle", run_id, "plan")
    destroyed = deployment.xcom("tofuflow_lifecycle", run_id, "destroy")
    assert deployment.xcom("tofuflow_lifecycle", run_id, "check_service") == 2
    # The connection lives in Airflow's database: the asset is the control plane's
    # host:port and the workspace (resolved at run time), never "embedded".
    uri = f"tofuflow://{_authority(deployment)}/examples/lifecycle"
    events = deployment.asset_events(run_id)
    assert sorted(
        (e["uri"], e["source_task_id"], e["extra"]["operation"], e["extra"]["run_id"])
        for e in events
    ) == [(uri, "apply", "apply", plan["run_id"]), (uri, "destroy", "destroy", destroyed["run_id"])]
    assert not [a["uri"] for a in deployment.assets() if "embedded" in a["uri"]]
    for task_id in ("apply", "destroy"):
        assert "asset_host" not in deployment.log("tofuflow_lifecycle", run_id, task_id)
    runs = deployment.runs_of("tofuflow_lifecycle", run_id)
    assert sorted(r["status"] for r in runs) == ["applied", "applied"]
    # Each task that made a run links to its console page; the outputs task has no run.
    console = f"{deployment.server.url}/console/runs"
    links = {task: deployment.links("tofuflow_lifecycle", run_id, task)
             for task in ("plan", "apply", "outputs", "destroy")}  # fmt: skip
    assert links == {
        "plan": {"tofuflow run": f"{console}/{plan['run_id']}"},
        "apply": {"tofuflow run": f"{console}/{plan['run_id']}"},
        "outputs": {},
        "destroy": {"tofuflow run": f"{console}/{destroyed['run_id']}"},
    }


def test_the_approval_example_waits_deferred_in_the_triggerer_until_a_person_approves(
    deployment: Deployment,
) -> None:
    dag_id = "tofuflow_approval"
    run_id = deployment.trigger(dag_id)
    approved: list[str] = []
    seen: set[str] = set()
    clicked: list[str | None] = []  # the waiting task's "tofuflow run" link, before approving

    def approve_waiting() -> bool:
        """A person approves each run once its task waits for it (the apply deferred),
        having followed the waiting task's link to the run's console page."""
        states = deployment.task_states(dag_id, run_id)
        seen.add(f"apply:{states.get('apply')}")
        with deployment.control_plane() as approver:
            for run in approver.runs(workspace="guarded/service", limit=20):
                waiting = run["status"] == "needs_approval" and run["id"] not in approved
                ours = (run.get("context") or {}).get("airflow", {}).get("run_id") == run_id
                if waiting and ours and (approved or states.get("apply") == "deferred"):
                    task = "destroy" if approved else "apply"
                    clicked.append(deployment.links(dag_id, run_id, task).get("tofuflow run"))
                    approver.approve(run["id"], "looked at it")
                    approved.append(run["id"])
        return len(approved) == 2 or deployment.dag_run(dag_id, run_id)["state"] in FINISHED

    wait_for(approve_waiting, 240, "the apply and the destroy to ask for approval", deployment)
    states = deployment.wait_run(dag_id, run_id)
    assert states == {"__run__": "success", "plan": "success", "apply": "success",
                      "destroy": "success"}, states  # fmt: skip
    assert "apply:deferred" in seen, seen  # no worker slot held while a person decides
    assert deployment.xcom(dag_id, run_id, "apply")["run_id"] == approved[0]
    assert deployment.xcom(dag_id, run_id, "destroy")["run_id"] == approved[1]
    # The links worked while the tasks waited (the apply deferred, the destroy polling):
    # the connection names a remote control plane, whose console serves the run's page.
    console = f"{deployment.server.url}/console/runs"
    assert clicked == [f"{console}/{approved[0]}", f"{console}/{approved[1]}"]
    assert deployment.links(dag_id, run_id, "apply") == {"tofuflow run": clicked[0]}
    with deployment.control_plane() as admin:
        for run_id_ in approved:
            done = admin.run(run_id_)
            assert done["status"] == "applied"
            assert [a["comment"] for a in done["approvals"]] == ["looked at it"]


def test_the_stacks_example_applies_in_dependency_order_passing_a_sensitive_input(
    deployment: Deployment,
) -> None:
    dag_id = "tofuflow_stacks"
    run_id = deployment.trigger(dag_id)
    states = deployment.wait_run(dag_id, run_id)
    assert set(states.values()) == {"success"}, states
    token = "tok-" + hashlib.sha256(b"token:stacks/network").hexdigest()[:32]
    digest = hashlib.sha256(token.encode()).hexdigest()
    order = (deployment.files / "stacks" / "order.log").read_text().splitlines()
    assert order == [
        "apply stacks/network",
        "apply stacks/db subnet=10.42.0.0/24",
        "apply stacks/app subnet=10.42.0.0/24 dsn=db://stacks-db.internal:5432 "
        f"token_sha256={digest}",
        "destroy stacks/app",
        "destroy stacks/db",
        "destroy stacks/network",
    ]
    # network's sensitive token reached app's binary, and nothing of Airflow's.
    assert _holding(deployment, token) == set()


def test_a_task_marked_failed_while_its_binary_is_slow_to_stop_leaves_no_lock(
    deployment: Deployment, slow_state: SlowStateServer
) -> None:
    dag_id, workspace = "deploy_slow_stop", "deploy/slow-stop"
    run_id = deployment.trigger(dag_id, {"seconds": 20, "slow_url": slow_state.url})
    wait_for(lambda: slow_state.received, 180, "the apply to read the slow state", deployment)
    (run,) = [r for r in deployment.runs_of(dag_id, run_id) if r["status"] == "applying"]
    # What a person does in the UI: the supervisor SIGTERMs the task and SIGKILLs it 5 s
    # later; the binary, waiting for its read, needs 20 s to stop.
    deployment.mark(dag_id, run_id, "apply", "failed")
    assert deployment.wait_run(dag_id, run_id, timeout=120)["__run__"] == "failed"
    with deployment.control_plane() as admin:
        lost = wait_for(
            lambda: (r := admin.run(run["id"]))["status"] != "applying" and r,
            SESSION_LEASE + 60, "the control plane to notice the lost runner", deployment,
        )  # fmt: skip
        assert lost["status"] == "failed", lost
        assert lost["result"]["reason"].startswith("runner lost"), lost["result"]
        actions = [e["action"] for e in admin.audit(run=run["id"], limit=1000)]
        assert "run.runner_lost" in actions, actions
    assert _lock(deployment, workspace) == {}
    # The next DAG run is not stopped by a lock nobody holds.
    again = deployment.trigger(dag_id, {"seconds": 1, "slow_url": slow_state.url})
    states = deployment.wait_run(dag_id, again)
    assert states == {"__run__": "success", "plan": "success", "apply": "success"}, deployment.log(
        dag_id, again, "apply"
    )
    assert deployment.xcom(dag_id, again, "apply")["status"] == "applied"
    assert _lock(deployment, workspace) == {}


def test_two_dag_runs_applying_one_workspace_apply_one_and_plan_the_other_again(
    deployment: Deployment,
) -> None:
    dag_id = "deploy_contended"
    first = deployment.trigger(dag_id, {"replicas": 1})
    second = deployment.trigger(dag_id, {"replicas": 2})
    outcomes = {r: deployment.wait_run(dag_id, r) for r in (first, second)}
    logs = {r: deployment.log(dag_id, r, "apply") for r in (first, second)}
    assert {o["__run__"] for o in outcomes.values()} == {"success"}, f"{outcomes}\n" + "\n".join(
        logs.values()
    )
    runs = {r: deployment.runs_of(dag_id, r) for r in (first, second)}
    shown = {r: [(x["id"], x["status"], x["result"]) for x in runs[r]] for r in runs}
    # Both planned against the same state: one DAG run applied its plan; the other's plan
    # was refused as stale (or superseded) and that DAG run planned again and applied.
    once, twice = sorted(runs.values(), key=len)
    assert [r["status"] for r in once] == ["applied"], shown
    assert sorted(r["status"] for r in twice) in (
        ["applied", "cancelled"], ["applied", "superseded"]
    ), shown  # fmt: skip
    refused = next(r for r in twice if r["status"] != "applied")
    assert refused["result"]["reason"] in ("stale", "superseded"), shown
    for run_id in (first, second):
        applied = deployment.xcom(dag_id, run_id, "apply")
        assert applied["status"] == "applied", applied


def test_the_lock_error_names_the_holder(deployment: Deployment) -> None:
    workspace, dag_id = "deploy/locked", "deploy_locked"
    info = {"ID": "held-by-a-person", "Operation": "OperationTypeApply",
            "Who": "someone@elsewhere", "Version": "1.9.0", "Path": ""}  # fmt: skip
    with deployment.control_plane() as admin:
        lock_url = f"{admin.state_url(workspace)}/lock"
        headers = {"Authorization": f"Bearer {deployment.admin_token}"}
        taken = httpx.request("LOCK", lock_url, json=info, headers=headers)
        assert taken.status_code == 200, taken.text
        try:
            holder = _lock(deployment, workspace)
            run_id = deployment.trigger(dag_id)
            states = deployment.wait_run(dag_id, run_id)
        finally:
            httpx.request("UNLOCK", lock_url, json=info, headers=headers)
    assert states == {"__run__": "failed", "plan": "success", "apply": "failed"}, states
    log = deployment.log(dag_id, run_id, "apply")
    since = shown_time(holder["since"])
    assert f"the state is locked by {holder['held_by']} since {since}" in log, log
    assert "someone@elsewhere" in log, log
    # Wherever the log says who holds it (the chained driver error too), it is the holder:
    # never the binary's own refused attempt, whose ID nobody could force-unlock.
    named = re.findall(r"the state is locked (by \S+|\(lock ID [^)]*\))", log)
    assert set(named) == {f"by {holder['held_by']}", f"(lock ID {info['ID']})"}, named
    (run,) = deployment.runs_of(dag_id, run_id)
    assert run["status"] == "failed", run


def test_a_sensitive_output_named_result_reaches_no_xcom_rendered_field_or_log(
    deployment: Deployment,
) -> None:
    dag_id = "deploy_canary"
    run_id = deployment.trigger(dag_id)
    states = deployment.wait_run(dag_id, run_id)
    assert set(states.values()) == {"success"}, states
    # The value was there to leak: the task that needed it read it, and its log masks it.
    assert deployment.xcom(dag_id, run_id, "use") == len(CANARY)
    use_log = deployment.log(dag_id, run_id, "use")
    assert "the result is ***" in use_log and "printed: ***" in use_log, use_log
    reference = deployment.xcom(dag_id, run_id, "outputs")["result"]
    assert reference == {"tofuflow_sensitive_output": {
        "workspace": "deploy/canary", "output": "result", "conn_id": "tofuflow_tests",
    }}  # fmt: skip
    assert CANARY not in json.dumps(deployment.xcoms(dag_id, run_id))
    for ti in deployment.task_instances(dag_id, run_id):
        assert CANARY not in json.dumps(ti.get("rendered_fields")), ti
        assert CANARY not in deployment.log(dag_id, run_id, ti["task_id"]), ti["task_id"]
    leaked = _holding(deployment, CANARY)
    assert leaked <= {Path("processes/scheduler.log")}, leaked
    # Airflow 3.3's LocalExecutor copies every task's log lines to the scheduler's stdout
    # without its secret masker: the two lines `use` logged on purpose are there in clear,
    # and nothing the provider logged.
    stream = (deployment.home / "processes" / "scheduler.log").read_text(errors="replace")
    shown = [line for line in stream.splitlines() if CANARY in line]
    assert len(shown) <= 2 and all(
        "the result is" in line or "printed:" in line for line in shown
    ), shown


def test_ephemeral_environments_share_their_source_workspace_asset(
    deployment: Deployment,
) -> None:
    dag_id = "deploy_ephemeral"
    # One run first, as docs/airflow.md advises: Airflow 3.3 creates an asset added through
    # an alias on its first event and fails all but one of the tasks that do so at once.
    first = deployment.trigger(dag_id)
    outcomes = {first: deployment.wait_run(dag_id, first, timeout=600)}
    run_ids = [first, *(deployment.trigger(dag_id) for _ in range(EPHEMERAL_RUNS - 1))]
    outcomes |= {r: deployment.wait_run(dag_id, r, timeout=600) for r in run_ids[1:]}
    assert all(o["__run__"] == "success" for o in outcomes.values()), _failures(
        deployment, dag_id, outcomes
    )
    uri = f"tofuflow://{_authority(deployment)}/deploy/preview"
    assert [a["uri"] for a in deployment.assets() if "preview" in a["uri"]] == [uri]
    environments = set()
    for run_id in run_ids:
        events = deployment.asset_events(run_id)
        assert {e["uri"] for e in events} == {uri}, events
        assert sorted(e["extra"]["operation"] for e in events) == ["apply", "destroy"]
        environments |= {e["extra"]["environment"] for e in events}
    assert len(environments) == EPHEMERAL_RUNS


def _failures(deployment: Deployment, dag_id: str, outcomes: dict[str, dict[str, str]]) -> str:
    """What a user looks at when DAG runs failed: each run's task states, the failed tasks'
    logs (``__run__`` is the run's own state, not a task) and the processes' logs."""
    parts = []
    for run_id, states in outcomes.items():
        if states["__run__"] == "success":
            continue
        parts.append(f"{run_id}: {states}")
        for task_id, state in states.items():
            # A task that never started (upstream_failed) has no log to read.
            if task_id != "__run__" and state == "failed":
                parts.append(f"{task_id}:\n{deployment.log(dag_id, run_id, task_id)[-4000:]}")
    return "\n\n".join([*parts, deployment.process_logs()])
