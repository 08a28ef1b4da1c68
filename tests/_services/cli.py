"""The `tofuflow` command as a user runs it: a separate process, this environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["CLI", "descendants", "run_cli"]

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
