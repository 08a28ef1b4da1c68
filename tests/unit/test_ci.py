"""Run context: CI variables per system, overrides, URL hygiene, JSON round trips.

Git is never found here: each test runs in a directory outside any repository
(GIT_CEILING_DIRECTORIES), so the fields git would fill stay None. Real repositories are
in tests/integration/test_ci_git.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import tofuflow.ci
from tofuflow.ci import RunContext, airflow_context, detect_run_context, strip_url_credentials
from tofuflow.errors import ConfigError, DocumentError

AZURE_DEVOPS = {
    "TF_BUILD": "True",
    "BUILD_SOURCEVERSION": "3f2a9c1e0b7d4a6f8e5c2b1a0d9e8f7c6b5a4d3e",
    "BUILD_SOURCEBRANCH": "refs/heads/main",
    "BUILD_REPOSITORY_URI": "https://contoso@dev.azure.com/contoso/Infra/_git/platform",
    "BUILD_BUILDID": "1234",
    "BUILD_BUILDNUMBER": "20250101.3",
    "BUILD_DEFINITIONNAME": "platform-deploy",
    "BUILD_REQUESTEDFOR": "Ada Lovelace",
    "BUILD_REQUESTEDFORID": "6b1c7a52-0000-4000-8000-000000000001",
    "BUILD_REASON": "IndividualCI",
    "SYSTEM_COLLECTIONURI": "https://dev.azure.com/contoso/",
    "SYSTEM_TEAMPROJECT": "Infra",
    "SYSTEM_DEFINITIONID": "42",
    "SYSTEM_STAGENAME": "plan",
    "SYSTEM_JOBNAME": "plan_prod",
    "SYSTEM_JOBATTEMPT": "2",
    "ENVIRONMENT_NAME": "production",
}

GITHUB_ACTIONS = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_SHA": "9e8f7c6b5a4d3e3f2a9c1e0b7d4a6f8e5c2b1a0d",
    "GITHUB_REF": "refs/heads/release",
    "GITHUB_REF_NAME": "release",
    "GITHUB_REPOSITORY": "octo/platform",
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_RUN_ID": "987654321",
    "GITHUB_RUN_NUMBER": "17",
    "GITHUB_RUN_ATTEMPT": "1",
    "GITHUB_WORKFLOW": "deploy",
    "GITHUB_WORKFLOW_REF": "octo/platform/.github/workflows/deploy.yml@refs/heads/release",
    "GITHUB_JOB": "apply",
    "GITHUB_EVENT_NAME": "push",
    "GITHUB_ACTOR": "octocat",
    "GITHUB_ACTOR_ID": "583231",
}

AIRFLOW = {
    "AIRFLOW_CTX_DAG_ID": "platform_deploy",
    "AIRFLOW_CTX_DAG_RUN_ID": "manual__2025-01-01T00:00:00+00:00",
    "AIRFLOW_CTX_TASK_ID": "apply",
    "AIRFLOW_CTX_TRY_NUMBER": "3",
    "AIRFLOW__API__BASE_URL": "https://airflow.example/",
}


@pytest.fixture
def outside_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory git will not look above, so no enclosing repository leaks in."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    return tmp_path


def test_azure_devops_variables_fill_the_context(outside_git: Path) -> None:
    ctx = detect_run_context(AZURE_DEVOPS, cwd=outside_git)
    assert ctx == RunContext(
        ci_system="azure-devops",
        commit_sha="3f2a9c1e0b7d4a6f8e5c2b1a0d9e8f7c6b5a4d3e",
        branch="main",
        repository="https://dev.azure.com/contoso/Infra/_git/platform",
        dirty=None,
        pipeline_id="42",
        pipeline_name="platform-deploy",
        run_id="1234",
        run_number="20250101.3",
        run_url="https://dev.azure.com/contoso/Infra/_build/results?buildId=1234",
        attempt=2,
        stage="plan",
        job="plan_prod",
        reason="IndividualCI",
        pull_request_id=None,
        requested_for="Ada Lovelace",
        requested_for_id="6b1c7a52-0000-4000-8000-000000000001",
        environment="production",
    )


def test_azure_devops_run_url_encodes_the_project_and_tolerates_no_trailing_slash(
    outside_git: Path,
) -> None:
    env = {
        **AZURE_DEVOPS,
        "SYSTEM_COLLECTIONURI": "https://tfs.corp/Coll",
        "SYSTEM_TEAMPROJECT": "My Infra",
    }
    ctx = detect_run_context(env, cwd=outside_git)
    assert ctx.run_url == "https://tfs.corp/Coll/My%20Infra/_build/results?buildId=1234"


def test_azure_devops_pull_request_build_keeps_the_merge_ref_and_pr_id(outside_git: Path) -> None:
    env = {
        **AZURE_DEVOPS,
        "BUILD_SOURCEBRANCH": "refs/pull/77/merge",
        "BUILD_REASON": "PullRequest",
        "SYSTEM_PULLREQUEST_PULLREQUESTID": "77",
    }
    ctx = detect_run_context(env, cwd=outside_git)
    assert (ctx.branch, ctx.reason, ctx.pull_request_id) == (
        "refs/pull/77/merge",
        "PullRequest",
        "77",
    )


def test_azure_devops_unexpanded_macros_and_blanks_count_as_unset(outside_git: Path) -> None:
    env = {**AZURE_DEVOPS, "ENVIRONMENT_NAME": "$(Environment.Name)", "SYSTEM_STAGENAME": "  "}
    ctx = detect_run_context(env, cwd=outside_git)
    assert ctx.environment is None and ctx.stage is None


def test_azure_devops_without_collection_uri_has_no_run_url(outside_git: Path) -> None:
    env = {k: v for k, v in AZURE_DEVOPS.items() if k != "SYSTEM_COLLECTIONURI"}
    assert detect_run_context(env, cwd=outside_git).run_url is None


def test_github_actions_variables_fill_the_context(outside_git: Path) -> None:
    ctx = detect_run_context(GITHUB_ACTIONS, cwd=outside_git)
    assert ctx == RunContext(
        ci_system="github-actions",
        commit_sha="9e8f7c6b5a4d3e3f2a9c1e0b7d4a6f8e5c2b1a0d",
        branch="release",
        repository="https://github.com/octo/platform",
        pipeline_id="octo/platform/.github/workflows/deploy.yml",
        pipeline_name="deploy",
        run_id="987654321",
        run_number="17",
        run_url="https://github.com/octo/platform/actions/runs/987654321",
        attempt=1,
        job="apply",
        reason="push",
        requested_for="octocat",
        requested_for_id="583231",
    )


def test_github_pull_request_event_gives_the_pull_request_number(outside_git: Path) -> None:
    env = {
        **GITHUB_ACTIONS,
        "GITHUB_REF": "refs/pull/42/merge",
        "GITHUB_REF_NAME": "42/merge",
        "GITHUB_EVENT_NAME": "pull_request",
    }
    ctx = detect_run_context(env, cwd=outside_git)
    assert (ctx.branch, ctx.pull_request_id, ctx.reason) == (
        "refs/pull/42/merge",
        "42",
        "pull_request",
    )


def test_github_branch_falls_back_to_ref_name(outside_git: Path) -> None:
    env = {k: v for k, v in GITHUB_ACTIONS.items() if k != "GITHUB_REF"}
    assert detect_run_context(env, cwd=outside_git).branch == "release"


def test_github_enterprise_server_url_builds_the_urls(outside_git: Path) -> None:
    env = {**GITHUB_ACTIONS, "GITHUB_SERVER_URL": "https://ghe.corp/"}
    ctx = detect_run_context(env, cwd=outside_git)
    assert ctx.repository == "https://ghe.corp/octo/platform"
    assert ctx.run_url == "https://ghe.corp/octo/platform/actions/runs/987654321"


def test_airflow_task_variables_fill_the_context(outside_git: Path) -> None:
    ctx = detect_run_context(AIRFLOW, cwd=outside_git)
    assert ctx == RunContext(
        ci_system="airflow",
        pipeline_id="platform_deploy",
        pipeline_name="platform_deploy",
        run_id="manual__2025-01-01T00:00:00+00:00",
        job="apply",
        attempt=3,
        reason="manual",
        run_url=(
            "https://airflow.example/dags/platform_deploy/runs/"
            "manual__2025-01-01T00%3A00%3A00%2B00%3A00/tasks/apply?try_number=3"
        ),
    )


def test_airflow_context_helper_for_the_provider() -> None:
    ctx = airflow_context(
        "platform_deploy",
        "scheduled__2025-02-01T00:00:00+00:00",
        "apply",
        2,
        map_index=4,
        base_url="http://localhost:8080",
        overrides={"requested_for": "ada", "commit_sha": "abc123"},
    )
    assert ctx.ci_system == "airflow"
    assert (ctx.job, ctx.attempt, ctx.reason) == ("apply[4]", 2, "scheduled")
    assert ctx.run_url is not None and ctx.run_url.endswith("/tasks/apply/mapped/4?try_number=2")
    assert (ctx.requested_for, ctx.commit_sha) == ("ada", "abc123")
    assert ctx.dirty is None  # no cwd given: git is not consulted


def test_airflow_custom_run_id_has_no_reason_and_no_url_without_base_url() -> None:
    ctx = airflow_context("d", "my-run", "t", 1)
    assert (ctx.reason, ctx.run_url) == (None, None)


def test_outside_any_ci_and_any_repository_the_context_is_local_and_empty(
    outside_git: Path,
) -> None:
    ctx = detect_run_context({}, cwd=outside_git)
    assert ctx == RunContext(ci_system="local")


def test_a_missing_git_binary_is_not_an_error(
    outside_git: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(outside_git))
    assert detect_run_context({}, cwd=outside_git) == RunContext()


def test_azure_devops_wins_when_several_systems_are_marked(outside_git: Path) -> None:
    env = {**AIRFLOW, **GITHUB_ACTIONS, **AZURE_DEVOPS}
    assert detect_run_context(env, cwd=outside_git).ci_system == "azure-devops"


def test_tf_build_must_be_true_to_mean_azure_devops(outside_git: Path) -> None:
    env = {**AZURE_DEVOPS, "TF_BUILD": "False"}
    assert detect_run_context(env, cwd=outside_git).ci_system == "local"


def test_explicit_overrides_win_over_ci_variables(outside_git: Path) -> None:
    ctx = detect_run_context(
        AZURE_DEVOPS,
        cwd=outside_git,
        overrides={
            "branch": "refs/heads/hotfix",
            "run_id": 99,
            "attempt": "5",
            "dirty": False,
            "repository": "https://bot:s3cret@git.example/r.git",
            "environment": None,  # "not given": the CI value stays
        },
    )
    assert (ctx.branch, ctx.run_id, ctx.attempt, ctx.dirty) == ("hotfix", "99", 5, False)
    assert ctx.repository == "https://git.example/r.git"
    assert ctx.environment == "production"


def test_unknown_override_is_refused_with_a_suggestion(outside_git: Path) -> None:
    with pytest.raises(ConfigError, match=r"'comit_sha': unknown field; did you mean 'commit_sha'"):
        detect_run_context({}, cwd=outside_git, overrides={"comit_sha": "abc"})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dirty": "yes"}, "dirty must be true or false"),
        ({"attempt": "first"}, "attempt must be a non-negative integer"),
        ({"attempt": -1}, "attempt must be a non-negative integer"),
        ({"ci_system": "jenkins"}, "ci_system must be one of azure-devops, github-actions"),
        ({"branch": ["main"]}, "branch must be a string"),
    ],
)
def test_override_values_of_the_wrong_type_are_refused(
    outside_git: Path, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        detect_run_context({}, cwd=outside_git, overrides=overrides)


def test_override_can_name_the_ci_system(outside_git: Path) -> None:
    ctx = detect_run_context({}, cwd=outside_git, overrides={"ci_system": "airflow"})
    assert ctx.ci_system == "airflow"


@pytest.mark.parametrize(
    ("url", "clean"),
    [
        ("https://user:token@github.com/o/r.git", "https://github.com/o/r.git"),
        ("https://ghp_abc123@github.com/o/r.git", "https://github.com/o/r.git"),
        ("https://x-access-token:a@b@github.com/o/r", "https://github.com/o/r"),
        (
            "https://contoso@dev.azure.com/contoso/p/_git/r",
            "https://dev.azure.com/contoso/p/_git/r",
        ),
        ("http://u:p@host:8080/r?x=1", "http://host:8080/r?x=1"),
        ("https://u:p@[::1]:8443/r", "https://[::1]:8443/r"),
        ("ssh://git@ssh.dev.azure.com/v3/o/p/r", "ssh://ssh.dev.azure.com/v3/o/p/r"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("https://github.com/o/r.git", "https://github.com/o/r.git"),
        ("https://github.com/o/r@v1", "https://github.com/o/r@v1"),
    ],
)
def test_credentials_are_stripped_from_urls(url: str, clean: str) -> None:
    assert strip_url_credentials(url) == clean


def test_a_context_built_by_hand_never_holds_credentials_or_long_refs() -> None:
    ctx = RunContext(
        repository="https://u:p@host/r", run_url="https://u:p@host/run/1", branch="refs/heads/x"
    )
    assert (ctx.repository, ctx.run_url, ctx.branch) == (
        "https://host/r",
        "https://host/run/1",
        "x",
    )


def test_tags_are_not_mistaken_for_branches() -> None:
    assert RunContext(branch="refs/tags/v1.2").branch == "refs/tags/v1.2"


def test_json_round_trip(outside_git: Path) -> None:
    ctx = detect_run_context(AZURE_DEVOPS, cwd=outside_git, overrides={"dirty": True})
    document = json.loads(json.dumps(ctx.to_json()))
    assert RunContext.from_json(document) == ctx
    assert document["run_url"] == ctx.run_url and document["attempt"] == 2


def test_from_json_ignores_unknown_keys_and_strips_credentials() -> None:
    ctx = RunContext.from_json(
        {"ci_system": "local", "repository": "https://u:p@h/r", "added_in_v9": 1}
    )
    assert ctx == RunContext(repository="https://h/r")


@pytest.mark.parametrize(
    "document",
    [
        {"ci_system": "travis"},
        {"ci_system": "local", "dirty": "no"},
        {"ci_system": "local", "commit_sha": {"a": 1}},
        ["not", "an", "object"],
    ],
)
def test_from_json_refuses_malformed_documents(document: object) -> None:
    with pytest.raises(DocumentError, match="run context"):
        RunContext.from_json(document)  # type: ignore[arg-type]


def test_public_api_of_tofuflow_ci_is_pinned() -> None:
    assert set(tofuflow.ci.__all__) == {
        "AgentPool",
        "AgentReport",
        "PipelineOptions",
        "PullRequest",
        "console_link",
        "airflow_run_context",
        "azure_devops_pipeline",
        "AzureDevOpsLog",
        "CISystem",
        "RunContext",
        "airflow_context",
        "default_branch",
        "detect_run_context",
        "escape_message",
        "escape_property",
        "neutralise",
        "on_agent",
        "strip_url_credentials",
    }
    for name in tofuflow.ci.__all__:
        assert getattr(tofuflow.ci, name) is not None


def test_default_branch_is_origins_else_the_checked_out_one(tmp_path: Path) -> None:
    from tofuflow.ci import default_branch

    assert default_branch(tmp_path) is None  # not a repository
    origin, clone = tmp_path / "origin", tmp_path / "clone"
    subprocess.run(["git", "init", "-q", "--initial-branch=trunk", str(origin)], check=True)
    subprocess.run(["git", "-C", str(origin), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-q", "--allow-empty", "-m", "first"], check=True)  # fmt: skip
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", "-b", "feature"], check=True)
    assert default_branch(clone) == "trunk"  # origin's, not the feature branch checked out
    assert default_branch(origin) == "trunk"  # no origin: the branch checked out
