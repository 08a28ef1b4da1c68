"""The provider against a remote control plane (`tofuflow server` as its own process),
through a connection holding a URL and an API token: retries never apply stale plans."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from _airflow_harness import E2E_DAGS, EXAMPLES, Airflow

from _services.postgres import free_port
from _services.server import process_server
from tofuflow.runs import ControlPlane

CLI = [sys.executable, "-c", "from tofuflow.cli import main; main()"]


def test_a_stale_plan_is_planned_again_not_applied(airflow: Airflow, tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\n\n'
        f'[policies]\ndirectory = "{EXAMPLES / "policies"}"\n\n'
        '[[workspace_settings]]\nmatch = "examples/*"\nsettings = { disposable = true }\n'
    )
    port = free_port()
    with process_server(config, port, tmp_path / "server.log") as server:
        env = {**os.environ, "TOFUFLOW_SERVER_CONFIG": str(config)}
        token = subprocess.run(
            [*CLI, "server", "tokens", "create", "--role", "applier", "--workspaces",
             "examples/*", "--description", "airflow workers"],
            capture_output=True, text=True, check=True, env=env,
        ).stdout.strip()  # fmt: skip
        connection = {
            "conn_type": "tofuflow", "host": "127.0.0.1", "schema": "http", "port": port,
            "password": token,
        }  # fmt: skip
        run = airflow.run(
            E2E_DAGS / "tofuflow_e2e_stale.py", "tofuflow_e2e_stale",
            {"AIRFLOW_CONN_TOFUFLOW_REMOTE": json.dumps(connection)},
        )  # fmt: skip
        assert run.state == "success", run.log[-5000:]
        stale_id = run.xcom("plan_one", key="run_id")
        applied = run.xcom("apply_one")
        targeted = run.xcom("apply_two")
        assert (targeted["status"], targeted["add"]) == ("applied", 1)  # -target replica[1]
        assert applied["run_id"] != stale_id and applied["status"] == "applied"
        # Planned again from the new state: replica[0] to create, replica[1] to remove.
        assert (applied["add"], applied["destroy"]) == (1, 1)
        # apply_two changed the state plan_one was made against: superseded, planned again.
        newer = run.xcom("plan_two", key="run_id")
        assert f"run {stale_id} was superseded by run {newer}: planning again" in run.log
        with ControlPlane(server.url, token) as client:
            stale = client.run(stale_id)
            assert stale["status"] == "superseded" and stale["result"]["by"] == newer
            runs = client.runs(workspace="examples/e2e-stale", limit=50)
            assert {r["status"] for r in runs} == {"applied", "superseded"}
            assert sum(r["status"] == "superseded" for r in runs) == 1  # only the stale one
            # With a shared token the actor is the token; the run context names the task.
            for r in runs:
                assert r["context"]["airflow"]["dag_id"] == "tofuflow_e2e_stale"
                assert r["context"]["airflow"]["run_id"] == run.run_id
            assert {r["context"]["airflow"]["task_id"] for r in runs} == {
                "plan_one", "plan_two", "apply_one", "destroy",
            }  # fmt: skip
        assert not list((airflow.files / "examples_e2e-stale").glob("*"))
