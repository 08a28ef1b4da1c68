"""Stopping `tofuflow apply` as people and CI agents do: Ctrl-C (SIGINT) and SIGTERM.

Both must end the same way: the binary stops gracefully (the state of what it applied is
saved, the lock released), the run is recorded ``cancelled``, and the person sees one
line saying how far it got and what to do next — not ``Aborted.``, not one line per
halted resource.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from _services.silent import silent_port
from tofuflow.runs import connect

pytestmark = pytest.mark.binary

CLI = [sys.executable, "-c", "from tofuflow.cli import main; main()"]
CONFIG = """
resource "terraform_data" "step" {
  for_each = toset(["0", "1", "2", "3", "4", "5"])
  input    = each.key
  provisioner "local-exec" {
    command = "sleep ${each.key * 2}"
  }
}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, binary: object) -> Path:
    root = tmp_path / "repo"
    (root / "infra").mkdir(parents=True)
    (root / "infra" / "main.tf").write_text(CONFIG)
    (root / "tofuflow.toml").write_text('[workspaces."app/dev"]\ndirectory = "infra"\n')
    monkeypatch.setenv("TOFUFLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    return root


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_apply_is_cancelled_with_one_line_saying_how_far_it_got(
    project: Path, signum: int
) -> None:
    planned = subprocess.run(
        [*CLI, "plan", "app/dev"], cwd=project, capture_output=True, text=True, check=False,
        timeout=300,
    )  # fmt: skip
    assert planned.returncode == 2, planned.stdout + planned.stderr
    run_id = re.findall(r"run ([0-9a-f]{16})", planned.stdout)[-1]
    apply = subprocess.Popen(
        [*CLI, "apply", run_id], cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=dict(os.environ),
    )  # fmt: skip
    assert apply.stdout is not None
    seen = []
    for line in apply.stdout:  # per-resource progress, as it happens
        seen.append(line)
        if re.match(r"\[\s*2/6\s+\d+s\] ", line):
            break
    apply.send_signal(signum)
    _out, err = apply.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    assert apply.returncode == 1, err
    assert "Aborted" not in err
    assert len(lines) == 1, err  # one summary, not a line per halted resource
    # Those stopped mid-create are tainted: the line says so, and what the next plan does.
    found = re.fullmatch(
        r"Error: interrupted: (\d) of 6 changes applied, saved as state version (\d+); "
        r"(\d) stopped while being created, so tainted: the next plan replaces them; "
        r"run `tofuflow plan app/dev` to continue \(run [0-9a-f]{16} is cancelled\)",
        lines[0],
    )
    assert found, lines[0]
    assert 2 <= int(found.group(1)) < 6
    tainted = int(found.group(3))
    assert 1 <= tainted <= 6 - int(found.group(1))
    with connect("read") as client:
        run = client.run(run_id)
        (workspace,) = [w for w in client.workspaces() if w["name"] == "app/dev"]
    assert run["status"] == "cancelled" and run["result"]["reason"] == "apply interrupted"
    assert run["result"]["applied"] == int(found.group(1))
    assert run["state_version"] == int(found.group(2))
    assert not workspace["locked"]  # the binary released the lock on its way out
    started = time.monotonic()
    again = subprocess.run(
        [*CLI, "plan", "app/dev"], cwd=project, capture_output=True, text=True, check=False,
        timeout=300,
    )  # fmt: skip
    assert again.returncode == 2 and time.monotonic() - started < 120, again.stderr
    applied = int(found.group(1))
    replan = rf"Plan: {6 - applied} to add, 0 to change, {tainted} to destroy"
    assert re.search(replan, again.stdout), again.stdout
    assert again.stdout.count("(tainted)") == tainted, again.stdout
    assert "".join(seen).count("Creation complete") >= 2


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_plan_says_nothing_was_applied_and_what_next(
    project: Path, signum: int
) -> None:
    with silent_port() as (port, reached, release):
        (project / "infra" / "main.tf").write_text(
            'data "terraform_remote_state" "network" {\n  backend = "http"\n'
            f'  config = {{ address = "http://127.0.0.1:{port}/network" }}\n}}\n'
        )
        plan = subprocess.Popen(
            [*CLI, "plan", "app/dev"], cwd=project, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=dict(os.environ),
        )  # fmt: skip
        assert reached.wait(timeout=120), "the plan never read the remote state"
        plan.send_signal(signum)  # while the binary is planning
        time.sleep(1)
        release.set()
        _out, err = plan.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    assert plan.returncode == 1, err
    assert "Aborted" not in err
    # One line, not the binary's complaint that the read-only plan could not save state.
    assert lines == [
        "Error: interrupted: the plan of app/dev stopped before it finished, so nothing "
        "was applied (a run it had made is recorded cancelled); run `tofuflow plan app/dev` again"
    ], err
    with connect("read") as client:
        (run,) = client.runs(workspace="app/dev")
        locked = [w["name"] for w in client.workspaces() if w["locked"]]
    assert run["status"] == "cancelled" and not locked


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_ctrl_c_while_the_control_plane_has_not_answered_yet_says_what_stands(
    project: Path, command: str
) -> None:
    """Ctrl-C before anything was planned or applied (a control plane slow to answer the
    first request): one line saying so and what next, not a bare `Aborted.`, and no claim
    that a run was recorded cancelled when none was made."""
    run_id = "0123456789abcdef"
    with silent_port() as (port, reached, release):
        env = {**os.environ, "TOFUFLOW_SERVER_URL": f"http://127.0.0.1:{port}",
               "TOFUFLOW_TOKEN": "tfw_AAAAAAAAAAAA_" + "B" * 43}  # fmt: skip
        argv = [*CLI, "plan", "app/dev"] if command == "plan" else [*CLI, "apply", run_id]
        started = subprocess.Popen(argv, cwd=project, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
        assert reached.wait(timeout=120), "the command never reached the control plane"
        started.send_signal(signal.SIGINT)
        _out, err = started.communicate(timeout=120)
        release.set()
    lines = [line for line in err.splitlines() if line.strip()]
    assert started.returncode == 1, err
    if command == "plan":
        assert lines == [
            "Error: interrupted: the plan of app/dev stopped before it finished, so nothing "
            "was applied (a run it had made is recorded cancelled); run `tofuflow plan "
            "app/dev` again"
        ], err
    else:
        assert lines == [
            f"Error: interrupted before the apply of run {run_id} started: nothing was "
            f"applied and the run is as it was; `tofuflow apply {run_id}` applies it"
        ], err


@pytest.mark.parametrize("answered", [True, False], ids=["after-the-answer", "before-sending"])
def test_ctrl_c_while_the_plan_is_submitted_leaves_its_run_cancelled(
    project: Path, answered: bool
) -> None:
    """Ctrl-C as the finished plan goes to the control plane (the upload of its JSON):
    the person is told the run is recorded cancelled. It was left approved (applyable)
    when the answer had come, and in `planning` for ever when the request never left."""
    from tofuflow.project import load_project
    from tofuflow.runs import plan_workspace

    (project / "infra" / "main.tf").write_text('resource "terraform_data" "x" {}\n')
    ws = load_project(project / "tofuflow.toml").workspace("app/dev")
    with connect("plan") as client:
        submit = client.upload_plan

        def interrupted(run_id: str, document: bytes) -> Any:
            if answered:
                submit(run_id, document)
            raise KeyboardInterrupt  # the SIGINT Python delivers between two statements

        client.upload_plan = interrupted  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            plan_workspace(ws, client, {})
    with connect("read") as client:
        (run,) = client.runs(workspace="app/dev")
    assert run["status"] == "cancelled", run
    assert "interrupted" in str(run.get("result")), run


@pytest.mark.parametrize("delay", [0.005, 0.02], ids=["5ms", "20ms"])
def test_ctrl_c_once_the_plan_has_said_its_run_keeps_the_plans_exit_code(
    project: Path, delay: float
) -> None:
    """Ctrl-C just after `run <id>: approved` was printed, while the process wound down
    (the embedded plane closing, the interpreter finalizing): it died of SIGINT, exit
    130 without a word, as if the plan had failed."""
    (project / "infra" / "main.tf").write_text('resource "terraform_data" "x" {}\n')
    proc = subprocess.Popen([*CLI, "plan", "app/dev"], cwd=project, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if re.match(r"run [0-9a-f]{16}: ", line):
            time.sleep(delay)
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    if proc.returncode == 1:  # still inside the command: it says the run stands
        assert "interrupted: the plan of app/dev had finished: run " in err, err
    else:
        assert proc.returncode == 2, (proc.returncode, out, err)


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_ctrl_c_as_the_command_starts_is_one_line_never_a_traceback(
    project: Path, command: str
) -> None:
    """Ctrl-C within milliseconds of starting (a second thought, a CI job cancelled at
    once), while Python still loads the command's modules: exit 130 and one line, not the
    traceback of whichever import it landed in."""
    argv = [*CLI, "plan", "app/dev"] if command == "plan" else [*CLI, "apply", "0" * 16]
    guarded = 0
    for delay in (0, 0.005, 0.01, 0.02, 0.05) * 2:
        proc = subprocess.Popen(argv, cwd=project, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # fmt: skip
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=120)
        if proc.returncode == -signal.SIGINT and not err:
            continue  # before the interpreter handles SIGINT: killed, silently (a shell: 130)
        if _before_the_guard(err):
            continue
        assert "Traceback" not in err, (delay, err)
        if proc.returncode != 130:  # after start-up: the command's own one line (a fast machine)
            assert proc.returncode == 1 and len(err.strip().splitlines()) == 1, (delay, err)
            continue
        assert err.splitlines() == [
            "Error: interrupted while tofuflow was starting: nothing was done"
        ], (delay, err)
        guarded += 1
    assert guarded >= 4  # 20 and 50 ms are well past the interpreter's own start


def _before_the_guard(err: str) -> bool:
    """Interrupted before tofuflow.cli's first statement installed its handler: in
    CPython's own start-up (site.py, the standard streams) or while it found and loaded
    the package's first few modules, the milliseconds no Python code can cover."""
    if err.startswith("Fatal Python error: init_"):
        return True
    if not err.startswith("Traceback") or not err.rstrip().endswith("KeyboardInterrupt"):
        return False
    lines = err.splitlines()
    inside = [
        f"{line} {lines[i + 1].strip() if i + 1 < len(lines) else ''}"
        for i, line in enumerate(lines)
        if "/tofuflow/cli/" in line
    ]
    guard = ("_starting.py", "from tofuflow.cli._starting import started")
    return all(any(part in frame for part in guard) for frame in inside)
