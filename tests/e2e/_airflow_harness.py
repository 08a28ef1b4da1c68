"""Helpers for the Airflow end-to-end tests: run a DAG with dag.test(), read its outcome."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "airflow"
E2E_DAGS = Path(__file__).parent / "dags"
# Runs one DAG file's DAG with dag.test() and prints the outcome on a marked line.
_RUNNER = """
import runpy, sys
from airflow.sdk import DAG
namespace = runpy.run_path(sys.argv[1], run_name="dag_file")
dag = next(v for v in namespace.values() if isinstance(v, DAG) and v.dag_id == sys.argv[2])
run = dag.test()
print(f"TOFUFLOW-E2E {run.run_id} {run.state}", flush=True)
"""


def query(home: Path, sql: str, args: tuple[Any, ...]) -> list[Any]:
    """Read Airflow's metadata database (closed at once: Airflow's processes share it)."""
    with contextlib.closing(sqlite3.connect(home / "airflow.db", timeout=30)) as db:
        return db.execute(sql, args).fetchall()


@dataclass
class DagRun:
    dag_id: str
    run_id: str
    state: str
    tasks: dict[str, str]
    log: str
    home: Path

    def xcom(self, task_id: str, key: str = "return_value") -> Any:
        row = query(
            self.home,
            "select value from xcom where dag_id=? and run_id=? and task_id=? and key=?",
            (self.dag_id, self.run_id, task_id, key),
        )
        row = row[0] if row else None
        assert row is not None, f"no XCom {key!r} from {task_id} in {self.dag_id}/{self.run_id}"
        return json.loads(row[0]) if isinstance(row[0], str) else row[0]


@dataclass
class Airflow:
    """The session's Airflow home, the environment DAG runs get, and the control plane."""

    home: Path
    env: dict[str, str]
    files: Path
    plane: Any
    admin: Any
    logs: Path = field(init=False)

    def __post_init__(self) -> None:
        self.logs = self.home / "logs" / "e2e"
        self.logs.mkdir(parents=True, exist_ok=True)

    def start(
        self, dag_file: Path, dag_id: str, extra_env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``dag_id`` of ``dag_file`` with dag.test(); its output goes to a log file
        inside AIRFLOW_HOME (so the secret scan covers it)."""
        env = {**self.env, "AIRFLOW__CORE__DAGS_FOLDER": str(dag_file.parent),
               **(extra_env or {})}  # fmt: skip
        if dag_file.parent != EXAMPLES / "dags":
            # The session's connection is the docs' (paths relative to the examples' DAG
            # folder); the test DAGs live elsewhere and get them spelled out.
            extra = {"project": str(EXAMPLES / "tofuflow.toml"),
                     "server_config": str(EXAMPLES / "server.toml")}  # fmt: skip
            if "AIRFLOW_CONN_TOFUFLOW_DEFAULT" not in (extra_env or {}):
                env["AIRFLOW_CONN_TOFUFLOW_DEFAULT"] = json.dumps(
                    {"conn_type": "tofuflow", "extra": extra}
                )
        log = (self.logs / f"{dag_id}.log").open("wb")
        return subprocess.Popen(
            [sys.executable, "-c", _RUNNER, str(dag_file), dag_id],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def finish(self, proc: subprocess.Popen[bytes], dag_id: str, timeout: float = 240) -> DagRun:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        text = (self.logs / f"{dag_id}.log").read_text(errors="replace")
        marked = [line.split() for line in text.splitlines() if line.startswith("TOFUFLOW-E2E ")]
        assert proc.returncode == 0 and marked, (
            f"dag.test() of {dag_id} did not finish (exit {proc.returncode}):\n{text[-6000:]}"
        )
        _, run_id, state = marked[-1]
        tasks = dict(
            query(
                self.home,
                "select task_id, state from task_instance where dag_id=? and run_id=?",
                (dag_id, run_id),
            )
        )
        return DagRun(dag_id, run_id, state.removeprefix("DagRunState."), tasks, text, self.home)

    def run(
        self, dag_file: Path, dag_id: str, extra_env: Mapping[str, str] | None = None
    ) -> DagRun:
        return self.finish(self.start(dag_file, dag_id, extra_env), dag_id)

    def state(self, workspace: str) -> dict[str, Any]:
        """The workspace's current state document ({} when it has none)."""
        response = httpx.get(
            f"{self.plane.url}/v1/state/{workspace}",
            headers={"Authorization": f"Bearer {self.admin.token}"},
        )
        return json.loads(response.content) if response.status_code == 200 else {}

    def runs_of(self, dag_run: DagRun) -> list[dict[str, Any]]:
        """The control plane's runs this DAG run made (their context names it)."""
        return [
            r for r in self.admin.runs(limit=500)
            if (r.get("context") or {}).get("airflow", {}).get("run_id") == dag_run.run_id
            and r["context"]["airflow"]["dag_id"] == dag_run.dag_id
        ]  # fmt: skip


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
