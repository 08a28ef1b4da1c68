"""The audit log proves itself outside the database: signed checkpoints, offline verification.

The attacker here owns the database: they rewrite the whole chain consistently (every hash
and the head recomputed), which the hash chain alone cannot detect. The checkpoints the
server signed before (kept in the object store or the checkpoint directory, never in the
database) can.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from _services.cli import run_cli
from _services.fixtures import make_token
from _services.moto import AWS_TEST_ENV, moto_server
from _services.server import RunningServer, threaded_server
from tofuflow.server._audit import event_hash, read_origin
from tofuflow.server._chains import ChainTips
from tofuflow.server.config import ServerConfig
from tofuflow.server.storage._db import AuditChain, AuditEvent

REGION = "us-east-1"


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The CLI runs as a user runs it; this is its working directory (no tofuflow.toml)."""
    for name in ("TOFUFLOW_SERVER_URL", "TOFUFLOW_TOKEN", "TOFUFLOW_SERVER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    work = tmp_path / "auditor"
    work.mkdir()
    return work


def _point_cli_at(monkeypatch: pytest.MonkeyPatch, server: RunningServer, token: str) -> None:
    monkeypatch.setenv("TOFUFLOW_SERVER_URL", server.url)
    monkeypatch.setenv("TOFUFLOW_TOKEN", token)


def _some_events(server: RunningServer) -> None:
    """Audited activity: tokens created, refused reads."""
    reader = make_token(server, "reader", "app/*")
    for workspace in ("app/dev", "app/prod", "other/x"):
        httpx.get(server.state_url(workspace), headers={"Authorization": f"Bearer {reader}"})


def _rewrite_whole_chain(server: RunningServer) -> None:
    """What a database owner can do: change an old event and recompute every hash after it
    in its chain, and the chains' heads, so that the chains verify again."""
    engine = server.app.state.engine
    with Session(engine) as session, session.begin():
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
        victim = next(e for e in events if e.action == "token.create")
        victim.detail = {**(victim.detail or {}), "role": "reader"}  # it was an admin token
        tips = ChainTips(*read_origin(session))
        for event in events:
            event.prev_hash = tips.tip(tips.key(event.id, event.workspace))[1]
            event.hash = event_hash(event)
            assert not tips.follow(event.id, event.workspace, event.prev_hash, event.hash)
        for name, (last_id, last_hash) in tips.heads().items():
            head = session.get(AuditChain, name)
            assert head is not None
            head.last_id, head.last_hash = last_id, last_hash


def _public_key(server_dir: Path, cwd: Path, config_text: str = "") -> Path:
    server_dir.parent.mkdir(parents=True, exist_ok=True)
    config_file = server_dir.parent / "server.toml"
    config_file.write_text(f'[server]\ndata_dir = "{server_dir}"\n{config_text}')
    printed = run_cli(cwd, "server", "--config", str(config_file), "audit", "public-key")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith("-----BEGIN PUBLIC KEY-----")
    key = server_dir.parent / "audit-public-key.pem"
    key.write_text(printed.stdout)
    return key


def test_a_consistent_rewrite_of_the_whole_chain_is_caught_offline_against_the_last_checkpoint(
    tmp_path: Path,
    cli_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server_dir = tmp_path / "server"
    config = ServerConfig.from_mapping({"server": {"data_dir": str(server_dir)}})
    caplog.set_level(logging.INFO, logger="tofuflow.audit.checkpoint")
    with threaded_server(config) as server:
        make_token(server, "admin", "*", ttl="1h")  # the event the attacker will rewrite
        _some_events(server)
        _point_cli_at(monkeypatch, server, make_token(server, "reader", "*"))
        key = _public_key(server_dir, cli_env)

        honest = cli_env / "honest.json"
        exported = run_cli(cli_env, "audit", "export", "--output", str(honest))
        assert exported.returncode == 0, exported.stderr
        doc = json.loads(honest.read_text())
        signed = doc["checkpoints"][-1]
        assert signed["event_id"] == doc["events"][-1]["id"] and signed["algorithm"] == "ed25519"
        # The checkpoint is outside the database (the data directory here, no object store)
        # and in the server log.
        stored = json.loads((server_dir / "audit-checkpoints" / "latest.json").read_text())
        assert stored == signed
        assert any(signed["signature"] in r.getMessage() for r in caplog.records)
        good = run_cli(
            cli_env, "audit", "verify", "--export", str(honest), "--public-key", str(key)
        )
        assert good.returncode == 0, good.stdout + good.stderr
        assert f"audit export intact: {len(doc['events'])} events" in good.stdout

        _rewrite_whole_chain(server)
        # The hash chain alone cannot tell: it verifies.
        online = run_cli(cli_env, "audit", "verify")
        assert online.returncode == 0 and "audit log intact" in online.stdout

        forged = cli_env / "after-rewrite.json"
        refused = run_cli(cli_env, "audit", "export", "--output", str(forged))
        assert refused.returncode == 1
        assert "the audit chain contradicts the checkpoint of event" in refused.stderr
        assert "nothing was signed" in refused.stderr
        caught = run_cli(
            cli_env, "audit", "verify", "--export", str(forged), "--public-key", str(key)
        )
        assert caught.returncode == 1
        assert "audit export BROKEN" in caught.stdout
        assert "does not match the chain: the log was rewritten" in caught.stdout
        assert any(r.levelno == logging.ERROR for r in caplog.records)


def test_an_export_without_a_valid_signature_of_that_key_does_not_verify(
    tmp_path: Path, cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server_dir = tmp_path / "server"
    config = ServerConfig.from_mapping({"server": {"data_dir": str(server_dir)}})
    with threaded_server(config) as server:
        _some_events(server)
        _point_cli_at(monkeypatch, server, make_token(server, "reader", "*"))
        export = cli_env / "export.json"
        assert run_cli(cli_env, "audit", "export", "--output", str(export)).returncode == 0
    other_dir = tmp_path / "other" / "server"
    other_key = _public_key(other_dir, cli_env)  # a key the server never used
    wrong = run_cli(cli_env, "audit", "verify", "--export", str(export), "--public-key",
                    str(other_key))  # fmt: skip
    assert wrong.returncode == 1 and "is not signed by this public key" in wrong.stdout

    key = _public_key(server_dir, cli_env)
    doc = json.loads(export.read_text())
    # The right key, a checkpoint edited: the key is not what is wrong.
    edited = cli_env / "edited.json"
    last = {**doc["checkpoints"][-1], "signed_at": "2020-01-01T00:00:00+00:00"}
    edited.write_text(json.dumps({**doc, "checkpoints": [*doc["checkpoints"][:-1], last]}))
    altered = run_cli(cli_env, "audit", "verify", "--export", str(edited), "--public-key",
                      str(key))  # fmt: skip
    assert altered.returncode == 1
    assert "or its signed fields (event_id, events, signed_at, algorithm) were changed" in (
        altered.stdout
    ), altered.stdout
    unsigned = cli_env / "unsigned.json"
    unsigned.write_text(json.dumps({**doc, "checkpoints": []}))
    bare = run_cli(cli_env, "audit", "verify", "--export", str(unsigned), "--public-key", str(key))
    assert bare.returncode == 1 and "holds no signed checkpoint" in bare.stdout

    truncated = cli_env / "truncated.json"
    truncated.write_text(json.dumps({**doc, "events": doc["events"][:-1]}))
    cut = run_cli(cli_env, "audit", "verify", "--export", str(truncated), "--public-key", str(key))
    assert cut.returncode == 1 and "the newest events" in cut.stdout

    alone = run_cli(cli_env, "audit", "verify", "--export", str(export))
    assert alone.returncode == 1 and "--export and --public-key go together" in alone.stderr


def test_a_server_with_a_kms_signing_key_keeps_its_checkpoints_in_the_object_store(
    tmp_path: Path, cli_env: Path, monkeypatch: pytest.MonkeyPatch, moto: str
) -> None:
    kms = boto3.client("kms", region_name=REGION, endpoint_url=moto)
    key_arn = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto)
    s3.create_bucket(Bucket="tofuflow-state")
    server_dir = tmp_path / "server"
    signing = {"kind": "aws-kms", "key_id": key_arn, "region": REGION, "endpoint_url": moto}
    blobs = {"kind": "s3", "bucket": "tofuflow-state", "prefix": "prod", "region": REGION,
             "endpoint_url": moto}  # fmt: skip
    config = ServerConfig.from_mapping(
        {"server": {"data_dir": str(server_dir)}, "blobs": blobs,
         "audit": {"signing_key": signing}}
    )  # fmt: skip
    with threaded_server(config) as server:
        _some_events(server)
        _point_cli_at(monkeypatch, server, make_token(server, "reader", "*"))
        export = cli_env / "export.json"
        assert run_cli(cli_env, "audit", "export", "--output", str(export)).returncode == 0
    signed = json.loads(export.read_text())["checkpoints"][-1]
    assert signed["algorithm"] == "ecdsa-p256-sha256" and signed["key_id"] == f"aws-kms:{key_arn}"
    body = s3.get_object(Bucket="tofuflow-state", Key="prod/audit/checkpoints/latest.json")
    assert json.loads(body["Body"].read()) == signed
    assert not (server_dir / "audit-checkpoints").exists()

    table = "\n".join(f'{k} = "{v}"' for k, v in signing.items())
    key = _public_key(server_dir, cli_env, f"[audit.signing_key]\n{table}\n")
    verified = run_cli(
        cli_env, "audit", "verify", "--export", str(export), "--public-key", str(key)
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    with moto_server() as url:
        yield url
