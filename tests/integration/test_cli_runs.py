"""`tofuflow plan | apply | runs | audit | policy` as a pipeline runs them: real processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from _services.cli import fresh_user
from tofuflow.tofu import Binary

CLI = [sys.executable, "-c", "from tofuflow.cli import main; main()"]
FIXTURES = Path(__file__).parent.parent / "fixtures"


def _run(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture
def project(tmp_path: Path, binary: Binary) -> tuple[Path, dict[str, str]]:
    del binary  # fails clearly when no binary is installed
    repo = tmp_path / "repo"
    shutil.copytree(FIXTURES / "configs" / "app", repo / "infra")
    (repo / "tofuflow.toml").write_text(
        '[workspaces."app/dev"]\ndirectory = "infra"\nvariables = { items = ["a"] }\n'
    )
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    for name in ("TOFUFLOW_SERVER_URL", "TOFUFLOW_TOKEN", "TOFUFLOW_SERVER_CONFIG"):
        env.pop(name, None)
    return repo, env


def test_plan_then_apply_from_another_checkout_with_the_embedded_control_plane(
    project: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    repo, env = project
    planned = _run("plan", "app/dev", cwd=repo, env=env)
    assert planned.returncode == 2, planned.stderr
    assert "Plan: 2 to add" in planned.stdout
    run_id = planned.stdout.split("run ")[-1].split(":")[0]
    assert "approved (policy: auto_approved)" in planned.stdout

    other = tmp_path / "other-machine"
    shutil.copytree(repo, other, ignore=shutil.ignore_patterns(".terraform*", "*.tfplan",
                                                               "*_override.tf"))  # fmt: skip
    applied = _run("apply", run_id, cwd=other, env=env)
    assert applied.returncode == 0, applied.stderr
    assert f"run {run_id}: applied; state serial" in applied.stdout

    again = _run("plan", "app/dev", cwd=repo, env=env)
    assert again.returncode == 0, again.stderr
    assert "no_changes" in again.stdout

    listed = _run("runs", "list", "--workspace", "app/dev", cwd=repo, env=env)
    assert run_id in listed.stdout and "applied" in listed.stdout
    header, *rows = listed.stdout.splitlines()
    assert header.split() == [
        "RUN", "CREATED", "(UTC)", "STATUS", "WORKSPACE", "REQUESTER", "COMMIT", "CHANGES",
        "WRITES",
    ]  # fmt: skip
    assert any(r.startswith(run_id) and "+" in r and r.endswith("session") for r in rows)
    unknown = _run("runs", "list", "--workspace", "app/typo", cwd=repo, env=env)
    assert unknown.returncode == 1 and "no workspace 'app/typo'" in unknown.stderr
    shown = json.loads(_run("runs", "show", run_id, cwd=repo, env=env).stdout)
    assert shown["status"] == "applied" and shown["state_version"] == 1

    # Removing the database is not routine: a person approves it, then it is applied.
    (repo / "tofuflow.toml").write_text(
        '[workspaces."app/dev"]\ndirectory = "infra"\n'
        'variables = { items = ["a"], with_database = false }\n'
    )
    removal = _run("plan", "app/dev", cwd=repo, env=env)
    assert removal.returncode == 2, removal.stderr
    assert "needs_approval" in removal.stdout
    removal_id = removal.stdout.split("run ")[-1].split(":")[0]
    refused = _run("apply", removal_id, cwd=repo, env=env)
    assert refused.returncode == 1 and "needs_approval" in refused.stderr
    approved = _run("approve", removal_id, "--comment", "retired", cwd=repo, env=env)
    assert approved.returncode == 0 and "approved" in approved.stdout
    assert _run("apply", removal_id, cwd=repo, env=env).returncode == 0

    verified = _run("audit", "verify", cwd=repo, env=env)
    assert verified.returncode == 0 and "audit log intact" in verified.stdout
    story = _run("audit", "show", "--run", run_id, cwd=repo, env=env).stdout
    assert "run.created" in story and "run.applied" in story
    # Who did each step, as a person reads it: the token's subject and what it was for.
    (created,) = [line for line in story.splitlines() if " run.created " in line]
    assert re.search(r"token:tfw_\w{12} \(tofuflow plan app/dev \(.+\)\)$", created), created
    # A workspace's story has several runs: each line names the run it belongs to, so
    # the decisions and approvals can be told apart and matched with `runs list`.
    workspace_story = _run("audit", "show", "--workspace", "app/dev", cwd=repo, env=env).stdout
    decided = [line for line in workspace_story.splitlines() if " run.policy_decided " in line]
    runs_named = [line.split()[5] for line in decided]
    assert all(re.fullmatch(r"[0-9a-f]{16}", r) for r in runs_named), workspace_story
    assert {run_id, removal_id} <= set(runs_named), workspace_story
    unknown_run = _run("audit", "show", "--run", "0123456789abcdef", cwd=repo, env=env)
    assert unknown_run.returncode == 1, unknown_run.stdout
    assert "no run '0123456789abcdef'" in unknown_run.stderr
    # What is not a run id at all is named as such, not sent as a path (an empty id got
    # a redirect blamed on the server URL; `<id>/../x` asked for run x).
    for given in ("", f"{run_id}/../x", "RUN"):
        shown = _run("runs", "show", given, cwd=repo, env=env)
        assert shown.returncode == 1, shown.stdout
        assert "is not a run id: a run id is 16 hexadecimal characters" in shown.stderr, (
            shown.stderr
        )
        assert "TOFUFLOW_SERVER_URL" not in shown.stderr
    pasted = _run("runs", "show", f" {run_id}\n", cwd=repo, env=env)
    assert pasted.returncode == 0, pasted.stderr
    nobody = _run("audit", "show", "--actor", "sc://nobody", cwd=repo, env=env)
    assert (nobody.returncode, nobody.stdout) == (0, "no events match\n")
    # A missing WORKSPACE says which ones tofuflow.toml defines.
    bare = _run("plan", cwd=repo, env=env)
    assert bare.returncode == 1
    assert "Missing argument 'WORKSPACE'. tofuflow.toml defines: app/dev" in bare.stderr
    # A missing RUN says where run ids come from.
    for command in ("apply", "approve"):
        no_run = _run(command, cwd=repo, env=env)
        assert no_run.returncode == 1, no_run.stdout
        assert "Missing argument 'RUN'. The id `tofuflow plan` printed" in no_run.stderr
        assert "`tofuflow runs list` shows the recent ones" in no_run.stderr
    export = tmp_path / "audit.json"
    assert _run("audit", "export", "--output", str(export), cwd=repo, env=env).returncode == 0
    events = json.loads(export.read_text())["events"]
    assert events and all(len(e["hash"]) == 64 for e in events)
    assert events[0]["prev_hash"] == "0" * 64


def test_a_policy_denial_exits_3_and_an_unknown_workspace_is_a_clear_error(
    project: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    repo, env = project
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "team.rego").write_text(
        "package team.rules\n\nimport rego.v1\n\n"
        "deny contains msg if {\n  some c in input.plan.resource_changes\n"
        '  c.name == "database"\n  msg := sprintf("%s: databases are managed by the DBA team", '
        "[c.address])\n}\n"
    )
    server_toml = tmp_path / "server.toml"
    server_toml.write_text(
        f'[server]\ndata_dir = "{tmp_path / "cp"}"\n[policies]\ndirectory = "{policies}"\n'
    )
    env = {**env, "TOFUFLOW_SERVER_CONFIG": str(server_toml)}
    denied = _run("plan", "app/dev", cwd=repo, env=env)
    assert denied.returncode == 3, denied.stdout + denied.stderr
    assert "databases are managed by the DBA team" in denied.stdout
    unknown = _run("plan", "app/nope", cwd=repo, env=env)
    assert unknown.returncode == 1
    assert "app/dev" in unknown.stderr  # names the workspaces that exist


def test_policy_test_checks_a_saved_plan_locally(tmp_path: Path) -> None:
    plan = FIXTURES / "plans" / "mixed.json"
    env = dict(os.environ)
    routine = _run("policy", "test", str(plan), cwd=tmp_path, env=env)
    assert routine.returncode == 2, routine.stdout + routine.stderr  # it deletes: a person
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "deny.rego").write_text(
        "package team.rules\n\nimport rego.v1\n\n"
        'deny contains "no changes on Fridays" if { input.plan.has_changes }\n'
    )
    denied = _run("policy", "test", str(plan), "--policies", str(policies), cwd=tmp_path, env=env)
    assert denied.returncode == 3
    assert "no changes on Fridays" in denied.stdout


def test_a_remote_control_plane_without_a_token_is_a_clear_error(
    project: tuple[Path, dict[str, str]],
) -> None:
    repo, env = project
    env = {**env, "TOFUFLOW_SERVER_URL": "http://127.0.0.1:9"}
    done = _run("plan", "app/dev", cwd=repo, env=env)
    assert done.returncode == 1
    assert "TOFUFLOW_PLAN_TOKEN" in done.stderr


def test_a_two_stage_pipeline_hands_the_run_id_over_in_a_file(
    project: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """Any CI: the plan stage writes the run id to a file it publishes, the apply stage
    (another machine, another checkout) reads it. Scripts read runs as JSON."""
    repo, env = project
    handed = tmp_path / "artifacts" / "run-id"
    planned = _run("plan", "app/dev", "--run-id-file", str(handed), cwd=repo, env=env)
    assert planned.returncode == 2, planned.stderr
    run_id = handed.read_text().strip()
    assert f"run {run_id}: approved" in planned.stdout

    applied = _run("apply", handed.read_text().strip(), cwd=repo, env=env)
    assert applied.returncode == 0, applied.stderr

    listed = _run("runs", "list", "--json", cwd=repo, env=env)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["id"], r["workspace"], r["status"]) for r in rows] == [
        (run_id, "app/dev", "applied")
    ]
    # A plan that fails before a run exists leaves no stale id behind for the next stage.
    handed.write_text("0123456789abcdef\n")
    failed = _run("plan", "app/typo", "--run-id-file", str(handed), cwd=repo, env=env)
    assert failed.returncode == 1 and not handed.exists()


def test_runs_cancel_takes_the_applier_token_from_tofuflow_apply_token(
    project: tuple[Path, dict[str, str]], state_server: Any
) -> None:
    """docs/cli.md: `runs cancel` takes TOFUFLOW_APPLY_TOKEN, as apply does; it first read
    the run with TOFUFLOW_TOKEN only, so a pipeline rejecting a run failed, and the run
    it meant to reject was approved later."""
    from _services.fixtures import make_token

    repo, env = project
    config = repo / "tofuflow.toml"
    config.write_text(f'[server]\nurl = "{state_server.url}"\n' + config.read_text())
    planner = make_token(state_server, "planner", "app/*")
    planned = _run("plan", "app/dev", cwd=repo, env={**env, "TOFUFLOW_PLAN_TOKEN": planner})
    assert planned.returncode == 2, planned.stdout + planned.stderr
    run_id = re.findall(r"run ([0-9a-f]{16})", planned.stdout)[-1]
    applier = make_token(state_server, "applier", "app/*")
    cancelled = _run("runs", "cancel", run_id, "--reason", "not this one", cwd=repo,
                     env={**env, "TOFUFLOW_APPLY_TOKEN": applier})  # fmt: skip
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"run {run_id}: cancelled" in cancelled.stdout


def test_a_run_id_file_inside_the_configuration_is_refused_before_planning(
    project: tuple[Path, dict[str, str]],
) -> None:
    """`cd infra; tofuflow plan app/dev --run-id-file rid; tofuflow apply $(cat rid)`:
    the file changed the configuration after the plan, and the apply refused it, saying
    to check out the planned commit."""
    repo, env = project
    inside = repo / "infra" / "rid"
    planned = _run("plan", "app/dev", "--run-id-file", "rid", cwd=repo / "infra", env=env)
    assert planned.returncode == 1, planned.stdout + planned.stderr
    assert f"--run-id-file rid is inside the configuration of app/dev ({repo / 'infra'})" in (
        planned.stderr
    ), planned.stderr
    assert "run " not in planned.stdout and not inside.exists()


def test_a_variable_a_var_file_also_sets_is_warned_about(tmp_path: Path, binary: Binary) -> None:
    """`variables = { environment = "staging" }` beside a var file setting "dev": var
    files win over TF_VAR_, and the plan used "dev" without a word."""
    del binary
    repo = tmp_path / "repo"
    (repo / "infra").mkdir(parents=True)
    (repo / "infra" / "main.tf").write_text(
        'variable "environment" {\n  type = string\n}\n'
        'variable "replicas" {\n  type = number\n}\n'
        'resource "terraform_data" "x" {\n  input = "${var.environment}-${var.replicas}"\n}\n'
    )
    (repo / "infra" / "dev.tfvars").write_text('environment = "dev"\n')
    (repo / "tofuflow.toml").write_text(
        '[workspaces."app/dev"]\ndirectory = "infra"\nvar_files = ["infra/dev.tfvars"]\n'
        'variables = { environment = "staging", replicas = 3 }\n'
    )
    planned = _run("plan", "app/dev", cwd=repo, env=fresh_user(tmp_path))
    assert planned.returncode == 2, planned.stdout + planned.stderr
    warnings = [line for line in planned.stderr.splitlines() if line.startswith("Warning:")]
    assert warnings == [
        "Warning: variables.environment in tofuflow.toml: a var file sets it too, and var "
        "files win over variables, so the plan used the var file's value; set it in one place"
    ], planned.stderr  # replicas = 3 (a number, TF_VAR_replicas=3) is not one of them
