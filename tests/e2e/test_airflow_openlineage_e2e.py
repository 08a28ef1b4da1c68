"""The run link and OpenLineage, end to end under dag.test(): what Airflow's UI would show
for a task's "tofuflow run" button, and what a lineage backend receives through
OpenLineage's real file transport (apache-airflow-providers-openlineage).

The OpenLineage listener is on under dag.test() as soon as a transport is configured
(``AIRFLOW__OPENLINEAGE__TRANSPORT``); nothing else needs setting.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from _airflow_harness import E2E_DAGS, EXAMPLES, Airflow

from tofuflow.airflow import _lineage

WORKSPACE = "examples/e2e-lineage"
# Reads the links as Airflow's API server does (GET .../taskInstances/{task}/links): the
# serialized DAG from the metadata database, each task's links through XComOperatorLink.
_LINKS = """
import json, sys
from sqlalchemy import select
from airflow.models.serialized_dag import SerializedDagModel
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session

dag_id, run_id = sys.argv[1:3]
with create_session() as session:
    dag = SerializedDagModel.get_dag(dag_id, session=session)
    tis = session.scalars(
        select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
    )
    links = {}
    for ti in tis:
        task = dag.get_task(ti.task_id)
        links[ti.task_id] = {name: task.get_extra_links(ti, name) for name in task.extra_links}
print("TOFUFLOW-LINKS", json.dumps(links))
"""


def _provider() -> None:
    if importlib.util.find_spec("airflow.providers.openlineage") is None:
        pytest.fail(
            "apache-airflow-providers-openlineage is not installed, so Airflow emits no "
            "OpenLineage events: install the dev extra, `.venv/bin/pip install -e '.[dev]'` "
            "(it includes the openlineage extra)",
            pytrace=False,
        )


def _events(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(task, START/COMPLETE/FAIL) → the event, from the file transport's JSON lines."""
    assert path.is_file(), f"no OpenLineage events were written to {path}"
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(e["job"]["name"].rpartition(".")[2], e["eventType"]): e for e in events}


def test_run_tasks_link_to_the_console_and_their_lineage_carries_the_tofuflow_facet(
    airflow: Airflow, tmp_path: Path
) -> None:
    _provider()
    console = airflow.plane.url  # the embedded control plane's server also serves the console
    lineage_file = tmp_path / "openlineage.jsonl"
    connection = {
        "conn_type": "tofuflow",
        "extra": {
            "project": str(EXAMPLES / "tofuflow.toml"),
            "server_config": str(EXAMPLES / "server.toml"),
            "console_url": console,
        },
    }
    run = airflow.run(
        E2E_DAGS / "tofuflow_e2e_lineage.py", "tofuflow_e2e_lineage",
        {
            "AIRFLOW_CONN_TOFUFLOW_CONSOLE": json.dumps(connection),
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
                {"type": "file", "log_file_path": str(lineage_file), "append": True}
            ),
        },
    )  # fmt: skip
    assert run.state == "success", run.log[-5000:]
    plan_id = run.xcom("plan", key="run_id")
    destroy_id = run.xcom("destroy")["run_id"]
    assert run.xcom("apply")["run_id"] == plan_id and destroy_id != plan_id

    # The links, as the API server resolves them for the UI.
    read = subprocess.run(
        [sys.executable, "-c", _LINKS, run.dag_id, run.run_id],
        env=airflow.env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert read.returncode == 0, read.stderr[-3000:]
    (marked,) = [x for x in read.stdout.splitlines() if x.startswith("TOFUFLOW-LINKS ")]
    links = json.loads(marked.removeprefix("TOFUFLOW-LINKS "))
    plan_page, destroy_page = (f"{console}/console/runs/{i}" for i in (plan_id, destroy_id))
    assert links == {
        "plan": {"tofuflow run": plan_page},
        "apply": {"tofuflow run": plan_page},
        "destroy": {"tofuflow run": destroy_page},
        "outputs": {},  # reads outputs: no run, no button
    }

    # OpenLineage: every run task's COMPLETE event carries the tofuflow facet.
    events = _events(lineage_file)
    facets = {
        task: events[(task, "COMPLETE")]["run"]["facets"].get("tofuflow")
        for task in ("plan", "apply", "outputs", "destroy")
    }
    assert facets["outputs"] is None
    versions = {v["run_id"]: v for v in airflow.admin.versions(WORKSPACE)}
    created = ["terraform_data.replica[0]", "terraform_data.replica[1]"]
    expected = {
        "plan": ("plan", plan_id, "approved", None, created, []),
        "apply": ("apply", plan_id, "applied", versions[plan_id]["serial"], created, []),
        "destroy": ("destroy", destroy_id, "applied", versions[destroy_id]["serial"], [], created),
    }
    schema = json.loads((Path(_lineage.__file__).parent / _lineage.SCHEMA_FILE).read_text())
    ours = schema["$defs"]["TofuflowRunFacet"]["allOf"][1]
    for task, (operation, run_id, status, serial, made, destroyed) in expected.items():
        facet = facets[task]
        assert facet is not None, f"{task}: no tofuflow facet in {events[(task, 'COMPLETE')]}"
        jsonschema.validate(facet, ours)
        assert facet["_schemaURL"] == _lineage.SCHEMA_URL
        assert facet["_producer"] == _lineage.PRODUCER
        assert (facet["operation"], facet["workspace"], facet["runId"], facet["status"]) == (
            operation, WORKSPACE, run_id, status,
        )  # fmt: skip
        assert facet.get("stateSerial") == serial
        assert facet["consoleUrl"] == f"{console}/console/runs/{run_id}"
        assert (facet["created"], facet["destroyed"]) == (made, destroyed)
        event = events[(task, "COMPLETE")]
        datasets = event["inputs"] if operation == "plan" else event["outputs"]
        authority = console.removeprefix("http://")
        assert [(d["namespace"], d["name"]) for d in datasets] == [
            ("tofuflow://embedded", WORKSPACE)
        ], authority
    assert facets["apply"]["stateVersion"] == versions[plan_id]["version"]
    # Addresses only: the sensitive output's value reaches no event.
    assert "key-" not in lineage_file.read_text()
    assert "OpenLineage extractor returns non-valid metadata" not in run.log
