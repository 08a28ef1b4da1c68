"""Durability and secrecy at rest: SIGKILL mid-stream, and no plaintext anywhere."""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from _services.fixtures import SIMPLE_APPLIER_TOML, make_token, simple_applier
from _services.postgres import free_port
from _services.server import RunningServer, process_server, threaded_server
from tofuflow.tofu import Binary, Tofu

CANARY = "canary-7f3d9c1e-at-rest"


def _state(serial: int, lineage: str, payload: str = "") -> bytes:
    doc = {
        "version": 4, "terraform_version": "1.11.4", "serial": serial, "lineage": lineage,
        "outputs": {"note": {"value": payload or f"write {serial}", "type": "string"}},
        "resources": [], "check_results": None,
    }  # fmt: skip
    return json.dumps(doc).encode()


def _write_config(tmp_path: Path, database_url: str) -> Path:
    config = tmp_path / "server.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\n[database]\nurl = "{database_url}"\n'
        + SIMPLE_APPLIER_TOML
    )
    return config


def _admin_token(config_file: Path) -> str:
    from tofuflow.server.admin import create_token
    from tofuflow.server.config import ServerConfig
    from tofuflow.server.storage._db import make_engine, migrate

    engine = make_engine(ServerConfig.load(config_file).effective_database_url)
    migrate(engine)
    token = create_token(engine, role="admin", workspaces="*", ttl="1h").token
    engine.dispose()
    return token


def test_sigkill_during_a_stream_of_writes_loses_no_acknowledged_version(
    tmp_path: Path, database_url: str
) -> None:
    config_file = _write_config(tmp_path, database_url)
    token = _admin_token(config_file)
    port, log = free_port(), tmp_path / "server.log"
    lineage = str(uuid.uuid4())
    acknowledged: dict[int, str] = {}
    refusals: list[str] = []
    stop = threading.Event()

    def writer(server: RunningServer) -> None:
        serial = 0
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            while not stop.is_set():
                serial += 1
                body = _state(serial, lineage, "x" * 2048)
                try:
                    response = client.post(server.state_url("crash/test"), content=body)
                except httpx.HTTPError:
                    return  # the server died mid-request: this write was never acknowledged
                if response.status_code == 200:
                    acknowledged[serial] = hashlib.sha256(body).hexdigest()
                else:
                    refusals.append(f"{response.status_code} {response.text[:300]}")

    with process_server(config_file, port, log) as server:
        thread = threading.Thread(target=writer, args=(server,))
        thread.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 25 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        stop.set()
        thread.join()
    assert refusals == []
    assert len(acknowledged) >= 25

    with (
        process_server(config_file, port, log) as server,
        httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as client,
    ):
        versions = client.get("/v1/workspaces/crash/test/versions", params={"limit": 1000}).json()
        assert len(versions) < 1000, "more versions than one page: page through them"
        stored = {v["serial"]: v for v in versions}
        for serial, digest in acknowledged.items():
            assert serial in stored, f"acknowledged serial {serial} was lost"
            body = client.get(f"/v1/workspaces/crash/test/versions/{stored[serial]['version']}")
            assert body.status_code == 200
            assert hashlib.sha256(body.content).hexdigest() == digest
        current = client.get(server.state_url("crash/test"))
        assert json.loads(current.content)["serial"] == max(stored)


def _apply_with_canary(binary: Binary, config: Any, server: RunningServer) -> None:
    token = make_token(server, "applier", "app/*")
    tf = Tofu(
        config("remote"),
        binary=binary,
        env=server.backend_env("app/dev", token),
        variables={"secret_value": CANARY},
        secrets=[token, CANARY],
    )
    tf.init()
    tf.apply()
    state = tf.state_pull_raw()
    assert CANARY.encode() in state, "the canary must really be in the state"


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_a_secret_in_state_appears_nowhere_at_rest_in_sqlite_or_the_logs(
    binary: Binary, config: Any, server_config: Any, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    config_file = _write_config(tmp_path, f"sqlite:///{tmp_path / 'data' / 'tofuflow.db'}")
    _admin_token(config_file)
    with process_server(config_file, free_port(), log) as server:
        server.app = _engine_holder(config_file)
        _apply_with_canary(binary, config, server)
    assert _files_containing(tmp_path / "data", CANARY.encode()) == []
    assert CANARY not in log.read_text()
    assert (tmp_path / "data" / "tofuflow.db").stat().st_size > 0


def test_a_secret_in_state_appears_nowhere_in_the_postgresql_data_directory(
    binary: Binary, config: Any, server_config: Any, pg_cluster: tuple[str, Path]
) -> None:
    from sqlalchemy import create_engine, text

    from _services.fixtures import fresh_pg_database

    url = fresh_pg_database(pg_cluster[0])
    with threaded_server(simple_applier(replace(server_config, database_url=url))) as server:
        _apply_with_canary(binary, config, server)
    engine = create_engine(pg_cluster[0], isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("CHECKPOINT"))  # flush everything to the data files
    engine.dispose()
    assert _files_containing(pg_cluster[1], CANARY.encode()) == []


def test_state_bodies_in_s3_are_sealed(
    binary: Binary, config: Any, server_config: Any, monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:  # fmt: skip
    import boto3

    from _services.moto import AWS_TEST_ENV, moto_server

    for key, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(key, value)
    with moto_server() as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="tofuflow-state")
        blobs = {"kind": "s3", "bucket": "tofuflow-state", "prefix": "ci", "endpoint_url": endpoint}
        # On PostgreSQL LOCK, POST and UNLOCK take _state_pg's path, blob store or not.
        served = replace(server_config, blobs=blobs, database_url=database_url)
        with threaded_server(simple_applier(served)) as server:
            _apply_with_canary(binary, config, server)
        objects = s3.list_objects_v2(Bucket="tofuflow-state")["Contents"]
        assert objects and all(o["Key"].startswith("ci/") for o in objects)
        for obj in objects:
            body = s3.get_object(Bucket="tofuflow-state", Key=obj["Key"])["Body"].read()
            assert CANARY.encode() not in body


def test_state_bodies_in_azure_blob_storage_are_sealed(
    binary: Binary, config: Any, server_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.storage.blob import BlobServiceClient

    from _services.azurite import azurite

    with azurite() as connection_string:
        monkeypatch.setenv("TOFUFLOW_AZURE_CONNECTION_STRING", connection_string)
        service = BlobServiceClient.from_connection_string(connection_string)
        service.create_container("tofuflow")
        blobs = {"kind": "azure", "container": "tofuflow",
                 "connection_string_env": "TOFUFLOW_AZURE_CONNECTION_STRING"}  # fmt: skip
        with threaded_server(simple_applier(replace(server_config, blobs=blobs))) as server:
            _apply_with_canary(binary, config, server)
        container = service.get_container_client("tofuflow")
        names = [blob.name for blob in container.list_blobs()]
        assert names
        for name in names:
            assert CANARY.encode() not in container.download_blob(name).readall()


class _engine_holder:
    """Gives make_token an engine for a server that runs in another process."""

    def __init__(self, config_file: Path) -> None:
        from types import SimpleNamespace

        from tofuflow.server.config import ServerConfig
        from tofuflow.server.storage._db import make_engine

        engine = make_engine(ServerConfig.load(config_file).effective_database_url)
        self.state = SimpleNamespace(engine=engine)
