"""What is left when a CI agent SIGKILLs an apply, and how a person clears it.

The agent kills the step's whole process tree: tofuflow and the binary die without a
goodbye, so the state lock stays held and the run stays ``applying``. ``tofuflow unlock``
(admin) shows the holder and releases the lock; ``tofuflow runs cancel`` (admin) ends
the run as failed and kills its apply session. Also here: a plan that fails is recorded
failed, a newer plan supersedes an older approved one, and ``runs show --plan``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from _services.cli import CLI, descendants, run_cli
from tofuflow.errors import PlanStaleError
from tofuflow.runs import connect

pytestmark = pytest.mark.binary

SLOW = """
resource "terraform_data" "slow" {
  provisioner "local-exec" {
    command = "touch MARK && sleep 120"
  }
}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, binary: object) -> Path:
    root = tmp_path / "repo"
    (root / "infra").mkdir(parents=True)
    (root / "infra" / "main.tf").write_text(SLOW.replace("MARK", str(tmp_path / "started")))
    (root / "tofuflow.toml").write_text('[workspaces."app/dev"]\ndirectory = "infra"\n')
    monkeypatch.setenv("TOFUFLOW_DATA_DIR", str(tmp_path / "data"))
    return root


def _plan(project: Path) -> str:
    planned = run_cli(project, "plan", "app/dev")
    assert planned.returncode == 2, planned.stdout + planned.stderr
    return re.findall(r"run ([0-9a-f]{16})", planned.stdout)[-1]


def test_a_sigkilled_apply_is_cleared_with_unlock_and_runs_cancel(
    project: Path, tmp_path: Path
) -> None:
    run_id = _plan(project)
    apply = subprocess.Popen([*CLI, "apply", run_id], cwd=project, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (tmp_path / "started").exists():
        assert time.monotonic() < deadline and apply.poll() is None, "the apply never started"
        time.sleep(0.1)
    for pid in [apply.pid, *descendants(apply.pid)]:  # the agent kills the whole tree
        os.kill(pid, signal.SIGKILL)
    apply.wait()

    with connect("read") as client:
        assert client.run(run_id)["status"] == "applying"
        (ws,) = [w for w in client.workspaces() if w["name"] == "app/dev"]
    assert ws["locked"] and ws["lock"]["operation"] == "OperationTypeApply"

    blocked_run = _plan(project)  # a plan reads without the lock: fine
    blocked = run_cli(project, "apply", blocked_run)  # one apply session per workspace
    assert blocked.returncode == 1
    assert f"run {run_id} is applying to app/dev now" in blocked.stderr
    assert f"`tofuflow runs cancel {run_id}`" in blocked.stderr
    assert "`tofuflow unlock app/dev`" in blocked.stderr
    assert "lock_timeout" not in blocked.stderr and "force_unlock" not in blocked.stderr
    kept = run_cli(project, "unlock", "app/dev", stdin="n\n")  # shows the holder, asks
    assert kept.returncode == 1 and "left locked" in kept.stderr
    assert f"app/dev is locked by run:{run_id}" in kept.stdout
    assert "OperationTypeApply" in kept.stdout

    released = run_cli(project, "unlock", "app/dev", "--yes")
    assert released.returncode == 0, released.stderr
    assert "app/dev: unlocked" in released.stdout
    ended = run_cli(project, "runs", "cancel", run_id, "--reason", "agent killed the step")
    assert ended.returncode == 0, ended.stderr
    assert f"run {run_id}: failed" in ended.stdout

    with connect("read") as client:
        run = client.run(run_id)
        (ws,) = [w for w in client.workspaces() if w["name"] == "app/dev"]
        events = client.audit(workspace="app/dev")
    assert not ws["locked"]
    assert run["status"] == "failed"
    assert run["result"]["reason"] == "ended by an admin: agent killed the step"
    actions = [e["action"] for e in events]
    assert "state.force_unlock" in actions and "run.ended" in actions
    again = run_cli(project, "unlock", "app/dev", "--yes")
    assert again.returncode == 0 and "not locked" in again.stdout


def test_a_plan_that_fails_is_recorded_failed_with_its_error(project: Path) -> None:
    (project / "infra" / "main.tf").write_text('resource "terraform_data" "x" {\n')  # HCL error
    done = run_cli(project, "plan", "app/dev")
    assert done.returncode == 1
    with connect("read") as client:
        (run,) = client.runs(workspace="app/dev")
    assert run["status"] == "failed"
    assert run["result"]["reason"].startswith("plan failed: ")


def test_an_apply_supersedes_the_runs_planned_before_it_and_apply_says_which(
    project: Path,
) -> None:
    (project / "infra" / "main.tf").write_text('resource "terraform_data" "a" {}\n')
    older = _plan(project)
    newer = _plan(project)  # planning alone supersedes nothing
    assert run_cli(project, "apply", newer).returncode == 0
    with connect("read") as client:
        run = client.run(older)
    assert run["status"] == "superseded" and run["result"]["by"] == newer
    refused = run_cli(project, "apply", older)
    assert refused.returncode == 1
    assert f"run {older} is stale: run {newer} changed the workspace's state" in refused.stderr
    listed = run_cli(project, "runs", "list")
    assert re.search(rf"{older} .* superseded", listed.stdout), listed.stdout


def test_an_apply_session_for_a_superseded_run_is_refused_as_stale(project: Path) -> None:
    # The race a real Airflow deployment showed: an apply read its run while it was still
    # approved, another run's apply superseded it, and then the session opened. Refused as
    # stale (the Airflow operator then plans again), not as a generic conflict.
    (project / "infra" / "main.tf").write_text('resource "terraform_data" "a" {}\n')
    older = _plan(project)
    newer = _plan(project)
    assert run_cli(project, "apply", newer).returncode == 0
    with connect("apply", workspace="app/dev") as client:
        run = client.run(older)
        with pytest.raises(PlanStaleError, match=f"run {older} is stale: run {newer} changed"):
            client.open_session(older, run["plan_digest"], run["config_digest"])


def test_runs_show_plan_prints_every_resource_with_sensitive_values_masked(
    project: Path,
) -> None:
    def config(label: str) -> str:
        return (
            'variable "secret" {\n  default = "canary-9d1f"\n  sensitive = true\n}\n'
            'resource "terraform_data" "r" {\n  count = 30\n'
            f'  input = {{ n = "{label}-${{count.index}}", s = var.secret }}\n}}\n'
        )

    (project / "infra" / "main.tf").write_text(config("a"))
    first = _plan(project)
    assert run_cli(project, "apply", first).returncode == 0
    (project / "infra" / "main.tf").write_text(config("b"))
    run_id = _plan(project)
    shown = run_cli(project, "runs", "show", run_id, "--plan")
    assert shown.returncode == 0, shown.stderr
    for index in range(30):  # every resource, not the first 20
        assert f"terraform_data.r[{index}]" in shown.stdout
        assert f'"b-{index}"' in shown.stdout, shown.stdout  # its attribute change
    assert "canary-9d1f" not in shown.stdout and "sensitive" in shown.stdout
    listed = run_cli(project, "runs", "list")
    assert "tofuflow plan app/dev (" in listed.stdout  # who asked: the command and user
    with connect("read") as client:
        response = httpx.get(
            f"{client.url}/v1/runs/{run_id}/plan",
            headers={"Authorization": f"Bearer {client.token}"},
        )
    assert response.status_code == 200 and "canary-9d1f" not in response.text
