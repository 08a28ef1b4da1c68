"""Tokens that outlive the work: refreshed when the work outlives them, revoked when it ends.

- A remote control plane and Azure DevOps pipeline tokens that live 60 seconds: a
  3-minute apply still records its result, because the runner re-requests the token from
  the pipeline before it expires (and announces each one with ``##vso[task.setsecret]``).
  The ratio is the point (the apply outlives its first token 3 times over), but the control
  plane accepts a token 60 seconds past ``exp`` (clock-skew leeway), so the apply must also
  outlast lifetime + leeway: 60 s tokens and a 180 s apply do; a shorter pair would not.
- ``tofuflow apply`` presents the apply identity of the run's own workspace, when several
  workspaces have one; an error in one of those tables names its workspace.
- The embedded control plane's tokens cover the one workspace and die with the command.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _services.ado_oidc import ADO_AUDIENCE, AdoOidcEndpoint, ado_oidc
from _services.fixtures import make_token
from _services.oidc import LocalIssuer
from _services.server import RunningServer, threaded_server
from tofuflow.server.config import ServerConfig
from tofuflow.tofu import Binary

CLI = [sys.executable, "-c", "from tofuflow.cli import main; main()"]
FIXTURES = Path(__file__).parent.parent / "fixtures"
JOB_TOKEN = "job-access-token-7c1e"
APPLY_CONNECTION = "5b0e7a52-1f2d-4c55-9a41-0d6f9e3b7a10"
OTHER_CONNECTION = "0c9d1e6a-7b8f-4a2e-8d3c-5e6f7a8b9c0d"


def _run(*args: str, cwd: Path, env: dict[str, str], timeout: float = 600) -> Any:
    return subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


def _clean_env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    for name in ("TOFUFLOW_SERVER_URL", "TOFUFLOW_TOKEN", "TOFUFLOW_PLAN_TOKEN",
                 "TOFUFLOW_APPLY_TOKEN", "TOFUFLOW_SERVER_CONFIG", "TF_BUILD"):  # fmt: skip
        env.pop(name, None)
    return env


@pytest.fixture
def ado() -> Iterator[AdoOidcEndpoint]:
    connections = {APPLY_CONNECTION: "infra-apply", OTHER_CONNECTION: "other-apply"}
    with (
        LocalIssuer(audience=ADO_AUDIENCE) as issuer,
        ado_oidc(issuer, JOB_TOKEN, connections, lifetime=60) as endpoint,
    ):
        yield endpoint


@pytest.fixture
def server(tmp_path: Path, ado: AdoOidcEndpoint) -> Iterator[RunningServer]:
    issuer = ado.issuer
    config = ServerConfig.from_mapping({
        "server": {"data_dir": str(tmp_path / "server")},
        "oidc": {"issuers": [{"issuer": issuer.issuer, "audience": ADO_AUDIENCE,
                              "jwks_url": issuer.jwks_url}]},
        "bindings": [
            {"role": "applier", "workspaces": "app/*", "subject": "sc://contoso/infra/infra-apply"},
            {"role": "applier", "workspaces": "other/*",
             "subject": "sc://contoso/infra/other-apply"},
        ],
    })  # fmt: skip
    with threaded_server(config) as running:
        yield running


def _project(tmp_path: Path, *, sleep: int) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(FIXTURES / "configs" / "slow", repo / "slow")
    shutil.copytree(FIXTURES / "configs" / "app", repo / "app")
    (repo / "tofuflow.toml").write_text(f"""
[workspaces."other/x"]
directory = "app"
[workspaces."other/x".identity.apply]
source = "azure-devops"
service_connection_id = "{OTHER_CONNECTION}"
cloud = "none"

[workspaces."app/dev"]
directory = "slow"
variables = {{ sleep_seconds = {sleep} }}
[workspaces."app/dev".identity.apply]
source = "azure-devops"
service_connection_id = "{APPLY_CONNECTION}"
cloud = "none"
""")
    return repo


@pytest.mark.binary
def test_a_3_minute_apply_with_60_second_pipeline_tokens_records_its_result(
    tmp_path: Path, binary: Binary, server: RunningServer, ado: AdoOidcEndpoint
) -> None:
    del binary
    repo = _project(tmp_path, sleep=180)
    env = {**_clean_env(tmp_path), "TOFUFLOW_SERVER_URL": server.url}
    planner = make_token(server, "planner", "app/*")
    planned = _run("plan", "app/dev", cwd=repo, env={**env, "TOFUFLOW_PLAN_TOKEN": planner})
    assert planned.returncode == 2, planned.stderr
    run_id = planned.stdout.split("run ")[-1].split(":")[0]
    assert "approved" in planned.stdout

    # The apply job: no token variable, only the pipeline's OIDC endpoint (and a second
    # workspace's apply identity listed first, which may not touch app/dev).
    agent = {**env, **ado.env(JOB_TOKEN), "TF_BUILD": "True"}
    applied = _run("apply", run_id, cwd=repo, env=agent)

    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert f"run {run_id}: applied" in applied.stdout
    # The apply outlived the first app/dev token: at least one more was requested, and
    # every token was announced before use.
    lines = applied.stdout.splitlines()
    assert len(ado.tokens) >= 3  # other/x's probe, app/dev's first, then its refresh
    for token in ado.tokens:
        assert f"##vso[task.setsecret]{token}" in lines
        assert all(token not in line for line in lines if not line.startswith("##vso["))
    reader = make_token(server, "reader", "*")
    shown = _run("runs", "show", run_id, cwd=repo, env={**env, "TOFUFLOW_TOKEN": reader})
    run = json.loads(shown.stdout)
    assert run["status"] == "applied"


def _audit_events(repo: Path, env: dict[str, str], tmp_path: Path) -> list[dict[str, Any]]:
    export = tmp_path / "audit.json"
    done = _run("audit", "export", "--output", str(export), cwd=repo, env=env)
    assert done.returncode == 0, done.stderr
    return list(json.loads(export.read_text())["events"])


@pytest.mark.binary
def test_the_embedded_planes_tokens_cover_one_workspace_and_are_revoked_when_the_command_ends(
    tmp_path: Path, binary: Binary
) -> None:
    del binary
    repo = _project(tmp_path, sleep=0)
    env = _clean_env(tmp_path)
    planned = _run("plan", "app/dev", cwd=repo, env=env)
    assert planned.returncode == 2, planned.stderr
    run_id = planned.stdout.split("run ")[-1].split(":")[0]
    assert _run("apply", run_id, cwd=repo, env=env).returncode == 0

    events = _audit_events(repo, env, tmp_path)
    created = {e["detail"]["token_id"]: e["detail"] for e in events
               if e["action"] == "token.create"}  # fmt: skip
    revoked = {e["detail"]["token_id"] for e in events if e["action"] == "token.revoke"}
    scopes = sorted((d["role"], d["workspaces"]) for d in created.values())
    # plan: a planner on app/dev; apply: a reader to learn the run's workspace, then an
    # applier on app/dev; the export's own reader token is revoked after it is written.
    assert scopes == [("applier", "app/dev"), ("planner", "app/dev"), ("reader", "*"),
                      ("reader", "*")]  # fmt: skip
    exporting = {i for i, d in created.items() if i not in revoked}
    assert len(exporting) <= 1 and set(created) - exporting <= revoked
    # Each one is deleted as it is revoked: a developer's `tokens list` is not a pile of
    # two dead tokens per command, and the audit log above still tells their story.
    listed = _run("server", "tokens", "list", cwd=repo, env=env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == (
        "no tokens yet: create one with `tofuflow server tokens create --role ROLE`"
    ), listed.stdout
    assert all(e["detail"].get("deleted") is True for e in events
               if e["action"] == "token.revoke")  # fmt: skip


@pytest.mark.binary
def test_a_broken_apply_identity_tried_for_the_runs_workspace_is_named_by_its_workspace(
    tmp_path: Path, binary: Binary, server: RunningServer, ado: AdoOidcEndpoint
) -> None:
    del binary
    repo = _project(tmp_path, sleep=0)
    toml = repo / "tofuflow.toml"
    toml.write_text(toml.read_text().replace(f'service_connection_id = "{APPLY_CONNECTION}"\n', ""))
    env = {**_clean_env(tmp_path), "TOFUFLOW_SERVER_URL": server.url}
    planner = make_token(server, "planner", "app/*")
    planned = _run("plan", "app/dev", cwd=repo, env={**env, "TOFUFLOW_PLAN_TOKEN": planner})
    assert planned.returncode == 2, planned.stderr
    run_id = planned.stdout.split("run ")[-1].split(":")[0]

    # other/x's identity is tried first and may not read the run; app/dev's is broken.
    agent = {**env, **ado.env(JOB_TOKEN), "TF_BUILD": "True"}
    applied = _run("apply", run_id, cwd=repo, env=agent)

    assert applied.returncode == 1, applied.stdout + applied.stderr
    assert "Traceback" not in applied.stderr
    assert "workspaces.app/dev.identity.apply.service_connection_id: missing" in applied.stderr, (
        applied.stderr
    )
    reader = make_token(server, "reader", "*")
    shown = _run("runs", "show", run_id, cwd=repo, env={**env, "TOFUFLOW_TOKEN": reader})
    assert json.loads(shown.stdout)["status"] == "approved"


@pytest.mark.parametrize(
    ("argv", "table"),
    [
        (["drift", "app/dev"], "plan"),
        (["run-all", "plan", "app/dev"], "plan"),
        (["rollback", "app/dev", "--to", "0" * 16], "apply"),
        (["env", "create", "pr-1", "--from", "app/dev", "--ttl", "1h"], "apply"),
    ],
)
def test_every_command_names_the_workspace_of_a_broken_identity_table(
    tmp_path: Path, server: RunningServer, ado: AdoOidcEndpoint, argv: list[str], table: str
) -> None:
    """The identity table a command uses is named by its workspace in the error, as
    `plan` and `apply` name it: with several workspaces, `identity.plan` alone does not
    say which table to fix."""
    repo = _project(tmp_path, sleep=0)
    toml = repo / "tofuflow.toml"
    broken = (
        toml.read_text().replace(f'service_connection_id = "{APPLY_CONNECTION}"\n', "")
        + '[workspaces."app/dev".identity.plan]\nsource = "azure-devops"\ncloud = "none"\n'
    )
    toml.write_text(broken)
    env = {**_clean_env(tmp_path), "TOFUFLOW_SERVER_URL": server.url,
           **ado.env(JOB_TOKEN), "TF_BUILD": "True"}  # fmt: skip
    done = _run(*argv, cwd=repo, env=env)
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    said = f"workspaces.app/dev.identity.{table}.service_connection_id: missing"
    assert said in done.stdout + done.stderr, done.stdout + done.stderr
