"""Blob stores against real servers: S3 on moto's server, Azure Blob on Azurite.

Each behaviour runs on both backends. A server that cannot start FAILS the test with the
reason (never skips).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from azure.storage.blob import ContainerClient
from tests._services.azurite import azurite, connection_string
from tests._services.moto import AWS_TEST_ENV, moto_server

from tofuflow.errors import ConfigError, StorageError
from tofuflow.server.storage._blobs import (
    AzureBlobStore,
    BlobStore,
    S3BlobStore,
    blob_store_from_config,
)

PAYLOAD = os.urandom(256 * 1024)


@pytest.fixture(autouse=True)
def _aws_test_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # boto3's standard chain finds these; the user's own profile files are never read.
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def azurite_connection_string() -> Iterator[str]:
    with ExitStack() as stack:
        try:
            conn = stack.enter_context(azurite())
        except RuntimeError as exc:
            problem = str(exc)  # failed outside the except, so pytest shows it once
        else:
            yield conn
            return
    pytest.fail(f"the Azure Blob tests need Azurite: {problem}", pytrace=False)


@dataclass(frozen=True)
class Backend:
    """One object store under test, with its SDK used directly to look behind the store."""

    kind: str
    make: Callable[..., BlobStore]  # (container, prefix=...) -> store
    create: Callable[[str], None]
    list_names: Callable[[str], list[str]]
    unreachable: Callable[[], BlobStore]
    not_found_code: str
    create_hint: str


def _s3_backend(endpoint: str) -> Backend:
    def client() -> Any:
        return boto3.client("s3", endpoint_url=endpoint)

    def list_names(bucket: str) -> list[str]:
        return [o["Key"] for o in client().list_objects_v2(Bucket=bucket).get("Contents", [])]

    return Backend(
        kind="s3",
        make=lambda bucket, prefix="": S3BlobStore(bucket, prefix=prefix, endpoint_url=endpoint),
        create=lambda bucket: client().create_bucket(Bucket=bucket),
        list_names=list_names,
        unreachable=lambda: S3BlobStore("b", endpoint_url=f"http://127.0.0.1:{_closed_port()}"),
        not_found_code="NoSuchKey",
        create_hint="aws s3 mb s3://",
    )


def _azure_backend(conn: str) -> Backend:
    def client(container: str) -> ContainerClient:
        return ContainerClient.from_connection_string(conn, container)

    def create(container: str) -> None:
        client(container).create_container()

    return Backend(
        kind="azure",
        make=lambda c, prefix="": AzureBlobStore(c, prefix=prefix, connection_string=conn),
        create=create,
        list_names=lambda c: list(client(c).list_blob_names()),
        unreachable=lambda: AzureBlobStore(
            "c", connection_string=connection_string(_closed_port())
        ),
        not_found_code="BlobNotFound",
        create_hint="az storage container create --name ",
    )


def _closed_port() -> int:
    """A port nothing listens on (just released by the OS)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(params=["s3", "azure"])
def backend(request: pytest.FixtureRequest) -> Backend:
    # getfixturevalue starts only the server this parameter needs.
    if request.param == "s3":
        return _s3_backend(request.getfixturevalue("s3_endpoint"))
    return _azure_backend(request.getfixturevalue("azurite_connection_string"))


@pytest.fixture
def container(backend: Backend) -> str:
    """A fresh, existing bucket/container."""
    name = f"tofuflow-{uuid.uuid4().hex[:12]}"
    backend.create(name)
    return name


@pytest.fixture
def store(backend: Backend, container: str) -> BlobStore:
    return backend.make(container)


# -- behaviour on both backends -----------------------------------------------------


def test_put_then_get_returns_the_same_256_kib(store: BlobStore) -> None:
    store.put("states/app/1", PAYLOAD)
    assert store.get("states/app/1") == PAYLOAD


def test_put_overwrites_the_previous_body(store: BlobStore) -> None:
    store.put("states/app/1", b"first")
    store.put("states/app/1", b"second")
    assert store.get("states/app/1") == b"second"


def test_get_of_a_missing_key_raises_storage_error_naming_it(
    store: BlobStore, backend: Backend
) -> None:
    with pytest.raises(StorageError) as caught:
        store.get("states/app/missing")
    message = str(caught.value)
    assert "states/app/missing" in message and backend.not_found_code in message
    assert caught.value.__cause__ is not None  # the SDK error stays chained


def test_delete_is_idempotent(store: BlobStore, backend: Backend, container: str) -> None:
    store.put("states/app/1", b"body")
    store.delete("states/app/1")
    store.delete("states/app/1")
    store.delete("never/written")
    assert backend.list_names(container) == []
    with pytest.raises(StorageError):
        store.get("states/app/1")


def test_check_passes_when_the_container_exists(store: BlobStore) -> None:
    store.check()


def test_check_on_a_missing_container_says_what_to_create(backend: Backend) -> None:
    store = backend.make("tofuflow-does-not-exist")
    with pytest.raises(StorageError) as caught:
        store.check()
    message = str(caught.value)
    assert "does not exist" in message
    assert f"{backend.create_hint}tofuflow-does-not-exist" in message


def test_put_into_a_missing_container_says_what_to_create(backend: Backend) -> None:
    with pytest.raises(StorageError, match="does not exist: create it"):
        backend.make("tofuflow-does-not-exist").put("states/app/1", b"body")


def test_check_on_an_unreachable_endpoint_raises_storage_error(backend: Backend) -> None:
    with pytest.raises(StorageError, match="could not reach"):
        backend.unreachable().check()


def test_blobs_live_under_the_prefix(backend: Backend, container: str) -> None:
    store = backend.make(container, prefix="tofuflow/prod/")
    store.put("states/app/1", b"body")
    assert backend.list_names(container) == ["tofuflow/prod/states/app/1"]
    assert store.name.endswith(f"/{container}/tofuflow/prod")
    assert store.get("states/app/1") == b"body"


@pytest.mark.parametrize(
    "key", ["", "/states/app/1", "states/../secrets", "..", "states//1", "./states", "a\\b"]
)
def test_bad_keys_are_refused_before_anything_is_written(
    store: BlobStore, backend: Backend, container: str, key: str
) -> None:
    with pytest.raises(StorageError, match="use a relative key"):
        store.put(key, b"body")
    with pytest.raises(StorageError, match="use a relative key"):
        store.get(key)
    with pytest.raises(StorageError, match="use a relative key"):
        store.delete(key)
    assert backend.list_names(container) == []


@pytest.mark.parametrize("prefix", ["/abs", "a/../b", "a//b"])
def test_an_unsafe_prefix_is_a_config_error(backend: Backend, prefix: str) -> None:
    with pytest.raises(ConfigError, match="prefix"):
        backend.make("tofuflow-any", prefix=prefix)


# -- names --------------------------------------------------------------------------


def test_names_show_where_the_blobs_live(s3_endpoint: str, azurite_connection_string: str) -> None:
    s3 = S3BlobStore("state", prefix="prod", endpoint_url=s3_endpoint)
    azure = AzureBlobStore("state", connection_string=azurite_connection_string)
    assert (s3.name, azure.name) == ("s3://state/prod", "azure://devstoreaccount1/state")


# -- blob_store_from_config ---------------------------------------------------------


@pytest.mark.parametrize("cfg", [{}, {"kind": "database"}])
def test_config_database_or_no_kind_keeps_bodies_in_the_database(cfg: dict[str, Any]) -> None:
    assert blob_store_from_config(cfg) is None


def test_config_s3_builds_a_working_store(s3_endpoint: str) -> None:
    bucket = f"tofuflow-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    cfg = {"kind": "s3", "bucket": bucket, "prefix": "p", "region": "us-east-1"}
    store = blob_store_from_config({**cfg, "endpoint_url": s3_endpoint})
    assert store is not None and store.name == f"s3://{bucket}/p"
    store.check()
    store.put("k", b"body")
    assert store.get("k") == b"body"


def test_config_azure_reads_the_connection_string_from_the_named_env_var(
    azurite_connection_string: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = f"tofuflow-{uuid.uuid4().hex[:12]}"
    ContainerClient.from_connection_string(azurite_connection_string, container).create_container()
    monkeypatch.setenv("TOFUFLOW_AZURE_CONNECTION_STRING", azurite_connection_string)
    store = blob_store_from_config(
        {
            "kind": "azure",
            "container": container,
            "connection_string_env": "TOFUFLOW_AZURE_CONNECTION_STRING",
        }
    )
    assert store is not None
    store.check()
    store.put("k", b"body")
    assert store.get("k") == b"body"


def test_config_azure_with_account_url_uses_the_default_credential() -> None:
    store = blob_store_from_config(
        {
            "kind": "azure",
            "container": "state",
            "prefix": "prod",
            "account_url": "https://acct.blob.core.windows.net",
        }
    )
    assert isinstance(store, AzureBlobStore) and store.name == "azure://acct/state/prod"


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        ({"kind": "gcs"}, "kind = 'gcs' is unknown"),
        ({"kind": "s3"}, "needs 'bucket'"),
        ({"kind": "s3", "bucket": 42}, "bucket must be a string"),
        ({"kind": "s3", "bucket": "b", "bukcet": "b"}, "key 'bukcet' is not known"),
        ({"kind": "s3", "bucket": "b", "aws_secret_access_key": "x"}, "Secrets never go"),
        ({"kind": "s3", "bucket": "b", "prefix": "../up"}, "prefix '../up'"),
        ({"kind": "database", "bucket": "b"}, "key 'bucket' is not known"),
        ({"kind": "azure", "account_url": "https://a"}, "needs 'container'"),
        ({"kind": "azure", "container": "c"}, "exactly one of 'account_url'"),
        (
            {
                "kind": "azure",
                "container": "c",
                "account_url": "https://a",
                "connection_string_env": "X",
            },
            "exactly one of 'account_url'",
        ),
        ({"kind": "azure", "container": "c", "connection_string": "x"}, "Secrets never go"),
        (
            {"kind": "azure", "container": "c", "connection_string_env": "TOFUFLOW_TEST_UNSET"},
            "$TOFUFLOW_TEST_UNSET, which is unset",
        ),
    ],
)
def test_config_errors_name_the_key_and_show_an_example(
    cfg: dict[str, Any], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOFUFLOW_TEST_UNSET", raising=False)
    with pytest.raises(ConfigError) as caught:
        blob_store_from_config(cfg)
    message = str(caught.value)
    assert expected in message and "[blobs]" in message
    if "unset" not in expected and "prefix" not in expected:
        assert "Example:\n[blobs]\nkind = " in message
