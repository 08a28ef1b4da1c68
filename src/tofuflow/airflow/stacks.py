"""The stacks of ``tofuflow.toml`` as Airflow tasks, in dependency order.

    from tofuflow.airflow import stack_task_group

    with DAG("stacks", schedule=None, max_active_tasks=4):
        apply = stack_task_group("../tofuflow.toml", "apply", group_id="apply")

builds one task per stack — the same graph ``tofuflow run-all`` runs
(``tofuflow.stacks.stack_graph``): plan and apply run a stack after everything it
``depends_on``, destroy runs it after everything that depends on it. Each task reads its
``inputs`` from its dependencies' current state when it plans (``TofuflowPlanOperator``).
How many run at once is Airflow's business: the DAG's ``max_active_tasks``, pools, the
executor's slots.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from airflow.sdk import TaskGroup

from tofuflow.airflow import DEFAULT_CONN_ID
from tofuflow.airflow.envs import _segment
from tofuflow.airflow.operators import (
    TofuflowApplyOperator,
    TofuflowDestroyOperator,
    TofuflowPlanOperator,
)

__all__ = ["Operation", "stack_task_group", "stack_task_id"]

Operation = Literal["plan", "apply", "destroy"]
_OPERATORS: dict[str, type[TofuflowPlanOperator]] = {
    "plan": TofuflowPlanOperator,
    "apply": TofuflowApplyOperator,
    "destroy": TofuflowDestroyOperator,
}


def stack_task_group(
    project: str | os.PathLike[str],
    operation: Operation = "apply",
    *,
    group_id: str = "stacks",
    workspaces: Iterable[str] | None = None,
    tofuflow_conn_id: str = DEFAULT_CONN_ID,
    **operator_kwargs: Any,
) -> TaskGroup:
    """A task group with one task per stack, ordered by ``depends_on``.

    :param project: path of ``tofuflow.toml``, read now (at parse time); a relative path
        is relative to the folder of the DAG file calling this (the rule of the
        connection's ``project`` extra). Each task gets the resolved path.
    :param operation: ``apply`` (``TofuflowApplyOperator`` without ``run_id``: plans, then
        applies what policy approved, waiting for an approver otherwise), ``plan``
        (``TofuflowPlanOperator``) or ``destroy`` (``TofuflowDestroyOperator``, dependants first).
    :param workspaces: the stacks to run (default: all). Plan and apply add everything
        they depend on; destroy adds everything that depends on them (as run-all).
    :param operator_kwargs: passed to every operator (``variables``, ``poll_interval``,
        ``retries``, ``pool``, ...).

    Task ids are the workspace names made safe for Airflow (``network/eu`` →
    ``network_eu``; see :func:`stack_task_id`); the UI shows the workspace name. How many
    run at once is Airflow's: ``max_active_tasks``, pools, the executor. Raises
    ``ConfigError`` for an unknown workspace or dependency, ``CycleError`` for a cycle —
    so the DAG fails to import, naming the problem.
    """
    from tofuflow.project import load_project
    from tofuflow.stacks import Closure, stack_graph

    if operation not in _OPERATORS:
        raise ValueError(f"operation must be 'plan', 'apply' or 'destroy', not {operation!r}")
    for reserved in ("task_id", "workspace", "project", "run_id"):
        if reserved in operator_kwargs:
            raise TypeError(f"stack_task_group sets {reserved} itself; do not pass it")
    path = _resolve(Path(project), _caller_folder())
    loaded = load_project(path)
    closure: Closure = "dependants" if operation == "destroy" else "dependencies"
    graph = stack_graph(loaded, workspaces, closure=closure)
    ids = _task_ids(graph)
    operator = _OPERATORS[operation]
    with TaskGroup(group_id=group_id) as group:
        tasks = {}
        for name in graph:
            tasks[name] = operator(
                task_id=ids[name], task_display_name=name, workspace=name, project=str(path),
                tofuflow_conn_id=tofuflow_conn_id, **operator_kwargs,
            )  # fmt: skip
        for name, needs in graph.items():
            for dependency in sorted(needs):
                if operation == "destroy":  # what depends on a stack goes first
                    tasks[name] >> tasks[dependency]
                else:
                    tasks[dependency] >> tasks[name]
    return group


def stack_task_id(workspace: str) -> str:
    """The task id of a stack: ``/`` becomes ``_`` (``network/eu`` → ``network_eu``);
    a name too long for a task id is shortened with a hash (``environment_name``'s rule)."""
    return _segment(workspace.replace("/", "_"))


def _task_ids(graph: Iterable[str]) -> dict[str, str]:
    """Task id per workspace; names that would share one (``a/b`` beside ``a_b``) get
    ``environment_name``'s form of their full name instead (``a-b-<hash>``; a name that
    needed no change keeps it), so every stack has its own task."""
    names = sorted(graph)
    ids = {name: stack_task_id(name) for name in names}
    taken: dict[str, list[str]] = {}
    for name, task_id in ids.items():
        taken.setdefault(task_id, []).append(name)
    for sharing in taken.values():
        if len(sharing) > 1:
            for name in sharing:
                ids[name] = _segment(name)  # "a-b-<hash of a/b>"
    return ids


def _caller_folder() -> Path | None:
    """The folder of the file that called ``stack_task_group`` (the DAG file)."""
    frame = inspect.currentframe()
    try:
        caller = frame.f_back.f_back if frame and frame.f_back else None
        filename = caller.f_code.co_filename if caller else None
    finally:
        del frame
    if not filename or filename.startswith("<"):
        return None
    return Path(filename).resolve().parent


def _resolve(path: Path, base: Path | None) -> Path:
    path = path.expanduser()
    if path.is_absolute() or base is None:
        return path.resolve()
    return (base / path).resolve()
