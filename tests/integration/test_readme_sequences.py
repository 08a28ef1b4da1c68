"""The command sequences of the examples' READMEs, run as written.

Each line of a ``sh`` block runs in bash in a copy of the repository, one after the
other, with ``tofuflow`` on PATH and a fresh embedded control plane. ``<run id>`` and
``RUN`` stand for the run id the last command printed. A comment saying ``exit N`` is
the exit code expected; ``refused`` means any failure; otherwise 0.
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

ROOT = Path(__file__).resolve().parents[2]


def _sh_blocks(readme: Path) -> list[list[str]]:
    blocks, current = [], None
    for line in readme.read_text().splitlines():
        if line.strip() == "```sh":
            current = []
        elif line.strip() == "```" and current is not None:
            blocks.append(current)
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def _expected(comment: str) -> int | None:
    """The exit code a line's comment promises (None: any failure)."""
    found = re.search(r"\bexit (\d)\b", comment)
    if found:
        return int(found.group(1))
    return None if "refused" in comment else 0


def test_the_project_examples_sequence_runs_as_written(tmp_path: Path, binary: object) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "examples" / "project", repo / "examples" / "project")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "TOFUFLOW_DATA_DIR": str(tmp_path / "data"),
    }
    env.pop("TOFUFLOW_SERVER_URL", None)
    (block,) = _sh_blocks(ROOT / "examples" / "project" / "README.md")
    cwd, run_id, ran = repo, "", 0
    for raw in block:
        command, _, comment = raw.partition("#")
        command = command.strip()
        if not command:
            continue
        if command.startswith("cd "):
            cwd = repo / command[3:].strip()
            continue
        command = command.replace("<run id>", run_id).replace("RUN", run_id)
        done = subprocess.run(
            ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
            timeout=300, check=False,
        )  # fmt: skip
        output = done.stdout + done.stderr
        expected = _expected(comment)
        if expected is None:
            assert done.returncode != 0, f"{command!r} should be refused:\n{output}"
        else:
            assert done.returncode == expected, f"{command!r} exit {done.returncode}:\n{output}"
        quoted = re.search(r'"([^"]+)"', comment)
        if quoted and "<id>" not in quoted.group(1):
            assert quoted.group(1) in output, f"{command!r}: no {quoted.group(1)!r}:\n{output}"
        ids = re.findall(r"\brun ([0-9a-f]{16})\b", done.stdout)
        run_id = ids[-1] if ids else run_id
        ran += 1
    assert ran >= 10
    assert sorted(p.name for p in (repo / "examples" / "project" / "infra").iterdir()) == [
        "main.tf"
    ]
