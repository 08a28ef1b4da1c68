"""A nightly drift check: `tofuflow drift` on every workspace, an alert when one drifted.

``drift_check`` runs ``tofuflow drift`` (docs/drift.md): per workspace a refresh-only plan
(objects changed or deleted outside tofuflow) and a ``-refresh=false`` plan (the
configuration in this checkout differs from the state), read-only, never taking the state
lock, each result recorded on the control plane with the run and commit that last applied
the workspace (``GET /v1/drift``, audit action ``drift.checked``). Its text report goes to
the task log and its JSON report to XCom. An error in any workspace (exit 1) fails the task,
which is retried; drift (exit 2) does not. ``report`` then fails the DAG run when something
drifted, naming the workspaces and resources, so the usual failure alerts fire.

Params: ``project`` (the tofuflow.toml; default: examples/project beside this directory)
and ``workspaces`` (default: every workspace of that file).

Connection ``tofuflow_default`` (type ``tofuflow``), as for the other examples: its host is
the control plane's URL (``https://tofuflow.example.com``) and its password a token with the
planner role; with no host, the embedded control plane is used (the ``server_config`` extra
picks its server TOML). Run the workers from the repository's default branch: configuration
drift is measured against the checkout the DAG runs from.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowFailException

log = logging.getLogger(__name__)
PROJECT = str(Path(__file__).resolve().parents[2] / "project" / "tofuflow.toml")

# Exit codes of `tofuflow drift`: 0 no drift, 2 drift, 1 an error in some workspace (the
# others are still checked and reported). The last line of output is the JSON report
# (newlines removed: JSON escapes the ones inside strings), which becomes the XCom.
CHECK = """\
set +e
for name in TOFUFLOW_SERVER_URL TOFUFLOW_PLAN_TOKEN TOFUFLOW_SERVER_CONFIG; do
  if [ -z "${!name}" ]; then unset "$name"; fi
done
workspaces=()
if [ -n "$TOFUFLOW_WORKSPACES" ]; then mapfile -t workspaces <<< "$TOFUFLOW_WORKSPACES"; fi
report="$(mktemp)"
tofuflow drift "${workspaces[@]}" --project "$TOFUFLOW_PROJECT" --format json --output "$report"
code=$?
if [ "$code" -ne 0 ] && [ "$code" -ne 2 ]; then rm -f "$report"; exit 1; fi
echo
tr -d '\\n' < "$report"
echo
rm -f "$report"
"""


@dag(
    schedule="0 3 * * *",
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    params={
        "project": Param(PROJECT, type="string", description="The tofuflow.toml to use."),
        "workspaces": Param(
            [], type="array", items={"type": "string"},
            description="Workspaces to check (empty: every workspace of the project).",
        ),
    },
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
    tags=["tofuflow", "example", "drift"],
)  # fmt: skip
def tofuflow_drift_schedule() -> None:
    check = BashOperator(
        task_id="drift_check",
        bash_command=CHECK,
        env={
            "TOFUFLOW_PROJECT": "{{ params.project }}",
            "TOFUFLOW_WORKSPACES": "{{ params.workspaces | join('\\n') }}",
            "TOFUFLOW_SERVER_URL": "{{ conn.tofuflow_default.host or '' }}",
            # Airflow masks a connection's password wherever it is logged.
            "TOFUFLOW_PLAN_TOKEN": "{{ conn.tofuflow_default.password or '' }}",
            "TOFUFLOW_SERVER_CONFIG": (
                "{{ conn.tofuflow_default.extra_dejson.get('server_config', '') }}"
            ),
        },
        append_env=True,  # PATH (tofuflow, tofu), TOFUFLOW_BINARY, ... of the worker
        execution_timeout=timedelta(hours=1),
    )

    @task
    def report(document: str) -> dict[str, Any]:
        """Fail the DAG run when a workspace drifted; return the counts otherwise."""
        return raise_on_drift(json.loads(document))

    report(check.output)


def raise_on_drift(document: dict[str, Any]) -> dict[str, Any]:
    """The report's verdict: log it, raise when something drifted (no retry: it will not
    go away by itself)."""
    drifted = [ws for ws in document["workspaces"] if ws["status"] == "drift"]
    for ws in document["workspaces"]:
        applied = ws.get("last_applied") or {}
        log.info(
            "%s: %s (state serial %s, last applied by run %s at commit %s)",
            ws["workspace"], ws["status"], ws.get("serial"), applied.get("run"),
            applied.get("commit"),
        )  # fmt: skip
    if drifted:
        lines = [
            f"{ws['workspace']}: {r['action']} {r['address']} ({r['kind']})"
            for ws in drifted
            for r in ws["resources"]
        ]
        raise AirflowFailException(
            f"drift in {len(drifted)} workspace(s): {', '.join(w['workspace'] for w in drifted)}"
            + "".join(f"\n  {line}" for line in lines)
        )
    return dict(document["counts"])


drift_dag = tofuflow_drift_schedule()

if __name__ == "__main__":  # python drift_schedule.py: one run with dag.test()
    drift_dag.test()
