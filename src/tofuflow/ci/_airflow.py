"""Run context for Airflow task instances: the DAG run is the pipeline run."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tofuflow.ci._context import Fields, RunContext, checked_overrides
from tofuflow.ci._git import fill_from_git

__all__ = ["airflow_context", "airflow_fields", "airflow_run_context"]

# DagRunType values Airflow puts before "__" in generated run ids (dataset_ is Airflow 2).
_RUN_TYPES = ("manual", "scheduled", "backfill", "asset_triggered", "dataset_triggered")


def airflow_context(
    dag_id: str,
    run_id: str,
    task_id: str,
    try_number: int | None = None,
    *,
    map_index: int | None = None,
    base_url: str | None = None,
    cwd: Path | None = None,
    overrides: Mapping[str, object] | None = None,
) -> RunContext:
    """The context of one Airflow task instance (the provider calls this from ``execute``).

        ti = context["ti"]
        ctx = airflow_context(ti.dag_id, ti.run_id, ti.task_id, ti.try_number,
                              map_index=ti.map_index, base_url=conf.get("api", "base_url"),
                              cwd=bundle_path, overrides={"requested_for": triggering_user})

    ``base_url`` builds ``run_url`` (the task instance page); ``cwd`` lets git fill the
    commit, branch, repository and dirty flag; ``overrides`` win over everything.
    """
    fields = airflow_fields(dag_id, run_id, task_id, try_number, map_index, base_url)
    fields.update(checked_overrides(overrides))
    if cwd is not None:
        fields = fill_from_git(fields, cwd)
    return RunContext(**fields)


def airflow_run_context(
    dag_id: str,
    run_id: str,
    task_id: str,
    try_number: int | None = None,
    *,
    map_index: int | None = None,
    logical_date: dt.datetime | str | None = None,
    dag_file: Path | None = None,
    bundle_version: str | None = None,
    base_url: str | None = None,
    run_type: object = None,
    overrides: Mapping[str, object] | None = None,
) -> dict[str, Any]:
    """The context document the provider sends with a run (stored with it on the control
    plane): :class:`RunContext` plus an ``airflow`` section with Airflow's own names.

        airflow_run_context("deploy", "manual__2025-01-01T00:00:00+00:00", "apply", 1,
                            logical_date=..., dag_file=Path(dag.fileloc))

    The commit is the DAG bundle's version when Airflow knows it (a git bundle), else the
    commit of the git working copy holding ``dag_file`` (when it is in one). ``run_type``
    (the DAG run's ``run_type``: manual, scheduled, backfill, asset_triggered) is the
    reason; without it the run id's prefix is (custom run ids have none).
    """
    given = dict(overrides or {})
    if run_type is not None and "reason" not in given:
        given["reason"] = str(getattr(run_type, "value", run_type))
    if bundle_version and "commit_sha" not in given and _looks_like_commit(bundle_version):
        given["commit_sha"] = bundle_version
    cwd = dag_file.parent if dag_file is not None and dag_file.parent.is_dir() else None
    context = airflow_context(
        dag_id, run_id, task_id, try_number, map_index=map_index, base_url=base_url,
        cwd=cwd, overrides=given,
    ).to_json()  # fmt: skip
    if isinstance(logical_date, dt.datetime):
        logical_date = logical_date.isoformat()
    context["airflow"] = {
        "dag_id": dag_id,
        "run_id": run_id,
        "task_id": task_id,
        "try_number": try_number,
        "map_index": map_index if map_index is not None and map_index >= 0 else None,
        "logical_date": logical_date,
        "dag_file": dag_file.name if dag_file is not None else None,
        "bundle_version": bundle_version,
    }
    return context


def _looks_like_commit(value: str) -> bool:
    return 7 <= len(value) <= 64 and all(c in "0123456789abcdef" for c in value.lower())


def airflow_fields(
    dag_id: str,
    run_id: str | None,
    task_id: str | None,
    try_number: int | None = None,
    map_index: int | None = None,
    base_url: str | None = None,
) -> Fields:
    """The Airflow fields, shared by :func:`airflow_context` and env-variable detection."""
    mapped = map_index is not None and map_index >= 0
    job = f"{task_id}[{map_index}]" if task_id and mapped else task_id
    return {
        "ci_system": "airflow",
        # A DAG is both the pipeline's id and its name; run ids are unique per DAG.
        "pipeline_id": dag_id,
        "pipeline_name": dag_id,
        "run_id": run_id,
        "job": job,
        "attempt": try_number,
        "reason": _run_type(run_id),
        "run_url": _task_url(base_url, dag_id, run_id, task_id, map_index, try_number),
    }


def _run_type(run_id: str | None) -> str | None:
    """``manual__2025-01-01T00:00:00+00:00`` -> ``manual``; custom run ids -> None."""
    prefix, sep, _ = (run_id or "").partition("__")
    return prefix if sep and prefix in _RUN_TYPES else None


def _task_url(
    base_url: str | None,
    dag_id: str,
    run_id: str | None,
    task_id: str | None,
    map_index: int | None,
    try_number: int | None,
) -> str | None:
    """The Airflow 3 UI page of the task instance, as ``TaskInstance.log_url`` builds it."""
    if not (base_url and run_id and task_id):
        return None
    url = f"{base_url.rstrip('/')}/dags/{_q(dag_id)}/runs/{_q(run_id)}/tasks/{_q(task_id)}"
    if map_index is not None and map_index >= 0:
        url += f"/mapped/{map_index}"
    if try_number:
        url += f"?try_number={try_number}"
    return url


def _q(segment: str) -> str:
    # Run ids hold ':' and '+' (timestamps): encode everything but unreserved characters.
    return quote(segment, safe="")
