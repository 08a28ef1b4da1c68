"""The run context is taken from the caller's OIDC claims where they carry it.

Tokens come from the test issuer, shaped like GitHub Actions, Azure DevOps and Kubernetes
service-account tokens; the runner's self-reported context is what ``tofuflow.ci`` detects
from the CI's variables.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _services.fixtures import make_token
from _services.oidc import LocalIssuer
from _services.server import RunningServer, threaded_server
from tofuflow.ci import detect_run_context
from tofuflow.errors import BadRequestError
from tofuflow.runs import ControlPlane
from tofuflow.server.config import ServerConfig

DIGEST = "c" * 64
SHA = "3f2a9c1b" * 5
GITHUB_ENV = {
    "GITHUB_ACTIONS": "true", "GITHUB_SHA": SHA, "GITHUB_REF": "refs/heads/main",
    "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "contoso/infra",
    "GITHUB_WORKFLOW_REF": "contoso/infra/.github/workflows/deploy.yml@refs/heads/main",
    "GITHUB_WORKFLOW": "deploy", "GITHUB_RUN_ID": "991", "GITHUB_RUN_ATTEMPT": "1",
    "GITHUB_JOB": "plan",
}  # fmt: skip
GITHUB_CLAIMS = {
    "sub": "repo:contoso/infra:ref:refs/heads/main", "repository": "contoso/infra",
    "sha": SHA, "ref": "refs/heads/main", "run_id": "991", "run_attempt": "1",
    "workflow": "deploy",
    "workflow_ref": "contoso/infra/.github/workflows/deploy.yml@refs/heads/main",
}  # fmt: skip
ADO_ENV = {
    "TF_BUILD": "True", "BUILD_SOURCEVERSION": SHA, "BUILD_SOURCEBRANCH": "refs/heads/main",
    "SYSTEM_DEFINITIONID": "42", "BUILD_BUILDID": "1234", "SYSTEM_STAGENAME": "plan",
}  # fmt: skip
ADO_CLAIMS = {
    "sub": "sc://contoso/infra/aws-plan", "org_id": "o-1", "prj_id": "p-1", "def_id": "42",
    "run_id": "1234", "rpo_ref": "refs/heads/main",
}  # fmt: skip


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer() as running:
        yield running


@pytest.fixture
def server(tmp_path: Path, issuer: LocalIssuer) -> Iterator[RunningServer]:
    planner = [{"role": "planner", "workspaces": "app/*", "subject": subject}
               for subject in ("repo:contoso/infra:*", "sc://contoso/infra/*",
                               "system:serviceaccount:ci:*")]  # fmt: skip
    config = ServerConfig.from_mapping({
        "server": {"data_dir": str(tmp_path / "server")},
        "oidc": {"issuers": [{"issuer": issuer.issuer, "audience": issuer.audience,
                              "jwks_url": issuer.jwks_url}]},
        "bindings": planner,
    })  # fmt: skip
    with threaded_server(config) as running:
        yield running


def _as(server: RunningServer, issuer: LocalIssuer, **claims: Any) -> ControlPlane:
    return ControlPlane(server.url, issuer.mint(**claims))


def _reported(env: dict[str, str]) -> dict[str, Any]:
    """What the runner reports in that CI (no git: the test's directory is not the job's)."""
    return detect_run_context(env, cwd=Path("/")).to_json()


def _created_event(server: RunningServer, run_id: str) -> dict[str, Any]:
    reader = ControlPlane(server.url, make_token(server, "reader", "*"))
    [event] = reader.audit(run=run_id, action="run.created")
    return event


def test_a_github_run_takes_its_commit_and_workflow_from_the_token_and_marks_each_field(
    server: RunningServer, issuer: LocalIssuer
) -> None:
    pipeline = _as(server, issuer, **GITHUB_CLAIMS)
    reported = _reported(GITHUB_ENV)

    run = pipeline.create_run("app/dev", DIGEST, reported)

    provenance = run["context"]["provenance"]
    for field in ("commit_sha", "branch", "repository", "run_id", "pipeline_id",
                  "pipeline_name", "attempt", "ci_system"):  # fmt: skip
        assert provenance[field] == "verified", field
    assert provenance["job"] == "reported"  # the token does not carry the job
    assert run["commit"] == SHA
    assert _created_event(server, run["id"])["detail"]["context"]["provenance"] == provenance


def test_a_github_token_refuses_a_contradicting_commit(
    server: RunningServer, issuer: LocalIssuer
) -> None:
    pipeline = _as(server, issuer, **GITHUB_CLAIMS)
    forged = {**_reported(GITHUB_ENV), "commit_sha": "0" * 40}

    with pytest.raises(BadRequestError, match="run context commit_sha = '0000") as caught:
        pipeline.create_run("app/dev", DIGEST, forged)

    assert SHA in str(caught.value)
    reader = ControlPlane(server.url, make_token(server, "reader", "*"))
    assert reader.runs(workspace="app/dev") == []
    refusals = [e for e in reader.audit(workspace=None) if e["status"] == 400]
    assert any("contradicts the caller's OIDC token" in str(e["detail"]) for e in refusals)


def test_an_azure_devops_token_proves_organisation_project_connection_and_build(
    server: RunningServer, issuer: LocalIssuer
) -> None:
    pipeline = _as(server, issuer, **ADO_CLAIMS)

    run = pipeline.create_run("app/dev", DIGEST, _reported(ADO_ENV))

    context = run["context"]
    assert (context["organization"], context["project"], context["service_connection"]) == (
        "contoso", "infra", "aws-plan",
    )  # fmt: skip
    provenance = context["provenance"]
    for field in ("organization", "project", "service_connection", "pipeline_id", "run_id",
                  "branch"):  # fmt: skip
        assert provenance[field] == "verified", field
    assert provenance["commit_sha"] == "reported"  # this token has no rpo_ver
    assert provenance["stage"] == "reported"


def test_an_azure_devops_token_refuses_a_contradicting_branch(
    server: RunningServer, issuer: LocalIssuer
) -> None:
    pipeline = _as(server, issuer, **ADO_CLAIMS)
    env = {**ADO_ENV, "BUILD_SOURCEBRANCH": "refs/heads/evil"}

    with pytest.raises(
        BadRequestError, match=r"run context branch = 'evil' contradicts.*says 'main'"
    ):
        pipeline.create_run("app/dev", DIGEST, _reported(env))


def test_a_kubernetes_service_account_token_proves_namespace_account_and_pod(
    server: RunningServer, issuer: LocalIssuer
) -> None:
    pod = {"namespace": "ci", "pod": {"name": "runner-7f9c", "uid": "u-1"},
           "serviceaccount": {"name": "tofuflow", "uid": "u-2"}}  # fmt: skip
    pipeline = _as(server, issuer, sub="system:serviceaccount:ci:tofuflow",
                   **{"kubernetes.io": pod})  # fmt: skip

    run = pipeline.create_run("app/dev", DIGEST, {"dag_id": "nightly"})

    context = run["context"]
    assert (context["namespace"], context["service_account"], context["pod"]) == (
        "ci", "tofuflow", "runner-7f9c",
    )  # fmt: skip
    assert context["provenance"] == {
        "dag_id": "reported", "namespace": "verified", "pod": "verified",
        "service_account": "verified",
    }  # fmt: skip


def test_an_api_token_run_is_all_reported_and_cannot_claim_provenance(
    server: RunningServer,
) -> None:
    planner = ControlPlane(server.url, make_token(server, "planner", "app/*"))

    run = planner.create_run("app/dev", DIGEST, {"commit_sha": SHA})
    assert run["context"]["provenance"] == {"commit_sha": "reported"}

    with pytest.raises(BadRequestError, match="'provenance' is set by the control plane"):
        planner.create_run("app/dev", DIGEST, {"provenance": {"commit_sha": "verified"}})
