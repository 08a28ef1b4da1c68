"""Two stages of one workspace on one machine take turns in its working copy: the one
that waits says so, and whom for, instead of hanging without a word."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from _services.cli import CLI, cli_in, fresh_user

SLOW = Path(__file__).parent.parent / "fixtures" / "configs" / "slow"


@pytest.mark.binary
def test_a_plan_waiting_for_a_running_apply_says_whom_it_waits_for(
    tmp_path: Path, binary: object
) -> None:
    del binary
    repo = tmp_path / "repo"
    shutil.copytree(SLOW, repo / "infra")
    (repo / "tofuflow.toml").write_text(
        '[workspaces."app/dev"]\ndirectory = "infra"\nvariables = { sleep_seconds = 4 }\n'
    )
    work = tmp_path / "work"
    env = {**fresh_user(tmp_path), "TOFUFLOW_WORK_DIR": str(work)}
    cli = cli_in(repo, env)

    planned = cli("plan", "app/dev")
    assert planned.returncode == 2, planned.stdout + planned.stderr
    run_id = re.findall(r"run ([0-9a-f]{16})", planned.stdout)[-1]
    applying = subprocess.Popen([*CLI, "apply", run_id], cwd=repo, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(work.rglob("second.started")):
        assert applying.poll() is None and time.monotonic() < deadline, applying.communicate()
        time.sleep(0.1)
    again = cli("plan", "app/dev")  # waits for the apply to finish with the copy
    out, err = applying.communicate(timeout=120)
    assert applying.returncode == 0, out + err
    assert again.returncode == 0, again.stdout + again.stderr  # then plans: no changes
    waiting = [line for line in again.stderr.splitlines() if "waiting" in line]
    assert waiting == [
        f"app/dev: waiting for the working copy on this machine: the apply of run {run_id} "
        f"(pid {applying.pid}) is using it; stages of one workspace take turns"
    ], again.stderr
