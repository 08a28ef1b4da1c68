"""The AWS KMS key provider against moto's real server (the same HTTP API as AWS)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from _services.moto import AWS_TEST_ENV, moto_server
from tofuflow.errors import CryptoError
from tofuflow.server.crypto import (
    AwsKmsKeyProvider,
    Keyring,
    LocalKeyProvider,
    key_provider_from_config,
)

REGION = "us-east-1"
STATE = b'{"version": 4, "serial": 7, "outputs": {"password": "canary-s3cr3t-value"}}'
AAD = b"workspace=app/prod;version=7"
MISSING_KEY = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(autouse=True)
def _aws_test_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    # Never pick up a developer's real profile or credentials.
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


def create_key(endpoint: str) -> str:
    kms = boto3.client("kms", region_name=REGION, endpoint_url=endpoint)
    return kms.create_key(Description="tofuflow test KEK")["KeyMetadata"]["Arn"]


def kms_provider(endpoint: str, key_id: str | None = None) -> AwsKmsKeyProvider:
    return AwsKmsKeyProvider(key_id or create_key(endpoint), region=REGION, endpoint_url=endpoint)


def test_kms_sealed_data_opens_with_the_same_aad(endpoint: str) -> None:
    provider = kms_provider(endpoint)
    keyring = Keyring(provider)
    sealed = keyring.seal(STATE, AAD)
    assert sealed.key_id == provider.key_id
    assert sealed.key_id.startswith("aws-kms:arn:aws:kms:us-east-1:")
    assert b"canary-s3cr3t-value" not in sealed.wrapped_key + sealed.ciphertext
    assert keyring.open(sealed, AAD) == STATE


def test_kms_provider_from_config_round_trips(endpoint: str, tmp_path: Path) -> None:
    arn = create_key(endpoint)
    cfg = {"kind": "aws-kms", "key_id": arn, "region": REGION, "endpoint_url": endpoint}
    keyring = Keyring(key_provider_from_config(cfg, tmp_path))
    assert keyring.key_ids == (f"aws-kms:{arn}",)
    assert keyring.open(keyring.seal(STATE, AAD), AAD) == STATE


def test_kms_refuses_a_wrapped_key_under_another_encryption_context(endpoint: str) -> None:
    provider = kms_provider(endpoint)
    wrapped = provider.wrap(bytearray(32), AAD)
    with pytest.raises(CryptoError) as info:
        provider.unwrap(wrapped, b"workspace=app/prod;version=8")
    message = str(info.value)
    assert provider.key_id.removeprefix("aws-kms:") in message
    assert "InvalidCiphertextException" in message
    assert info.value.__cause__ is not None


def test_opening_kms_sealed_data_with_the_wrong_aad_is_refused(endpoint: str) -> None:
    keyring = Keyring(kms_provider(endpoint))
    sealed = keyring.seal(STATE, AAD)
    with pytest.raises(CryptoError, match="InvalidCiphertextException"):
        keyring.open(sealed, b"workspace=app/staging;version=7")


def test_kms_refuses_a_tampered_wrapped_key(endpoint: str) -> None:
    keyring = Keyring(kms_provider(endpoint))
    sealed = keyring.seal(STATE, AAD)
    wrapped = sealed.wrapped_key
    altered = dataclasses.replace(sealed, wrapped_key=wrapped[:-1] + bytes([wrapped[-1] ^ 1]))
    with pytest.raises(CryptoError, match="AWS KMS Decrypt"):
        keyring.open(altered, AAD)


def test_rotating_from_a_local_key_to_kms_and_back_needs_only_rewrap(
    endpoint: str, tmp_path: Path
) -> None:
    local = LocalKeyProvider.generate(tmp_path / "keys" / "local.key")
    kms = kms_provider(endpoint)
    sealed = Keyring(local).seal(STATE, AAD)

    key_id, wrapped = Keyring(kms, previous=[local]).rewrap(sealed.key_id, sealed.wrapped_key, AAD)
    on_kms = dataclasses.replace(sealed, key_id=key_id, wrapped_key=wrapped)
    assert key_id == kms.key_id
    assert Keyring(kms).open(on_kms, AAD) == STATE

    key_id, wrapped = Keyring(local, previous=[kms]).rewrap(on_kms.key_id, on_kms.wrapped_key, AAD)
    back = dataclasses.replace(on_kms, key_id=key_id, wrapped_key=wrapped)
    assert key_id == local.key_id
    assert Keyring(local).open(back, AAD) == STATE
    assert back.ciphertext == sealed.ciphertext and back.nonce == sealed.nonce


def test_an_unknown_kms_key_is_reported_with_the_aws_error_code(endpoint: str) -> None:
    keyring = Keyring(kms_provider(endpoint, MISSING_KEY))
    with pytest.raises(CryptoError) as info:
        keyring.seal(STATE, AAD)
    assert MISSING_KEY in str(info.value)
    assert "NotFoundException" in str(info.value)


def test_an_unreachable_kms_endpoint_is_a_crypto_error_naming_the_key() -> None:
    # Port 9 (discard) on loopback: nothing listens, so the connection is refused at once.
    keyring = Keyring(kms_provider("http://127.0.0.1:9", MISSING_KEY))
    with pytest.raises(CryptoError) as info:
        keyring.seal(STATE, AAD)
    assert MISSING_KEY in str(info.value)
    assert "EndpointConnectionError" in str(info.value)


def test_state_sealed_under_a_kms_key_is_written_off_the_event_loop(
    endpoint: str, tmp_path: Path
) -> None:
    """Sealing under a KMS key asks AWS to wrap each data key: on SQLite the state path
    then runs its statements in a thread (as an in-process key runs them on the event
    loop), and the binary's LOCK, POST and UNLOCK still land and read back."""
    import json
    import uuid

    import httpx

    from _services.fixtures import simple_applier
    from _services.server import threaded_server
    from tofuflow.server.admin import create_token
    from tofuflow.server.config import ServerConfig

    arn = create_key(endpoint)
    config = simple_applier(ServerConfig.from_mapping({
        "server": {"data_dir": str(tmp_path / "server")},
        "keys": {"current": {"kind": "aws-kms", "key_id": arn, "region": REGION,
                             "endpoint_url": endpoint}},
    }))  # fmt: skip
    with threaded_server(config) as server:
        fast = server.app.state.service.fast
        assert fast is not None and fast.writer.inline is False
        token = create_token(server.app.state.engine, role="applier", workspaces="*", ttl="1h")
        url, lock_id = server.state_url("kms/ws"), str(uuid.uuid4())
        lock = json.dumps({"ID": lock_id, "Operation": "OperationTypeApply"}).encode()
        body = json.dumps({"version": 4, "serial": 1, "lineage": str(uuid.uuid4()),
                           "outputs": {}, "resources": []}).encode()  # fmt: skip
        with httpx.Client(headers={"Authorization": f"Bearer {token.token}"}) as client:
            assert client.request("LOCK", f"{url}/lock", content=lock).status_code == 200
            assert client.post(url, params={"ID": lock_id}, content=body).status_code == 200
            assert client.request("UNLOCK", f"{url}/lock", content=lock).status_code == 200
            assert client.get(url).content == body
        with server.app.state.engine.connect() as db:
            key_ids = db.exec_driver_sql("SELECT key_id FROM state_versions").scalars().all()
        assert key_ids == [f"aws-kms:{arn}"]
