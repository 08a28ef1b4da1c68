"""Stacks as Airflow tasks: the task group's tasks and edges, and the inputs a plan reads
(from a real embedded control plane's state service; no binary)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from airflow.sdk import DAG
from airflow.sdk._shared.secrets_masker import redact

from tofuflow.airflow import (
    TofuflowApplyOperator,
    TofuflowDestroyOperator,
    TofuflowPlanOperator,
    stack_task_group,
)
from tofuflow.airflow.hooks import TofuflowHook
from tofuflow.airflow.stacks import stack_task_id
from tofuflow.errors import ConfigError
from tofuflow.stacks import CycleError

# network <- db <- app, network <- app; "tools" stands alone.
PROJECT = """
[workspaces."stacks/network"]
directory = "infra"

[workspaces."stacks/db"]
directory = "infra"
depends_on = ["stacks/network"]
inputs = { subnet = "stacks/network.subnet" }

[workspaces."stacks/app"]
directory = "infra"
depends_on = ["stacks/network", "stacks/db"]
inputs = { subnet = "stacks/network.subnet", token = "stacks/network.token", \
           region = "stacks/network.region" }
variables = { size = "s" }

[workspaces.tools]
directory = "infra"
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "infra").mkdir()
    path = tmp_path / "tofuflow.toml"
    path.write_text(PROJECT)
    return path


def _group(project: Path, operation: Any, **kwargs: Any) -> dict[str, tuple[str, set[str]]]:
    """task id → (the operator's class name, its downstream task ids) within the DAG."""
    with DAG("stacks", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
        group = stack_task_group(project, operation, **kwargs)
    assert group.group_id == kwargs.get("group_id", "stacks")
    return {t.task_id: (type(t).__name__, set(t.downstream_task_ids)) for t in dag.tasks}


def test_apply_runs_dependencies_first_one_apply_task_per_stack(project: Path) -> None:
    assert _group(project, "apply") == {
        "stacks.stacks_network": (
            "TofuflowApplyOperator",
            {"stacks.stacks_db", "stacks.stacks_app"},
        ),
        "stacks.stacks_db": ("TofuflowApplyOperator", {"stacks.stacks_app"}),
        "stacks.stacks_app": ("TofuflowApplyOperator", set()),
        "stacks.tools": ("TofuflowApplyOperator", set()),
    }


def test_plan_has_the_same_edges_with_plan_tasks(project: Path) -> None:
    tasks = _group(project, "plan", group_id="preview")
    assert {k: v[0] for k, v in tasks.items()} == {
        f"preview.{t}": "TofuflowPlanOperator"
        for t in ("stacks_network", "stacks_db", "stacks_app", "tools")
    }
    assert tasks["preview.stacks_network"][1] == {"preview.stacks_db", "preview.stacks_app"}


def test_destroy_runs_dependants_first(project: Path) -> None:
    assert _group(project, "destroy", workspaces=["stacks/db"]) == {
        # db and what depends on it; network stays.
        "stacks.stacks_app": ("TofuflowDestroyOperator", {"stacks.stacks_db"}),
        "stacks.stacks_db": ("TofuflowDestroyOperator", set()),
    }


def test_a_selection_adds_what_it_depends_on(project: Path) -> None:
    assert set(_group(project, "apply", workspaces=["stacks/db"])) == {
        "stacks.stacks_network", "stacks.stacks_db",
    }  # fmt: skip


def test_every_task_gets_the_workspace_the_resolved_project_and_the_kwargs(
    project: Path,
) -> None:
    with DAG("kwargs", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
        stack_task_group(
            project, "apply", tofuflow_conn_id="tf_other", variables={"dir": "/tmp/x"},
            poll_interval=3, retries=2,
        )  # fmt: skip
    app = dag.get_task("stacks.stacks_app")
    assert isinstance(app, TofuflowApplyOperator) and not isinstance(app, TofuflowDestroyOperator)
    assert (app.workspace, app.project, app.run_id) == ("stacks/app", str(project), None)
    assert app.task_display_name == "stacks/app"
    assert (app.tofuflow_conn_id, app.variables, app.poll_interval, app.retries) == (
        "tf_other", {"dir": "/tmp/x"}, 3, 2,
    )  # fmt: skip


def test_a_relative_project_is_relative_to_the_calling_dag_file(project: Path) -> None:
    dags = project.parent / "dags"
    dags.mkdir()
    dag_file = dags / "stacks_dag.py"
    dag_file.write_text(
        "from datetime import datetime\n"
        "from airflow.sdk import DAG\n"
        "from tofuflow.airflow import stack_task_group\n"
        "with DAG('rel', schedule=None, start_date=datetime(2025, 1, 1)) as dag:\n"
        "    stack_task_group('../tofuflow.toml', 'plan')\n"
    )
    import runpy

    namespace = runpy.run_path(str(dag_file))
    tasks = namespace["dag"].tasks
    assert len(tasks) == 4
    assert {t.project for t in tasks} == {str(project.resolve())}


def test_unsafe_and_colliding_names_get_distinct_task_ids(tmp_path: Path) -> None:
    (tmp_path / "infra").mkdir()
    path = tmp_path / "tofuflow.toml"
    path.write_text(
        '[workspaces."a/b"]\ndirectory = "infra"\n[workspaces.a_b]\ndirectory = "infra"\n'
        '[workspaces."team/app.v2"]\ndirectory = "infra"\n'
    )
    digest = hashlib.sha256(b"a/b").hexdigest()[:8]
    # "a/b" would be "a_b" too: it gets its hashed name instead.
    assert sorted(_group(path, "plan")) == [
        f"stacks.a-b-{digest}", "stacks.a_b", "stacks.team_app.v2",
    ]  # fmt: skip
    assert stack_task_id("network/eu") == "network_eu"


def test_an_unknown_workspace_or_a_cycle_fails_at_parse_time(project: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope"):
        _group(project, "apply", workspaces=["nope"])
    cyclic = tmp_path / "cyclic.toml"
    cyclic.write_text(
        '[workspaces.a]\ndirectory = "infra"\ndepends_on = ["b"]\n'
        '[workspaces.b]\ndirectory = "infra"\ndepends_on = ["a"]\n'
    )
    with pytest.raises(CycleError, match=r"depends_on forms a cycle: a → b → a"):
        _group(cyclic, "apply")
    with pytest.raises(ValueError, match="operation must be"):
        _group(project, "refresh")
    with pytest.raises(TypeError, match="sets workspace itself"):
        _group(project, "apply", workspace="x")


# -- inputs at execute time ---------------------------------------------------------------

TOKEN = "tok-unit-3b9f0c1d2e4a5b6c"


@pytest.fixture
def plane_hook(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TofuflowHook:
    """A hook on a real embedded control plane (its own data dir) where network has
    applied state with a plain and a sensitive output."""
    monkeypatch.setenv("TOFUFLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("TOFUFLOW_SERVER_CONFIG", raising=False)
    monkeypatch.setenv(
        "AIRFLOW_CONN_TF_STACKS",
        json.dumps({"conn_type": "tofuflow", "extra": {"project": str(project)}}),
    )
    hook = TofuflowHook("tf_stacks")
    # Seeded by an admin (break-glass): by default an applier writes only through a run.
    with hook.control_plane("admin", workspace="stacks/network") as applier:
        state = {
            "version": 4, "terraform_version": "1.9.0", "serial": 1, "lineage": "unit",
            "outputs": {
                "subnet": {"value": "10.1.0.0/24", "type": "string"},
                "token": {"value": TOKEN, "type": "string", "sensitive": True},
            },
            "resources": [], "check_results": None,
        }  # fmt: skip
        httpx.post(
            applier.state_url("stacks/network"), content=json.dumps(state),
            headers={"Authorization": f"Bearer {applier.token}"},
        ).raise_for_status()  # fmt: skip
    return hook


def _context() -> Any:
    ti = SimpleNamespace(dag_id="stacks", run_id="manual__1", task_id="app", try_number=1)
    return {"ti": ti}


def test_a_plan_reads_its_inputs_explicit_variables_win_sensitive_ones_are_masked(
    plane_hook: TofuflowHook, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = TofuflowPlanOperator(task_id="app", workspace="stacks/app", variables={"subnet": "mine"})
    ws = plan.resolve_workspace(plane_hook)
    got = plan.with_inputs(_context(), plane_hook, ws, strict=False)
    logged = "".join(capsys.readouterr())
    # network has no "region" output: left out in a plan (the binary decides), noted.
    assert dict(got.variables) == {"size": "s", "subnet": "mine", "token": TOKEN}
    assert "input region unknown: stacks/network has no output 'region'" in logged
    assert TOKEN not in logged and "inputs of stacks/app: subnet = " in logged
    assert redact(TOKEN) == "***"  # Airflow's masker knows it
    assert plan.work(plane_hook).redactor.redact(f"token={TOKEN}") == "token=***"
    assert plan.variables == {"subnet": "mine"}  # the rendered field never holds inputs
    assert plane_hook.project() is plane_hook.project()  # loaded once


def test_an_apply_needs_every_input(plane_hook: TofuflowHook) -> None:
    apply = TofuflowApplyOperator(task_id="app", workspace="stacks/app")
    ws = apply.resolve_workspace(plane_hook)
    with pytest.raises(ConfigError, match=r"inputs\.region = 'stacks/network\.region': "):
        apply.with_inputs(_context(), plane_hook, ws, strict=True)
    # db's dependency has state, and db needs only subnet: fine for an apply too.
    db = apply.with_inputs(_context(), plane_hook, plane_hook.workspace("stacks/db"), strict=True)
    assert db.variables["subnet"] == "10.1.0.0/24"
