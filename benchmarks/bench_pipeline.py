"""The whole run pipeline vs the bare binary, side by side.

tofuflow: plan (read-only, state in the embedded control plane) → upload artifact and
plan → policy check → auto-approval → apply session → apply → result.
bare: `init` + `plan -out` + `apply PLAN` with the local backend — what a copy-pasted
pipeline step does. Both start from empty state each round. Target (issue 4): <= 1.25x.

    python benchmarks/bench_pipeline.py [--resources 300] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import report

from tofuflow.embedded import EmbeddedControlPlane
from tofuflow.project import WorkspaceConfig
from tofuflow.runs import ControlPlane, apply_run, plan_workspace
from tofuflow.server.config import ServerConfig
from tofuflow.tofu import Tofu, find_binary

CONFIG = """
resource "terraform_data" "r" {{
  count = {count}
  input = {{ index = count.index, name = "resource-${{count.index}}" }}
}}
"""


def _bare(workdir: Path, env: dict[str, str], binary: str) -> float:
    started = time.perf_counter()
    for argv in (
        ["init", "-input=false", "-no-color"],
        ["plan", "-input=false", "-no-color", "-out=bare.tfplan"],
        ["apply", "-input=false", "-no-color", "bare.tfplan"],
    ):
        subprocess.run([binary, *argv], cwd=workdir, env=env, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - started


def _pipeline(workdir: Path, name: str, plane: EmbeddedControlPlane) -> float:
    workspace = WorkspaceConfig(name=name, directory=workdir)
    started = time.perf_counter()
    with ControlPlane(plane.url, plane.token("planner")) as planner:
        outcome = plan_workspace(workspace, planner, {})
    assert outcome.run["status"] == "approved", outcome.run
    with ControlPlane(plane.url, plane.token("applier")) as applier:
        done = apply_run(outcome.run["id"], workspace, applier)
    assert done["status"] == "applied", done
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    binary = find_binary()
    with tempfile.TemporaryDirectory(prefix="tofuflow-bench-pipeline-") as tmp:
        root = Path(tmp)
        os.environ["TF_PLUGIN_CACHE_DIR"] = str(root / "plugins")
        env = Tofu(root, binary=binary).env
        config = ServerConfig.from_mapping({"server": {"data_dir": str(root / "cp")}})
        bare_times, pipeline_times = [], []
        with EmbeddedControlPlane(config) as plane:
            for round_ in range(args.repeat + 1):  # round 0 warms caches, not counted
                for kind in ("bare", "tofuflow"):
                    workdir = root / f"{kind}-{round_}"
                    workdir.mkdir()
                    (workdir / "main.tf").write_text(CONFIG.format(count=args.resources))
                    if kind == "bare":
                        seconds = _bare(workdir, env, str(binary.path))
                        (bare_times if round_ else []).append(seconds)
                    else:
                        seconds = _pipeline(workdir, f"bench/r{round_}", plane)
                        (pipeline_times if round_ else []).append(seconds)
    t_bare, t_flow = statistics.median(bare_times), statistics.median(pipeline_times)
    ok = report(
        f"pipeline, {args.resources} resources",
        t_flow / t_bare,
        1.25,
        f"bare init+plan+apply {t_bare:.3f}s  tofuflow plan→check→apply {t_flow:.3f}s  "
        f"ratio {t_flow / t_bare:.3f}x",
        "1.25x",
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
