"""Encryption at rest: envelope encryption with pluggable key providers.

    keyring = keyring_from_config(config.keys, config.data_dir)
    sealed = keyring.seal(state, aad=b"workspace=app/prod;version=7")
    state = keyring.open(sealed, aad=b"workspace=app/prod;version=7")

Each object gets its own AES-256-GCM data key; a key provider (local key file,
passphrase, AWS KMS) wraps it. Every failure is a ``tofuflow.errors.CryptoError``.
"""

from __future__ import annotations

from tofuflow.server.crypto._envelope import Keyring, Sealed, keyring_from_config
from tofuflow.server.crypto._keys import (
    AwsKmsKeyProvider,
    KeyProvider,
    LocalKeyProvider,
    PassphraseKeyProvider,
    key_provider_from_config,
)

__all__ = [
    "AwsKmsKeyProvider",
    "KeyProvider",
    "Keyring",
    "LocalKeyProvider",
    "PassphraseKeyProvider",
    "Sealed",
    "key_provider_from_config",
    "keyring_from_config",
]
