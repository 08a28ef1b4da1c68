"""The run context an Airflow task sends with every run it makes."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

from tofuflow.ci import RunContext
from tofuflow.ci._airflow import airflow_run_context

RUN_ID = "scheduled__2025-03-01T06:00:00+00:00"


def _git(cwd: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e", "PATH": "/usr/bin:/bin"}  # fmt: skip
    done = subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)
    return done.stdout.decode().strip()


def test_the_airflow_section_names_dag_run_task_try_and_logical_date(tmp_path: Path) -> None:
    logical = dt.datetime(2025, 3, 1, 6, 0, tzinfo=dt.UTC)
    context = airflow_run_context(
        "deploy", RUN_ID, "apply", 2, map_index=3, logical_date=logical,
        dag_file=tmp_path / "deploy.py", base_url="https://airflow.example",
    )  # fmt: skip
    assert context["airflow"] == {
        "dag_id": "deploy", "run_id": RUN_ID, "task_id": "apply", "try_number": 2,
        "map_index": 3, "logical_date": "2025-03-01T06:00:00+00:00", "dag_file": "deploy.py",
        "bundle_version": None,
    }  # fmt: skip
    # The RunContext fields the control plane and the policies read, for any CI system.
    ctx = RunContext.from_json(context)
    assert (ctx.ci_system, ctx.pipeline_id, ctx.run_id, ctx.job, ctx.attempt, ctx.reason) == (
        "airflow", "deploy", RUN_ID, "apply[3]", 2, "scheduled",
    )  # fmt: skip
    assert ctx.run_url is not None and ctx.run_url.endswith("/mapped/3?try_number=2")


def test_the_commit_is_the_dag_files_git_commit(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "dags").mkdir(parents=True)
    (repo / "dags" / "deploy.py").write_text("# a DAG\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "dag")
    head = _git(repo, "rev-parse", "HEAD")
    context = airflow_run_context("deploy", RUN_ID, "plan", 1, dag_file=repo / "dags" / "deploy.py")
    assert (context["commit_sha"], context["branch"], context["dirty"]) == (head, "main", False)


def test_a_git_bundle_version_wins_and_no_date_is_fine(tmp_path: Path) -> None:
    version = "0123456789abcdef0123456789abcdef01234567"
    context = airflow_run_context(
        "deploy", "my-run", "plan", 1, dag_file=tmp_path / "x.py", bundle_version=version
    )
    assert context["commit_sha"] == version
    assert context["airflow"]["bundle_version"] == version
    assert context["airflow"]["logical_date"] is None
    # A bundle version that is not a commit (a local bundle's label) is not taken as one.
    other = airflow_run_context("deploy", "my-run", "plan", 1, bundle_version="v1")
    assert other["commit_sha"] is None and other["airflow"]["bundle_version"] == "v1"
