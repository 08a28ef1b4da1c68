"""A runner killed outright must not take the binary's apply down with it.

When an Airflow supervisor or a CI agent SIGKILLs the runner, the binary (in its own
session) is orphaned. With its output on a pipe it died of SIGPIPE at its next line, in
the middle of the apply: objects created but never saved to state, the lock never
released. Its output goes to files now, so it finishes and saves what it did.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.binary

RUNNER = """
import sys
from tofuflow.tofu import Tofu
tf = Tofu(sys.argv[1], on_output=lambda stream, line: print(line, flush=True))
tf.apply(sys.argv[2], parallelism=2)
"""


def test_the_binary_finishes_and_saves_its_state_after_the_runner_is_sigkilled(
    tmp_path: Path, binary: object
) -> None:
    work = tmp_path / "infra"
    work.mkdir()
    (work / "main.tf").write_text(
        'resource "terraform_data" "r" {\n  count = 12\n  input = count.index\n'
        '  provisioner "local-exec" {\n    command = "sleep 0.5"\n  }\n}\n'
    )
    from tofuflow.tofu import Tofu

    tf = Tofu(work)
    tf.init()
    tf.plan(out="p.tfplan")
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(work), "p.tfplan"], stdout=subprocess.PIPE,
        text=True, env=dict(os.environ),
    )  # fmt: skip
    assert runner.stdout is not None
    for line in runner.stdout:
        if "Creation complete" in line:  # the apply is under way
            break
    runner.send_signal(signal.SIGKILL)  # no goodbye; the binary is orphaned
    runner.wait()
    assert _working_in(work), "the binary died with its runner"
    deadline = time.monotonic() + 120
    while _working_in(work):  # the orphaned binary goes on to the end
        assert time.monotonic() < deadline, "the orphaned binary never finished"
        time.sleep(0.2)
    assert not (work / ".terraform.tfstate.lock.info").exists()  # and released the lock
    state = json.loads((work / "terraform.tfstate").read_text())
    created = [i for r in state["resources"] for i in r["instances"]]
    assert len(created) == 12  # every object it created is in the state


def _working_in(directory: Path) -> list[int]:
    """The binary's processes whose working directory is ``directory``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (
                Path(os.readlink(proc / "cwd")) == directory
                and b"apply" in (proc / "cmdline").read_bytes()
            ):
                found.append(int(proc.name))
        except OSError:
            continue
    return found
