"""Attack tests: the control plane enforces what it used to take on the runner's word.

Each test plays a compromised pipeline (or a person with a pipeline's token) against a
real server with the real binary, and checks the state is untouched and the refusal is
an audit event (issue 16: hand-run apply, swapped plan file, edited configuration).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from _services.fixtures import make_token
from _services.server import RunningServer, threaded_server
from tofuflow.errors import ConflictError, TofuError
from tofuflow.project import WorkspaceConfig
from tofuflow.runs import ControlPlane, apply_run, config_digest, plan_workspace
from tofuflow.runs import configuration as configuration_of
from tofuflow.runs._artifact import PLAN_FILE, pack
from tofuflow.tofu import Binary, Tofu

FIXTURES = Path(__file__).parent.parent / "fixtures"
WORKSPACE = "app/dev"
ITEMS = {"items": ["a", "b"]}


@dataclass
class Plane:
    server: RunningServer
    ws: WorkspaceConfig
    planner: ControlPlane
    applier: ControlPlane
    admin: ControlPlane

    def state(self) -> dict[str, Any]:
        body = self.admin.state(self.ws.name)
        return json.loads(body) if body else {}

    def hand_run(self, token: str, directory: Path | None = None) -> Tofu:
        """The binary run by hand in a copy of the configuration, with ``token`` as the
        http backend's password: no tofuflow runner in between."""
        where = directory or self.ws.directory.parent / "by-hand"
        if not where.exists():
            shutil.copytree(self.ws.directory, where)
        (where / "tofuflow_backend_override.tf").write_text('terraform {\n  backend "http" {}\n}\n')
        env = self.server.backend_env(self.ws.name, token)
        tf = Tofu(where, env=env, variables=self.ws.variables, secrets=[token])
        tf.init(reconfigure=True)
        return tf


def _plane(tmp_path: Path, config: Any) -> Iterator[Plane]:
    infra = tmp_path / "infra"
    shutil.copytree(FIXTURES / "configs" / "app", infra)
    ws = WorkspaceConfig(name=WORKSPACE, directory=infra, variables=ITEMS)
    with threaded_server(config) as server:
        clients = [ControlPlane(server.url, make_token(server, role, "app/*"))
                   for role in ("planner", "applier", "admin")]  # fmt: skip
        yield Plane(server, ws, *clients)
        for client in clients:
            client.close()


@pytest.fixture
def plane(tmp_path: Path, server_config: Any, binary: Binary) -> Iterator[Plane]:
    """A server with no [[workspace_settings]]: every default as shipped."""
    yield from _plane(tmp_path, server_config)


def _applied(plane: Plane) -> dict[str, Any]:
    """The workspace's state after one ordinary, approved run."""
    outcome = plan_workspace(plane.ws, plane.planner, {})
    assert apply_run(outcome.run["id"], plane.ws, plane.applier)["status"] == "applied"
    return plane.state()


def _refusals(plane: Plane, action: str | None = None) -> list[dict[str, Any]]:
    events = plane.admin.audit(workspace=plane.ws.name)
    return [e for e in events if e["outcome"] == "refused" or e["action"] == action]


# -- 1. only an approved run writes state, by default ------------------------------------


def test_an_applier_running_the_binary_by_hand_against_a_default_workspace_is_refused(
    plane: Plane,
) -> None:
    before = _applied(plane)
    tf = plane.hand_run(plane.applier.token)  # the applier's token, no tofuflow runner
    with pytest.raises(TofuError, match="invalid auth"):
        tf.destroy()  # refused at LOCK
    with pytest.raises(TofuError):
        tf.destroy(lock=False)  # and at the write itself
    assert plane.state() == before, "the hand-run apply must not have changed the state"
    refused = [e for e in _refusals(plane) if e["status"] == 403]
    assert [e["action"] for e in refused] == ["http.lock", "http.post"]
    for event in refused:
        assert "only from an approved run's apply session" in event["detail"]["reason"]
        assert event["actor"].startswith("token:tfw_")
    # The workspace API and `tofuflow runs` say which mode the workspace is in.
    [row] = [w for w in plane.applier.workspaces() if w["name"] == WORKSPACE]
    assert row["state_writes"] == "apply_session"
    assert {r["state_writes"] for r in plane.applier.runs(workspace=WORKSPACE)} == {"apply_session"}


def test_an_admins_break_glass_write_is_allowed_and_audited_as_such(plane: Plane) -> None:
    before = _applied(plane)
    tf = plane.hand_run(plane.admin.token)
    tf.destroy()
    assert plane.state()["serial"] > before["serial"]
    assert plane.state()["resources"] == []
    writes = [e for e in plane.admin.audit(workspace=WORKSPACE) if e["action"] == "state.write"]
    assert [e["detail"]["via"] for e in writes] == ["apply_session", "break_glass"]
    assert writes[-1]["run_id"] is None


def test_a_workspace_opted_into_the_simple_applier_mode_takes_an_appliers_writes(
    tmp_path: Path, server_config: Any, binary: Binary
) -> None:
    config = replace(
        server_config,
        workspace_settings=({"match": "app/*", "require_apply_session": False},),
    )
    for plane in _plane(tmp_path, config):
        before = _applied(plane)
        plane.hand_run(plane.applier.token).destroy()
        assert plane.state()["resources"] == [] and plane.state()["serial"] > before["serial"]
        writes = [e for e in plane.admin.audit(workspace=WORKSPACE) if e["action"] == "state.write"]
        assert writes[-1]["detail"]["via"] == "simple_applier"
        [row] = plane.applier.workspaces()
        assert row["state_writes"] == "simple_applier"


# -- 2. the policy judged the plan that is applied ---------------------------------------


def test_a_harmless_plan_document_with_a_destroying_plan_file_is_refused_at_apply(
    plane: Plane, tmp_path: Path
) -> None:
    before = _applied(plane)
    # The compromised planner plans twice by hand: a harmless addition (routine, so the
    # policy approves it by itself) and a destroy; it uploads the destroy's plan file
    # with the harmless plan's document.
    attacker = tmp_path / "attacker" / "infra"
    shutil.copytree(plane.ws.directory, attacker)
    tf = plane.hand_run(plane.planner.token, attacker)
    env = plane.server.backend_env(WORKSPACE, plane.planner.token)
    more = Tofu(attacker, env=env, variables={"items": ["a", "b", "c"]})
    more.plan(out="harmless.tfplan", lock=False)
    harmless = more.show_plan("harmless.tfplan")
    assert [rc.action.value for rc in harmless.resource_changes if rc.action.value != "no-op"] == [
        "create"
    ]
    tf.plan(out=PLAN_FILE, lock=False, destroy=True)
    destroying = tf.show_plan(PLAN_FILE)
    assert [rc.action.value for rc in destroying.resource_changes] == ["delete"] * 3
    tree = configuration_of(attacker)
    run = plane.planner.create_run(WORKSPACE, config_digest(tree), {})
    plane.planner.upload_artifact(run["id"], pack(tree))
    decided = plane.planner.upload_plan(run["id"], json.dumps(harmless.raw).encode())
    assert decided["status"] == "approved", decided  # judged on the harmless document

    with pytest.raises(ConflictError, match="not the plan its policies judged"):
        apply_run(run["id"], plane.ws, plane.applier)

    assert plane.state() == before, "the destroy must not have run"
    assert decided["plan_digest"] == harmless.digest
    refused = [e for e in plane.admin.audit(run=run["id"]) if e["action"] == "run.apply_refused"]
    assert len(refused) == 1
    assert refused[0]["detail"]["presented_plan_digest"] == destroying.digest
    assert plane.admin.run(run["id"])["status"] == "approved"  # never applying


# -- 3. the configuration digest is checked by the server --------------------------------


def test_an_edited_configuration_with_a_forged_digest_is_refused_by_the_server(
    plane: Plane,
) -> None:
    before = _applied(plane)
    ws = replace(plane.ws, variables={"items": ["a", "b", "c"]})
    run = plan_workspace(ws, plane.planner, {"commit_sha": "a" * 40}).run
    assert run["status"] == "approved"
    # The applying checkout was edited after the plan (a script a local-exec would run,
    # a resource); a runner that skips its own check presents that checkout's digest,
    # or one it made up: the control plane compares, refuses, and records why.
    (plane.ws.directory / "extra.tf").write_text('resource "terraform_data" "sneaky" {}\n')
    edited = config_digest(plane.ws.directory)
    for forged in (edited, "0" * 64):
        with pytest.raises(ConflictError, match="differs from the one it planned"):
            plane.applier.open_session(run["id"], run["plan_digest"], forged)
    # tofuflow's own runner refuses before it asks.
    with pytest.raises(ConflictError, match="differs from what run"):
        apply_run(run["id"], ws, plane.applier)
    refused = [e for e in plane.admin.audit(run=run["id"]) if e["action"] == "run.apply_refused"]
    assert [e["detail"]["presented_config_digest"] for e in refused] == [edited, "0" * 64]
    assert plane.state() == before
    assert plane.admin.run(run["id"])["status"] == "approved"
    # Presenting no digests at all is a malformed request, answered in the common form.
    bare = httpx.post(
        f"{plane.server.url}/v1/runs/{run['id']}/apply-session",
        headers={"Authorization": f"Bearer {plane.applier.token}"},
        json={},
    )
    assert bare.status_code == 422
    assert bare.json()["code"] == "validation_error" and "plan_digest" in bare.json()["error"]
