"""The server's own reaper destroys an expired environment with the cloud identity its
TOML gives it (``[environments.identity]``, docs/environments.md), never with the keys of
the host the server runs on: a real `tofuflow server` process, the real binary, moto's
STS and a projected-token file signed by a local issuer."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from _services.moto import moto_server
from _services.oidc import LocalIssuer
from _services.postgres import free_port
from _services.server import cli_token, process_server
from tofuflow.envs import create_environment, deploy_environment
from tofuflow.project import WorkspaceConfig
from tofuflow.runs import ControlPlane

pytestmark = pytest.mark.binary

ROLE = "arn:aws:iam::123456789012:role/tofuflow-reaper"
HOST_KEY = "AKIAHOSTKEYCANARY"  # the server host's own keys: never for a destroy


def test_the_servers_reaper_destroys_with_its_configured_role_not_the_hosts_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, binary: object
) -> None:
    infra = tmp_path / "infra"
    infra.mkdir()
    dump = tmp_path / "destroy-env.txt"
    (infra / "main.tf").write_text(
        'resource "terraform_data" "teardown" {\n'
        f'  input = "{dump}"\n'
        '  provisioner "local-exec" {\n'
        "    when    = destroy\n"
        '    command = "env | grep ^AWS_ > ${self.input}; true"\n'
        "  }\n"
        "}\n"
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", HOST_KEY)  # the server process inherits them
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "host-secret-canary")
    with (
        moto_server() as moto,
        LocalIssuer(issuer="https://oidc.cluster.example", audience="sts.amazonaws.com") as iss,
    ):
        token_file = tmp_path / "token"  # a projected service-account token
        token_file.write_text(iss.mint(sub="system:serviceaccount:tofuflow:server"))
        stage = (
            f'source = "file"\npath = "{token_file}"\ncloud = "aws"\nrole_arn = "{ROLE}"\n'
            f'region = "us-east-1"\nendpoint_url = "{moto}"\n'
        )
        config = tmp_path / "server.toml"
        config.write_text(
            f'[server]\ndata_dir = "{tmp_path / "data"}"\n\n[environments]\n'
            f'reap_interval = "1s"\n\n[environments.identity.plan]\n{stage}\n'
            f"[environments.identity.apply]\n{stage}"
        )
        with process_server(config, free_port(), tmp_path / "server.log") as server:
            token = cli_token(config)
            with ControlPlane(server.url, token) as client:
                source = WorkspaceConfig(name="app/dev", directory=infra)
                create_environment(source, "pr-9", client, ttl_seconds=2, owner="ci")
                assert deploy_environment("pr-9", client)["status"] == "applied"
                deadline = time.monotonic() + 90
                while client.environment("pr-9")["status"] != "destroyed":
                    assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
                    time.sleep(0.5)
                # Each stage's issuance is audited on the destroy run, as for any run.
                destroy = next(r for r in client.runs(workspace="pr-9")
                               if (r["context"] or {}).get("trigger") == "reaper")  # fmt: skip
                issued = [e["detail"] for e in client.audit(run=destroy["id"], limit=100)
                          if e["action"] == "credentials.issued"]  # fmt: skip
                assert sorted(d.get("stage") for d in issued) == ["apply", "plan"], issued
    # The binary assumed the role from the token file (refreshing it as it goes); the
    # host's keys never reached it. Without [environments.identity] it had no AWS
    # credentials at all.
    seen = dict(line.split("=", 1) for line in dump.read_text().splitlines())
    assert seen.get("AWS_ROLE_ARN") == ROLE, seen
    assert seen.get("AWS_WEB_IDENTITY_TOKEN_FILE") and "AWS_ACCESS_KEY_ID" not in seen, seen


def test_a_server_whose_reaper_identity_is_wrong_does_not_start(tmp_path: Path) -> None:
    # Found at start, not at the first expiry hours later (a log line nobody reads).
    config = tmp_path / "server.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\n\n[environments.identity.apply]\n'
        'source = "file"\npath = "/var/run/secrets/tokens/aws"\ncloud = "aws"\n'
        'region = "eu-west-1"\n'
    )
    with (
        pytest.raises(RuntimeError, match="exited with 1") as failed,
        process_server(config, free_port(), tmp_path / "server.log"),
    ):
        pass
    assert "environments.identity.apply.role_arn: missing; add role_arn = " in str(failed.value)
