"""Sealed records: a blob encrypted under the keyring, stored inline or in the object store.

Run artifacts, plan documents and environment snapshots are kept this way; the record (a
JSON column) holds the wrapped key and nonce, and either the ciphertext or its blob key.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from typing import Any

from tofuflow.errors import ConflictError, CryptoError, NotFoundError
from tofuflow.server.crypto import Keyring, Sealed
from tofuflow.server.storage._blobs import BlobStore

__all__ = ["open_record", "seal_record"]


def seal_record(
    keyring: Keyring, blobs: BlobStore | None, data: bytes, aad: bytes, prefix: str
) -> dict[str, Any]:
    sealed = keyring.seal(data, aad)
    record = {"key_id": sealed.key_id, "wrapped_key": _b64(sealed.wrapped_key),
              "nonce": _b64(sealed.nonce)}  # fmt: skip
    if blobs is not None:
        key = f"{prefix}/{uuid.uuid4().hex}"
        blobs.put(key, sealed.ciphertext)
        record["blob_key"] = key
    else:
        record["ciphertext"] = _b64(sealed.ciphertext)
    return record


def open_record(
    keyring: Keyring, blobs: BlobStore | None, record: Mapping[str, Any], aad: bytes, what: str
) -> bytes:
    """The plaintext; ConflictError (never the data) when it was altered at rest."""
    if "blob_key" in record:
        if blobs is None:
            raise NotFoundError(f"{what} lives in an object store this server does not use")
        ciphertext = blobs.get(str(record["blob_key"]))
    else:
        ciphertext = base64.b64decode(record["ciphertext"])
    sealed = Sealed(
        str(record["key_id"]), base64.b64decode(record["wrapped_key"]),
        base64.b64decode(record["nonce"]), ciphertext,
    )  # fmt: skip
    try:
        return keyring.open(sealed, aad)
    except CryptoError as exc:
        raise ConflictError(
            f"the stored {what} failed its integrity check (it was altered at rest): do not use it"
        ) from exc


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
