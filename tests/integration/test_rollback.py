"""`tofuflow rollback WS --to RUN`: the earlier configuration, re-planned through policy."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from _services.cli import interrupted
from _services.fixtures import make_token
from _services.server import RunningServer, threaded_server
from tofuflow.runs import ControlPlane
from tofuflow.tofu import Binary

CLI = [sys.executable, "-c", "from tofuflow.cli import main; main()"]
FIXTURES = Path(__file__).parent.parent / "fixtures"


@pytest.fixture
def server(server_config: Any) -> Iterator[RunningServer]:
    with threaded_server(server_config) as running:
        yield running


def _cli(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=repo, env=env, capture_output=True, text=True,
                          check=False, timeout=300)  # fmt: skip


def _run_id(output: str) -> str:
    return output.split("run ")[-1].split(":")[0]


def _state_items(server: RunningServer, token: str, workspace: str) -> tuple[set[str], int]:
    """The ``item`` keys and the count of ``database`` instances in the workspace's state."""
    response = httpx.get(server.state_url(workspace), headers={"Authorization": f"Bearer {token}"})
    state = json.loads(response.content)
    items = {
        instance["index_key"]
        for resource in state["resources"] if resource["name"] == "item"
        for instance in resource["instances"]
    }  # fmt: skip
    databases = sum(len(r["instances"]) for r in state["resources"] if r["name"] == "database")
    return items, databases


def _items(server: RunningServer, token: str) -> set[str]:
    return _state_items(server, token, "app/dev")[0]


def _stage_env(server: RunningServer) -> tuple[dict[str, str], str]:
    """The environment of a pipeline with a token per stage, and the admin token."""
    admin = make_token(server, "admin")
    env = {**os.environ, "TOFUFLOW_SERVER_URL": server.url,
           "TOFUFLOW_PLAN_TOKEN": make_token(server, "planner"),
           "TOFUFLOW_APPLY_TOKEN": make_token(server, "applier"),
           "TOFUFLOW_APPROVE_TOKEN": make_token(server, "approver"),
           "TOFUFLOW_TOKEN": admin}  # fmt: skip
    return env, admin


def test_rollback_brings_back_the_previous_configuration_through_policy_and_approval(
    tmp_path: Path, server: RunningServer, binary: Binary
) -> None:
    del binary  # fails clearly when no binary is installed
    repo = tmp_path / "repo"
    shutil.copytree(FIXTURES / "configs" / "app", repo / "infra")
    (repo / "tofuflow.toml").write_text('[workspaces."app/dev"]\ndirectory = "infra"\n')
    tfvars = repo / "infra" / "terraform.tfvars"
    env, admin = _stage_env(server)

    # v1: items a and b (creations only: auto-approved).
    tfvars.write_text('items = ["a", "b"]\n')
    first = _cli(repo, env, "plan", "app/dev")
    assert first.returncode == 2, first.stderr
    v1 = _run_id(first.stdout)
    assert _cli(repo, env, "apply", v1).returncode == 0

    # v2: b goes, c comes. Deleting needs a person.
    tfvars.write_text('items = ["a", "c"]\n')
    second = _cli(repo, env, "plan", "app/dev")
    v2 = _run_id(second.stdout)
    assert "needs_approval" in second.stdout, second.stdout
    assert _cli(repo, env, "approve", v2).returncode == 0
    assert _cli(repo, env, "apply", v2).returncode == 0
    assert _items(server, admin) == {"a", "c"}

    # Roll back to v1 from the v2 checkout: b is re-created, c removed — through policy.
    rolled = _cli(repo, env, "rollback", "app/dev", "--to", v1)
    assert rolled.returncode == 2, rolled.stdout + rolled.stderr
    assert "1 to add" in rolled.stdout and "1 to destroy" in rolled.stdout
    assert "needs_approval" in rolled.stdout  # the destroy of c needs a person, as always
    back = _run_id(rolled.stdout)
    assert _cli(repo, env, "apply", back).returncode == 1  # not approved yet: refused
    assert _cli(repo, env, "approve", back, "--comment", "roll back v2").returncode == 0
    applied = _cli(repo, env, "apply", back)  # from the v2 checkout: config from the artifact
    assert applied.returncode == 0, applied.stderr
    assert _items(server, admin) == {"a", "b"}
    assert tfvars.read_text() == 'items = ["a", "c"]\n'  # the checkout was not touched

    shown = json.loads(_cli(repo, env, "runs", "show", back).stdout)
    assert shown["context"]["rollback_to"] == v1
    assert shown["context"]["operation"] == "rollback"
    assert [a["comment"] for a in shown["approvals"]] == ["roll back v2"]

    unknown = _cli(repo, env, "rollback", "app/dev", "--to", "0" * 16)
    assert unknown.returncode == 1 and "no run" in unknown.stderr
    # Another workspace's run, with a token for app/dev only: a wrong id, not a missing
    # grant (it sent people to ask an admin for a reader role on app/prod).
    with ControlPlane(server.url, admin) as client:
        other = client.create_run("app/prod", "0" * 64, {})["id"]
    scoped = {**env, "TOFUFLOW_APPLY_TOKEN": make_token(server, "applier", "app/dev")}
    elsewhere = _cli(repo, scoped, "rollback", "app/dev", "--to", other)
    assert elsewhere.returncode == 1, elsewhere.stdout
    assert f"run {other} is not a run of app/dev that this identity may read" in (
        elsewhere.stderr
    ), elsewhere.stderr
    assert "tofuflow runs list --workspace app/dev" in elsewhere.stderr
    nothing = _cli(repo, env, "plan", "app/dev")  # v2 config on v1 state: a change, needs a person
    pending = _run_id(nothing.stdout)
    refused = _cli(repo, env, "rollback", "app/dev", "--to", pending)
    assert refused.returncode == 1
    assert "roll back to a run that was applied" in refused.stderr


def test_rollback_plans_with_the_var_files_and_variables_the_earlier_run_used(
    tmp_path: Path, server: RunningServer, binary: Binary
) -> None:
    """The layout of most repositories: two workspaces share one configuration directory
    and differ by a var file (one beside the configuration, one in ``envs/``) and by
    ``variables`` in tofuflow.toml. A change made in a var file or in tofuflow.toml is
    rolled back like a change to the ``.tf`` files: the earlier run's values come back."""
    del binary
    repo = tmp_path / "repo"
    shutil.copytree(FIXTURES / "configs" / "app", repo / "infra")
    (repo / "envs").mkdir()
    dev_vars, prod_vars = repo / "infra" / "dev.tfvars", repo / "envs" / "prod.tfvars"
    project = repo / "tofuflow.toml"

    def configure(with_database: str) -> None:
        project.write_text(
            '[workspaces."app/dev"]\ndirectory = "infra"\nvar_files = ["infra/dev.tfvars"]\n'
            f"variables = {{ with_database = {with_database} }}\n\n"
            '[workspaces."app/prod"]\ndirectory = "infra"\nvar_files = ["envs/prod.tfvars"]\n'
        )

    env, admin = _stage_env(server)

    def applied(workspace: str) -> str:
        planned = _cli(repo, env, "plan", workspace)
        assert planned.returncode == 2, planned.stdout + planned.stderr
        run = _run_id(planned.stdout)
        if "needs_approval" in planned.stdout:
            assert _cli(repo, env, "approve", run).returncode == 0
        done = _cli(repo, env, "apply", run)
        assert done.returncode == 0, done.stderr
        return run

    # v1: dev has a and b and its database, prod has p.
    configure("true")
    dev_vars.write_text('items = ["a", "b"]\n')
    prod_vars.write_text('items = ["p"]\n')
    dev_v1, prod_v1 = applied("app/dev"), applied("app/prod")
    # v2: only the var files and tofuflow.toml change, not a line of .tf.
    configure("false")
    dev_vars.write_text('items = ["a"]\n')
    prod_vars.write_text('items = ["p", "q"]\n')
    applied("app/dev")
    applied("app/prod")
    assert _state_items(server, admin, "app/dev") == ({"a"}, 0)
    assert _state_items(server, admin, "app/prod") == ({"p", "q"}, 1)

    rolled = _cli(repo, env, "rollback", "app/dev", "--to", dev_v1)
    assert rolled.returncode == 2, rolled.stdout + rolled.stderr
    assert "2 to add, 0 to change, 0 to destroy" in rolled.stdout  # b and the database
    back = _run_id(rolled.stdout)
    rolled_back = _cli(repo, env, "apply", back)
    assert rolled_back.returncode == 0, rolled_back.stderr
    # Applied with the values it was planned with, not today's: no warning that the
    # binary ignored variables (people read it as "the rolled-back values were dropped").
    assert "Ignoring variable" not in rolled_back.stdout + rolled_back.stderr
    assert _state_items(server, admin, "app/dev") == ({"a", "b"}, 1)

    rolled = _cli(repo, env, "rollback", "app/prod", "--to", prod_v1, "--apply")
    assert "0 to add, 0 to change, 1 to destroy" in rolled.stdout, rolled.stdout + rolled.stderr
    assert "needs_approval" in rolled.stdout  # destroying q needs a person, as always
    back = _run_id(rolled.stdout)
    assert _cli(repo, env, "approve", back).returncode == 0
    assert _cli(repo, env, "apply", back).returncode == 0
    assert _state_items(server, admin, "app/prod") == ({"p"}, 1)
    # The checkout is untouched: today's var files and tofuflow.toml stay as they are.
    assert dev_vars.read_text() == 'items = ["a"]\n'
    assert "with_database = false" in project.read_text()


def test_ctrl_c_during_rollback_apply_says_how_far_it_got(
    tmp_path: Path, server: RunningServer, binary: Binary
) -> None:
    del binary
    repo = tmp_path / "repo"
    (repo / "infra").mkdir(parents=True)
    quick, started = tmp_path / "quick", tmp_path / "slow.started"
    slow = (
        'resource "terraform_data" "slow" {\n  provisioner "local-exec" {\n'
        f'    command = "test -e {quick} || (touch {started} && sleep 60)"\n  }}\n}}\n'
    )
    main = repo / "infra" / "main.tf"
    (repo / "tofuflow.toml").write_text('[workspaces."app/dev"]\ndirectory = "infra"\n')
    env, _ = _stage_env(server)

    quick.touch()  # v1 applies at once
    main.write_text('resource "terraform_data" "fast" {}\n' + slow)
    v1 = _run_id(_cli(repo, env, "plan", "app/dev").stdout)
    assert _cli(repo, env, "apply", v1).returncode == 0
    main.write_text('resource "terraform_data" "fast" {}\n')  # v2: slow goes (a person approves)
    v2 = _run_id(_cli(repo, env, "plan", "app/dev").stdout)
    assert _cli(repo, env, "approve", v2).returncode == 0
    assert _cli(repo, env, "apply", v2).returncode == 0

    quick.unlink()  # re-creating slow now takes a minute: Ctrl-C in the middle
    done = interrupted(repo, env, "rollback", "app/dev", "--to", v1, "--apply", once=started)
    out, err = done.stdout, done.stderr
    assert done.returncode == 1, out + err
    assert "Aborted." not in err
    assert re.search(
        r"interrupted: 0 of 1 changes applied, saved as state version \d+; 1 stopped while "
        r"being created, so tainted: the next plan replaces it; run `tofuflow "
        rf"rollback app/dev --to {v1}` to continue \(run \w+ is cancelled\)",
        err,
    ), err
