"""The `tofuflow` command as a user runs it: a separate process, this environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["CLI", "cli_in", "descendants", "fresh_user", "interrupted", "run_cli"]

CLI = [sys.executable, "-c", "from tofuflow.cli import main; main()"]


def run_cli(
    cwd: Path, *args: str, stdin: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``tofuflow ARGS`` in ``cwd`` with this process's environment; never raises on the
    exit code (the tests assert it)."""
    return subprocess.run(
        [*CLI, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=timeout,
        input=stdin, env=dict(os.environ),
    )  # fmt: skip


def fresh_user(tmp_path: Path) -> dict[str, str]:
    """The environment of a user with no tofuflow or TF_ settings and their own data
    directory (so the embedded control plane is theirs alone)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOFUFLOW_", "TF_"))}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    return env


def cli_in(cwd: Path, env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``cli("plan", "app/dev")``: `tofuflow ARGS` in ``cwd`` with ``env``."""

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=300, check=False)  # fmt: skip

    return cli


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (what a CI agent kills with a step's process tree)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            children = [int(c) for c in (task / "children").read_text().split()]
            found += children
            pending += children
    return found


def interrupted(
    cwd: Path, env: dict[str, str], *args: str, once: Path, signum: int = signal.SIGINT
) -> subprocess.CompletedProcess[str]:
    """``tofuflow ARGS`` sent ``signum`` (a terminal's Ctrl-C) as soon as the file ``once``
    exists (a provisioner touches it: the binary is mid-apply); what it printed and its
    exit code. SIGINT is not ignored in it (tests/conftest.py), as in a terminal."""
    proc = subprocess.Popen([*CLI, *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 120
    while not once.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
