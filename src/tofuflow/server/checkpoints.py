"""Signed checkpoints of the audit chain, kept where the database's owner cannot rewrite them.

    signer = signer_from_config(config.audit_signing_key, config.data_dir)
    keeper = CheckpointKeeper(engine, signer, CheckpointStore(blobs, config.data_dir))
    checkpoint = keeper.checkpoint()      # check the chain since the last one, sign its head
    problems = verify_export(json.loads(text), public_key_pem)   # offline, no server

The hash chain alone proves only that the log was not edited *piecemeal*: whoever can write
the database can recompute every hash and the head. A checkpoint names the newest event (id
and hash) and is signed with a key the database does not hold (an Ed25519 key file, or an
AWS KMS ECDSA P-256 key); it is written to the object store (or, without one, a directory
beside the key) and to the server log. A rewritten chain no longer contains the hash a
checkpoint signed, so the server refuses to sign it and an export of it fails offline.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from tofuflow.errors import ConfigError, ConflictError, CryptoError, StorageError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session

    from tofuflow.server.storage import BlobStore

__all__ = [
    "CHECKPOINT_FORMAT",
    "EXPORT_FORMAT",
    "GENESIS",
    "CheckpointKeeper",
    "CheckpointStore",
    "Signer",
    "chain_hash",
    "checkpoint_payload",
    "record_hash",
    "signer_from_config",
    "verify_export",
]

GENESIS = "0" * 64
CHECKPOINT_FORMAT = "tofuflow-audit-checkpoint/1"
EXPORT_FORMAT = "tofuflow-audit-export/1"
# The fields an event's hash covers, besides the previous hash (see _audit.event_hash).
HASHED_FIELDS = (
    "id", "ts", "actor", "actor_claims", "action", "workspace", "serial", "outcome",
    "status", "client", "detail", "run_id", "commit",
)  # fmt: skip
_log = logging.getLogger("tofuflow.audit.checkpoint")
_T = TypeVar("_T")


def record_hash(prev_hash: str, body: Mapping[str, Any]) -> str:
    """An event's hash: SHA-256 of the previous hash and the canonical JSON of its fields."""
    return chain_hash(prev_hash, [body.get(name) for name in SORTED_HASHED_FIELDS])


# The canonical JSON is ``json.dumps(fields, sort_keys=True, separators=(",", ":"),
# default=str)`` of the hashed fields. ``chain_hash`` writes exactly those bytes a field
# at a time (verifying a million events is mostly this): strings, ints and None directly,
# as json.dumps spells them, anything else through json.dumps itself.
SORTED_HASHED_FIELDS = tuple(sorted(HASHED_FIELDS))
_KEYS = tuple(f'"{name}":' for name in SORTED_HASHED_FIELDS)
_encode_str: Callable[[str], str] = json.encoder.encode_basestring_ascii
_encode_other = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str).encode


def _canonical_value(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return _encode_str(value)
    if kind is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    return _encode_other(value)


def chain_hash(prev_hash: str, values: Sequence[Any]) -> str:
    """``record_hash`` of the field values given in ``SORTED_HASHED_FIELDS`` order."""
    canonical = ",".join([k + _canonical_value(v) for k, v in zip(_KEYS, values, strict=True)])
    return hashlib.sha256(f"{prev_hash}{{{canonical}}}".encode()).hexdigest()


def checkpoint_payload(checkpoint: Mapping[str, Any]) -> bytes:
    """The bytes a checkpoint's signature covers: every field but the signature."""
    body = {k: v for k, v in checkpoint.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


# -- signers ------------------------------------------------------------------------------


class Signer(Protocol):
    """A key that signs checkpoints; ``public_key_pem`` is what verifiers are given."""

    @property
    def key_id(self) -> str: ...

    @property
    def algorithm(self) -> str: ...

    def sign(self, payload: bytes) -> bytes: ...

    def public_key_pem(self) -> bytes: ...


class Ed25519FileSigner:
    """An Ed25519 private key in a PEM file only the server's user can read (0600).

    signer = Ed25519FileSigner.load_or_create(data_dir / "keys" / "audit-signing.pem")
    """

    algorithm = "ed25519"

    def __init__(self, path: Path) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        from tofuflow.server.crypto._keys import _fingerprint

        self.path = Path(path)
        mode = self.path.stat().st_mode if self.path.exists() else 0
        if os.name != "nt" and mode & 0o077:
            raise CryptoError(
                f"audit signing key {self.path} can be read or written by group or others "
                f"(mode {mode & 0o777:04o}): run `chmod 600 {self.path}`"
            )
        try:
            key = load_pem_private_key(self.path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise CryptoError(
                f"cannot load the audit signing key {self.path}: {exc}; restore it from your "
                "backup, or move it away to start a new key (old checkpoints then verify only "
                "with the old public key)"
            ) from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise CryptoError(f"audit signing key {self.path} is not an Ed25519 private key")
        self._key = key
        self._public = self.public_key_pem()
        self._key_id = "ed25519:" + _fingerprint(b"audit signing", self._public)

    @classmethod
    def load_or_create(cls, path: Path) -> Ed25519FileSigner:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import (
            Encoding,
            NoEncryption,
            PrivateFormat,
        )

        from tofuflow.server.crypto._keys import _create_private_file

        path = Path(path)
        if not path.exists():
            pem = Ed25519PrivateKey.generate().private_bytes(
                Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
            )
            # FileExistsError: another replica created it first, and theirs is used.
            with contextlib.suppress(FileExistsError):
                _create_private_file(path, pem)
        return cls(path)

    @property
    def key_id(self) -> str:
        return self._key_id

    def sign(self, payload: bytes) -> bytes:
        return self._key.sign(payload)

    def public_key_pem(self) -> bytes:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        return self._key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


class KmsSigner:
    """An AWS KMS asymmetric key (``ECC_NIST_P256``, signing ``ECDSA_SHA_256``) signs; the
    private key never leaves KMS. (KMS Ed25519 keys are not used: moto, which the tests
    run against, does not implement them.)

        signer = KmsSigner("arn:aws:kms:eu-west-1:111122223333:key/…", region="eu-west-1")
    """

    algorithm = "ecdsa-p256-sha256"

    def __init__(
        self, key_id: str, *, region: str | None = None, endpoint_url: str | None = None
    ) -> None:
        from tofuflow.server.crypto._keys import _kms_client

        if not key_id:
            raise ConfigError("audit.signing_key: kind aws-kms needs key_id, a KMS key ARN")
        self._kms_key = key_id
        self._key_id = f"aws-kms:{key_id}"
        self._client = _kms_client(key_id, region, endpoint_url)
        self._pem: bytes | None = None

    @property
    def key_id(self) -> str:
        return self._key_id

    def sign(self, payload: bytes) -> bytes:
        response = self._call(
            "Sign",
            lambda: self._client.sign(
                KeyId=self._kms_key, Message=payload, MessageType="RAW",
                SigningAlgorithm="ECDSA_SHA_256",
            ),
        )  # fmt: skip
        return response["Signature"]

    def public_key_pem(self) -> bytes:
        if self._pem is None:
            from cryptography.hazmat.primitives.serialization import (
                Encoding,
                PublicFormat,
                load_der_public_key,
            )

            response = self._call(
                "GetPublicKey", lambda: self._client.get_public_key(KeyId=self._kms_key)
            )
            key = load_der_public_key(response["PublicKey"])
            self._pem = key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        return self._pem

    def _call(self, operation: str, call: Callable[[], _T]) -> _T:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, detail = error.get("Code", "Unknown"), error.get("Message", "")
        except BotoCoreError as exc:
            code, detail = type(exc).__name__, str(exc)
        raise CryptoError(
            f"AWS KMS {operation} with audit signing key {self._kms_key} failed ({code}: "
            f"{detail}): the key must be an asymmetric ECC_NIST_P256 SIGN_VERIFY key, and the "
            "server's AWS identity needs kms:Sign and kms:GetPublicKey on it"
        )


SIGNING_KEY_OPTIONS = {
    "local": frozenset({"kind", "path"}),
    "aws-kms": frozenset({"kind", "key_id", "region", "endpoint_url"}),
}


def signer_from_config(cfg: Mapping[str, Any], data_dir: Path) -> Signer:
    """``[audit.signing_key]``: ``kind = "local"`` (default; ``path`` under the data dir,
    default ``keys/audit-signing.pem``) or ``kind = "aws-kms"`` (``key_id``, ``region``,
    ``endpoint_url``)."""
    from tofuflow.server.crypto._keys import _check_options, _path_option, _str_option

    where = "audit.signing_key"
    kind = cfg.get("kind", "local")
    if kind not in SIGNING_KEY_OPTIONS:
        raise ConfigError(f"{where}.kind is {kind!r}: use one of local, aws-kms")
    _check_options({"kind": kind, **cfg}, SIGNING_KEY_OPTIONS[kind], where)
    if kind == "local":
        path = _path_option(cfg, "path", Path(data_dir), "keys/audit-signing.pem", where)
        return Ed25519FileSigner.load_or_create(path)
    return KmsSigner(
        _str_option(cfg, "key_id", where) or "",
        region=_str_option(cfg, "region", where),
        endpoint_url=_str_option(cfg, "endpoint_url", where),
    )


def _verify_signature(checkpoint: Mapping[str, Any], public_key_pem: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key = load_pem_public_key(public_key_pem)
    try:
        signature = base64.b64decode(str(checkpoint.get("signature", "")), validate=True)
        payload = checkpoint_payload(checkpoint)
        if isinstance(key, Ed25519PublicKey) and checkpoint.get("algorithm") == "ed25519":
            key.verify(signature, payload)
        elif isinstance(key, ec.EllipticCurvePublicKey) and checkpoint.get("algorithm") == (
            "ecdsa-p256-sha256"
        ):
            key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


def load_public_key(pem: bytes) -> bytes:
    """Check that ``pem`` is a public key a checkpoint can be verified with."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(pem)
    except ValueError as exc:
        raise ConfigError(
            "the public key is not a PEM public key: get it with "
            "`tofuflow server audit public-key` on the server"
        ) from exc
    if not isinstance(key, Ed25519PublicKey | ec.EllipticCurvePublicKey):
        raise ConfigError("the public key is neither Ed25519 nor ECDSA P-256")
    return pem


# -- where checkpoints are kept ------------------------------------------------------------


class CheckpointStore:
    """The object store (``audit/checkpoints/`` in the state's blob store) or, without one,
    ``<data dir>/audit-checkpoints/``; every checkpoint also goes to the server log."""

    PREFIX = "audit/checkpoints"

    def __init__(self, blobs: BlobStore | None, data_dir: Path) -> None:
        self.blobs = blobs
        self.directory = Path(data_dir) / "audit-checkpoints"
        self.name = f"{blobs.name}/{self.PREFIX}" if blobs else str(self.directory)

    def latest(self) -> dict[str, Any] | None:
        raw = self._get("latest.json")
        return None if raw is None else dict(json.loads(raw))

    def put(self, checkpoint: Mapping[str, Any]) -> None:
        data = json.dumps(checkpoint, sort_keys=True).encode()
        self._put(f"{int(checkpoint['event_id']):020d}.json", data)
        latest = self.latest()
        # Replicas race: never move "latest" back to an older checkpoint.
        if latest is None or int(latest["event_id"]) <= int(checkpoint["event_id"]):
            self._put("latest.json", data)
        _log.info("audit checkpoint %s", data.decode(), extra={"checkpoint": dict(checkpoint)})

    def _put(self, name: str, data: bytes) -> None:
        if self.blobs is not None:
            self.blobs.put(f"{self.PREFIX}/{name}", data)
            return
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.directory / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(self.directory / name)

    def _get(self, name: str) -> bytes | None:
        if self.blobs is None:
            try:
                return (self.directory / name).read_bytes()
            except FileNotFoundError:
                return None
        try:
            return self.blobs.get(f"{self.PREFIX}/{name}")
        except StorageError as exc:
            if _is_missing(exc):
                return None
            raise


def _is_missing(exc: StorageError) -> bool:
    # Only "no such object" means "no checkpoint yet"; an outage must not look like one,
    # or the server would sign whatever chain the database holds.
    cause = exc.__cause__
    response = getattr(cause, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code")) in {"NoSuchKey", "404"}
    return getattr(cause, "error_code", None) == "BlobNotFound"


# -- signing the head -----------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointKeeper:
    """Signs the chain's head after checking every event since the last checkpoint."""

    engine: Engine
    signer: Signer
    store: CheckpointStore

    def checkpoint(self) -> dict[str, Any]:
        """The newest checkpoint, signed now unless the last one already covers the head.

        Raises ``ConflictError`` (and logs an error) if the chain no longer contains what
        the last checkpoint signed, or is broken since: nothing is signed then.
        """
        from sqlalchemy.orm import Session

        latest = self.store.latest()
        with Session(self.engine) as session:
            event_id, head, count = self._check(session, latest)
        if latest is not None and int(latest["event_id"]) == event_id:
            return latest
        checkpoint: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "event_id": event_id,
            "hash": head,
            "events": count,
            "signed_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "key_id": self.signer.key_id,
            "algorithm": self.signer.algorithm,
        }
        signature = self.signer.sign(checkpoint_payload(checkpoint))
        checkpoint["signature"] = base64.b64encode(signature).decode()
        self.store.put(checkpoint)
        return checkpoint

    def _check(self, session: Session, latest: Mapping[str, Any] | None) -> tuple[int, str, int]:
        """(newest id, its hash, events so far), walking only what the last one did not
        cover."""
        from sqlalchemy import func, select

        from tofuflow.server._audit import verify_from
        from tofuflow.server.storage._db import AuditEvent

        start_id, start_hash, start_count = 0, GENESIS, 0
        if latest is not None:
            start_id, start_hash = int(latest["event_id"]), str(latest["hash"])
            start_count = int(latest.get("events", 0))
            if start_id:
                found = session.get(AuditEvent, start_id)
                if found is None or found.hash != start_hash:
                    self._tampered(
                        latest, f"event {start_id} is {'missing' if found is None else 'changed'}"
                    )
        result = verify_from(session, start_id, start_hash)
        if not result.ok:
            where = f"event {result.first_bad_id}" if result.first_bad_id else "the head"
            self._tampered(latest, f"{where}: {result.reason}")
        newest = session.scalar(select(func.max(AuditEvent.id))) or 0
        if newest < start_id:
            self._tampered(latest, f"events after {newest} were removed")
        head = session.get(AuditEvent, newest).hash if newest else GENESIS  # type: ignore[union-attr]
        return newest, head, start_count + result.checked

    @staticmethod
    def _tampered(latest: Mapping[str, Any] | None, what: str) -> None:
        signed = (
            f"the checkpoint of event {latest['event_id']} signed at {latest['signed_at']}"
            if latest
            else "the chain"
        )
        message = (
            f"the audit chain contradicts {signed} ({what}): the database was altered; "
            "nothing was signed. Compare it with an earlier export and restore the log"
        )
        _log.error(message)
        raise ConflictError(message)


# -- offline verification of an export -------------------------------------------------------


@dataclass(frozen=True)
class ExportCheck:
    ok: bool
    events: int
    checkpoints: int
    problem: str = ""


def verify_export(doc: Mapping[str, Any], public_key_pem: bytes) -> ExportCheck:
    """Check an export with nothing but ``public_key_pem``: the chain, and that every
    checkpoint is signed by that key and matches the chain; the newest event must be
    covered by one."""
    if doc.get("format") != EXPORT_FORMAT:
        return ExportCheck(False, 0, 0, f"not a tofuflow audit export ({EXPORT_FORMAT})")
    events: Sequence[Mapping[str, Any]] = doc.get("events") or []
    checkpoints: Sequence[Mapping[str, Any]] = doc.get("checkpoints") or []
    hashes: dict[int, str] = {0: GENESIS}
    previous, last_id = GENESIS, 0
    for event in events:
        event_id = int(event["id"])
        if event_id <= last_id or event.get("prev_hash") != previous:
            return ExportCheck(False, len(hashes) - 1, 0,
                               f"event {event_id} does not follow the event before it")  # fmt: skip
        if record_hash(previous, event) != event.get("hash"):
            return ExportCheck(False, len(hashes) - 1, 0,
                               f"event {event_id}: content does not match its hash")  # fmt: skip
        previous, last_id, hashes[event_id] = str(event["hash"]), event_id, str(event["hash"])
    count = len(hashes) - 1
    if not checkpoints:
        return ExportCheck(False, count, 0, "the export holds no signed checkpoint")
    for checkpoint in checkpoints:
        event_id, signed_at = int(checkpoint.get("event_id", -1)), checkpoint.get("signed_at")
        label = f"the checkpoint of event {event_id} signed at {signed_at}"
        if not _verify_signature(checkpoint, public_key_pem):
            return ExportCheck(False, count, 0, f"{label} is not signed by this public key")
        if event_id > last_id:
            return ExportCheck(False, count, 0,
                               f"{label} covers events this export lacks: the newest "
                               f"events (after {last_id}) were removed")  # fmt: skip
        if hashes.get(event_id) != checkpoint.get("hash"):
            return ExportCheck(False, count, 0,
                               f"{label} does not match the chain: the log was rewritten "
                               f"at or before event {event_id}")  # fmt: skip
    newest = max(int(c["event_id"]) for c in checkpoints)
    if newest < last_id:
        problem = f"events after {newest} are not covered by a signed checkpoint"
        return ExportCheck(False, count, len(checkpoints), problem)
    return ExportCheck(True, count, len(checkpoints))
