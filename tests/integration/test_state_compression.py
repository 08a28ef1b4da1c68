"""State is compressed before it is sealed (issue 18): what is stored is a few KiB, what is
read back is the body byte for byte, versions stored before compression still read, and a
compressed plaintext that would grow past the server's body limit is refused.

On SQLite a POST goes through ``server/_state_fast.py``, on PostgreSQL through
``server/_state_pg.py`` (a rollback through ``StateService._store``); each test runs on both.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import zstandard
from sqlalchemy import select
from sqlalchemy.orm import Session, undefer

from _services.fixtures import simple_applier
from _services.server import RunningServer, threaded_server
from tofuflow.server._packing import MARKER
from tofuflow.server._state import state_aad
from tofuflow.server.admin import create_token
from tofuflow.server.storage._db import StateVersion, Workspace, write_session

_LIMIT = 2 * 1024 * 1024  # server.max_state_bytes in these tests


def _state(serial: int, lineage: str, resources: int = 400) -> bytes:
    """A state like the binary writes: many similar resources, indented (≈ 200 KiB)."""
    doc = {
        "version": 4, "terraform_version": "1.11.4", "serial": serial, "lineage": lineage,
        "outputs": {"region": {"value": "eu-west-1", "type": "string"}},
        "resources": [
            {"mode": "managed", "type": "aws_s3_object", "name": f"object_{i}",
             "provider": 'provider["registry.opentofu.org/hashicorp/aws"]',
             "instances": [{"schema_version": 0, "attributes": {
                 "bucket": "assets", "key": f"static/{i:05d}/{uuid.UUID(int=i * 7919)}.js",
                 "etag": hashlib.md5(str(i).encode()).hexdigest(),  # noqa: S324 - test data
                 "content_type": "application/javascript", "tags": {"team": "web"}}}]}
            for i in range(resources)
        ],
        "check_results": None,
    }  # fmt: skip
    return json.dumps(doc, indent=2).encode() + b"\n"


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[RunningServer]:
    from tofuflow.server.config import ServerConfig

    config = simple_applier(
        ServerConfig.from_mapping(
            {
                "server": {"data_dir": str(tmp_path / "server"), "max_state_bytes": _LIMIT},
                "database": {"url": database_url},
            }
        )
    )
    with threaded_server(config) as running:
        yield running


def _client(server: RunningServer) -> httpx.Client:
    token = create_token(server.app.state.engine, role="admin", workspaces="*", ttl="1h").token
    return httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _write(client: httpx.Client, server: RunningServer, name: str, body: bytes) -> None:
    url, lock_id = server.state_url(name), str(uuid.uuid4())
    info = json.dumps({"ID": lock_id, "Operation": "OperationTypeApply", "Who": "t@h"})
    assert client.request("LOCK", f"{url}/lock", content=info).status_code == 200
    response = client.post(url, params={"ID": lock_id}, content=body)
    assert response.status_code == 200, response.text
    assert client.request("UNLOCK", f"{url}/lock", content=info).status_code == 200


def _row(server: RunningServer, name: str, version: int) -> StateVersion:
    with Session(server.app.state.engine) as session:
        row = session.scalars(
            select(StateVersion)
            .join(Workspace, Workspace.id == StateVersion.workspace_id)
            .where(Workspace.name == name, StateVersion.version == version)
            .options(undefer(StateVersion.ciphertext))  # deferred: lists never load it
        ).one()
        session.expunge(row)
        return row


def _reseal(server: RunningServer, name: str, version: int, plaintext: bytes) -> None:
    """Store ``plaintext`` as that version's sealed content, under the server's own key."""
    service = server.app.state.service
    sealed = service.keyring.seal(plaintext, state_aad(name, version))
    with write_session(server.app.state.engine) as session:
        row = session.scalars(
            select(StateVersion)
            .join(Workspace, Workspace.id == StateVersion.workspace_id)
            .where(Workspace.name == name, StateVersion.version == version)
        ).one()
        row.key_id, row.wrapped_key = sealed.key_id, sealed.wrapped_key
        row.nonce, row.ciphertext = sealed.nonce, sealed.ciphertext


def test_a_state_is_stored_compressed_and_reads_back_byte_identical(
    server: RunningServer,
) -> None:
    lineage = str(uuid.uuid4())
    first, second = _state(1, lineage), _state(2, lineage, resources=401)
    with _client(server) as client:
        _write(client, server, "zip/app", first)
        _write(client, server, "zip/app", second)
        assert client.get(server.state_url("zip/app")).content == second
        versions = f"{server.url}/v1/workspaces/zip/app/versions"
        assert client.get(f"{versions}/1").content == first
        listed = client.get(versions).json()
        # Rollback stores through the ORM path on either database.
        rolled = client.post(f"{server.url}/v1/workspaces/zip/app/rollback", json={"version": 1})
        assert rolled.status_code == 200, rolled.text
        restored = client.get(server.state_url("zip/app")).content
    assert json.loads(restored) == {**json.loads(first), "serial": 3}

    # What users see of a version is its body's size and digest, not the stored bytes'.
    assert [(v["size"], v["sha256"]) for v in listed] == [
        (len(body), hashlib.sha256(body).hexdigest()) for body in (first, second)
    ]
    for version, body in ((1, first), (2, second), (3, restored)):
        row = _row(server, "zip/app", version)
        assert row.ciphertext is not None
        assert len(row.ciphertext) * 8 < len(body), (version, len(row.ciphertext), len(body))
        assert row.size == len(body)
        assert row.sha256 == hashlib.sha256(body).hexdigest()


def test_a_version_sealed_before_compression_still_reads_back_byte_identical(
    server: RunningServer,
) -> None:
    body = _state(1, str(uuid.uuid4()))
    with _client(server) as client:
        _write(client, server, "old/app", body)
        # As a server before compression stored it: the body itself, sealed.
        _reseal(server, "old/app", 1, body)
        assert len(_row(server, "old/app", 1).ciphertext or b"") >= len(body)
        assert client.get(server.state_url("old/app")).content == body
        got = client.get(f"{server.url}/v1/workspaces/old/app/versions/1")
        assert got.content == body
        # The next write is compressed; the rules still read the old version's identity.
        _write(client, server, "old/app", _state(2, json.loads(body)["lineage"]))
    assert len(_row(server, "old/app", 2).ciphertext or b"") * 8 < len(body)


def _bomb(size: int, *, declared: bool) -> bytes:
    """A zstd frame of ``size`` zero bytes, compressed a chunk at a time (never all in
    memory); ``declared`` writes the size into the frame header."""
    compressor = zstandard.ZstdCompressor(level=1)
    stream = compressor.compressobj(size=size if declared else -1)
    chunk = bytes(1024 * 1024)
    parts = [stream.compress(chunk) for _ in range(size // len(chunk))]
    return MARKER + b"".join(parts) + stream.flush()


@pytest.mark.parametrize("declared", [True, False], ids=["size-declared", "size-unknown"])
def test_a_compression_bomb_is_refused_with_a_clear_error(
    server: RunningServer, declared: bool
) -> None:
    body = _state(1, str(uuid.uuid4()), resources=10)
    with _client(server) as client:
        _write(client, server, "bomb/app", body)
        bomb = _bomb(256 * 1024 * 1024, declared=declared)
        assert len(bomb) < 64 * 1024
        _reseal(server, "bomb/app", 1, bomb)
        response = client.get(server.state_url("bomb/app"))
        assert response.status_code == 500, response.text
        message = response.json()["error"]
        assert "version 1 of bomb/app" in message
        assert "server.max_state_bytes" in message
        if declared:
            assert f"decompresses to {256 * 1024 * 1024} bytes" in message
        # The version's own endpoint refuses it the same way; the server still serves.
        got = client.get(f"{server.url}/v1/workspaces/bomb/app/versions/1")
        assert got.status_code == 500
        assert client.get(f"{server.url}/v1/workspaces/bomb/app/versions").status_code == 200
