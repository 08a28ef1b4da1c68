"""The `tofuflow` command as a user runs it: a real process, the real binary."""

from __future__ import annotations

import os
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


def test_sigterm_stops_the_running_apply_gracefully(binary: Binary, tmp_path: Path) -> None:
    del binary
    workdir = tmp_path / "demo"
    workdir.mkdir()
    # A slow resource next to the quickstart: SIGTERM arrives while it runs. (An absolute
    # path: the binary runs in a private working copy of the directory.)
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
    )
    deadline = time.monotonic() + 120
    while not (workdir / "slow.started").exists():
        assert time.monotonic() < deadline, "the slow resource never started"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "cancelled" in stderr and "lock released" in stderr
    assert not (workdir / ".terraform.tfstate.lock.info").exists()
