"""Workspaces that share one configuration directory, as examples/project ships them.

app/dev and app/prod both use infra/ with different variables. run-all runs them in
parallel; each must plan, apply and keep only its own resources (issue: run-all applied
prod's plan to dev when stacks ran in the shared directory).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tofuflow.runs import connect

pytestmark = pytest.mark.binary

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "project"
CLI = [sys.executable, "-c", "from tofuflow.cli import main; main()"]


def _tofuflow(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def _state_outputs(workspace: str) -> dict[str, Any]:
    with connect("read") as client:
        response = httpx.get(
            client.state_url(workspace), headers={"Authorization": f"Bearer {client.token}"}
        )
    if response.status_code == 204:
        return {}
    response.raise_for_status()
    return {k: v["value"] for k, v in response.json()["outputs"].items()}


def _runs(workspace: str) -> list[dict[str, Any]]:
    with connect("read") as client:
        return list(client.runs(workspace=workspace, limit=50))


@pytest.fixture
def project(tmp_path: Path, binary: object) -> Path:
    target = tmp_path / "project"
    shutil.copytree(EXAMPLE, target)
    return target


def test_run_all_on_the_shipped_example_keeps_each_workspace_its_own_plan_and_state(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for round_ in range(10):
        data = tmp_path / f"data-{round_}"  # fresh state every round
        monkeypatch.setenv("TOFUFLOW_DATA_DIR", str(data))
        env = dict(os.environ)
        planned = _tofuflow(project, env, "run-all", "plan", "--parallelism", "2")
        assert planned.returncode == 2, planned.stdout + planned.stderr
        for name, count in (("app/dev", 1), ("app/prod", 2)):
            (run,) = _runs(name)
            assert run["summary"]["add"] == count, (round_, name, run["summary"])
        applied = _tofuflow(project, env, "run-all", "apply", "--parallelism", "2")
        # dev is routine and applied; prod is production and waits for a person.
        assert applied.returncode == 2, applied.stdout + applied.stderr
        assert _state_outputs("app/dev") == {"replicas": ["dev-0"]}, round_
        assert _state_outputs("app/prod") == {}, round_
        newest = _runs("app/prod")[0]  # run-all apply planned prod again
        assert newest["status"] == "needs_approval" and newest["summary"]["add"] == 2
    # The last round's prod run, approved and applied from the shared directory.
    run_id = newest["id"]
    approved = _tofuflow(project, env, "approve", run_id, "--comment", "rollout")
    assert approved.returncode == 0, approved.stderr
    done = _tofuflow(project, env, "apply", run_id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _state_outputs("app/prod") == {"replicas": ["prod-0", "prod-1"]}
    assert _state_outputs("app/dev") == {"replicas": ["dev-0"]}
    # Nothing is written into the user's directory.
    assert sorted(p.name for p in (project / "infra").iterdir()) == ["main.tf"]


def test_workspaces_sharing_a_200_resource_directory_each_get_all_their_resources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, binary: object
) -> None:
    project = tmp_path / "repo"
    (project / "infra").mkdir(parents=True)
    (project / "infra" / "main.tf").write_text(
        'variable "name" { type = string }\n'
        'resource "terraform_data" "r" {\n  count = 200\n'
        '  input = "${var.name}-${count.index}"\n}\n'
        'output "names" { value = terraform_data.r[*].output }\n'
    )
    names = [f"ws{i}" for i in range(4)]
    (project / "tofuflow.toml").write_text("".join(
        f'[workspaces."{n}"]\ndirectory = "infra"\nvariables = {{ name = "{n}" }}\n'
        for n in names
    ))  # fmt: skip
    monkeypatch.setenv("TOFUFLOW_DATA_DIR", str(tmp_path / "data"))
    done = _tofuflow(project, dict(os.environ), "run-all", "apply", "--parallelism", "4")
    assert done.returncode == 0, done.stdout + done.stderr
    for name in names:
        outputs = _state_outputs(name)
        assert outputs["names"] == [f"{name}-{i}" for i in range(200)], name
    assert re.search(r"4 succeeded", done.stdout), done.stdout
    assert json.dumps(sorted(p.name for p in (project / "infra").iterdir())) == '["main.tf"]'
