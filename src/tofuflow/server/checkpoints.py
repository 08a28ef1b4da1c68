"""Signed checkpoints of the audit chain, kept where the database's owner cannot rewrite them.

    signer = signer_from_config(config.audit_signing_key, config.data_dir)
    keeper = CheckpointKeeper(engine, signer, CheckpointStore(blobs, config.data_dir))
    checkpoint = keeper.checkpoint()      # check the chain since the last one, sign its head
    problems = verify_export(json.loads(text), public_key_pem)   # offline, no server

The hash chains alone prove only that the log was not edited *piecemeal*: whoever can
write the database can recompute every hash and head. A checkpoint names the newest event
(id and hash) of every chain (``_chains``: one per workspace) and is signed with a key the
database does not hold (an Ed25519 key file, or an AWS KMS ECDSA P-256 key); it is written
to the object store (or, without one, a directory beside the key) and to the server log. A
rewritten chain no longer contains the hash a checkpoint signed, and a removed one no longer
has the head it signed, so the server refuses to sign it and an export of it fails offline.

Format 2 signs the chains' heads through their digest (``chains_sha256``); the heads travel
beside the signature (``heads``), so that the log line stays short at 10,000 workspaces.
Format 1 (before the chains split, 0012) signed the single chain's newest event; both verify.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from tofuflow.errors import ConfigError, ConflictError, CryptoError, StorageError
from tofuflow.server._chains import (
    GENESIS,
    HASHED_FIELDS,
    ORIGIN,
    ChainTips,
    chain_hash,
    chain_label,
    heads_sha256,
    record_hash,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session

    from tofuflow.server.storage import BlobStore

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMAT_V1",
    "EXPORT_FORMAT",
    "GENESIS",
    "HASHED_FIELDS",
    "CheckpointKeeper",
    "CheckpointStore",
    "Signer",
    "chain_hash",
    "checkpoint_payload",
    "covers",
    "record_hash",
    "signer_from_config",
    "verify_export",
]

CHECKPOINT_FORMAT = "tofuflow-audit-checkpoint/2"
CHECKPOINT_FORMAT_V1 = "tofuflow-audit-checkpoint/1"
EXPORT_FORMAT = "tofuflow-audit-export/1"  # format 2 checkpoints inside; the rest is unchanged
_log = logging.getLogger("tofuflow.audit.checkpoint")
_T = TypeVar("_T")


def checkpoint_payload(checkpoint: Mapping[str, Any]) -> bytes:
    """The bytes a checkpoint's signature covers: every field but the signature and the
    heads (which ``chains_sha256`` covers)."""
    body = {k: v for k, v in checkpoint.items() if k not in ("signature", "heads")}
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
        # The log line carries what the signature covers; the heads (one per workspace) stay
        # in the stored file, which ``chains_sha256`` binds to it.
        signed = {k: v for k, v in checkpoint.items() if k != "heads"}
        _log.info("audit checkpoint %s", json.dumps(signed, sort_keys=True),
                  extra={"checkpoint": signed})  # fmt: skip

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
    """Signs every chain's head after checking every event since the last checkpoint."""

    engine: Engine
    signer: Signer
    store: CheckpointStore

    def checkpoint(self) -> dict[str, Any]:
        """The newest checkpoint, signed now unless the last one already covers every head.

        Raises ``ConflictError`` (and logs an error) if the chains no longer contain what
        the last checkpoint signed, or are broken since: nothing is signed then.
        """
        from sqlalchemy.orm import Session

        latest = self.store.latest()
        with Session(self.engine) as session:
            origin, heads, count = self._check(session, latest)
        digest = heads_sha256(heads)
        if latest is not None and latest.get("chains_sha256") == digest:
            return latest
        newest = max([origin[0], *(head[0] for head in heads.values())])
        checkpoint: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "event_id": newest,
            "events": count,
            "origin": {"event_id": origin[0], "hash": origin[1]},
            "chains": len(heads),
            "chains_sha256": digest,
            "signed_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "key_id": self.signer.key_id,
            "algorithm": self.signer.algorithm,
        }
        signature = self.signer.sign(checkpoint_payload(checkpoint))
        checkpoint["signature"] = base64.b64encode(signature).decode()
        checkpoint["heads"] = {name: [head[0], head[1]] for name, head in sorted(heads.items())}
        self.store.put(checkpoint)
        return checkpoint

    def _check(
        self, session: Session, latest: Mapping[str, Any] | None
    ) -> tuple[tuple[int, str], dict[str, tuple[int, str]], int]:
        """(origin, every chain's head, events so far), walking only what the last
        checkpoint did not cover."""
        from tofuflow.server._audit import ChainWalk, read_origin

        origin = read_origin(session)
        walk, start_count = ChainWalk(origin), 0
        if latest is not None and latest.get("format") == CHECKPOINT_FORMAT:
            signed = latest.get("origin") or {}
            if (signed.get("event_id"), signed.get("hash")) != origin:
                self._tampered(latest, "the chains' origin was changed")
            heads = dict(latest.get("heads") or {})
            if (problem := self._missing_heads(session, heads)) is not None:
                self._tampered(latest, problem)
            walk.resume(heads, int(latest["event_id"]))
            start_count = int(latest.get("events", 0))
        elif latest is not None and int(latest["event_id"]):  # format 1: one chain's newest
            found = self._hashes(session, [int(latest["event_id"])])
            if found.get(int(latest["event_id"])) != latest["hash"]:
                what = "missing" if not found else "changed"
                self._tampered(latest, f"event {latest['event_id']} is {what}")
        result = walk.walk(session)
        if not result.ok:
            where = f"event {result.first_bad_id}" if result.first_bad_id else "the head"
            self._tampered(latest, f"{where}: {result.reason}")
        return origin, walk.tips.heads(), start_count + result.checked

    @classmethod
    def _missing_heads(cls, session: Session, heads: Mapping[str, Sequence[Any]]) -> str | None:
        """What a checkpoint's head no longer matches, if any (a thousand ids a query)."""
        items = sorted(heads.items(), key=lambda item: int(item[1][0]))
        for start in range(0, len(items), 1000):
            chunk = items[start : start + 1000]
            found = cls._hashes(session, [int(head[0]) for _, head in chunk])
            for name, (event_id, digest) in chunk:
                if found.get(int(event_id)) != digest:
                    what = "missing" if int(event_id) not in found else "changed"
                    newest = f"the newest of {chain_label(name)} it signed"
                    return f"event {event_id}, {newest}, is {what}"
        return None

    @staticmethod
    def _hashes(session: Session, ids: Sequence[int]) -> dict[int, str]:
        from sqlalchemy import select

        from tofuflow.server.storage._db import AuditEvent

        rows = session.execute(select(AuditEvent.id, AuditEvent.hash).where(AuditEvent.id.in_(ids)))
        return {event_id: digest for event_id, digest in rows}

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


def covers(checkpoint: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Whether ``checkpoint`` signed ``event`` (it is its chain's head or before it)."""
    event_id = int(event["id"])
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        return event_id <= int(checkpoint["event_id"])
    origin = checkpoint.get("origin") or {}
    if event_id <= int(origin.get("event_id", 0)):
        return True
    key = ChainTips(int(origin.get("event_id", 0))).key(event_id, event.get("workspace"))
    head = (checkpoint.get("heads") or {}).get(key)
    return head is not None and event_id <= int(head[0])


# -- offline verification of an export -------------------------------------------------------


@dataclass(frozen=True)
class ExportCheck:
    ok: bool
    events: int
    checkpoints: int
    problem: str = ""


def verify_export(doc: Mapping[str, Any], public_key_pem: bytes) -> ExportCheck:
    """Check an export with nothing but ``public_key_pem``: every chain, and that every
    checkpoint is signed by that key and matches the chains; the newest event of every
    chain must be covered by the newest checkpoint."""
    if doc.get("format") != EXPORT_FORMAT:
        return ExportCheck(False, 0, 0, f"not a tofuflow audit export ({EXPORT_FORMAT})")
    if problem := _shape_problem(doc):
        return ExportCheck(False, 0, 0, problem)
    events: Sequence[Mapping[str, Any]] = doc.get("events") or []
    checkpoints: Sequence[Mapping[str, Any]] = doc.get("checkpoints") or []
    if not checkpoints:  # nor is there an origin to walk the chains from
        return ExportCheck(False, 0, 0, "the export holds no signed checkpoint")
    chained = [c for c in checkpoints if c.get("format") == CHECKPOINT_FORMAT]
    origin = dict(chained[0].get("origin") or {}) if chained else {}
    # An export of format-1 checkpoints only is one chain from the genesis hash.
    tips = ChainTips(int(origin.get("event_id", 2**62)), str(origin.get("hash", GENESIS)))
    hashes: dict[int, tuple[str, str]] = {}  # id -> (its chain, its hash)
    for event in events:
        event_id = int(event["id"])
        if tips.follow(event_id, event.get("workspace"), str(event.get("prev_hash")),
                       str(event.get("hash"))):  # fmt: skip
            return ExportCheck(False, len(hashes), 0,
                               f"event {event_id} does not follow the event before it")  # fmt: skip
        if record_hash(str(event["prev_hash"]), event) != event.get("hash"):
            return ExportCheck(False, len(hashes), 0,
                               f"event {event_id}: content does not match its hash")  # fmt: skip
        hashes[event_id] = (tips.key(event_id, event.get("workspace")), str(event["hash"]))
    count = len(hashes)
    last_id = max(hashes, default=0)
    for checkpoint in checkpoints:
        if problem := _checkpoint_problem(checkpoint, public_key_pem, hashes, last_id, origin):
            return ExportCheck(False, count, 0, problem)
    newest = max(checkpoints, key=lambda c: (int(c["event_id"]), str(c.get("signed_at"))))
    if problem := _uncovered(newest, tips, last_id):
        return ExportCheck(False, count, len(checkpoints), problem)
    return ExportCheck(True, count, len(checkpoints))


_EXPORT_FIELDS = frozenset({"format", "events", "checkpoints"})
_EVENT_FIELDS = frozenset(HASHED_FIELDS) | {"prev_hash", "hash"}


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _is_int(value: Any) -> bool:
    return type(value) is int


def _shape_problem(doc: Mapping[str, Any]) -> str:
    """'' if the export has the shape ``audit export`` writes, else what and where not.

    Anything beside the hashed fields, the events and the checkpoints is covered by no
    hash or signature, so an edit there would read as the log's own: it is refused.
    """
    if added := sorted(doc.keys() - _EXPORT_FIELDS):
        return (f"the export has a field {added[0]!r} beside its events and checkpoints, "
                "which no signature covers: it was added to the export")  # fmt: skip
    events, checkpoints = doc.get("events", []), doc.get("checkpoints", [])
    if not isinstance(events, list):
        return "the export's events are not a list"
    if not isinstance(checkpoints, list):
        return "the export's checkpoints are not a list"
    for n, event in enumerate(events, start=1):
        where = f"the {_ordinal(n)} event in the export"
        if not isinstance(event, dict):
            return f"{where} is not an object"
        if not _is_int(event.get("id")):
            return f"{where} has no integer id"
        if added := sorted(event.keys() - _EVENT_FIELDS):
            return (f"event {event['id']}: field {added[0]!r} is not covered by its hash: it "
                    "was added to the export")  # fmt: skip
        if not isinstance(event.get("prev_hash"), str) or not isinstance(event.get("hash"), str):
            return f"event {event['id']} has no prev_hash or hash string"
    for n, checkpoint in enumerate(checkpoints, start=1):
        where = f"the {_ordinal(n)} checkpoint in the export"
        if not isinstance(checkpoint, dict):
            return f"{where} is not an object"
        if not _is_int(checkpoint.get("event_id")):
            return f"{where} has no integer event_id"
        origin = checkpoint.get("origin", {})
        if not isinstance(origin, dict) or not _is_int(origin.get("event_id", 0)):
            return f"{where} has a malformed origin (not {{event_id, hash}})"
        heads = checkpoint.get("heads", {})
        if not isinstance(heads, dict):
            return f"{where} has malformed heads (not {{workspace: [event id, hash]}})"
        for name, head in heads.items():
            if not (isinstance(head, list) and len(head) == 2 and _is_int(head[0])
                    and isinstance(head[1], str)):  # fmt: skip
                return (f"{where} has a malformed head for {chain_label(name)} "
                        "(not [event id, hash])")  # fmt: skip
    return ""


def _checkpoint_problem(
    checkpoint: Mapping[str, Any],
    public_key_pem: bytes,
    hashes: Mapping[int, tuple[str, str]],
    last_id: int,
    origin: Mapping[str, Any],
) -> str:
    event_id, signed_at = int(checkpoint.get("event_id", -1)), checkpoint.get("signed_at")
    label = f"the checkpoint of event {event_id} signed at {signed_at}"
    if not _verify_signature(checkpoint, public_key_pem):
        return (
            f"{label} is not signed by this public key, or its signed fields (event_id, "
            "events, signed_at, algorithm) were changed after it was signed: check that the "
            "key is this log's (`tofuflow server audit public-key` on its server)"
        )
    if checkpoint.get("format") == CHECKPOINT_FORMAT:
        heads = checkpoint.get("heads") or {}
        if heads_sha256({n: (int(h[0]), str(h[1])) for n, h in heads.items()}) != checkpoint.get(
            "chains_sha256"
        ):
            return f"{label}: its chain heads are not the ones it signed"
        if checkpoint.get("origin") != origin:
            return f"{label} names another origin than the export's first checkpoint"
        signed = [(ORIGIN, int(origin["event_id"]), str(origin["hash"]))]
        signed += [(name, int(head[0]), str(head[1])) for name, head in heads.items()]
    else:
        signed = [(ORIGIN, event_id, str(checkpoint.get("hash")))]
    for name, head_id, digest in signed:
        if head_id == 0:  # the origin of a log that began with chains: nothing before it
            continue
        if head_id > last_id:
            return (f"{label} covers events this export lacks: the newest events "
                    f"(after {last_id}) were removed")  # fmt: skip
        if head_id not in hashes:
            signed_event = f"event {head_id}" + (
                f" of {chain_label(name)}" if name != ORIGIN else ""
            )
            return f"{label} signed {signed_event}, which this export lacks: events were removed"
        if hashes[head_id][1] != digest or (name != ORIGIN and hashes[head_id][0] != name):
            return (f"{label} does not match the chain: the log was rewritten at or "
                    f"before event {head_id}")  # fmt: skip
    return ""


def _uncovered(newest: Mapping[str, Any], tips: ChainTips, last_id: int) -> str:
    """'' if the newest checkpoint signed every chain's newest event in the export."""
    if newest.get("format") != CHECKPOINT_FORMAT:
        if int(newest["event_id"]) < last_id:
            return f"events after {newest['event_id']} are not covered by a signed checkpoint"
        return ""
    if problem := tips.origin_problem():
        return problem
    signed = {n: (int(h[0]), str(h[1])) for n, h in (newest.get("heads") or {}).items()}
    for name, (head_id, _digest) in sorted(tips.heads().items()):
        if signed.get(name, (0, ""))[0] != head_id:
            after = signed.get(name, (tips.origin_id, ""))[0]
            return (f"events of {chain_label(name)} after {after} are not covered by a signed "
                    "checkpoint")  # fmt: skip
    for name in signed.keys() - tips.heads().keys():
        return (f"the newest checkpoint covers events of {chain_label(name)} this export "
                "lacks: they were removed")  # fmt: skip
    return ""
