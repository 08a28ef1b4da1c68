"""The example DAGs under real Airflow 3, the real binary and the control plane.

Each test runs one DAG of examples/airflow/dags with dag.test() in its own process and
checks what a user would look at: task states, XCom, the files the configuration makes,
the workspace's state, the runs and the audit log on the control plane, and that the
sensitive output never reached Airflow unless a task asked for it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from _airflow_harness import EXAMPLES, Airflow, DagRun, query, wait_for

from tofuflow.airflow import environment_name
from tofuflow.runs import ControlPlane

DAGS = EXAMPLES / "dags"


def _api_key(name: str) -> str:
    """The sensitive output the example configuration derives from its name."""
    return "key-" + hashlib.sha256(f"api-key:{name}".encode()).hexdigest()[:32]


def _files(airflow: Airflow, name: str) -> list[str]:
    return sorted(p.name for p in (airflow.files / name.replace("/", "_")).glob("*"))


def _occurrences(root: Path, secret: str) -> list[str]:
    """Every file under ``root`` whose bytes contain ``secret`` (databases included)."""
    needle = secret.encode()
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def _assert_audited(airflow: Airflow, dag_run: DagRun, expected_runs: int) -> list[dict[str, Any]]:
    """Every run the DAG run made names its DAG, DAG run and task in the audit log (through
    the identity each task acted with, minted per task) and in the run's stored context."""
    runs = airflow.runs_of(dag_run)
    assert len(runs) == expected_runs, [(r["id"], r["status"]) for r in runs]
    for run in runs:
        task_id = run["context"]["airflow"]["task_id"]
        assert run["context"]["pipeline_id"] == dag_run.dag_id and run["context"]["job"] == task_id
        events = airflow.admin.audit(run=run["id"], limit=1000)
        said = {e["id"]: (e["actor_claims"] or {}).get("description", "") for e in events}
        created = events[0]
        assert created["action"] == "run.created"
        assert (
            f"airflow dag_id={dag_run.dag_id} run_id={dag_run.run_id} task_id={task_id} "
            in said[created["id"]]
        ), said[created["id"]]
        by_airflow = [e for e in events if said[e["id"]].startswith("airflow ")]
        for event in by_airflow:  # every step a task took, whichever task took it
            assert f"dag_id={dag_run.dag_id} run_id={dag_run.run_id} " in said[event["id"]]
        actions = {e["action"] for e in by_airflow}
        assert {"run.created", "run.artifact", "run.policy_decided"} <= actions, actions
        if run["status"] in ("applied", "failed"):
            assert {"run.session_opened", f"run.{run['status']}"} <= actions, actions
    return runs


def test_airflow_lists_the_provider_and_its_connection_type(airflow: Airflow) -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "list", "-o", "json"],
        env=airflow.env, capture_output=True, text=True, timeout=180, check=True,
    )  # fmt: skip
    providers = {p["package_name"]: p for p in json.loads(listed.stdout)}
    assert "tofuflow" in providers, sorted(providers)
    assert "OpenTofu" in providers["tofuflow"]["description"]
    hooks = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "hooks", "-o", "json"],
        env=airflow.env, capture_output=True, text=True, timeout=180, check=True,
    )  # fmt: skip
    ours = [h for h in json.loads(hooks.stdout) if h["connection_type"] == "tofuflow"]
    assert ours == [
        {
            "connection_type": "tofuflow",
            "class": "tofuflow.airflow.hooks.TofuflowHook",
            "conn_id_attribute_name": "tofuflow_conn_id",
            "package_name": "tofuflow",
            "hook_name": "tofuflow",
        }
    ]


def test_plan_auto_approved_apply_outputs_use_and_destroy(airflow: Airflow) -> None:
    run = airflow.run(DAGS / "tofuflow_lifecycle.py", "tofuflow_lifecycle")
    assert run.state == "success", run.log[-5000:]
    assert set(run.tasks.values()) == {"success"}, run.tasks
    # No console (the embedded plane): the "tofuflow run" button has no link, and a
    # successful task's log has no error line saying so.
    assert "XCom not found" not in run.log and "[error" not in run.log, run.log[-5000:]
    plan = run.xcom("plan")
    assert plan["status"] == "approved" and plan["decision"] == "auto_approved"
    assert (plan["add"], plan["change"], plan["destroy"]) == (2, 0, 0)
    assert run.xcom("plan", key="run_id") == plan["run_id"]
    applied = run.xcom("apply")
    assert applied["run_id"] == plan["run_id"] and applied["status"] == "applied"
    outputs = run.xcom("outputs")
    assert sorted(outputs) == ["endpoint", "replica_files"]  # the sensitive one stays out
    assert run.xcom("check_service") == 2
    destroyed = run.xcom("destroy")
    assert destroyed["status"] == "applied" and destroyed["destroy"] == 2
    assert _files(airflow, "examples/lifecycle") == []
    assert airflow.state("examples/lifecycle")["resources"] == []
    # The workspace is an asset: apply and destroy each recorded an event with their run.
    events = query(
        airflow.home,
        "select e.extra from asset_event e join asset a on a.id = e.asset_id "
        "where a.uri = 'tofuflow://embedded/examples/lifecycle' and e.source_run_id = ?",
        (run.run_id,),
    )
    extras = sorted((json.loads(e[0])["operation"], json.loads(e[0])["run_id"]) for e in events)
    assert extras == sorted([("apply", plan["run_id"]), ("destroy", destroyed["run_id"])])
    runs = _assert_audited(airflow, run, expected_runs=2)
    assert {r["status"] for r in runs} == {"applied"}
    # The sensitive output is nowhere in Airflow: not in XCom, logs or the metadata DB.
    assert _occurrences(airflow.home, _api_key("examples/lifecycle")) == []


def test_an_environment_is_destroyed_although_the_work_in_it_failed(airflow: Airflow) -> None:
    run = airflow.run(DAGS / "tofuflow_ephemeral.py", "tofuflow_ephemeral")
    assert run.state == "failed", run.log[-5000:]
    assert run.tasks == {
        "preview.create": "success",
        "preview.deploy": "success",
        "preview.outputs": "success",
        "smoke_test": "failed",
        "preview.destroy": "success",
    }
    # It failed on purpose, after it read the sensitive output through TofuflowHook():
    # not on the way (a relative server_config read from the worker's directory).
    assert "smoke test failed (on purpose)" in run.log, run.log[-5000:]
    assert "(api key of " in run.log
    name = environment_name("tofuflow_ephemeral", run.run_id)
    assert run.xcom("preview.create")["workspace"] == name
    env = airflow.admin.environment(name)
    assert env["status"] == "destroyed" and env["resources"] == 0
    assert _files(airflow, name) == []  # the replica file was made, and is gone
    assert "replica-0.txt" in run.log
    assert airflow.state(name).get("resources", []) == []
    _assert_audited(airflow, run, expected_runs=2)
    # Asked for (include_sensitive=True): XCom holds a reference, and the key is nowhere
    # in Airflow — not in XCom, rendered fields, logs or the metadata database.
    key = _api_key(name)
    reference = run.xcom("preview.outputs")["api_key"]
    assert reference == {"tofuflow_sensitive_output": {
        "workspace": name, "output": "api_key", "conn_id": "tofuflow_default",
    }}  # fmt: skip
    assert key not in run.log
    assert _occurrences(airflow.home, key) == []
    # One asset per source workspace, however many environments: the environment is in
    # the events' extra.
    events = query(
        airflow.home,
        "select a.uri, e.extra from asset_event e join asset a on a.id = e.asset_id "
        "where e.source_run_id = ?",
        (run.run_id,),
    )
    assert {uri for uri, _ in events} == {"tofuflow://embedded/examples/preview"}
    assert {json.loads(extra)["environment"] for _, extra in events} == {name}
    assert not query(airflow.home, "select uri from asset where uri like ?", (f"%{name}%",))
    assert "api key of 36 characters" in run.log


def test_a_killed_apply_stops_the_binary_gracefully_and_releases_the_lock(
    airflow: Airflow, tmp_path: Path
) -> None:
    lineage = tmp_path / "openlineage.jsonl"  # the FAIL event is checked below
    transport = {"type": "file", "log_file_path": str(lineage), "append": True}
    run = airflow.run(
        DAGS / "tofuflow_killed.py", "tofuflow_killed",
        {"AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport)},
    )  # fmt: skip
    assert run.state == "failed"
    assert run.tasks == {"plan": "success", "apply": "failed"}
    assert "AirflowTaskTimeout" in run.log and "Interrupt received" in run.log
    (planned,) = _assert_audited(airflow, run, expected_runs=1)
    done = airflow.admin.run(planned["id"])
    assert done["status"] == "cancelled", done
    if "error" in done["result"]:
        # The apply session had opened (it opens before the binary's apply): the runner
        # recorded the interrupted apply, with the driver's account of the graceful stop.
        assert done["result"]["reason"] == "apply interrupted"
        assert "was cancelled; it stopped gracefully after SIGINT" in done["result"]["error"]
    else:  # killed before the session opened: on_kill cancelled the run
        assert done["result"]["reason"] == "airflow: the task was killed (on_kill)"
    # OpenLineage's FAIL event of the apply names the run it was applying (the status is
    # the control plane's to tell: left out), as an output of the task.
    assert lineage.is_file(), (
        "no OpenLineage events: is apache-airflow-providers-openlineage installed? "
        "`.venv/bin/pip install -e '.[dev]'` installs it (the openlineage extra)"
    )
    events = [json.loads(line) for line in lineage.read_text().splitlines()]
    (failed,) = [
        e for e in events if (e["job"]["name"], e["eventType"]) == ("tofuflow_killed.apply", "FAIL")
    ]
    facet = failed["run"]["facets"]["tofuflow"]
    assert (facet["operation"], facet["runId"], facet["workspace"]) == (
        "apply", planned["id"], "examples/slow",
    )  # fmt: skip
    assert "status" not in facet and "consoleUrl" not in facet  # embedded: no console
    assert [d["name"] for d in failed["outputs"]] == ["examples/slow"]
    # No lock is held: an admin (break-glass: an applier locks only through a run) can
    # take the state lock at once, and give it back.
    with ControlPlane(airflow.plane.url, airflow.plane.token("admin")) as applier:
        lock = f"{applier.state_url('examples/slow')}/lock"
        info = {"ID": "e2e-probe", "Operation": "probe", "Who": "e2e"}
        headers = {"Authorization": f"Bearer {applier.token}"}
        taken = httpx.request("LOCK", lock, json=info, headers=headers)
        assert taken.status_code == 200, taken.text
        httpx.request("UNLOCK", lock, json=info, headers=headers).raise_for_status()


def test_applies_wait_for_an_approval_deferred_or_polling(airflow: Airflow) -> None:
    proc = airflow.start(DAGS / "tofuflow_approval.py", "tofuflow_approval")
    log = airflow.logs / "tofuflow_approval.log"
    approved: list[str] = []
    with ControlPlane(airflow.plane.url, airflow.plane.token("approver")) as approver:

        def approve_waiting() -> bool:
            """A person approves each run once its task says it waits for one."""
            text = log.read_text(errors="replace")
            for run in approver.runs(workspace="guarded/service", limit=20):
                asked = f"run {run['id']} needs approval: an approver runs" in text
                if run["status"] == "needs_approval" and asked and run["id"] not in approved:
                    approver.approve(run["id"], "looked at it")
                    approved.append(run["id"])
            return len(approved) == 2 or proc.poll() is not None

        wait_for(approve_waiting, 180, "the apply and the destroy to ask for approval")
    run = airflow.finish(proc, "tofuflow_approval")
    assert run.state == "success", run.log[-5000:]
    assert run.xcom("plan")["status"] == "needs_approval"
    assert run.xcom("apply")["run_id"] == approved[0] == run.xcom("plan")["run_id"]
    assert run.xcom("destroy")["run_id"] == approved[1]
    assert "running trigger in line" in run.log  # the apply waited in the triggerer
    for run_id in approved:
        done = airflow.admin.run(run_id)
        assert done["status"] == "applied"
        assert [a["comment"] for a in done["approvals"]] == ["looked at it"]
    assert _files(airflow, "guarded/service") == []
    _assert_audited(airflow, run, expected_runs=2)


def test_a_task_killed_while_it_polls_for_an_approval_plans_nothing_new(
    airflow: Airflow,
) -> None:
    """SIGTERM while the destroy task polled for its approval: on_kill cancelled the run,
    then the task read "cancelled (airflow: …)" as its own stale run and planned again,
    one more run (and its audit events) per kill."""
    import os
    import signal

    proc = airflow.start(DAGS / "tofuflow_approval.py", "tofuflow_approval")
    log = airflow.logs / "tofuflow_approval.log"
    with ControlPlane(airflow.plane.url, airflow.plane.token("approver")) as approver:
        seen: dict[str, str] = {}

        def waiting(task: str) -> str | None:
            text = log.read_text(errors="replace")
            for run in approver.runs(workspace="guarded/service", limit=20):
                if run["id"] in seen.values() or run["status"] != "needs_approval":
                    continue
                if f"run {run['id']} needs approval: an approver runs" in text:
                    seen[task] = run["id"]
                    return str(run["id"])
            return None

        wait_for(lambda: waiting("apply") is not None, 180, "the apply to ask for approval")
        approver.approve(seen["apply"], "fine")
        wait_for(lambda: waiting("destroy") is not None, 180, "the destroy to ask")
    os.kill(proc.pid, signal.SIGTERM)  # the worker is told to stop while the destroy polls
    run = airflow.finish(proc, "tofuflow_approval")
    assert run.tasks["destroy"] != "success", run.tasks
    destroy = airflow.admin.run(seen["destroy"])
    assert destroy["status"] == "cancelled", destroy
    assert "on_kill" in str(destroy["result"]["reason"])
    runs = airflow.admin.runs(workspace="guarded/service", limit=20)
    newer = [r["id"] for r in runs if r["created_at"] > destroy["created_at"]]
    assert newer == [], f"a run was planned after the kill: {newer}"
