"""Key providers: the key-encryption keys (KEKs) that wrap per-object data keys.

    provider = LocalKeyProvider.load_or_create(data_dir / "keys" / "local.key")
    wrapped = provider.wrap(data_key, b"workspace=app/prod;version=7")
    data_key = provider.unwrap(wrapped, b"workspace=app/prod;version=7")

A provider never sees state, only 32-byte data keys; ``context`` binds a wrapped key to the
object it belongs to, so a wrapped key copied onto another object does not unwrap.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import tempfile
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from tofuflow.errors import ConfigError, CryptoError

if TYPE_CHECKING:
    from mypy_boto3_kms.client import KMSClient

__all__ = [
    "AwsKmsKeyProvider",
    "KeyProvider",
    "LocalKeyProvider",
    "PassphraseKeyProvider",
    "key_provider_from_config",
]

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # the 96-bit nonce GCM is specified for
SALT_BYTES = 16
PASSPHRASE_ENV = "TOFUFLOW_KEY_PASSPHRASE"  # noqa: S105 (a variable name, not a secret)
_T = TypeVar("_T")


class KeyProvider(Protocol):
    """What the keyring needs from a key-encryption key.

    ``key_id`` is stored next to every wrapped key, so it must be stable across restarts
    and must not reveal the key: ``local:3f2a9c1b…``, ``passphrase:…``, ``aws-kms:<arn>``.
    """

    @property
    def key_id(self) -> str: ...

    def wrap(self, data_key: bytes | bytearray, context: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes: ...


# --- local key file -----------------------------------------------------------------------


class LocalKeyProvider:
    """A random 32-byte key in a file only the server's user can read (mode 0600).

        provider = LocalKeyProvider.load_or_create(Path("/var/lib/tofuflow/keys/local.key"))

    Back the file up: data sealed under it cannot be opened without it.
    """

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        key = _read_private_key(self._path)
        self._key_id = "local:" + _fingerprint(b"local", key)
        self._aead = AESGCM(key)

    @classmethod
    def generate(cls, path: Path) -> LocalKeyProvider:
        """Create a new key file at ``path``; refuses to replace an existing one."""
        try:
            _create_private_file(Path(path), os.urandom(KEY_BYTES))
        except FileExistsError as exc:
            raise CryptoError(
                f"key file {path} already exists: refusing to replace it, since data sealed "
                "with it could no longer be opened; load it with LocalKeyProvider(path)"
            ) from exc
        return cls(path)

    @classmethod
    def load_or_create(cls, path: Path) -> LocalKeyProvider:
        """Load the key file, creating it on first start."""
        path = Path(path)
        if not path.exists():
            # FileExistsError: another process created it first, and theirs is used.
            with contextlib.suppress(FileExistsError):
                _create_private_file(path, os.urandom(KEY_BYTES))
        return cls(path)

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def path(self) -> Path:
        return self._path

    def wrap(self, data_key: bytes | bytearray, context: bytes) -> bytes:
        return _gcm_wrap(self._aead, data_key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        return _gcm_unwrap(
            self._aead,
            wrapped,
            context,
            f"could not unwrap a data key with local key {self._key_id} ({self._path}): "
            f"the wrapped key was tampered with, or its context {context!r} is not the one "
            "it was sealed with; restore the object from a backup",
        )


def _read_private_key(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
        # Windows has no POSIX modes to check; everywhere else a shared key is refused.
        if os.name != "nt" and mode & 0o077:
            raise CryptoError(
                f"key file {path} can be read or written by group or others "
                f"(mode {mode & 0o777:04o}): run `chmod 600 {path}`"
            )
        key = path.read_bytes()
    except FileNotFoundError as exc:
        raise CryptoError(
            f"key file {path} does not exist (a key is made by itself only for a database "
            "that holds no sealed data yet): restore it from your backup, copy the one the "
            "other replicas use, or, for a rotation, make the new key once with `tofuflow "
            "server keys new PATH` and copy it to every replica; or remove it from the key "
            "configuration"
        ) from exc
    except OSError as exc:
        raise CryptoError(
            f"cannot read key file {path}: {exc.strerror}; run the server as its owner"
        ) from exc
    if len(key) != KEY_BYTES:
        raise CryptoError(
            f"key file {path} holds {len(key)} bytes, not a {KEY_BYTES}-byte key: "
            "restore it from your backup"
        )
    return key


# --- passphrase ---------------------------------------------------------------------------


class PassphraseKeyProvider:
    """A key derived from a passphrase with scrypt; only the salt is written to disk.

        salt = PassphraseKeyProvider.load_or_create_salt(data_dir / "keys" / "passphrase.salt")
        provider = PassphraseKeyProvider(os.environ["TOFUFLOW_KEY_PASSPHRASE"], salt)

    Back the salt file up with the data: without it the passphrase derives another key.
    """

    def __init__(self, passphrase: str, salt: bytes, *, source: str = PASSPHRASE_ENV) -> None:
        self.source = source  # where the passphrase came from, for messages (never it)
        if not passphrase:
            raise ConfigError("the key passphrase is empty: set a long, random passphrase")
        if len(salt) < SALT_BYTES:
            raise ConfigError(
                f"the passphrase salt has {len(salt)} bytes, fewer than {SALT_BYTES}: "
                "let PassphraseKeyProvider.load_or_create_salt create it"
            )
        key = _derive_key(passphrase, salt)
        # Both halves are public: the salt's half tells "wrong passphrase" (same salt,
        # other key) apart from "another key"; the key's half changes with the passphrase.
        salt_id = _fingerprint(b"salt", salt)[:8]
        self._key_id = f"passphrase:{salt_id}:{_fingerprint(b'passphrase', key)}"
        self._aead = AESGCM(key)

    @staticmethod
    def load_or_create_salt(path: Path) -> bytes:
        """Read the salt file, creating a random one on first start."""
        path = Path(path)
        if not path.exists():
            # FileExistsError: another process created it first, and theirs is used.
            with contextlib.suppress(FileExistsError):
                _create_private_file(path, os.urandom(SALT_BYTES))
        return _read_salt(path)

    @property
    def key_id(self) -> str:
        return self._key_id

    def wrap(self, data_key: bytes | bytearray, context: bytes) -> bytes:
        return _gcm_wrap(self._aead, data_key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        return _gcm_unwrap(
            self._aead,
            wrapped,
            context,
            f"could not unwrap a data key with {self._key_id}: the passphrase does not match "
            "the one the data was written with (or the wrapped key or its context "
            f"{context!r} was altered); set the passphrase the data was written with",
        )


def _derive_key(passphrase: str, salt: bytes) -> bytes:
    # NFC: the same passphrase typed on different systems can arrive in different
    # Unicode normal forms, and must derive the same key.
    secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    # Cost: n=2**15, r=8 needs 128*n*r = 32 MiB and ~0.1 s per derivation; it runs once
    # per start, and makes each guess of an offline attack cost as much.
    return Scrypt(salt=salt, length=KEY_BYTES, n=2**15, r=8, p=1).derive(secret)


def _read_salt(path: Path) -> bytes:
    try:
        salt = path.read_bytes()
    except FileNotFoundError as exc:
        raise CryptoError(
            f"salt file {path} does not exist: restore it from your backup (the passphrase "
            "alone cannot open the data), or remove this key from the key configuration"
        ) from exc
    except OSError as exc:
        raise CryptoError(f"cannot read salt file {path}: {exc.strerror}") from exc
    if len(salt) < SALT_BYTES:
        raise CryptoError(
            f"salt file {path} holds {len(salt)} bytes, fewer than {SALT_BYTES}: "
            "restore it from your backup"
        )
    return salt


# --- AWS KMS ------------------------------------------------------------------------------

_KMS_HINTS = {
    "AccessDeniedException": "grant the server's AWS identity kms:Encrypt and kms:Decrypt "
    "on this key",
    "NotFoundException": "check the key id or ARN and the region",
    "DisabledException": "enable the key in KMS",
    "KMSInvalidStateException": "the key is pending deletion or unavailable: cancel the "
    "deletion or choose another key",
    "InvalidCiphertextException": "the wrapped data key was tampered with, or its "
    "encryption context (which object it belongs to) does not match",
    "IncorrectKeyException": "the data key was wrapped by another KMS key: add that key to "
    "the previous keys",
    "UnrecognizedClientException": "check the server's AWS credentials",
    "ExpiredTokenException": "refresh the server's AWS credentials",
}


class AwsKmsKeyProvider:
    """An AWS KMS key wraps the data keys; the key itself never leaves KMS.

        provider = AwsKmsKeyProvider("arn:aws:kms:eu-west-1:111122223333:key/…",
                                     region="eu-west-1")

    The context goes to KMS as EncryptionContext ``{"tofuflow": base64(context)}``, so it
    is checked by KMS and shows up in CloudTrail. Prefer a key ARN to an alias: pointing an
    alias at another key is a rotation, and the old key must then stay reachable.
    """

    def __init__(
        self, key_id: str, *, region: str | None = None, endpoint_url: str | None = None
    ) -> None:
        if not key_id:
            raise ConfigError("the aws-kms key provider needs key_id: a KMS key ARN or alias")
        self._kms_key = key_id
        self._key_id = f"aws-kms:{key_id}"
        self._client = _kms_client(key_id, region, endpoint_url)

    @property
    def key_id(self) -> str:
        return self._key_id

    def wrap(self, data_key: bytes | bytearray, context: bytes) -> bytes:
        response = self._call(
            "Encrypt",
            lambda: self._client.encrypt(
                KeyId=self._kms_key,
                # botocore copies the key into the request body anyway; see Keyring on wiping.
                Plaintext=bytes(data_key),
                EncryptionContext=_kms_context(context),
            ),
        )
        return response["CiphertextBlob"]

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        response = self._call(
            "Decrypt",
            # KeyId pins the key: KMS must not pick whatever key a stored blob names.
            lambda: self._client.decrypt(
                CiphertextBlob=wrapped,
                KeyId=self._kms_key,
                EncryptionContext=_kms_context(context),
            ),
        )
        return response["Plaintext"]

    def _call(self, operation: str, call: Callable[[], _T]) -> _T:
        """Run one KMS call; every AWS error becomes a CryptoError naming key and code."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "Unknown")
            raise self._error(operation, code, error.get("Message", "")) from exc
        except BotoCoreError as exc:
            raise self._error(operation, type(exc).__name__, str(exc)) from exc

    def _error(self, operation: str, code: str, detail: str) -> CryptoError:
        hint = _KMS_HINTS.get(code, "check the key, the region and the server's AWS access")
        return CryptoError(
            f"AWS KMS {operation} with key {self._kms_key} failed ({code}: {detail}): {hint}"
        )


def _kms_client(key_id: str, region: str | None, endpoint_url: str | None) -> KMSClient:
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError
    except ImportError as exc:
        raise ConfigError(
            "the aws-kms key provider needs boto3: pip install 'tofuflow[aws]'"
        ) from exc
    # Bounded waits: a KMS outage must fail a request, not hang it for a minute.
    config = Config(connect_timeout=5, read_timeout=10, retries={"mode": "standard"})
    try:
        return boto3.session.Session().client(
            "kms", region_name=region, endpoint_url=endpoint_url, config=config
        )
    except BotoCoreError as exc:
        raise ConfigError(
            f"cannot use AWS KMS key {key_id}: {exc}; set region in the key configuration "
            "or AWS_DEFAULT_REGION"
        ) from exc


def _kms_context(context: bytes) -> dict[str, str]:
    # KMS contexts are strings; base64 carries any bytes the caller binds.
    return {"tofuflow": base64.b64encode(context).decode("ascii")}


# --- shared helpers -----------------------------------------------------------------------


def _gcm_wrap(aead: AESGCM, data_key: bytes | bytearray, context: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + aead.encrypt(nonce, data_key, context)


def _gcm_unwrap(aead: AESGCM, wrapped: bytes, context: bytes, failure: str) -> bytes:
    if len(wrapped) < NONCE_BYTES:
        raise CryptoError(failure)
    try:
        return aead.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], context)
    except InvalidTag as exc:
        raise CryptoError(failure) from exc


def _fingerprint(purpose: bytes, data: bytes) -> str:
    """A short public name for key material (domain-separated, so never the key itself)."""
    return hashlib.sha256(b"tofuflow key id:" + purpose + b"\0" + data).hexdigest()[:16]


def _create_private_file(path: Path, content: bytes) -> None:
    """Write ``content`` to a new file (0600, parent 0700) that appears complete or not at all.

    Raises FileExistsError when ``path`` exists: a key is never replaced, even by a race.
    """
    _make_private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        # link(), unlike rename(), fails if the target exists: two servers starting at
        # once must end up sharing one key, not each sealing with its own.
        os.link(tmp, path)
    finally:
        os.unlink(tmp)
    _fsync_dir(path.parent)


def _make_private_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, mode=0o700)
    except FileExistsError:
        return  # someone else's directory: its mode is theirs to choose
    path.chmod(0o700)  # mkdir's mode is reduced by the umask


def _fsync_dir(path: Path) -> None:
    # Makes the new directory entry durable; not possible on every platform.
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _missing_key_message(key_id: str, configured: Sequence[str]) -> str:
    """Why data sealed with ``key_id`` cannot be opened by the ``configured`` keys."""
    if key_id.startswith("passphrase:"):
        same_salt = key_id.rsplit(":", 1)[0] + ":"
        if any(k.startswith(same_salt) for k in configured):
            return (
                f"data was sealed with key {key_id}: the passphrase does not match the one "
                "the data was written with; set that passphrase, or if you changed it on "
                "purpose, add the old one to the previous keys"
            )
    return (
        f"data was sealed with key {key_id} which is not configured: add it to previous "
        f"keys (configured: {', '.join(configured)})"
    )


# --- configuration ------------------------------------------------------------------------


def key_provider_from_config(
    cfg: Mapping[str, Any], data_dir: Path, *, create: bool = True, where: str = "keys.current"
) -> KeyProvider:
    """Build a provider from one ``[keys.current]``-style table.

        key_provider_from_config({"kind": "local"}, data_dir)
        key_provider_from_config({"kind": "aws-kms", "key_id": arn, "region": "eu-west-1"}, d)

    Relative paths are under ``data_dir``. ``create=False`` (for previous keys) never
    creates a key file or salt: an old key that is missing must be restored, not replaced.
    Without ``kind``, the kind is ``local``, as without the table (``{"path": ...}`` is a
    key file).
    """
    kind = cfg.get("kind", DEFAULT_KIND)
    if not isinstance(kind, str) or kind not in _BUILDERS:
        raise ConfigError(f"{where}.kind is {kind!r}: use one of {', '.join(sorted(_BUILDERS))}")
    options, build = _BUILDERS[kind]
    _check_options({"kind": kind, **cfg}, options, where)
    return build(cfg, Path(data_dir), create, where)


def _local_from_config(
    cfg: Mapping[str, Any], data_dir: Path, create: bool, where: str
) -> KeyProvider:
    path = _path_option(cfg, "path", data_dir, "keys/local.key", where)
    return LocalKeyProvider.load_or_create(path) if create else LocalKeyProvider(path)


def _passphrase_from_config(
    cfg: Mapping[str, Any], data_dir: Path, create: bool, where: str
) -> KeyProvider:
    env = _str_option(cfg, "passphrase_env", where) or PASSPHRASE_ENV
    passphrase = os.environ.get(env)
    if not passphrase:
        raise ConfigError(
            f"{where}: the key passphrase is read from the environment variable {env}, "
            "which is not set: set it (never in the configuration file)"
        )
    salt_path = _path_option(cfg, "salt_path", data_dir, "keys/passphrase.salt", where)
    salt = PassphraseKeyProvider.load_or_create_salt(salt_path) if create else _read_salt(salt_path)
    return PassphraseKeyProvider(passphrase, salt, source=env)


def _kms_from_config(
    cfg: Mapping[str, Any], data_dir: Path, create: bool, where: str
) -> KeyProvider:
    key_id = _str_option(cfg, "key_id", where)
    if not key_id:
        raise ConfigError(f"{where}: kind aws-kms needs key_id, a KMS key ARN or alias")
    return AwsKmsKeyProvider(
        key_id,
        region=_str_option(cfg, "region", where),
        endpoint_url=_str_option(cfg, "endpoint_url", where),
    )


DEFAULT_KIND = "local"
_Builder = Callable[[Mapping[str, Any], Path, bool, str], KeyProvider]
_BUILDERS: dict[str, tuple[frozenset[str], _Builder]] = {
    "local": (frozenset({"kind", "path"}), _local_from_config),
    "passphrase": (
        frozenset({"kind", "passphrase_env", "salt_path"}),
        _passphrase_from_config,
    ),
    "aws-kms": (
        frozenset({"kind", "key_id", "region", "endpoint_url"}),
        _kms_from_config,
    ),
}


def _check_options(cfg: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    if "passphrase" in cfg:
        raise ConfigError(
            f"{where}: never write the passphrase into the configuration; put it in the "
            f"environment variable named by passphrase_env (default {PASSPHRASE_ENV})"
        )
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown option(s) {', '.join(unknown)} for kind {cfg['kind']}: "
            f"use {', '.join(sorted(allowed))}"
        )


def _str_option(cfg: Mapping[str, Any], name: str, where: str) -> str | None:
    value = cfg.get(name)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{where}.{name} must be a string, got {type(value).__name__}")
    return value


def _path_option(
    cfg: Mapping[str, Any], name: str, data_dir: Path, default: str, where: str
) -> Path:
    path = Path(_str_option(cfg, name, where) or default).expanduser()
    return path if path.is_absolute() else data_dir / path
