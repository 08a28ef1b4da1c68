"""Detecting the run context from the CI system's variables, git, and explicit overrides."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import quote

from tofuflow.ci._airflow import airflow_fields
from tofuflow.ci._context import Fields, RunContext, checked_overrides
from tofuflow.ci._git import fill_from_git
from tofuflow.ci._normalize import parse_attempt

__all__ = ["detect_run_context"]

Env = Mapping[str, str]

# An ADO macro left unexpanded when a pipeline maps an undefined variable with env: X: $(Y).
_UNEXPANDED_MACRO = re.compile(r"^\$\(.*\)$")
_PULL_REF = re.compile(r"^refs/pull/(\d+)/")


def detect_run_context(
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    overrides: Mapping[str, object] | None = None,
) -> RunContext:
    """Who, what and where for this run; never fails for lack of information.

        ctx = detect_run_context()                            # os.environ + git in the cwd
        ctx = detect_run_context(overrides={"branch": "main"})

    The CI system's variables come first (Azure DevOps when ``TF_BUILD=True``, GitHub
    Actions when ``GITHUB_ACTIONS=true``, Airflow when ``AIRFLOW_CTX_DAG_ID`` is set), else
    ``local``; explicit ``overrides`` win over them; then git in ``cwd`` fills only the
    commit, branch, repository and dirty flag still missing (at most two git calls).
    Outside a git repository those stay None.
    """
    env = os.environ if env is None else env
    fields = _ci_fields(env)
    fields.update(checked_overrides(overrides))
    fields = fill_from_git(fields, Path.cwd() if cwd is None else cwd)
    return RunContext(**fields)


def _ci_fields(env: Env) -> Fields:
    for detected, read in _SYSTEMS:
        if detected(env):
            return read(env)
    return {"ci_system": "local"}


def _get(env: Env, name: str) -> str | None:
    """A variable's value, or None when unset, blank or an unexpanded ``$(macro)``."""
    value = env.get(name, "").strip()
    if not value or _UNEXPANDED_MACRO.match(value):
        return None
    return value


def _is_azure_devops(env: Env) -> bool:
    return (_get(env, "TF_BUILD") or "").lower() == "true"


def _azure_devops(env: Env) -> Fields:
    """Only reads variables (PROTOCOLS.md §4); logging commands live in _azure_devops.py."""
    return {
        "ci_system": "azure-devops",
        "commit_sha": _get(env, "BUILD_SOURCEVERSION"),
        "branch": _get(env, "BUILD_SOURCEBRANCH"),
        "repository": _get(env, "BUILD_REPOSITORY_URI"),
        "pipeline_id": _get(env, "SYSTEM_DEFINITIONID"),
        "pipeline_name": _get(env, "BUILD_DEFINITIONNAME"),
        "run_id": _get(env, "BUILD_BUILDID"),
        "run_number": _get(env, "BUILD_BUILDNUMBER"),
        "run_url": _azure_devops_run_url(env),
        "attempt": parse_attempt(_get(env, "SYSTEM_JOBATTEMPT")),
        "stage": _get(env, "SYSTEM_STAGENAME"),
        "job": _get(env, "SYSTEM_JOBNAME"),
        "reason": _get(env, "BUILD_REASON"),
        "pull_request_id": _get(env, "SYSTEM_PULLREQUEST_PULLREQUESTID"),
        "requested_for": _get(env, "BUILD_REQUESTEDFOR"),
        "requested_for_id": _get(env, "BUILD_REQUESTEDFORID"),
        "environment": _get(env, "ENVIRONMENT_NAME"),
    }


def _azure_devops_run_url(env: Env) -> str | None:
    """``${SYSTEM_COLLECTIONURI}${SYSTEM_TEAMPROJECT}/_build/results?buildId=${BUILD_BUILDID}``."""
    collection = _get(env, "SYSTEM_COLLECTIONURI")
    project = _get(env, "SYSTEM_TEAMPROJECT")
    build_id = _get(env, "BUILD_BUILDID")
    if not (collection and project and build_id):
        return None
    # The collection URI ends in '/' today; rstrip keeps one either way. Projects may
    # contain spaces.
    return (
        f"{collection.rstrip('/')}/{quote(project, safe='')}"
        f"/_build/results?buildId={quote(build_id, safe='')}"
    )


def _is_github_actions(env: Env) -> bool:
    return (_get(env, "GITHUB_ACTIONS") or "").lower() == "true"


def _github_actions(env: Env) -> Fields:
    server = _get(env, "GITHUB_SERVER_URL")
    repo = _get(env, "GITHUB_REPOSITORY")
    run_id = _get(env, "GITHUB_RUN_ID")
    repo_url = f"{server.rstrip('/')}/{repo}" if server and repo else None
    ref = _get(env, "GITHUB_REF")
    # GITHUB_WORKFLOW_REF is "owner/repo/.github/workflows/x.yml@refs/heads/main": without
    # the ref it names the workflow file, stable across branches.
    workflow_ref = _get(env, "GITHUB_WORKFLOW_REF")
    return {
        "ci_system": "github-actions",
        "commit_sha": _get(env, "GITHUB_SHA"),
        "branch": ref or _get(env, "GITHUB_REF_NAME"),
        "repository": repo_url,
        "pipeline_id": workflow_ref.partition("@")[0] if workflow_ref else None,
        "pipeline_name": _get(env, "GITHUB_WORKFLOW"),
        "run_id": run_id,
        "run_number": _get(env, "GITHUB_RUN_NUMBER"),
        "run_url": f"{repo_url}/actions/runs/{run_id}" if repo_url and run_id else None,
        "attempt": parse_attempt(_get(env, "GITHUB_RUN_ATTEMPT")),
        "job": _get(env, "GITHUB_JOB"),
        "reason": _get(env, "GITHUB_EVENT_NAME"),
        "pull_request_id": _pull_request_number(ref),
        "requested_for": _get(env, "GITHUB_ACTOR"),
        "requested_for_id": _get(env, "GITHUB_ACTOR_ID"),
    }


def _pull_request_number(ref: str | None) -> str | None:
    """``refs/pull/42/merge`` -> ``42`` (pull_request events build the merge ref)."""
    match = _PULL_REF.match(ref or "")
    return match.group(1) if match else None


def _is_airflow(env: Env) -> bool:
    return _get(env, "AIRFLOW_CTX_DAG_ID") is not None


def _airflow(env: Env) -> Fields:
    """Airflow exports AIRFLOW_CTX_* to a task's environment; the UI's base URL comes
    from its own configuration variable when that is set ([api] base_url in Airflow 3)."""
    return airflow_fields(
        dag_id=_get(env, "AIRFLOW_CTX_DAG_ID") or "",
        run_id=_get(env, "AIRFLOW_CTX_DAG_RUN_ID"),
        task_id=_get(env, "AIRFLOW_CTX_TASK_ID"),
        try_number=parse_attempt(_get(env, "AIRFLOW_CTX_TRY_NUMBER")),
        base_url=_get(env, "AIRFLOW__API__BASE_URL"),
    )


# First match wins: a CI job that happens to run Airflow locally is still that CI's run.
_SYSTEMS: tuple[tuple[Callable[[Env], bool], Callable[[Env], Fields]], ...] = (
    (_is_azure_devops, _azure_devops),
    (_is_github_actions, _github_actions),
    (_is_airflow, _airflow),
)
