"""Recovering from a mid-way failure as a person does it, from tofuflow's own words.

A `kill -9` of `tofuflow apply` on the embedded plane takes the control plane with it, so
the binary (which outlives it to save the state) writes errored.tfstate into the working
copy; the next stage keeps it and must name the command that moves it into the
workspace. And the recovery commands themselves, given a wrong argument, must say what is
wrong without a traceback and without writing anywhere the user did not mean.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from _services.cli import CLI, run_cli
from tofuflow.runs import connect

pytestmark = pytest.mark.binary

CONFIG = """
resource "terraform_data" "step" {
  for_each = toset(["1", "2"])
  input    = each.key
  provisioner "local-exec" {
    command = "touch MARK && sleep 4"
  }
}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, binary: object) -> Path:
    root = tmp_path / "repo"
    (root / "infra").mkdir(parents=True)
    (root / "infra" / "main.tf").write_text(CONFIG.replace("MARK", str(tmp_path / "started")))
    (root / "tofuflow.toml").write_text('[workspaces."app/dev"]\ndirectory = "infra"\n')
    monkeypatch.setenv("TOFUFLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TOFUFLOW_WORK_DIR", str(tmp_path / "work"))
    return root


def _plan(project: Path) -> str:
    planned = run_cli(project, "plan", "app/dev")
    assert planned.returncode == 2, planned.stdout + planned.stderr
    return re.findall(r"run ([0-9a-f]{16})", planned.stdout)[-1]


def test_an_errored_state_left_by_a_killed_apply_is_named_with_the_state_push_that_saves_it(
    project: Path, tmp_path: Path
) -> None:
    run_id = _plan(project)
    apply = subprocess.Popen([*CLI, "apply", run_id], cwd=project, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (tmp_path / "started").exists():
        assert time.monotonic() < deadline and apply.poll() is None, "the apply never started"
        time.sleep(0.1)
    os.kill(apply.pid, signal.SIGKILL)  # tofuflow alone: its binary carries on
    apply.wait()
    deadline = time.monotonic() + 60
    while not list((tmp_path / "work").rglob("errored.tfstate")):
        assert time.monotonic() < deadline, "the binary never wrote errored.tfstate"
        time.sleep(0.2)
    time.sleep(1)  # the binary writes it, then exits

    again = run_cli(project, "plan", "app/dev")
    (kept,) = (tmp_path / "work").rglob("errored-*.tfstate")
    assert f"`tofuflow state push app/dev {kept}`" in again.stderr, again.stderr
    assert "import what is missing" not in again.stderr

    # Followed as told (the lock the killed apply held is released first): nothing lost.
    assert run_cli(project, "unlock", "app/dev", "--yes").returncode == 0
    pushed = run_cli(project, "state", "push", "app/dev", str(kept))
    assert pushed.returncode == 0, pushed.stderr
    after = run_cli(project, "plan", "app/dev")
    assert after.returncode == 0, after.stdout + after.stderr  # both resources are in state


def test_state_push_of_a_json_file_that_is_not_a_state_is_refused_without_a_traceback(
    project: Path, tmp_path: Path
) -> None:
    for text in ("[]", "42", '"state"', "null"):
        wrong = tmp_path / "wrong.tfstate"
        wrong.write_text(text)
        done = run_cli(project, "state", "push", "app/dev", str(wrong))
        assert done.returncode == 1, done.stdout + done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        assert f"{wrong}: " in done.stderr and "not a state file" in done.stderr, done.stderr


def test_state_push_to_a_mistyped_workspace_is_refused_and_creates_nothing(
    project: Path, tmp_path: Path
) -> None:
    state = {"version": 4, "terraform_version": "1.11.4", "serial": 3, "lineage": "l-1",
             "outputs": {}, "resources": [], "check_results": None}  # fmt: skip
    file = tmp_path / "terraform.tfstate"
    file.write_text(json.dumps(state))
    typo = run_cli(project, "state", "push", "app/de", str(file))
    assert typo.returncode == 1, typo.stdout + typo.stderr
    assert "app/de" in typo.stderr and "app/dev" in typo.stderr, typo.stderr
    with connect("read") as client:
        assert "app/de" not in [w["name"] for w in client.workspaces()]
    # The workspace of tofuflow.toml, new on the control plane, takes it (adopting).
    adopted = run_cli(project, "state", "push", "app/dev", str(file))
    assert adopted.returncode == 0, adopted.stderr
