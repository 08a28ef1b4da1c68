"""Envelope encryption: a fresh data key per object, wrapped by a key provider.

    keyring = Keyring(current=LocalKeyProvider.load_or_create(path))
    sealed = keyring.seal(state_bytes, aad=b"workspace=app/prod;version=7")
    state_bytes = keyring.open(sealed, aad=b"workspace=app/prod;version=7")

Rotation never touches ciphertext: configure the new key as current and the old one as
previous, then ``rewrap`` each object's small wrapped key while the server keeps serving.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tofuflow.errors import ConfigError, CryptoError
from tofuflow.server.crypto._keys import (
    KEY_BYTES,
    NONCE_BYTES,
    KeyProvider,
    _missing_key_message,
    key_provider_from_config,
)

__all__ = ["Keyring", "Sealed", "keyring_from_config"]


@dataclass(frozen=True)
class Sealed:
    """One encrypted object: three small fields for a database row, and the ciphertext.

    ``key_id`` names the provider that wrapped ``wrapped_key``; ``nonce`` and
    ``ciphertext`` are AES-256-GCM under the data key (the tag ends the ciphertext).
    """

    key_id: str
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes = field(repr=False)  # may be megabytes; never useful in a log line


class Keyring:
    """Seals with the current key; opens with the current or any previous key.

        keyring = Keyring(current=new_provider, previous=[old_provider])
        if keyring.needs_rewrap(row.key_id):
            row.key_id, row.wrapped_key = keyring.rewrap(row.key_id, row.wrapped_key, aad)

    Data keys live in a ``bytearray`` that is zeroed as soon as it has been used. That
    narrows the window, but Python cannot guarantee wiping: the library and the providers
    may hold short-lived copies that are freed, not overwritten.
    """

    def __init__(self, current: KeyProvider, previous: Sequence[KeyProvider] = ()) -> None:
        self._current = current
        self._providers: dict[str, KeyProvider] = {}
        for provider in (current, *previous):
            self._providers.setdefault(provider.key_id, provider)

    @property
    def current(self) -> KeyProvider:
        return self._current

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every configured key id, the current one first."""
        return tuple(self._providers)

    @property
    def seals_in_process(self) -> bool:
        """Whether ``seal`` stays in this process (a local or passphrase key), or asks a
        cloud KMS over the network to wrap each data key."""
        from tofuflow.server.crypto._keys import LocalKeyProvider, PassphraseKeyProvider

        return isinstance(self._current, (LocalKeyProvider, PassphraseKeyProvider))

    def needs_rewrap(self, key_id: str) -> bool:
        """Whether an object wrapped under ``key_id`` should move to the current key."""
        return key_id != self._current.key_id

    def seal(self, plaintext: bytes, aad: bytes) -> Sealed:
        """Encrypt ``plaintext`` under a fresh data key bound to ``aad``."""
        nonce = os.urandom(NONCE_BYTES)
        with _scrubbed(os.urandom(KEY_BYTES)) as data_key:
            ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, aad)
            wrapped = self._current.wrap(data_key, aad)
        return Sealed(self._current.key_id, wrapped, nonce, ciphertext)

    def open(self, sealed: Sealed, aad: bytes) -> bytes:
        """Decrypt ``sealed``; CryptoError for an unknown key, another ``aad``, altered bytes."""
        if len(sealed.nonce) != NONCE_BYTES:
            raise _tampered(sealed.key_id)
        with self._unwrapped(sealed.key_id, sealed.wrapped_key, aad) as data_key:
            try:
                return AESGCM(data_key).decrypt(sealed.nonce, sealed.ciphertext, aad)
            except InvalidTag as exc:
                raise _tampered(sealed.key_id) from exc

    def rewrap(self, key_id: str, wrapped_key: bytes, aad: bytes) -> tuple[str, bytes]:
        """Move one wrapped data key to the current key; the ciphertext stays as it is.

        Returns ``(key_id, wrapped_key)`` to store in place of the old pair (unchanged when
        it already uses the current key).
        """
        if not self.needs_rewrap(key_id):
            return key_id, wrapped_key
        with self._unwrapped(key_id, wrapped_key, aad) as data_key:
            return self._current.key_id, self._current.wrap(data_key, aad)

    @contextmanager
    def _unwrapped(self, key_id: str, wrapped_key: bytes, aad: bytes) -> Iterator[bytearray]:
        provider = self._providers.get(key_id)
        if provider is None:
            raise CryptoError(_missing_key_message(key_id, self.key_ids))
        with _scrubbed(provider.unwrap(wrapped_key, aad)) as data_key:
            if len(data_key) != KEY_BYTES:
                raise CryptoError(
                    f"key {key_id} unwrapped a {len(data_key)}-byte data key, not "
                    f"{KEY_BYTES}: the wrapped key is not one tofuflow wrote"
                )
            yield data_key


@contextmanager
def _scrubbed(key: bytes) -> Iterator[bytearray]:
    """A mutable copy of ``key``, zeroed when the block ends (the immutable original is
    only dropped: Python cannot overwrite a ``bytes``)."""
    buffer = bytearray(key)
    try:
        yield buffer
    finally:
        buffer[:] = bytes(len(buffer))


def _tampered(key_id: str) -> CryptoError:
    return CryptoError(
        f"could not open data sealed with key {key_id}: its ciphertext or nonce was altered "
        "or truncated; restore the object from a backup"
    )


def keyring_from_config(cfg: Mapping[str, Any], data_dir: Path, *, create: bool = True) -> Keyring:
    """Build the keyring from the ``[keys]`` table of the server configuration.

        keyring_from_config({}, data_dir)   # a local key file at data_dir/keys/local.key
        keyring_from_config({"current": {"kind": "aws-kms", "key_id": arn},
                             "previous": [{"kind": "local"}]}, data_dir)

    Previous keys must exist already: they are never created. ``create=False`` does not
    create the current key file or salt either (a database that already holds sealed
    data: a key made now would be this process's alone, unknown to other replicas).
    """
    unknown = sorted(set(cfg) - {"current", "previous"})
    if unknown:
        raise ConfigError(f"keys: unknown option(s) {', '.join(unknown)}: use current, previous")
    current_cfg = cfg.get("current", {"kind": "local"})
    previous_cfgs = cfg.get("previous", [])
    if not isinstance(current_cfg, Mapping):
        raise ConfigError('keys.current must be a table, e.g. [keys.current] kind = "local"')
    if not isinstance(previous_cfgs, list | tuple) or not all(
        isinstance(c, Mapping) for c in previous_cfgs
    ):
        raise ConfigError("keys.previous must be an array of tables ([[keys.previous]])")
    current = key_provider_from_config(current_cfg, data_dir, create=create)
    previous = [
        key_provider_from_config(c, data_dir, create=False, where=f"keys.previous[{i}]")
        for i, c in enumerate(previous_cfgs)
    ]
    return Keyring(current, previous)
