"""Operating the control plane: CLI, tokens, key rotation, health, metrics, audit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from _services.fixtures import SIMPLE_APPLIER_TOML, make_token
from _services.postgres import free_port
from _services.server import RunningServer, process_server
from tofuflow.server.admin import verify_audit
from tofuflow.server.storage._db import AuditEvent, StateVersion

CLI = [sys.executable, "-c", "from tofuflow.cli import main; main()"]


def _cli(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TOFUFLOW_SERVER_CONFIG": str(config)}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, check=False)


def _state(serial: int, lineage: str) -> bytes:
    return json.dumps(
        {"version": 4, "terraform_version": "1.11.4", "serial": serial, "lineage": lineage,
         "outputs": {}, "resources": [], "check_results": None}
    ).encode()  # fmt: skip


def _config(tmp_path: Path, keys: str = "") -> Path:
    path = tmp_path / "server.toml"
    path.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n{keys}\n{SIMPLE_APPLIER_TOML}')
    return path


def _rotating_config(tmp_path: Path) -> tuple[Path, Path]:
    """The new key made (`tofuflow server keys new`), and the configuration with it as
    the current key and the server's first key as previous (step 1 of rotation)."""
    old_key = tmp_path / "data" / "keys" / "local.key"
    new_key = tmp_path / "new.key"
    made = _cli("server", "keys", "new", str(new_key), config=_config(tmp_path))
    assert made.returncode == 0 and made.stdout.startswith("local:"), made.stderr
    return _config(
        tmp_path,
        f'[keys.current]\nkind = "local"\npath = "{new_key}"\n'
        f'[[keys.previous]]\nkind = "local"\npath = "{old_key}"\n',
    ), new_key


def test_tokens_created_listed_and_revoked_from_the_cli(tmp_path: Path) -> None:
    config = _config(tmp_path)
    created = _cli("server", "tokens", "create", "--role", "applier", "--workspaces", "app/*",
                   "--ttl", "2h", "--description", "ci pipeline", config=config)  # fmt: skip
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("tfw_")
    listed = _cli("server", "tokens", "list", config=config)
    token_id = listed.stdout.splitlines()[1].split()[0]  # under the header row
    assert "applier" in listed.stdout and "ci pipeline" in listed.stdout
    assert token not in listed.stdout and token.split("_", 2)[2][:10] not in listed.stdout

    with process_server(config, free_port(), tmp_path / "log") as server:
        headers = {"Authorization": f"Bearer {token}"}
        ok = httpx.post(server.state_url("app/x"), content=_state(1, "l"), headers=headers)
        assert ok.status_code == 200
        assert _cli("server", "tokens", "revoke", token_id, config=config).returncode == 0
        refused = httpx.get(server.state_url("app/x"), headers=headers)
        assert refused.status_code == 401
        assert "revoked" in refused.json()["error"]
    assert "revoked" in _cli("server", "tokens", "list", config=config).stdout


def test_bad_token_requests_are_refused_by_the_cli_with_the_fix(tmp_path: Path) -> None:
    config = _config(tmp_path)
    done = _cli("server", "tokens", "create", "--role", "admin", "--ttl", "400d", config=config)
    assert done.returncode != 0
    assert "365" in done.stderr


@pytest.mark.parametrize(
    ("option", "value", "said"),
    [
        ("--workspaces", "", "--workspaces is empty"),
        ("--workspaces", " app/*", "--workspaces has spaces"),
        ("--description", "ci\nrole admin", "--description has a line break"),
    ],
)
def test_a_token_that_would_match_nothing_or_forge_a_list_line_is_refused(
    tmp_path: Path, option: str, value: str, said: str
) -> None:
    """An empty or space-padded glob makes a token that works on no workspace (every use
    a 403 nobody understands); a line break in a description forges a second row of
    `tokens list`. Refused, with nothing created."""
    config = _config(tmp_path)
    done = _cli("server", "tokens", "create", "--role", "reader", option, value, config=config)
    assert done.returncode == 1 and said in done.stderr, done.stderr
    assert not done.stdout
    assert len(_cli("server", "tokens", "list", config=config).stdout.splitlines()) <= 1


def test_keys_rotate_rewraps_every_version_and_the_old_key_can_then_go(tmp_path: Path) -> None:
    config = _config(tmp_path)
    lineage = str(uuid.uuid4())
    with process_server(config, free_port(), tmp_path / "log") as server:
        token = _cli("server", "tokens", "create", "--role", "admin", config=config).stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        for serial in (1, 2, 3):
            response = httpx.post(
                server.state_url("app/rot"), content=_state(serial, lineage), headers=headers
            )
            assert response.status_code == 200
    rotated, new_key = _rotating_config(tmp_path)
    # New key current, old key still readable: the server keeps serving during rotation.
    with process_server(rotated, free_port(), tmp_path / "log") as server:
        done = _cli("server", "keys", "rotate", config=rotated)
        assert done.returncode == 0, done.stderr
        assert "re-wrapped 3 data keys" in done.stdout
        current = httpx.get(server.state_url("app/rot"), headers=headers)
        assert json.loads(current.content)["serial"] == 3
    only_new = _config(tmp_path, f'[keys.current]\nkind = "local"\npath = "{new_key}"\n')
    with process_server(only_new, free_port(), tmp_path / "log") as server:
        for version in (1, 2, 3):
            body = httpx.get(f"{server.url}/v1/workspaces/app/rot/versions/{version}",
                             headers=headers)  # fmt: skip
            assert json.loads(body.content)["serial"] == version
    assert "re-wrapped 0" in _cli("server", "keys", "rotate", config=only_new).stdout


def test_keys_rotate_rewraps_snapshots_and_apply_logs_too(tmp_path: Path) -> None:
    # Rotation re-wrapped state versions, artifacts and plans only: an operator who removed
    # the old key after "re-wrapped 0" (as the docs say) could no longer read an
    # environment's snapshot (nor destroy it) or any apply's log.
    import base64
    import io
    import zipfile

    from sqlalchemy import create_engine, update

    from tofuflow.server.storage._db import Run

    config = _config(tmp_path)
    snapshot = io.BytesIO()
    with zipfile.ZipFile(snapshot, "w") as archive:
        archive.writestr("main.tf", 'resource "terraform_data" "x" {}\n')
    with process_server(config, free_port(), tmp_path / "log") as server:
        token = _cli("server", "tokens", "create", "--role", "admin", config=config).stdout.strip()
        api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})
        env = {"name": "pr-7", "source_workspace": "app/dev", "ttl_seconds": 3600,
               "owner": "ci@example.com",
               "snapshot": base64.b64encode(snapshot.getvalue()).decode()}  # fmt: skip
        assert api.post("/v1/environments", json=env).status_code == 200
        run = api.post("/v1/runs", json={"workspace": "app/dev", "config_digest": "a" * 64})
        run_id = run.json()["id"]
        database = create_engine(f"sqlite:///{tmp_path / 'data' / 'tofuflow.db'}")
        with database.begin() as connection:  # as if approved and applying
            connection.execute(update(Run).where(Run.id == run_id).values(status="applying"))
        database.dispose()
        logged = api.post(f"/v1/runs/{run_id}/log", content="Apply complete!\n")
        assert logged.status_code == 200, logged.text
    rotated, new_key = _rotating_config(tmp_path)
    done = _cli("server", "keys", "rotate", config=rotated)
    assert done.returncode == 0, done.stderr
    assert "re-wrapped 2 data keys" in done.stdout, done.stdout
    only_new = _config(tmp_path, f'[keys.current]\nkind = "local"\npath = "{new_key}"\n')
    with process_server(only_new, free_port(), tmp_path / "log") as server:
        headers = {"Authorization": f"Bearer {token}"}
        got = httpx.get(f"{server.url}/v1/environments/pr-7/snapshot", headers=headers)
        assert got.status_code == 200, got.text
        log = httpx.get(f"{server.url}/v1/runs/{run_id}/log", headers=headers)
        assert log.status_code == 200, log.text
        assert "Apply complete!" in log.text
    assert "re-wrapped 0" in _cli("server", "keys", "rotate", config=only_new).stdout


def test_opentofu_encrypted_state_is_accepted_by_its_envelope(state_server: RunningServer) -> None:
    token = make_token(state_server, "applier")
    envelope = {"serial": 4, "lineage": str(uuid.uuid4()), "meta": {"key_provider.pbkdf2.k": "x"},
                "encrypted_data": "c2VhbGVkIGJ5IHRvZnU=", "encryption_version": "v0"}  # fmt: skip
    headers = {"Authorization": f"Bearer {token}"}
    url = state_server.state_url("app/enc")
    assert httpx.post(url, content=json.dumps(envelope), headers=headers).status_code == 200
    stale = {**envelope, "serial": 3}
    assert httpx.post(url, content=json.dumps(stale), headers=headers).status_code == 409
    assert json.loads(httpx.get(url, headers=headers).content) == envelope


def test_every_request_is_in_the_audit_log_with_who_and_never_the_token(
    state_server: RunningServer,
) -> None:
    token = make_token(state_server, "applier", "app/*")
    reader = make_token(state_server, "reader", "app/*")
    lineage = str(uuid.uuid4())
    url = state_server.state_url("app/audit")
    info = {"ID": "lock-1", "Operation": "OperationTypeApply", "Who": "ci@agent"}
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}) as client:
        assert client.request("LOCK", f"{url}/lock", json=info).status_code == 200
        assert (
            client.post(url, params={"ID": "lock-1"}, content=_state(1, lineage)).status_code == 200
        )
        assert client.request("UNLOCK", f"{url}/lock", json=info).status_code == 200
        assert client.get(url).status_code == 200
    assert httpx.post(url, content=_state(2, lineage),
                      headers={"Authorization": f"Bearer {reader}"}).status_code == 403  # fmt: skip
    with Session(state_server.app.state.engine) as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
        actions = [(e.action, e.outcome) for e in events if e.workspace == "app/audit"]
        assert actions == [
            ("state.lock", "ok"), ("state.write", "ok"), ("state.unlock", "ok"),
            ("state.read", "ok"), ("http.post", "refused"),
        ]  # fmt: skip
        write = next(e for e in events if e.action == "state.write")
        assert write.serial == 1 and write.client == "127.0.0.1"
        assert write.actor.startswith("token:tfw_")
        dumped = json.dumps([[e.actor, e.actor_claims, e.detail] for e in events])
        assert token not in dumped and reader not in dumped
    assert verify_audit(state_server.app.state.engine).ok


def test_health_readiness_metrics_and_openapi(state_server: RunningServer) -> None:
    assert httpx.get(f"{state_server.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{state_server.url}/readyz").json() == {"status": "ready"}
    httpx.get(state_server.state_url("app/m"))  # one refused request, to be counted
    metrics = httpx.get(f"{state_server.url}/metrics").text
    assert (
        'tofuflow_http_requests_total{method="GET",route="/v1/state/{workspace:path}",status="401"}'
        in metrics
    )
    spec = httpx.get(f"{state_server.url}/openapi.json").json()
    assert "/v1/state/{workspace}" in spec["paths"]
    assert "/v1/workspaces/{workspace}/rollback" in spec["paths"]


def test_the_server_starts_with_no_configuration_under_the_data_dir(
    tmp_path: Path, monkeypatch: Any
) -> None:
    config = tmp_path / "empty.toml"
    config.write_text("")
    env_dir = tmp_path / "xdg"
    port = free_port()
    monkeypatch.setenv("XDG_DATA_HOME", str(env_dir))
    with process_server(config, port, tmp_path / "log") as server:
        assert httpx.get(f"{server.url}/readyz").status_code == 200
    data = env_dir / "tofuflow" / "server"
    assert (data / "tofuflow.db").exists()
    key = data / "keys" / "local.key"
    assert key.exists() and (key.stat().st_mode & 0o777) == 0o600


def test_state_versions_are_never_stored_in_plaintext(state_server: RunningServer) -> None:
    token = make_token(state_server, "applier")
    marker = "plaintext-marker-" + uuid.uuid4().hex
    doc = json.loads(_state(1, "lin"))
    doc["outputs"] = {"m": {"value": marker, "type": "string"}}
    httpx.post(state_server.state_url("app/p"), content=json.dumps(doc),
               headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    with Session(state_server.app.state.engine) as session:
        row = session.scalars(select(StateVersion)).one()
        assert marker.encode() not in (row.ciphertext or b"")
        assert row.key_id.startswith("local:")


def test_malformed_request_bodies_get_the_usual_error_shape_without_echoing_input(
    state_server: RunningServer,
) -> None:
    token = make_token(state_server, "admin")
    secretish = "do-not-echo-" + uuid.uuid4().hex
    response = httpx.post(
        f"{state_server.url}/v1/workspaces/app/x/rollback",
        json={"version": secretish},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_error" and "version" in body["error"]
    assert secretish not in response.text
    with Session(state_server.app.state.engine) as session:
        refusals = session.scalars(select(AuditEvent).where(AuditEvent.status == 422)).all()
    assert refusals and refusals[-1].actor.startswith("token:tfw_")
