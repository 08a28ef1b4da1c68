"""Run every benchmark in one process run and print their lines; non-zero if any missed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
SCRIPTS = [
    "bench_plan_parse.py",
    "bench_driver.py",
    "bench_state_backends.py",
    "bench_server_throughput.py",
    "bench_lists.py",
    "bench_replicas.py",
    "bench_story_chain.py",
    "bench_policy.py",
    "bench_pipeline.py",
    "bench_run_all.py",
    "bench_run_all.py --sleep-stages",
    "bench_airflow.py",
    "bench_notifications.py",
    "bench_console.py",
]


def main() -> int:
    failed = 0
    for script in SCRIPTS:
        print(f"== {script}", flush=True)
        name, *options = script.split()
        command = [sys.executable, str(HERE / name), *options]
        failed += subprocess.run(command, check=False).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
