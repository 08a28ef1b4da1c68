"""Object stores for sealed state bodies: S3 and Azure Blob behind one small protocol.

    store = blob_store_from_config(config.blobs)   # None means "keep bodies in the database"
    if store is not None:
        store.check()                              # at startup: fail early, with the fix
        store.put("states/app/42", sealed)
        sealed = store.get("states/app/42")

The bodies are already encrypted by the server; these stores only keep them intact and
private. Credentials never come from the config file: S3 uses boto3's standard chain (env,
profile, web identity), Azure a connection string from an env var (Azurite/dev) or
``DefaultAzureCredential``. Every SDK error becomes a ``StorageError`` here, chained.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from tofuflow.errors import ConfigError, StorageError

if TYPE_CHECKING:
    from azure.core.exceptions import HttpResponseError
    from azure.storage.blob import ContainerClient
    from mypy_boto3_s3 import S3Client

__all__ = ["AzureBlobStore", "BlobStore", "S3BlobStore", "blob_store_from_config"]

SECTION = "[blobs]"
DEFAULT_AZURE_ENV = "TOFUFLOW_AZURE_CONNECTION_STRING"

_EXAMPLES = {
    "database": '[blobs]\nkind = "database"',
    "s3": '[blobs]\nkind = "s3"\nbucket = "my-tofuflow-state"\nprefix = "tofuflow"\n'
    'region = "eu-west-1"',
    "azure": '[blobs]\nkind = "azure"\ncontainer = "tofuflow-state"\n'
    'account_url = "https://myaccount.blob.core.windows.net"\n'
    f'# or, for Azurite/dev: connection_string_env = "{DEFAULT_AZURE_ENV}"',
}
_KEYS = {
    "database": frozenset({"kind"}),
    "s3": frozenset({"kind", "bucket", "prefix", "region", "endpoint_url"}),
    "azure": frozenset({"kind", "container", "prefix", "account_url", "connection_string_env"}),
}


class BlobStore(Protocol):
    """Where sealed state bodies live when not in the database.

    ``name`` says where (``"s3://bucket/prefix"``) for logs and ``/readyz``.
    """

    name: str

    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key``, replacing any previous body."""

    def get(self, key: str) -> bytes:
        """Read the body at ``key``; a missing key raises ``StorageError`` naming it."""

    def delete(self, key: str) -> None:
        """Remove ``key``; a key that is already gone is fine."""

    def check(self) -> None:
        """Raise ``StorageError`` with the fix unless the bucket/container is reachable."""


# -- keys ---------------------------------------------------------------------------


def _check_path(path: str, what: str) -> str | None:
    """Why ``path`` is not a safe relative object path, or None when it is."""
    if not path:
        return f"{what} is empty"
    if path.startswith("/"):
        return f"{what} {path!r} starts with '/'"
    if "\\" in path or any(ord(c) < 32 for c in path):
        return f"{what} {path!r} holds a backslash or a control character"
    # ".." or "." segments (and "a//b") resolve differently across stores and tools.
    if any(part in ("", ".", "..") for part in path.split("/")):
        return f"{what} {path!r} has an empty, '.' or '..' segment"
    return None


def _full_key(prefix: str, key: str) -> str:
    """``prefix/key``, refusing keys that could escape the prefix or collide."""
    problem = _check_path(key, "blob key") if isinstance(key, str) else "blob key is not a str"
    if problem:
        raise StorageError(f"{problem}: use a relative key such as 'states/app/42'.")
    return f"{prefix}/{key}" if prefix else key


def _clean_prefix(prefix: str) -> str:
    """The prefix without its trailing '/', or ConfigError when it is unsafe."""
    prefix = prefix.rstrip("/")
    problem = _check_path(prefix, "prefix") if prefix else None
    if problem:
        raise ConfigError(f"{SECTION} {problem}: use a relative path such as 'tofuflow/prod'.")
    return prefix


def _where(base: str, prefix: str) -> str:
    return f"{base}/{prefix}" if prefix else base


# -- S3 -----------------------------------------------------------------------------


class S3BlobStore:
    """Bodies as S3 objects under ``s3://bucket/prefix/``.

        store = S3BlobStore("my-tofuflow-state", prefix="prod", region="eu-west-1")

    Credentials come from boto3's chain only. Uploads carry boto3's default CRC checksum,
    which S3 verifies before storing. ``client`` injects a ready boto3 S3 client.
    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        region: str | None = None,
        endpoint_url: str | None = None,
        client: Any = None,
    ) -> None:
        if not bucket:
            raise ConfigError(f"{SECTION} bucket is empty. Example:\n{_EXAMPLES['s3']}")
        self.bucket = bucket
        self.prefix = _clean_prefix(prefix)
        self.name = _where(f"s3://{bucket}", self.prefix)
        self._client: S3Client = client or _s3_client(region, endpoint_url)

    def put(self, key: str, data: bytes) -> None:
        """Write ``data``; no ACL is sent, so the object stays private to the bucket owner."""
        # An explicit ACL (even "private") fails on buckets with ACLs disabled, the
        # default since 2023; omitting it keeps the object private either way.
        full = _full_key(self.prefix, key)
        with self._errors("write", full):
            self._client.put_object(
                Bucket=self.bucket, Key=full, Body=data, ContentType="application/octet-stream"
            )

    def get(self, key: str) -> bytes:
        """Read the body at ``key``."""
        full = _full_key(self.prefix, key)
        with self._errors("read", full):
            return self._client.get_object(Bucket=self.bucket, Key=full)["Body"].read()

    def delete(self, key: str) -> None:
        """Remove ``key``; S3 answers success for a key that is already gone."""
        full = _full_key(self.prefix, key)
        with self._errors("delete", full):
            self._client.delete_object(Bucket=self.bucket, Key=full)

    def check(self) -> None:
        """HEAD the bucket: proves it exists and the credentials may use it."""
        with self._errors("reach", None):
            self._client.head_bucket(Bucket=self.bucket)

    @contextmanager
    def _errors(self, action: str, key: str | None) -> Iterator[None]:
        """Translate botocore errors into StorageError with bucket, key and AWS code."""
        from botocore.exceptions import BotoCoreError, ClientError

        target = f"s3://{self.bucket}/{key}" if key else f"bucket s3://{self.bucket}"
        try:
            yield
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
            hint = _s3_hint(code, self.bucket, key)
            raise StorageError(f"could not {action} {target} ({code}): {hint}") from exc
        except BotoCoreError as exc:
            raise StorageError(
                f"could not {action} {target}: {exc}. Check the endpoint, region and that "
                "AWS credentials are available (env, profile or web identity)."
            ) from exc


def _s3_client(region: str | None, endpoint_url: str | None) -> S3Client:
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise ConfigError(
            f"{SECTION} kind = 's3' needs boto3: pip install 'tofuflow[aws]'."
        ) from exc
    # Bounded retries and timeouts: a request handler should fail in seconds, not minutes.
    config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=10)
    return boto3.client("s3", region_name=region, endpoint_url=endpoint_url, config=config)


def _s3_hint(code: str, bucket: str, key: str | None) -> str:
    """What to do about an S3 error code (HEAD answers bare HTTP statuses as codes)."""
    if code == "NoSuchKey" or (code == "404" and key):
        return f"no blob at key {key!r}."
    if code in ("NoSuchBucket", "404"):
        return (
            f"bucket {bucket!r} does not exist: create it (aws s3 mb s3://{bucket}) "
            f"or fix 'bucket' in {SECTION}."
        )
    if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return (
            "the AWS credentials (env, profile or web identity) are refused: grant "
            f"s3:GetObject, s3:PutObject, s3:DeleteObject and s3:ListBucket on {bucket!r}."
        )
    if code in ("PermanentRedirect", "301", "AuthorizationHeaderMalformed"):
        return f"bucket {bucket!r} is in another region: set 'region' in {SECTION}."
    return "check the bucket, region and credentials, then retry."


# -- Azure --------------------------------------------------------------------------


class AzureBlobStore:
    """Bodies as block blobs under ``prefix/`` in one Azure container.

        store = AzureBlobStore("tofuflow-state", account_url="https://acct.blob.core.windows.net")
        store = AzureBlobStore("tofuflow-state", connection_string=os.environ["..."])  # Azurite

    With ``account_url`` and no ``credential``, ``DefaultAzureCredential`` is used (managed
    identity, workload identity, az login). Transfers carry an MD5 the service verifies.
    """

    def __init__(
        self,
        container: str,
        *,
        prefix: str = "",
        connection_string: str | None = None,
        account_url: str | None = None,
        credential: Any = None,
    ) -> None:
        if not container:
            raise ConfigError(f"{SECTION} container is empty. Example:\n{_EXAMPLES['azure']}")
        self.container = container
        self.prefix = _clean_prefix(prefix)
        self._client = _container_client(container, connection_string, account_url, credential)
        self.name = _where(f"azure://{self._client.account_name}/{container}", self.prefix)

    def put(self, key: str, data: bytes) -> None:
        """Write ``data``, replacing any blob already at ``key``."""
        full = _full_key(self.prefix, key)
        with self._errors("write", full):
            self._client.upload_blob(full, data, overwrite=True, validate_content=True)

    def get(self, key: str) -> bytes:
        """Read the body at ``key``."""
        full = _full_key(self.prefix, key)
        with self._errors("read", full):
            return self._client.download_blob(full, validate_content=True).readall()

    def delete(self, key: str) -> None:
        """Remove ``key``; a blob that is already gone is fine."""
        from azure.core.exceptions import ResourceNotFoundError

        full = _full_key(self.prefix, key)
        with self._errors("delete", full):
            try:
                self._client.delete_blob(full)
            except ResourceNotFoundError as exc:
                if _azure_code(exc) != "BlobNotFound":  # a missing container is still an error
                    raise

    def check(self) -> None:
        """Read the container's properties: proves it exists and the credential may use it."""
        with self._errors("reach", None):
            self._client.get_container_properties()

    @contextmanager
    def _errors(self, action: str, key: str | None) -> Iterator[None]:
        """Translate azure-core errors into StorageError with container, key and code."""
        from azure.core.exceptions import AzureError, HttpResponseError

        target = f"{self.container}/{key}" if key else f"container {self.container!r}"
        try:
            yield
        except HttpResponseError as exc:
            code = _azure_code(exc)
            hint = _azure_hint(code, self.container, key)
            raise StorageError(f"could not {action} {target} ({code}): {hint}") from exc
        except AzureError as exc:  # no response: connection refused, DNS, no credential
            raise StorageError(
                f"could not {action} {target}: {exc.message}. Check account_url or the "
                "connection string, and that an Azure identity is available."
            ) from exc


def _container_client(
    container: str, connection_string: str | None, account_url: str | None, credential: Any
) -> ContainerClient:
    try:
        from azure.storage.blob import ContainerClient, LinearRetry
    except ImportError as exc:
        raise ConfigError(
            f"{SECTION} kind = 'azure' needs azure-storage-blob: pip install 'tofuflow[azure]'."
        ) from exc
    # The SDK's default backoff starts at 15 s; a request handler should fail in seconds.
    retry = LinearRetry(backoff=1, retry_total=3, random_jitter_range=1)
    if connection_string and not account_url:
        return ContainerClient.from_connection_string(
            connection_string, container, retry_policy=retry
        )
    if not account_url or connection_string:
        raise ConfigError(
            f"{SECTION} give exactly one of account_url or a connection string. "
            f"Example:\n{_EXAMPLES['azure']}"
        )
    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return ContainerClient(account_url, container, credential=credential, retry_policy=retry)


def _azure_code(exc: HttpResponseError) -> str:
    """The service's error code (e.g. "BlobNotFound"), else the HTTP status."""
    # azure-storage-blob sets error_code on the instance, as an enum or a plain str.
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or exc.status_code)


def _azure_hint(code: str, container: str, key: str | None) -> str:
    """What to do about an Azure Storage error code."""
    if code == "BlobNotFound":
        return f"no blob at key {key!r}."
    if code in ("ContainerNotFound", "404"):
        return (
            f"container {container!r} does not exist: create it "
            f"(az storage container create --name {container}) or fix 'container' in {SECTION}."
        )
    if code in ("AuthorizationFailure", "AuthorizationPermissionMismatch", "403"):
        return (
            "the Azure identity is refused: assign it 'Storage Blob Data Contributor' "
            f"on container {container!r}."
        )
    if code == "AuthenticationFailed":
        return "the account key or token was rejected: check the connection string or identity."
    return "check the account, container and credential, then retry."


# -- configuration ------------------------------------------------------------------


def blob_store_from_config(cfg: Mapping[str, Any]) -> BlobStore | None:
    """The store the ``[blobs]`` table asks for; ``None`` keeps bodies in the database.

    store = blob_store_from_config({"kind": "s3", "bucket": "my-tofuflow-state"})
    """
    kind = cfg.get("kind", "database")
    if kind not in _KEYS:
        raise ConfigError(
            f"{SECTION} kind = {kind!r} is unknown: use 'database', 's3' or 'azure'. "
            f"Example:\n{_EXAMPLES['s3']}"
        )
    _refuse_unknown_keys(cfg, kind)
    if kind == "s3":
        return S3BlobStore(
            _required(cfg, "s3", "bucket"),
            prefix=_optional(cfg, "s3", "prefix") or "",
            region=_optional(cfg, "s3", "region"),
            endpoint_url=_optional(cfg, "s3", "endpoint_url"),
        )
    if kind == "azure":
        return _azure_from_config(cfg)
    return None


def _azure_from_config(cfg: Mapping[str, Any]) -> AzureBlobStore:
    container = _required(cfg, "azure", "container")
    account_url = _optional(cfg, "azure", "account_url")
    env_name = _optional(cfg, "azure", "connection_string_env")
    if bool(account_url) == bool(env_name):
        raise ConfigError(
            f"{SECTION} kind = 'azure' needs exactly one of 'account_url' or "
            f"'connection_string_env'. Example:\n{_EXAMPLES['azure']}"
        )
    connection_string = os.environ.get(env_name) if env_name else None
    if env_name and not connection_string:
        raise ConfigError(
            f"{SECTION} connection_string_env names ${env_name}, which is unset or empty: "
            "export the storage connection string in it."
        )
    return AzureBlobStore(
        container,
        prefix=_optional(cfg, "azure", "prefix") or "",
        connection_string=connection_string,
        account_url=account_url,
    )


def _refuse_unknown_keys(cfg: Mapping[str, Any], kind: str) -> None:
    unknown = sorted(set(cfg) - _KEYS[kind])
    if not unknown:
        return
    why = ""
    if any("connection_string" in k or "key" in k or "secret" in k for k in unknown):
        why = " Secrets never go in the config file: credentials come from the environment."
    raise ConfigError(
        f"{SECTION} key {unknown[0]!r} is not known for kind = {kind!r} "
        f"(known: {', '.join(sorted(_KEYS[kind]))}).{why} Example:\n{_EXAMPLES[kind]}"
    )


def _required(cfg: Mapping[str, Any], kind: str, key: str) -> str:
    value = _optional(cfg, kind, key)
    if not value:
        raise ConfigError(f"{SECTION} kind = {kind!r} needs '{key}'. Example:\n{_EXAMPLES[kind]}")
    return value


def _optional(cfg: Mapping[str, Any], kind: str, key: str) -> str | None:
    value = cfg.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigError(
            f"{SECTION} {key} must be a string, not {type(value).__name__}. "
            f"Example:\n{_EXAMPLES[kind]}"
        )
    return value
