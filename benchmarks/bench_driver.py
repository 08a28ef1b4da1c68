"""Driver overhead: tofuflow's plan vs the bare binary, side by side, and CLI start-up.

Targets (issue 2): a 300-resource plan through ``Tofu.plan`` takes at most
1.05 x the bare binary's time + 0.15 s; ``tofuflow --help`` starts within 0.3 s of a
bare ``python -c pass``.

    python benchmarks/bench_driver.py [--resources 300] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import median_seconds, report

from tofuflow import Tofu, find_binary

CONFIG = """
resource "terraform_data" "r" {{
  count = {count}
  input = {{ index = count.index, name = "resource-${{count.index}}" }}
}}
"""


def bench_plan(resources: int, repeat: int) -> bool:
    binary = find_binary()
    with tempfile.TemporaryDirectory(prefix="tofuflow-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "main.tf").write_text(CONFIG.format(count=resources))
        tf = Tofu(workdir, binary=binary)
        tf.init()
        bare_argv = [
            str(binary.path), "plan", "-input=false", "-no-color", "-json",
            "-detailed-exitcode", "-out=bare.tfplan",
        ]  # fmt: skip

        def bare() -> None:
            done = subprocess.run(
                bare_argv, cwd=workdir, env=tf.env, stdout=subprocess.DEVNULL, check=False
            )
            assert done.returncode == 2, done.returncode

        def driven() -> None:
            # A fresh Tofu each time: discovery and version check count as start-up.
            assert Tofu(workdir).plan(out="driven.tfplan").has_changes

        bare(), driven()  # warm the page cache and the plugin cache for both
        bare_times, driven_times = [], []
        for _ in range(repeat):  # interleaved, so drift on the machine hits both alike
            bare_times.append(median_seconds(bare, 1))
            driven_times.append(median_seconds(driven, 1))
        t_bare = sorted(bare_times)[len(bare_times) // 2]
        t_driven = sorted(driven_times)[len(driven_times) // 2]
    target = 1.05 * t_bare + 0.15
    return report(
        f"plan, {resources} resources",
        t_driven,
        target,
        f"bare {t_bare:.3f}s  tofuflow {t_driven:.3f}s  ratio {t_driven / t_bare:.3f}x",
        f"{target:.3f}s (1.05 x bare + 0.15 s)",
    )


def bench_startup(repeat: int) -> bool:
    script = shutil.which("tofuflow", path=str(Path(sys.executable).parent)) or "tofuflow"

    def bare() -> None:
        subprocess.run([sys.executable, "-c", "pass"], check=True)

    def help_() -> None:
        subprocess.run([script, "--help"], check=True, stdout=subprocess.DEVNULL)

    t_bare = median_seconds(bare, repeat)
    t_help = median_seconds(help_, repeat)
    return report(
        "tofuflow --help start-up",
        t_help - t_bare,
        0.3,
        f"python -c pass {t_bare:.3f}s  tofuflow --help {t_help:.3f}s  "
        f"overhead {t_help - t_bare:.3f}s",
        "0.3 s of overhead",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("TF_PLUGIN_CACHE_DIR", tempfile.mkdtemp(prefix="tofuflow-plugins-"))
    ok = bench_plan(args.resources, args.repeat)
    ok = bench_startup(max(args.repeat, 10)) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
