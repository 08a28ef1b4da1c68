"""The example drift DAG (examples/airflow/dags/drift_schedule.py) parses and decides right.

Its bash step runs against the real CLI and control plane in
tests/integration/test_drift.py::test_the_airflow_drift_dag_check_step.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from typing import Any

import pytest

DAG_FILE = (
    Path(__file__).resolve().parents[2] / "examples" / "airflow" / "dags" / "drift_schedule.py"
)


@pytest.fixture(scope="module")
def module() -> dict[str, Any]:
    return runpy.run_path(str(DAG_FILE), run_name="drift_schedule")


def test_the_dag_is_scheduled_and_checks_then_reports(module: dict[str, Any]) -> None:
    from airflow.sdk import DAG

    (dag,) = [v for v in module.values() if isinstance(v, DAG)]
    assert dag.dag_id == "tofuflow_drift_schedule"
    assert dag.timetable.expression == "0 3 * * *"
    assert dag.max_active_runs == 1 and not dag.catchup
    check, report = dag.get_task("drift_check"), dag.get_task("report")
    assert report.upstream_task_ids == {"drift_check"}
    assert "tofuflow drift" in check.bash_command and "--format json" in check.bash_command
    assert check.env["TOFUFLOW_PLAN_TOKEN"] == "{{ conn.tofuflow_default.password or '' }}"
    assert Path(dag.params["project"]).is_file()  # examples/project/tofuflow.toml
    assert dag.params["workspaces"] == []


def _document(status: str) -> dict[str, Any]:
    """A report as `tofuflow drift --format json` writes it (see test_drift_report)."""
    from tofuflow.drift import DriftReport, WorkspaceDrift, findings_from_plans, render_drift_json
    from tofuflow.tofu import Plan

    plans = Path(__file__).parent.parent / "fixtures" / "configs" / "drift_plans"
    refresh = Plan.from_json((plans / "refresh_delete.json").read_bytes())
    found = findings_from_plans(refresh if status == "drift" else None, None)
    clean = WorkspaceDrift.found("app/dev", findings_from_plans(None, None))
    report = DriftReport((WorkspaceDrift.found("app/prod", found), clean))
    return dict(json.loads(render_drift_json(report)))


def test_drift_fails_the_run_naming_what_drifted(module: dict[str, Any]) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException) as raised:
        module["raise_on_drift"](_document("drift"))
    message = str(raised.value)
    assert message.startswith("drift in 1 workspace(s): app/prod")
    assert "app/prod: delete pyvider_file_content.note (resource)" in message
    assert "app/dev" not in message.split("\n", 1)[1]


def test_no_drift_passes_with_the_counts(module: dict[str, Any]) -> None:
    assert module["raise_on_drift"](_document("none")) == {"drift": 0, "none": 2, "error": 0}
