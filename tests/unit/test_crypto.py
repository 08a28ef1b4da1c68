"""Envelope encryption and the local and passphrase key providers (no network)."""

from __future__ import annotations

import dataclasses
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import tofuflow.server.crypto as crypto
from tofuflow.errors import ConfigError, CryptoError
from tofuflow.server.crypto import (
    Keyring,
    LocalKeyProvider,
    PassphraseKeyProvider,
    Sealed,
    key_provider_from_config,
    keyring_from_config,
)

CANARY = b"canary-s3cr3t-value"
STATE = b'{"version": 4, "serial": 7, "outputs": {"password": "' + CANARY + b'"}}'
AAD = b"workspace=app/prod;version=7"


@pytest.fixture
def local(tmp_path: Path) -> LocalKeyProvider:
    return LocalKeyProvider.generate(tmp_path / "keys" / "local.key")


def passphrase_provider(tmp_path: Path, passphrase: str) -> PassphraseKeyProvider:
    salt = PassphraseKeyProvider.load_or_create_salt(tmp_path / "keys" / "passphrase.salt")
    return PassphraseKeyProvider(passphrase, salt)


def flip(data: bytes, index: int = 0) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def test_public_api_is_pinned() -> None:
    assert set(crypto.__all__) == {
        "AwsKmsKeyProvider", "KeyProvider", "Keyring", "LocalKeyProvider",
        "PassphraseKeyProvider", "Sealed", "key_provider_from_config", "keyring_from_config",
    }  # fmt: skip


# --- envelope -----------------------------------------------------------------------------


def test_sealed_data_opens_with_the_same_aad(local: LocalKeyProvider) -> None:
    keyring = Keyring(local)
    sealed = keyring.seal(STATE, AAD)
    assert sealed.key_id == local.key_id
    assert keyring.open(sealed, AAD) == STATE


def test_empty_plaintext_round_trips(local: LocalKeyProvider) -> None:
    keyring = Keyring(local)
    assert keyring.open(keyring.seal(b"", AAD), AAD) == b""


def test_sealed_fields_never_contain_the_plaintext(local: LocalKeyProvider) -> None:
    sealed = Keyring(local).seal(STATE, AAD)
    stored = sealed.key_id.encode() + sealed.wrapped_key + sealed.nonce + sealed.ciphertext
    assert CANARY not in stored
    assert CANARY.decode() not in repr(sealed)


def test_every_seal_uses_a_fresh_data_key_and_nonce(local: LocalKeyProvider) -> None:
    keyring = Keyring(local)
    first, second = keyring.seal(STATE, AAD), keyring.seal(STATE, AAD)
    assert first.wrapped_key != second.wrapped_key
    assert first.nonce != second.nonce
    assert first.ciphertext != second.ciphertext


def test_wrong_aad_is_refused(local: LocalKeyProvider) -> None:
    keyring = Keyring(local)
    sealed = keyring.seal(STATE, AAD)
    with pytest.raises(CryptoError, match="context"):
        keyring.open(sealed, b"workspace=app/prod;version=8")


@pytest.mark.parametrize("name", ["ciphertext", "nonce", "wrapped_key"])
def test_a_flipped_byte_is_refused(local: LocalKeyProvider, name: str) -> None:
    keyring = Keyring(local)
    sealed = keyring.seal(STATE, AAD)
    for index in (0, -1):
        altered = dataclasses.replace(sealed, **{name: flip(getattr(sealed, name), index)})
        with pytest.raises(CryptoError, match=local.key_id):
            keyring.open(altered, AAD)


@pytest.mark.parametrize("name", ["ciphertext", "nonce", "wrapped_key"])
def test_a_truncated_field_is_refused(local: LocalKeyProvider, name: str) -> None:
    keyring = Keyring(local)
    sealed = keyring.seal(STATE, AAD)
    for length in (0, 5):
        altered = dataclasses.replace(sealed, **{name: getattr(sealed, name)[:length]})
        with pytest.raises(CryptoError):
            keyring.open(altered, AAD)


def test_unknown_key_id_says_to_add_it_to_previous_keys(
    tmp_path: Path, local: LocalKeyProvider
) -> None:
    sealed = Keyring(local).seal(STATE, AAD)
    other = LocalKeyProvider.generate(tmp_path / "other.key")
    with pytest.raises(CryptoError) as info:
        Keyring(other).open(sealed, AAD)
    assert str(info.value).startswith(
        f"data was sealed with key {local.key_id} which is not configured: add it to previous keys"
    )


def test_previous_keys_still_open_old_data(tmp_path: Path, local: LocalKeyProvider) -> None:
    sealed = Keyring(local).seal(STATE, AAD)
    new = LocalKeyProvider.generate(tmp_path / "new.key")
    keyring = Keyring(new, previous=[local])
    assert keyring.key_ids == (new.key_id, local.key_id)
    assert keyring.open(sealed, AAD) == STATE
    assert keyring.seal(STATE, AAD).key_id == new.key_id


def test_needs_rewrap_only_for_keys_other_than_the_current(
    tmp_path: Path, local: LocalKeyProvider
) -> None:
    new = LocalKeyProvider.generate(tmp_path / "new.key")
    keyring = Keyring(new, previous=[local])
    assert keyring.needs_rewrap(local.key_id)
    assert not keyring.needs_rewrap(new.key_id)


def test_after_rewrap_the_new_key_alone_opens_the_untouched_ciphertext(
    tmp_path: Path, local: LocalKeyProvider
) -> None:
    sealed = Keyring(local).seal(STATE, AAD)
    new = LocalKeyProvider.generate(tmp_path / "new.key")
    key_id, wrapped_key = Keyring(new, previous=[local]).rewrap(
        sealed.key_id, sealed.wrapped_key, AAD
    )
    rewrapped = dataclasses.replace(sealed, key_id=key_id, wrapped_key=wrapped_key)
    assert key_id == new.key_id
    assert Keyring(new).open(rewrapped, AAD) == STATE
    with pytest.raises(CryptoError, match="not configured"):
        Keyring(local).open(rewrapped, AAD)


def test_rewrap_of_data_already_under_the_current_key_changes_nothing(
    local: LocalKeyProvider,
) -> None:
    keyring = Keyring(local)
    sealed = keyring.seal(STATE, AAD)
    assert keyring.rewrap(sealed.key_id, sealed.wrapped_key, AAD) == (
        sealed.key_id,
        sealed.wrapped_key,
    )


def test_rewrap_with_the_wrong_aad_is_refused(tmp_path: Path, local: LocalKeyProvider) -> None:
    sealed = Keyring(local).seal(STATE, AAD)
    keyring = Keyring(LocalKeyProvider.generate(tmp_path / "new.key"), previous=[local])
    with pytest.raises(CryptoError, match=local.key_id):
        keyring.rewrap(sealed.key_id, sealed.wrapped_key, b"workspace=other;version=7")


def test_sealed_from_stored_columns_opens(local: LocalKeyProvider) -> None:
    keyring = Keyring(local)
    sealed = keyring.seal(STATE, AAD)
    row = (sealed.key_id, sealed.wrapped_key, sealed.nonce, sealed.ciphertext)
    assert keyring.open(Sealed(*row), AAD) == STATE


# --- local key file -----------------------------------------------------------------------


def test_local_key_file_is_created_0600_in_a_0700_directory(tmp_path: Path) -> None:
    path = tmp_path / "data" / "keys" / "local.key"
    provider = LocalKeyProvider.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(path.read_bytes()) == 32
    assert [p.name for p in path.parent.iterdir()] == ["local.key"]  # no temp file left
    assert provider.key_id.startswith("local:")


def test_local_key_is_reused_on_the_next_start(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "local.key"
    sealed = Keyring(LocalKeyProvider.load_or_create(path)).seal(STATE, AAD)
    again = LocalKeyProvider.load_or_create(path)
    assert again.key_id == sealed.key_id
    assert Keyring(again).open(sealed, AAD) == STATE


def test_servers_starting_at_once_share_one_local_key(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "local.key"
    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = set(pool.map(lambda _: LocalKeyProvider.load_or_create(path).key_id, range(16)))
    assert ids == {LocalKeyProvider(path).key_id}
    assert [p.name for p in path.parent.iterdir()] == ["local.key"]


def test_local_key_id_does_not_reveal_the_key(local: LocalKeyProvider) -> None:
    assert local.path.read_bytes().hex()[:8] not in local.key_id


def test_local_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "local.key"
    LocalKeyProvider.generate(path)
    path.chmod(0o644)
    with pytest.raises(CryptoError) as info:
        LocalKeyProvider(path)
    assert f"chmod 600 {path}" in str(info.value)
    with pytest.raises(CryptoError, match="chmod 600"):
        LocalKeyProvider.load_or_create(path)


def test_generate_refuses_to_replace_an_existing_key(local: LocalKeyProvider) -> None:
    before = local.path.read_bytes()
    with pytest.raises(CryptoError, match="refusing to replace"):
        LocalKeyProvider.generate(local.path)
    assert local.path.read_bytes() == before


def test_key_file_of_the_wrong_length_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "short.key"
    path.write_bytes(b"0" * 16)
    path.chmod(0o600)
    with pytest.raises(CryptoError, match="16 bytes, not a 32-byte key"):
        LocalKeyProvider(path)


def test_missing_key_file_says_to_restore_it(tmp_path: Path) -> None:
    with pytest.raises(CryptoError, match=r"does not exist .*: restore it"):
        LocalKeyProvider(tmp_path / "gone.key")


# --- passphrase ---------------------------------------------------------------------------


def test_passphrase_key_opens_data_after_a_restart(tmp_path: Path) -> None:
    sealed = Keyring(passphrase_provider(tmp_path, "correct horse")).seal(STATE, AAD)
    again = passphrase_provider(tmp_path, "correct horse")
    assert again.key_id == sealed.key_id
    assert Keyring(again).open(sealed, AAD) == STATE


def test_salt_file_holds_only_the_salt(tmp_path: Path) -> None:
    passphrase_provider(tmp_path, "correct horse")
    salt_file = tmp_path / "keys" / "passphrase.salt"
    assert len(salt_file.read_bytes()) == 16
    assert b"correct horse" not in salt_file.read_bytes()


def test_wrong_passphrase_is_reported_as_such(tmp_path: Path) -> None:
    right = passphrase_provider(tmp_path, "correct horse")
    sealed = Keyring(right).seal(STATE, AAD)
    wrong = passphrase_provider(tmp_path, "battery staple")
    assert wrong.key_id != right.key_id
    with pytest.raises(CryptoError, match="passphrase does not match the one the data was"):
        Keyring(wrong).open(sealed, AAD)
    with pytest.raises(CryptoError, match="passphrase does not match the one the data was"):
        wrong.unwrap(sealed.wrapped_key, AAD)


def test_same_passphrase_with_another_salt_is_another_key(tmp_path: Path) -> None:
    first = passphrase_provider(tmp_path / "a", "correct horse")
    second = passphrase_provider(tmp_path / "b", "correct horse")
    assert first.key_id != second.key_id


def test_empty_passphrase_is_refused() -> None:
    with pytest.raises(ConfigError, match="passphrase is empty"):
        PassphraseKeyProvider("", b"s" * 16)


# --- configuration ------------------------------------------------------------------------


def test_empty_config_uses_a_local_key_file_in_the_data_dir(tmp_path: Path) -> None:
    keyring = keyring_from_config({}, tmp_path)
    path = tmp_path / "keys" / "local.key"
    assert keyring.key_ids == (LocalKeyProvider(path).key_id,)


def test_local_config_path_is_relative_to_the_data_dir(tmp_path: Path) -> None:
    provider = key_provider_from_config({"kind": "local", "path": "k/main.key"}, tmp_path)
    assert isinstance(provider, LocalKeyProvider)
    assert provider.path == tmp_path / "k" / "main.key"
    assert provider.path.exists()


def test_passphrase_comes_from_the_named_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_PASSPHRASE", "correct horse")
    cfg = {"kind": "passphrase", "passphrase_env": "MY_PASSPHRASE"}
    provider = key_provider_from_config(cfg, tmp_path)
    assert provider.key_id == passphrase_provider(tmp_path, "correct horse").key_id


def test_missing_passphrase_env_var_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOFUFLOW_KEY_PASSPHRASE", raising=False)
    with pytest.raises(ConfigError, match="TOFUFLOW_KEY_PASSPHRASE"):
        key_provider_from_config({"kind": "passphrase"}, tmp_path)


def test_passphrase_in_the_config_file_is_refused(tmp_path: Path) -> None:
    cfg = {"kind": "passphrase", "passphrase": "correct horse"}
    with pytest.raises(ConfigError, match="never write the passphrase into the configuration"):
        key_provider_from_config(cfg, tmp_path)


def test_unknown_kind_lists_the_valid_kinds(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="use one of aws-kms, local, passphrase"):
        key_provider_from_config({"kind": "vault"}, tmp_path)


def test_unknown_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown option.*pth"):
        key_provider_from_config({"kind": "local", "pth": "x.key"}, tmp_path)


def test_aws_kms_without_key_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs key_id"):
        key_provider_from_config({"kind": "aws-kms", "region": "us-east-1"}, tmp_path)


def test_aws_kms_without_a_region_says_where_to_set_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    with pytest.raises(ConfigError, match="set region"):
        key_provider_from_config({"kind": "aws-kms", "key_id": "alias/tofuflow"}, tmp_path)


def test_a_previous_key_file_is_never_created(tmp_path: Path) -> None:
    cfg = {"previous": [{"kind": "local", "path": "old.key"}]}
    with pytest.raises(CryptoError, match=r"old\.key does not exist"):
        keyring_from_config(cfg, tmp_path)
    assert not (tmp_path / "old.key").exists()


def test_keyring_config_rotates_from_local_to_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = keyring_from_config({}, tmp_path)
    sealed = old.seal(STATE, AAD)
    monkeypatch.setenv("TOFUFLOW_KEY_PASSPHRASE", "correct horse")
    keyring = keyring_from_config(
        {"current": {"kind": "passphrase"}, "previous": [{"kind": "local"}]}, tmp_path
    )
    assert keyring.needs_rewrap(sealed.key_id)
    assert keyring.open(sealed, AAD) == STATE
    assert keyring.seal(STATE, AAD).key_id.startswith("passphrase:")


def test_key_tables_without_a_kind_are_local_as_without_the_tables(tmp_path: Path) -> None:
    default = keyring_from_config({}, tmp_path).current.key_id
    assert keyring_from_config({"current": {}}, tmp_path).current.key_id == default
    written = {"current": {"path": "keys/new.key"}, "previous": [{"path": "keys/local.key"}]}
    keyring = keyring_from_config(written, tmp_path)
    assert keyring.key_ids == (keyring.current.key_id, default)
    assert keyring.current.key_id != default


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"curent": {"kind": "local"}}, "unknown option.*curent"),
        ({"current": "local"}, "keys.current must be a table"),
        ({"previous": {"kind": "local"}}, "keys.previous must be an array"),
        ({"previous": [{"kind": "nope"}]}, r"keys.previous\[0\].kind is 'nope'"),
    ],
)
def test_malformed_keys_config_is_refused(tmp_path: Path, cfg: object, message: str) -> None:
    assert isinstance(cfg, dict)
    with pytest.raises(ConfigError, match=message):
        keyring_from_config(cfg, tmp_path)
