"""The `tofuflow` command as a user runs it: a real process, the real binary."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tofuflow.tofu import Binary

TOFUFLOW = [sys.executable, "-c", "from tofuflow.cli import main; main()"]


def _tofuflow(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TOFUFLOW, *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


def test_demo_applies_the_quickstart_then_finds_nothing_to_do_then_destroys(
    binary: Binary, tmp_path: Path
) -> None:
    del binary  # the fixture fails clearly when no binary is installed
    workdir = tmp_path / "demo"
    first = _tofuflow("demo", "--dir", str(workdir), "--environment", "test")
    assert first.returncode == 0, first.stderr
    assert "Plan: 3 to add, 0 to change, 0 to destroy." in first.stdout
    assert sorted(p.name for p in (workdir / "out").iterdir()) == [
        "test-api.txt", "test-web.txt", "test-worker.txt"
    ]  # fmt: skip

    second = _tofuflow("demo", "--dir", str(workdir), "--environment", "test")
    assert second.returncode == 0, second.stderr
    assert "No changes." in second.stdout and "Nothing to apply" in second.stdout

    gone = _tofuflow("demo", "--dir", str(workdir), "--environment", "test", "--destroy")
    assert gone.returncode == 0, gone.stderr
    assert "3 to destroy" in gone.stdout
    assert list((workdir / "out").iterdir()) == []


def test_version_names_the_binary_it_will_drive(binary: Binary) -> None:
    done = _tofuflow("version")
    assert done.returncode == 0
    assert f"binary   {binary.flavor} {binary.version_string}" in done.stdout


def test_no_binary_gives_an_error_that_says_how_to_install(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path), "TOFUFLOW_CACHE_DIR": str(tmp_path / "c")}
    done = _tofuflow("demo", "--dir", str(tmp_path / "d"), env=env)
    assert done.returncode == 1
    assert "tofuflow install" in done.stderr


def _demo_stopped_while_applying(tmp_path: Path, signum: int) -> tuple[Path, str]:
    """`tofuflow demo` with a slow resource beside the quickstart, sent ``signum`` while
    that resource is being created; the demo directory and the command's stderr."""
    workdir = tmp_path / "demo"
    workdir.mkdir()
    env = _own_data_dir(tmp_path)
    # An absolute path: the binary runs in a private working copy of the directory.
    (workdir / "slow.tf").write_text(
        'resource "terraform_data" "slow" {\n'
        '  provisioner "local-exec" {\n'
        f'    command = "touch {workdir}/slow.started && sleep 60"\n'
        "  }\n}\n"
    )
    proc = subprocess.Popen(
        [*TOFUFLOW, "demo", "--dir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,  # SIGINT is not ignored in it (tests/conftest.py), as in a terminal
    )
    deadline = time.monotonic() + 120
    while not (workdir / "slow.started").exists():
        assert time.monotonic() < deadline, "the slow resource never started"
        time.sleep(0.1)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1, stderr
    assert not (workdir / ".terraform.tfstate.lock.info").exists()
    return workdir, stderr


def _own_data_dir(tmp_path: Path) -> dict[str, str]:
    """The environment with an embedded control plane of this test's own: the demo's
    workspace starts empty."""
    return {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}


# The quickstart's three resources were applied, the slow one was not: the state holds
# them (the version depends on how often the binary saved it on the way), and the slow
# one tainted (its create was cut short).
_HOW_FAR = re.compile(
    r"error: interrupted: 3 of 4 changes applied, saved as state version \d+; "
    r"1 stopped while being created, so tainted: the next plan replaces it; "
    # What to run next is the demo again, as it was run: there is no tofuflow.toml in
    # which `tofuflow plan demo/quickstart` would work.
    r"run `tofuflow demo --dir \S+/demo` again to finish \(run [0-9a-f]+ is cancelled\)"
)


def test_sigterm_stops_the_running_apply_gracefully(binary: Binary, tmp_path: Path) -> None:
    del binary
    _, stderr = _demo_stopped_while_applying(tmp_path, signal.SIGTERM)
    assert "cancelled" in stderr and "lock released" in stderr
    assert _HOW_FAR.search(stderr), stderr


def test_ctrl_c_stops_the_running_apply_and_says_how_far_it_got(
    binary: Binary, tmp_path: Path
) -> None:
    """Ctrl-C during the demo's apply says what `tofuflow apply` says: how far the apply
    got, where the state is and what to run next; never a bare `Aborted.`."""
    del binary
    workdir, stderr = _demo_stopped_while_applying(tmp_path, signal.SIGINT)
    assert _HOW_FAR.search(stderr), stderr
    assert "Aborted." not in stderr
    # What was applied is in the saved state: without slow.tf, only the slow resource (its
    # creation cut short) is left to remove.
    (workdir / "slow.tf").unlink()
    again = _tofuflow("demo", "--dir", str(workdir), env=_own_data_dir(tmp_path))
    assert "Plan: 0 to add, 0 to change, 1 to destroy." in again.stdout, again.stdout


def test_python_dash_m_tofuflow_runs_the_cli(binary: Binary) -> None:
    # Where the console script is not on PATH (a venv not activated, `pipx run`), people
    # reach for `python -m tofuflow`; it must be the same command, exit codes included.
    done = subprocess.run(
        [sys.executable, "-m", "tofuflow", "version"], capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"binary   {binary.flavor} {binary.version_string}" in done.stdout
    usage = subprocess.run(
        [sys.executable, "-m", "tofuflow", "plan"], capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert usage.returncode == 1 and "Usage: tofuflow plan" in usage.stderr, usage.stderr
