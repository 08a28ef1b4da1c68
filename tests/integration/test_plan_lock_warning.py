"""A plan of a locked workspace says so: the lock would otherwise surface only at apply."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from _services.fixtures import make_token
from _services.server import RunningServer

FIXTURES = Path(__file__).parent.parent / "fixtures"
CLI = [sys.executable, "-c", "from tofuflow.cli import main; main()"]


def _plan(repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "plan", "app/dev"], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip


@pytest.mark.binary
def test_a_plan_of_a_workspace_whose_lock_a_killed_apply_left_warns_and_says_what_to_do(
    tmp_path: Path, state_server: RunningServer
) -> None:
    # A killed apply left its lock. The plan (read-only, -lock=false) went through, was
    # approved, and only its apply found the lock: a pipeline's plan stage is where the
    # person is looking.
    repo = tmp_path / "repo"
    shutil.copytree(FIXTURES / "configs" / "app", repo / "infra")
    (repo / "tofuflow.toml").write_text(
        f'[server]\nurl = "{state_server.url}"\n'
        '[workspaces."app/dev"]\ndirectory = "infra"\nvariables = { items = ["a"] }\n'
    )
    info = {"ID": "6c1e-lock", "Operation": "OperationTypeApply", "Who": "ci@agent-7",
            "Version": "1.11.4", "Created": "2026-12-06T01:00:00Z", "Path": ""}  # fmt: skip
    applier = make_token(state_server, "applier", "app/*")
    locked = httpx.request("LOCK", state_server.state_url("app/dev") + "/lock", json=info,
                           headers={"Authorization": f"Bearer {applier}"})  # fmt: skip
    assert locked.status_code == 200, locked.text
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"),
           "TOFUFLOW_PLAN_TOKEN": make_token(state_server, "planner", "app/*")}  # fmt: skip
    for name in ("TOFUFLOW_SERVER_URL", "TOFUFLOW_TOKEN", "TOFUFLOW_SERVER_CONFIG"):
        env.pop(name, None)
    planned = _plan(repo, env)
    assert planned.returncode == 2, planned.stderr  # the plan itself still works
    warning = next(
        (line for line in planned.stdout.splitlines() if line.startswith("warning: app/dev")),
        None,
    )
    assert warning is not None, planned.stdout
    assert "the state is locked by token:" in warning
    assert "(ci@agent-7, OperationTypeApply)" in warning
    assert "this run's apply cannot start until it is released" in warning
    assert "`tofuflow unlock app/dev`" in warning
    # A killed tofuflow leaves its binary applying (it outlives kill -9 to save the state):
    # the lock is not dead until that one has exited too.
    assert "and the tofu/terraform it started have exited" in warning, warning

    # On an Azure Pipelines agent it is a warning issue: the stage ends
    # SucceededWithIssues, so the build summary shows it, not only the log.
    (tmp_path / "agent").mkdir()  # the agent's temporary directory, as the agent makes it
    agent = {**env, "TF_BUILD": "True", "AGENT_TEMPDIRECTORY": str(tmp_path / "agent")}
    on_agent = _plan(repo, agent)
    assert on_agent.returncode == 2, on_agent.stderr
    issue = "##vso[task.logissue type=warning]app/dev: the state is locked by token:"
    issues = [line for line in on_agent.stdout.splitlines() if line.startswith(issue)]
    assert len(issues) == 1, on_agent.stdout
    assert "##vso[task.complete result=SucceededWithIssues;]" in on_agent.stdout

    # Unlocked, the next plan says nothing of a lock.
    unlocked = httpx.request("UNLOCK", state_server.state_url("app/dev") + "/lock", json=info,
                             headers={"Authorization": f"Bearer {applier}"})  # fmt: skip
    assert unlocked.status_code == 200, unlocked.text
    again = _plan(repo, env)
    assert again.returncode == 2, again.stderr
    assert "locked" not in again.stdout, again.stdout
