"""docs/airflow.md's "Trying the examples" block, run as written in a copy of the repository.

Each line runs in one bash, one after the other (so its exports carry over), from the
copy's root, as a reader would from a checkout. Two substitutions keep the test apart from
the machine and from parallel tests: ``/tmp/`` becomes the test's own directory, and the
user data directory (where the embedded control plane keeps its database when
``server.toml`` leaves ``data_dir`` to the default) is the test's; the example's files
directory (an Airflow Variable with a ``/tmp`` default) is the test's too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.binary


def _block(heading: str) -> str:
    text = (ROOT / "docs" / "airflow.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def _commands(block: str) -> list[str]:
    return [line.split("  #")[0].rstrip() for line in block.splitlines() if line.strip()]


def test_the_airflow_examples_readme_has_the_guides_block() -> None:
    """examples/airflow/README.md repeats the guide's block: the same commands, so the run
    below covers both."""
    readme = (ROOT / "examples" / "airflow" / "README.md").read_text()
    block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    assert _commands(block) == _commands(_block("Trying the examples"))


def test_the_airflow_guides_example_block_runs_as_written(tmp_path: Path, binary: object) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "examples", repo / "examples")
    files = tmp_path / "files"
    files.mkdir()
    script = _block("Trying the examples").replace("/tmp/", f"{tmp_path}/")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TOFUFLOW_", "AIRFLOW"))},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "AIRFLOW_VAR_TOFUFLOW_EXAMPLES_DIR": str(files),
    }
    done = subprocess.run(
        ["bash", "-e", "-c", script], cwd=repo, env=env, capture_output=True, text=True,
        timeout=900, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    # dag.test() ran every task: plan, apply, outputs, the task using them, destroy.
    for task in ("plan", "apply", "outputs", "check_service", "destroy"):
        assert f"task_id={task}" in output or f"'{task}'" in output, (task, output[-6000:])
    assert "2 replicas up at" in output, output[-6000:]
    assert "state=failed" not in output, output[-6000:]
    made = files / "examples_lifecycle"  # where the apply wrote the replica files
    assert made.is_dir() and [p for p in made.rglob("*") if p.is_file()] == []  # destroyed
    assert (tmp_path / "airflow" / "airflow.db").is_file()  # AIRFLOW_HOME moved with /tmp/
