"""The control plane does not depend on the runner's goodbye: an apply session has a
lease the runner renews. A runner killed outright (a CI agent's SIGKILL of the step, an
Airflow supervisor's SIGKILL 5 s after SIGTERM) stops renewing; when the lease lapses the
run is failed ("runner lost"), the lock its session held is released, both audited, and
the next run applies without anyone unlocking by hand.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from _services.cli import CLI, descendants, run_cli
from tofuflow.runs import connect

pytestmark = pytest.mark.binary

LEASE = 3  # seconds


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, binary: object) -> Path:
    root = tmp_path / "repo"
    (root / "infra").mkdir(parents=True)
    (root / "tofuflow.toml").write_text('[workspaces."app/dev"]\ndirectory = "infra"\n')
    config = tmp_path / "server.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\n\n[runs]\nsession_lease = "{LEASE}s"\n'
    )
    monkeypatch.setenv("TOFUFLOW_SERVER_CONFIG", str(config))
    return root


def _plan(root: Path, seconds: int, marker: Path) -> str:
    (root / "infra" / "main.tf").write_text(
        f'resource "terraform_data" "slow_{seconds}" {{\n  provisioner "local-exec" {{\n'
        f'    command = "touch {marker} && sleep {seconds}"\n  }}\n}}\n'
    )
    done = run_cli(root, "plan", "app/dev")
    assert done.returncode == 2, done.stdout + done.stderr
    return re.findall(r"run ([0-9a-f]{16})", done.stdout)[-1]


def test_an_apply_longer_than_the_lease_keeps_it_by_renewing(project: Path, tmp_path: Path) -> None:
    run_id = _plan(project, 3 * LEASE, tmp_path / "long")
    done = run_cli(project, "apply", run_id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"run {run_id}: applied" in done.stdout


def test_a_killed_runner_loses_its_lease_and_the_next_run_applies(
    project: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    lost = _plan(project, 120, marker)
    apply = subprocess.Popen([*CLI, "apply", lost], cwd=project, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert time.monotonic() < deadline and apply.poll() is None, "the apply never started"
        time.sleep(0.1)
    for pid in [apply.pid, *descendants(apply.pid)]:  # no goodbye: the whole tree dies
        os.kill(pid, signal.SIGKILL)
    apply.wait()
    with connect("read") as client:
        (ws,) = [w for w in client.workspaces() if w["name"] == "app/dev"]
        assert ws["locked"], "the killed binary held the state lock"
    time.sleep(LEASE + 1)

    with connect("read") as client:
        run = client.run(lost)  # reading runs finds the lapsed lease
        (ws,) = [w for w in client.workspaces() if w["name"] == "app/dev"]
        events = client.audit(workspace="app/dev")
    assert run["status"] == "failed" and run["result"]["runner_lost"] is True
    assert run["result"]["reason"].startswith("runner lost: its apply session's lease lapsed")
    assert not ws["locked"]
    actors = {e["action"]: e["actor"] for e in events}
    assert actors["run.runner_lost"] == "tofuflow:lease"
    assert actors["state.force_unlock"] == "tofuflow:lease"

    # The next run plans and applies with nobody unlocking anything by hand.
    (project / "infra" / "main.tf").write_text('resource "terraform_data" "next" {}\n')
    planned = run_cli(project, "plan", "app/dev")
    assert planned.returncode == 2, planned.stderr
    nxt = re.findall(r"run ([0-9a-f]{16})", planned.stdout)[-1]
    done = run_cli(project, "apply", nxt)
    assert done.returncode == 0, done.stdout + done.stderr
