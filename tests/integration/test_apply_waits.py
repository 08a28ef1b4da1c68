"""`tofuflow apply --wait-for-approval`: a pipeline's apply stage waits for a person.

In a generated Azure DevOps pipeline the environment's check has passed when the apply
stage starts; if tofuflow's policy also wants an approver, apply waits (bounded) and
says who may approve and how, instead of failing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.binary

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "project"
CLI = [sys.executable, "-c", "from tofuflow.cli import main; main()"]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, binary: object) -> Path:
    shutil.copytree(EXAMPLE, tmp_path / "project")
    monkeypatch.setenv("TOFUFLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TOFUFLOW_APPROVAL_POLL_SECONDS", "0.3")
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    return tmp_path / "project"


def _plan_prod(project: Path) -> str:
    done = subprocess.run(
        [*CLI, "plan", "app/prod"], cwd=project, capture_output=True, text=True, check=False,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 2 and "needs_approval" in done.stdout, done.stdout + done.stderr
    return re.findall(r"run ([0-9a-f]{16})", done.stdout)[-1]


def test_apply_waits_for_the_approval_and_then_applies(project: Path) -> None:
    run_id = _plan_prod(project)
    apply = subprocess.Popen(
        [*CLI, "apply", run_id, "--wait-for-approval", "5m"], cwd=project,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )  # fmt: skip
    assert apply.stdout is not None
    first = apply.stdout.readline()
    assert f"run {run_id} needs approval" in first
    assert f"tofuflow approve {run_id}" in first and "Waiting up to 5m..." in first
    approved = subprocess.run(
        [*CLI, "approve", run_id, "--comment", "go"], cwd=project, capture_output=True,
        text=True, check=False, timeout=120,
    )  # fmt: skip
    assert approved.returncode == 0, approved.stderr
    out, err = apply.communicate(timeout=300)
    assert apply.returncode == 0, out + err
    assert f"run {run_id}: applied" in out


def test_apply_stops_waiting_when_the_time_is_up_and_says_what_next(project: Path) -> None:
    run_id = _plan_prod(project)
    done = subprocess.run(
        [*CLI, "apply", run_id, "--wait-for-approval", "2s"], cwd=project,
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert "Waiting up to 2s..." in done.stdout, done.stdout  # not "1 min"
    assert f"run {run_id} still needs approval after waiting 2s:" in done.stderr
    assert f"`tofuflow apply {run_id}` again" in done.stderr


def test_without_waiting_an_unapproved_run_is_refused_at_once(project: Path) -> None:
    run_id = _plan_prod(project)
    done = subprocess.run(
        [*CLI, "apply", run_id], cwd=project, capture_output=True, text=True, check=False,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 1 and "approved" in done.stderr
