"""Runs end to end: plan here, apply there; policy, approvals, stale plans, tampering."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from _services.fixtures import make_token
from _services.server import RunningServer, threaded_server
from _services.sql import sql_sent
from tofuflow.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PlanStaleError,
    TofuError,
)
from tofuflow.project import load_project
from tofuflow.runs import ControlPlane, apply_run, plan_workspace
from tofuflow.server.storage._db import AuditEvent, Run
from tofuflow.tofu import Binary, Tofu

FIXTURES = Path(__file__).parent.parent / "fixtures"
DENY_POLICY = """package tofuflow.user

import rego.v1

deny contains msg if {
    some change in input.plan.resource_changes
    change.type == "terraform_data"
    startswith(change.name, "forbidden")
    msg := sprintf("%s: resources named forbidden* are not allowed", [change.address])
}
"""


@dataclass
class Env:
    server: RunningServer
    repo: Path
    planner: ControlPlane
    applier: ControlPlane
    approver: ControlPlane
    admin: ControlPlane

    def workspace(self, root: Path | None = None, **overrides: Any) -> Any:
        ws = load_project((root or self.repo) / "tofuflow.toml").workspace("app/dev")
        return replace(ws, **overrides) if overrides else ws


def _git(cwd: Path, *args: str) -> None:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e", "PATH": "/usr/bin:/bin"}  # fmt: skip
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


@pytest.fixture
def env(tmp_path: Path, server_config: Any, binary: Binary) -> Iterator[Env]:
    yield from _env(tmp_path, server_config)


@pytest.fixture
def any_db_env(
    tmp_path: Path, server_config: Any, binary: Binary, database_url: str
) -> Iterator[Env]:
    """``env`` on SQLite and on PostgreSQL."""
    yield from _env(tmp_path, replace(server_config, database_url=database_url))


def _env(tmp_path: Path, server_config: Any) -> Iterator[Env]:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "user.rego").write_text(DENY_POLICY)
    config = replace(
        server_config,
        policies_dir=policies,
        workspace_settings=(
            {"match": "app/*", "settings": {"protected": ["terraform_data.database*"]}},
        ),
    )
    repo = tmp_path / "repo"
    shutil.copytree(FIXTURES / "configs" / "app", repo / "infra")
    (repo / "tofuflow.toml").write_text(
        '[workspaces."app/dev"]\ndirectory = "infra"\nvariables = { items = ["a", "b"] }\n'
    )
    (repo / ".gitignore").write_text(".terraform/\n*.tfplan\n.terraform.lock.hcl\n*_override.tf\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "infra")
    with threaded_server(config) as server:
        clients = [ControlPlane(server.url, make_token(server, role, "app/*"))
                   for role in ("planner", "applier", "approver", "admin")]  # fmt: skip
        yield Env(server, repo, *clients)
        for client in clients:
            client.close()


def _plan(env: Env, ws: Any, **kw: Any) -> Any:
    return plan_workspace(ws, env.planner, {"commit_sha": "c0ffee" * 6 + "abcd"}, **kw)


def _digests(run: Any) -> tuple[str, str, str]:
    """What an honest applying runner presents to open ``run``'s apply session."""
    return run["id"], run["plan_digest"], run["config_digest"]


def test_plan_in_one_checkout_apply_from_a_fresh_clone_elsewhere(env: Env, tmp_path: Path) -> None:
    outcome = _plan(env, env.workspace())
    assert outcome.run["status"] == "approved"  # creates only: routine, auto-approved
    assert outcome.exit_code == 2
    clone = tmp_path / "elsewhere" / "clone"
    subprocess.run(["git", "clone", "-q", str(env.repo), str(clone)], check=True)
    done = apply_run(outcome.run["id"], env.workspace(clone), env.applier)
    assert done["status"] == "applied"
    assert done["state_version"] == 1 and done["result"]["serial"] >= 1
    state = json.loads(
        httpx.get(
            env.server.state_url("app/dev"), headers={"Authorization": f"Bearer {env.admin.token}"}
        ).content
    )
    addresses = {f"{r['type']}.{r['name']}" for r in state["resources"]}
    assert addresses == {"terraform_data.item", "terraform_data.database"}
    again = _plan(env, env.workspace())
    assert (again.run["status"], again.exit_code) == ("no_changes", 0)


def test_a_stale_plan_is_refused_after_a_concurrent_apply(env: Env) -> None:
    first = _plan(env, env.workspace())
    second = _plan(env, env.workspace(variables={"items": ["a", "b", "c"]}))
    # Planning alone supersedes nothing (a pull request's speculative plan must not).
    assert env.admin.run(first.run["id"])["status"] == "approved"
    apply_run(second.run["id"], env.workspace(variables={"items": ["a", "b", "c"]}), env.applier)
    # The apply changed the state the first was planned against: superseded at once.
    assert env.admin.run(first.run["id"])["status"] == "superseded"
    assert env.admin.run(first.run["id"])["result"]["by"] == second.run["id"]
    with pytest.raises(PlanStaleError, match="Plan again"):
        apply_run(first.run["id"], env.workspace(), env.applier)
    with pytest.raises(ConflictError, match="changed the workspace's state after it"):
        env.approver.approve(first.run["id"], "too late")


def test_one_apply_session_per_workspace_the_other_is_refused_as_stale(env: Env) -> None:
    first = _plan(env, env.workspace(), targets=["terraform_data.database"])
    second = _plan(env, env.workspace(), targets=["terraform_data.item"])
    env.applier.open_session(*_digests(first.run))  # a runner is applying it right now
    with pytest.raises(PlanStaleError, match=f"run {first.run['id']} is applying"):
        env.applier.open_session(*_digests(second.run))
    refused = env.admin.run(second.run["id"])
    assert refused["status"] == "cancelled" and refused["result"]["reason"] == "stale"
    assert refused["result"]["applying"] == first.run["id"]


def test_concurrent_apply_sessions_on_a_workspace_without_state_open_only_one(
    any_db_env: Env,
) -> None:
    # Found in a real Airflow deployment: two DAG runs' first applies to a new workspace
    # (no state yet, so no workspace row to lock) both opened a session 29 ms apart.
    env = any_db_env
    for attempt in range(8):
        runs = [_plan(env, env.workspace()).run["id"] for _ in range(2)]
        barrier = threading.Barrier(2)
        outcomes: dict[str, str] = {}
        open_one = _opener(env.applier, barrier, outcomes)
        threads = [threading.Thread(target=open_one, args=(r,)) for r in runs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert sorted(outcomes.values()) == ["opened", "stale"], (attempt, outcomes)
        opened = next(r for r in runs if outcomes[r] == "opened")
        env.applier.finish(opened, "failed", {"error": "test: not applied"})


def _opener(applier: ControlPlane, barrier: threading.Barrier, outcomes: dict[str, str]) -> Any:
    """Opens a run's apply session as soon as the other thread is ready too."""

    def open_one(run_id: str) -> None:
        digests = _digests(applier.run(run_id))
        barrier.wait()
        try:
            applier.open_session(*digests)
            outcomes[run_id] = "opened"
        except PlanStaleError:
            outcomes[run_id] = "stale"

    return open_one


def test_a_tampered_artifact_is_refused(env: Env) -> None:
    outcome = _plan(env, env.workspace())
    with Session(env.server.app.state.engine) as session, session.begin():
        run = session.get(Run, outcome.run["id"])
        artifact = dict(run.artifact)
        raw = bytearray(artifact["ciphertext"].encode())
        raw[40] = ord("A") if raw[40] != ord("A") else ord("B")
        run.artifact = {**artifact, "ciphertext": raw.decode()}
    with pytest.raises(ConflictError, match="integrity"):
        apply_run(outcome.run["id"], env.workspace(), env.applier)


def test_a_changed_configuration_is_refused(env: Env) -> None:
    outcome = _plan(env, env.workspace())
    (env.repo / "infra" / "extra.tf").write_text('resource "terraform_data" "sneaky" {}\n')
    with pytest.raises(ConflictError, match="differs from what run"):
        apply_run(outcome.run["id"], env.workspace(), env.applier)


def test_a_policy_denial_blocks_apply(env: Env) -> None:
    (env.repo / "infra" / "forbidden.tf").write_text('resource "terraform_data" "forbidden_x" {}\n')
    outcome = _plan(env, env.workspace())
    assert outcome.run["status"] == "denied" and outcome.exit_code == 3
    assert "forbidden* are not allowed" in outcome.run["decision"]["denies"][0]
    with pytest.raises(ConflictError, match="it is denied"):
        apply_run(outcome.run["id"], env.workspace(), env.applier)
    with pytest.raises(ConflictError, match="it is denied"):
        env.approver.approve(outcome.run["id"], "please")


def test_deleting_a_protected_resource_needs_an_approval_and_self_approval_is_refused(
    env: Env,
) -> None:
    apply_run(_plan(env, env.workspace()).run["id"], env.workspace(), env.applier)
    without_db = env.workspace(variables={"items": ["a", "b"], "with_database": False})
    outcome = _plan(env, without_db)
    assert outcome.run["status"] == "needs_approval"
    assert any("database" in r for r in outcome.run["decision"]["approval_reasons"])
    with pytest.raises(ConflictError, match="needs_approval"):
        apply_run(outcome.run["id"], without_db, env.applier)
    # An approver who also requested the run may not approve it.
    self_run = plan_workspace(without_db, env.approver, {})
    with pytest.raises(ConflictError, match="may not approve it"):
        env.approver.approve(self_run.run["id"], "mine")
    approved = env.approver.approve(outcome.run["id"], "database retired, ticket OPS-1")
    assert approved["status"] == "approved"
    done = apply_run(outcome.run["id"], without_db, env.applier)
    assert done["status"] == "applied"
    shown = env.admin.run(outcome.run["id"])
    assert shown["approvals"][0]["approver"].startswith("token:tfw_")
    assert shown["approvals"][0]["comment"] == "database retired, ticket OPS-1"


def test_an_expired_approval_no_longer_allows_apply(
    tmp_path: Path, server_config: Any, binary: Binary
) -> None:
    config = replace(
        server_config,
        approval_ttl="1s",
        workspace_settings=({"match": "*", "tags": ["production"]},),
    )
    workdir = tmp_path / "infra"
    shutil.copytree(FIXTURES / "configs" / "app", workdir)
    from tofuflow.project import WorkspaceConfig

    ws = WorkspaceConfig(name="prod/db", directory=workdir)
    with threaded_server(config) as server:
        planner = ControlPlane(server.url, make_token(server, "planner"))
        approver = ControlPlane(server.url, make_token(server, "approver"))
        outcome = plan_workspace(ws, planner, {})
        assert outcome.run["status"] == "needs_approval"  # production: a person decides
        approver.approve(outcome.run["id"], "ok")
        import time

        time.sleep(1.5)
        with pytest.raises(ConflictError, match="expired"):
            apply_run(outcome.run["id"], ws, approver)


def test_the_planner_cannot_write_state_even_running_the_binary_by_hand(env: Env) -> None:
    ws = env.workspace()
    (ws.directory / "tofuflow_backend_override.tf").write_text(
        'terraform {\n  backend "http" {}\n}\n'
    )
    tf = Tofu(ws.directory, env=env.server.backend_env("app/dev", env.planner.token),
              variables=ws.variables)  # fmt: skip
    tf.init(reconfigure=True)
    with pytest.raises(TofuError):
        tf.apply()
    current = httpx.get(env.server.state_url("app/dev"),
                        headers={"Authorization": f"Bearer {env.admin.token}"})  # fmt: skip
    assert current.status_code == 204, "the planner's apply must not have written state"
    refusals = env.admin.audit(workspace="app/dev")
    assert any(e["outcome"] == "refused" and e["status"] == 403 for e in refusals)


def test_an_apply_session_token_stops_working_once_its_run_ends(env: Env) -> None:
    outcome = _plan(env, env.workspace())
    session = env.applier.open_session(*_digests(outcome.run))
    token = session["session_token"]
    url = env.server.state_url("app/dev")
    assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code in (200, 204)
    other = httpx.get(env.server.state_url("app/other"),
                      headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert other.status_code == 403
    with ControlPlane(env.server.url, token) as applying:
        applying.finish(outcome.run["id"], "failed", {"error": "test"})
    after = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
    assert after.status_code == 401
    assert "ended" in after.json()["error"] or "not open" in after.json()["error"]


def test_audit_verify_names_the_first_modified_or_removed_event(env: Env) -> None:
    apply_run(_plan(env, env.workspace()).run["id"], env.workspace(), env.applier)
    # The whole log's check needs read rights on every workspace, not only app/*.
    with ControlPlane(env.server.url, make_token(env.server, "reader", "*")) as auditor:
        _check_verify_names_the_broken_event(env, auditor)


def _check_verify_names_the_broken_event(env: Env, auditor: ControlPlane) -> None:
    assert auditor.audit_verify()["ok"] is True
    engine = env.server.app.state.engine
    with Session(engine) as session:
        ids = session.scalars(select(AuditEvent.id).order_by(AuditEvent.id)).all()
    target = ids[len(ids) // 2]
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE audit_events SET outcome = 'oK' WHERE id = :id"), {"id": target}
        )
    broken = auditor.audit_verify()
    assert broken["ok"] is False and broken["first_bad_id"] == target
    with engine.begin() as connection:
        connection.execute(text("UPDATE audit_events SET outcome = 'ok' WHERE id = :id"),
                           {"id": target})  # fmt: skip
    assert auditor.audit_verify()["ok"] is True
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_events WHERE id = :id"), {"id": target})
    removed = auditor.audit_verify()
    assert removed["ok"] is False and removed["first_bad_id"] == ids[ids.index(target) + 1]


def test_the_audit_log_tells_the_run_story_by_run_and_by_commit(env: Env) -> None:
    outcome = _plan(env, env.workspace())
    apply_run(outcome.run["id"], env.workspace(), env.applier)
    events = env.admin.audit(run=outcome.run["id"])
    actions = [e["action"] for e in events]
    assert actions[:4] == ["run.created", "run.artifact", "run.policy_decided", "run.artifact_read"]
    assert "run.session_opened" in actions and actions[-1] == "run.applied"
    writes = env.admin.audit(workspace="app/dev")
    assert any(e["action"] == "state.write" and e["run_id"] == outcome.run["id"] for e in writes)
    by_commit = env.admin.audit(commit="c0ffee")
    assert {e["run_id"] for e in by_commit} == {outcome.run["id"]}


def test_bad_run_requests_are_clear_errors_that_change_nothing(env: Env) -> None:
    with pytest.raises(NotFoundError, match="no run"):
        env.applier.run("0123456789abcdef")
    with pytest.raises(NotFoundError, match="is not a run id"):  # refused before it is sent
        env.applier.run("does-not-exist")
    outcome = _plan(env, env.workspace())
    apply_run(outcome.run["id"], env.workspace(), env.applier)
    with pytest.raises(ConflictError, match="it is applied"):
        apply_run(outcome.run["id"], env.workspace(), env.applier)
    run = env.planner.create_run("app/dev", "0" * 64, {})
    with pytest.raises(ConflictError, match="artifact before"):
        env.planner.upload_plan(run["id"], b"{}")
    env.planner.upload_artifact(run["id"], b"PK")
    from tofuflow.errors import BadRequestError

    with pytest.raises(BadRequestError, match="plan document"):
        env.planner.upload_plan(run["id"], b'{"not": "a plan"}')
    assert env.admin.run(run["id"])["status"] == "planning"
    with pytest.raises(ForbiddenError):
        env.planner.approve(run["id"], "me")


def test_the_apply_stage_binary_gets_its_cloud_credentials_beside_the_state_service(
    tmp_path: Path, server_config: Any, binary: Binary, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    from _services.moto import AWS_TEST_ENV, moto_server
    from _services.oidc import LocalIssuer
    from tofuflow.project import WorkspaceConfig

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAPARENTCANARY")
    workdir = tmp_path / "infra"
    workdir.mkdir()
    # An absolute path: the binary runs in a private working copy of infra/.
    (workdir / "main.tf").write_text(
        'resource "terraform_data" "dump" {\n  provisioner "local-exec" {\n'
        f'    command = "env > {workdir}/env.dump"\n  }}\n}}\n'
    )
    with (
        moto_server() as endpoint,
        LocalIssuer() as issuer,
        threaded_server(server_config) as server,
    ):
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-east-1",
            **{k.lower(): v for k, v in AWS_TEST_ENV.items() if "KEY" in k},
        )
        role = iam.create_role(RoleName="apply-creds-test", AssumeRolePolicyDocument="{}")
        monkeypatch.setenv("DEV_OIDC_TOKEN", issuer.mint(sub="dev", aud="sts.amazonaws.com"))
        apply_identity = {"source": "static", "token_env": "DEV_OIDC_TOKEN", "cloud": "aws",
                          "role_arn": role["Role"]["Arn"], "region": "us-east-1",
                          "endpoint_url": endpoint}  # fmt: skip
        ws = WorkspaceConfig(name="app/creds", directory=workdir,
                             identity={"apply": apply_identity})  # fmt: skip
        planner = ControlPlane(server.url, make_token(server, "planner"))
        applier = ControlPlane(server.url, make_token(server, "applier"))
        outcome = plan_workspace(ws, planner, {})
        apply_run(outcome.run["id"], ws, applier)
        issued = applier.audit(run=outcome.run["id"], action="credentials.issued")
    dumped = dict(
        line.split("=", 1)
        for line in (workdir / "env.dump").read_text().splitlines()
        if "=" in line
    )
    assert dumped["AWS_ROLE_ARN"] == role["Role"]["Arn"]
    assert Path(dumped["AWS_WEB_IDENTITY_TOKEN_FILE"]).name == "aws-web-identity-token"
    assert dumped["TF_HTTP_ADDRESS"].endswith("/v1/state/app/creds")
    assert "AKIAPARENTCANARY" not in (workdir / "env.dump").read_text()
    assert not Path(dumped["AWS_WEB_IDENTITY_TOKEN_FILE"]).exists(), "private dir removed"
    assert [e["detail"]["stage"] for e in issued] == ["apply"]  # plan had no identity


def test_a_workspace_can_take_state_writes_only_from_apply_sessions(
    tmp_path: Path, server_config: Any, binary: Binary
) -> None:
    from tofuflow.project import WorkspaceConfig

    config = replace(
        server_config,
        workspace_settings=({"match": "locked/*", "require_apply_session": True},),
    )
    workdir = tmp_path / "infra"
    shutil.copytree(FIXTURES / "configs" / "app", workdir)
    ws = WorkspaceConfig(name="locked/app", directory=workdir)
    with threaded_server(config) as server:
        applier = ControlPlane(server.url, make_token(server, "applier"))
        planner = ControlPlane(server.url, make_token(server, "planner"))
        direct = httpx.request(
            "LOCK", f"{server.state_url('locked/app')}/lock", json={"ID": "x"},
            headers={"Authorization": f"Bearer {applier.token}"},
        )  # fmt: skip
        assert direct.status_code == 403
        assert "only from an approved run's apply session" in direct.json()["error"]
        done = apply_run(plan_workspace(ws, planner, {}).run["id"], ws, applier)
        assert done["status"] == "applied" and done["state_version"] == 1


_SEALED_COLUMNS = re.compile(r"\bruns\.(artifact|plan_document)\b(?!_)")


def test_lists_and_run_details_do_not_read_the_sealed_plan_and_artifact(env: Env) -> None:
    # Each run holds its sealed artifact and plan document (MBs for a large plan). Listing
    # runs, or reading one run's status, must not load them: 50 runs with 1 MB plans made
    # GET /v1/runs parse 50 MB of JSON (≈ 120 ms) only to leave them out of the answer.
    outcome = _plan(env, env.workspace())
    run_id = outcome.run["id"]

    with sql_sent() as metadata:
        assert [r["id"] for r in env.admin.runs()] == [run_id]
        assert env.admin.run(run_id)["status"] == "approved"
        assert env.applier.cancel(run_id, "not today")["status"] == "cancelled"
    touched = [s for s in metadata if _SEALED_COLUMNS.search(s)]
    assert touched == []
    # ...while the plan's own page does read it (so the check above can see a read).
    with sql_sent() as plan:
        env.admin.plan_text(run_id)
    assert any(_SEALED_COLUMNS.search(s) for s in plan)


def test_a_plan_document_is_stored_compressed(env: Env, server_config: Any) -> None:
    # Plan documents are JSON and repeat themselves: sealed as they are, a run's row grew
    # by 1.33x the plan (base64), for every run kept.
    from tofuflow.server._packing import MARKER, unpack_state
    from tofuflow.server._runs import run_aad
    from tofuflow.server._sealed import open_record
    from tofuflow.server.crypto import keyring_from_config
    from tofuflow.server.storage import make_engine

    outcome = _plan(env, env.workspace())
    engine = make_engine(server_config.effective_database_url)
    try:
        with Session(engine) as session:
            run = session.get(Run, outcome.run["id"])
            assert run is not None and run.plan_document is not None
            record, aad = dict(run.plan_document), run_aad(run, "plan")
    finally:
        engine.dispose()
    sealed = open_record(
        keyring_from_config(server_config.keys, server_config.data_dir), None, record, aad, "plan"
    )
    assert sealed.startswith(MARKER)
    document = json.loads(unpack_state(sealed, limit=10**8))
    assert document["resource_changes"]  # the plan document itself, whole
    stored = len(record["ciphertext"]) * 3 // 4
    assert stored * 3 < len(json.dumps(document))


def test_a_plan_document_sealed_before_compression_still_opens(
    env: Env, server_config: Any
) -> None:
    # Runs planned by an older server hold their plan document sealed as it was.
    from tofuflow.server._packing import unpack_state
    from tofuflow.server._runs import run_aad
    from tofuflow.server._sealed import open_record, seal_record
    from tofuflow.server.crypto import keyring_from_config
    from tofuflow.server.storage import make_engine

    outcome = _plan(env, env.workspace())
    before = env.admin.plan_text(outcome.run["id"])
    keyring = keyring_from_config(server_config.keys, server_config.data_dir)
    engine = make_engine(server_config.effective_database_url)
    try:
        with Session(engine) as session:
            run = session.get(Run, outcome.run["id"])
            assert run is not None and run.plan_document is not None
            aad = run_aad(run, "plan")
            packed = open_record(keyring, None, dict(run.plan_document), aad, "plan")
            document = unpack_state(packed, limit=10**8)
            run.plan_document = seal_record(keyring, None, document, aad, "runs")
            session.commit()
    finally:
        engine.dispose()
    assert env.admin.plan_text(outcome.run["id"]) == before
