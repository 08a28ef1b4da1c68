"""`tofuflow plan` in an Azure DevOps pull-request build: the plan as one PR thread per
workspace that the next plan updates, and a PR status; a bad token warns, never fails."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from _services.ado_pr import AdoPullRequests, ado_pull_requests
from tofuflow.tofu import Binary

CLI = [sys.executable, "-c", "from tofuflow.cli import main; main()"]
CONFIGS = Path(__file__).parent.parent / "fixtures" / "configs"
TOKEN = "ado-job-token-canary-5d1e"
CANARY = "pr-sensitive-canary-91b2"
CONSOLE = "https://tofuflow.example"
SENSITIVE_TF = """
variable "api_key" {
  type      = string
  sensitive = true
  default   = "pr-sensitive-canary-91b2"
}

resource "terraform_data" "keyed" {
  input = var.api_key
}
"""


def _repo(tmp_path: Path, items: str) -> Path:
    repo = tmp_path / "repo"
    if not repo.exists():
        shutil.copytree(CONFIGS / "app", repo / "infra")
        (repo / "infra" / "secret.tf").write_text(SENSITIVE_TF)
    (repo / "tofuflow.toml").write_text(
        f'[workspaces."app/dev"]\ndirectory = "infra"\nvariables = {{ items = {items} }}\n'
    )
    return repo


def _plan(repo: Path, tmp_path: Path, fake: AdoPullRequests, token: str | None = None) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOFUFLOW_", "TF_"))}
    agent_temp = tmp_path / "agent-temp"
    agent_temp.mkdir(exist_ok=True)
    env.update(fake.env(token))
    env.update({"TF_BUILD": "True", "XDG_DATA_HOME": str(tmp_path / "data"),
                "AGENT_TEMPDIRECTORY": str(agent_temp), "TOFUFLOW_CONSOLE_URL": CONSOLE,
                "BUILD_SOURCEVERSION": "0123456789abcdef0123456789abcdef01234567",
                "BUILD_SOURCEBRANCH": "refs/pull/7/merge"})  # fmt: skip
    return subprocess.run([*CLI, "plan", "app/dev"], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip


def _run_id(stdout: str) -> str:
    prefix = "##vso[task.setvariable variable=runId;isoutput=true]"
    (line,) = [ln for ln in stdout.splitlines() if ln.startswith(prefix)]
    return line[len(prefix) :]


def test_a_pr_build_posts_one_thread_updates_it_on_the_next_plan_and_sets_the_status(
    tmp_path: Path, binary: Binary
) -> None:
    del binary
    with ado_pull_requests(TOKEN) as fake:
        first = _plan(_repo(tmp_path, '["a"]'), tmp_path, fake)
        assert first.returncode == 2, first.stdout + first.stderr
        first_run = _run_id(first.stdout)
        (thread,) = fake.threads
        content = thread["comments"][0]["content"]
        assert "# tofuflow plan: `app/dev`" in content and first_run in content
        assert f"{CONSOLE}/console/runs/{first_run}" in content
        assert "<!-- tofuflow:plan:app/dev -->" in content
        assert thread["status"] == 1 and thread["comments"][0]["commentType"] == 1

        second = _plan(_repo(tmp_path, '["a", "b"]'), tmp_path, fake)
        assert second.returncode == 2, second.stdout + second.stderr
        second_run = _run_id(second.stdout)
        assert len(fake.threads) == 1, "the second plan updates the thread, not a new one"
        updated = fake.threads[0]["comments"][0]["content"]
        assert second_run in updated and first_run not in updated
        assert ("PATCH", f"/contoso/p-0001/_apis/git/repositories/r-0001/pullRequests/7/"
                f"threads/{thread['id']}/comments/1") in fake.requests  # fmt: skip

    assert [s["state"] for s in fake.statuses] == ["succeeded", "succeeded"]
    status = fake.statuses[-1]
    assert status["context"] == {"name": "plan", "genre": "tofuflow"}
    assert status["targetUrl"] == f"{CONSOLE}/console/runs/{second_run}"
    assert status["description"].startswith("app/dev:")
    for posted in (content, updated):
        assert CANARY not in posted and TOKEN not in posted
    for done in (first, second):
        assert TOKEN not in done.stdout + done.stderr
        assert "plan not posted" not in done.stdout


def test_a_forged_token_warns_clearly_and_the_plan_still_completes(
    tmp_path: Path, binary: Binary
) -> None:
    del binary
    with ado_pull_requests(TOKEN) as fake:
        done = _plan(_repo(tmp_path, '["a"]'), tmp_path, fake, token="forged-token-3c9a")
    assert done.returncode == 2, done.stdout + done.stderr
    assert _run_id(done.stdout)
    warning = "##vso[task.logissue type=warning"
    warnings = [ln for ln in done.stdout.splitlines()
                if ln.startswith(warning) and "pull request" in ln]  # fmt: skip
    assert len(warnings) == 1, done.stdout
    assert "refused the job's access token (HTTP 401)" in warnings[0]
    assert "Contribute to pull requests" in warnings[0]
    assert "forged-token-3c9a" not in done.stdout + done.stderr
    assert not fake.threads and not fake.statuses
    assert done.stdout.splitlines()[-1].startswith(
        "##vso[task.complete result=SucceededWithIssues;]"
    )
