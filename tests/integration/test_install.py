"""`tofuflow install` against a real HTTP server that serves a release-shaped directory."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import stat
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import gnupg
import pytest
from click.testing import CliRunner

from tofuflow.cli._install_cmd import install as install_command
from tofuflow.errors import ChecksumMismatchError, ConfigError, InstallError, SignatureError
from tofuflow.tofu._install import (
    CACHE_DIR_ENV,
    DEFAULT_VERSION,
    OPENTOFU_SIGNING_KEY_FINGERPRINT,
    SIGNING_KEY_ENV,
    host_platform,
    install,
    installed_versions,
    read_record,
)

VERSION = "1.10.6"
OS_NAME, ARCH = host_platform()


def tofu_script(version: str) -> bytes:
    """A stand-in `tofu` that answers `version -json` like the real binary."""
    doc = json.dumps({"terraform_version": version, "platform": f"{OS_NAME}_{ARCH}"})
    return f"#!/bin/sh\nif [ \"$1\" = version ]; then echo '{doc}'; fi\n".encode()


def release_zip(members: dict[str, bytes], *, symlinks: frozenset[str] = frozenset()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            mode = stat.S_IFLNK | 0o777 if name in symlinks else stat.S_IFREG | 0o755
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return buffer.getvalue()


def genuine_zip(version: str = VERSION) -> bytes:
    return release_zip(
        {"tofu": tofu_script(version), "LICENSE": b"MPL-2.0\n", "README.md": b"# OpenTofu\n"}
    )


def zip_name(version: str = VERSION) -> str:
    return f"tofu_{version}_{OS_NAME}_{ARCH}.zip"


@dataclass
class ReleaseKey:
    """A GPG key made for the test (OpenTofu's own private key is, rightly, not at hand)."""

    gpg: Any
    fingerprint: str
    public_key: Path

    def sign(self, data: bytes) -> bytes:
        """A detached binary signature, as OpenTofu publishes in ``.gpgsig``."""
        signed = self.gpg.sign(data, keyid=self.fingerprint, detach=True, binary=True)
        assert signed.data, signed.stderr
        return bytes(signed.data)


def _release_key(home: Path, email: str) -> ReleaseKey:
    home.mkdir(mode=0o700, parents=True)
    gpg = gnupg.GPG(gnupghome=str(home))
    spec = gpg.gen_key_input(key_type="EDDSA", key_curve="ed25519", key_usage="sign",
                             name_real="tofuflow test releases", name_email=email,
                             no_protection=True)  # fmt: skip
    fingerprint = str(gpg.gen_key(spec).fingerprint)
    assert fingerprint, "gpg could not generate the test key"
    public_key = home / "public.asc"
    public_key.write_text(gpg.export_keys(fingerprint))
    return ReleaseKey(gpg, fingerprint, public_key)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ReleaseKey]]:
    """The key the test trusts ("release") and an attacker's own ("attacker")."""
    root = tmp_path_factory.mktemp("gpg")
    made = {name: _release_key(root / name, f"{name}@tofuflow.invalid")
            for name in ("release", "attacker")}  # fmt: skip
    try:
        yield made
    finally:
        for name in made:  # the agents gpg started to generate and sign
            subprocess.run(["gpgconf", "--homedir", str(root / name), "--kill", "gpg-agent"],
                           check=False, capture_output=True)  # fmt: skip


@pytest.fixture(autouse=True)
def _trust_the_test_key(monkeypatch: pytest.MonkeyPatch, keys: dict[str, ReleaseKey]) -> None:
    """The pinned key swapped for the test's, by configuration, as only tests do."""
    monkeypatch.setenv(SIGNING_KEY_ENV, str(keys["release"].public_key))


@dataclass
class Release:
    """The files the server serves (URL path -> body) and every path it was asked for."""

    base_url: str
    key: ReleaseKey | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def publish(
        self, version: str, archive: bytes, *, listed: bool = True, signed: bool = True
    ) -> None:
        """Serve ``archive``, a SHA256SUMS in the real `sha256sum` format and its
        signature by the release key."""
        digest = hashlib.sha256(archive).hexdigest()
        lines = [f"{'0' * 64}  tofu_{version}_windows_386.zip"]
        if listed:
            lines.append(f"{digest}  {zip_name(version)}")
        sums = "\n".join(lines).encode() + b"\n"
        self.files[f"/v{version}/tofu_{version}_SHA256SUMS"] = sums
        self.files[f"/v{version}/{zip_name(version)}"] = archive
        if signed and self.key is not None:
            self.files[f"/v{version}/tofu_{version}_SHA256SUMS.gpgsig"] = self.key.sign(sums)


@pytest.fixture
def release(keys: dict[str, ReleaseKey]) -> Iterator[Release]:
    state = Release(base_url="", key=keys["release"])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            body = state.files.get(self.path)
            self.send_response(404 if body is None else 200)
            payload = body if body is not None else b"Not Found"
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if not p.is_dir()]


def test_install_verifies_the_release_and_the_installed_binary_runs(
    release: Release, tmp_path: Path
) -> None:
    release.publish(VERSION, genuine_zip())

    tofu = install(VERSION, cache_dir=tmp_path, base_url=release.base_url)

    assert tofu == tmp_path / "opentofu" / VERSION / f"{OS_NAME}_{ARCH}" / "tofu"
    assert stat.S_IMODE(tofu.stat().st_mode) == 0o755
    out = subprocess.run([tofu, "version", "-json"], capture_output=True, check=True)
    assert json.loads(out.stdout)["terraform_version"] == VERSION
    # Only the binary is taken out of the zip: no LICENSE/README next to it.
    assert sorted(p.name for p in tofu.parent.iterdir()) == ["install.json", "tofu"]


def test_second_install_is_served_from_the_cache_without_any_http_request(
    release: Release, tmp_path: Path
) -> None:
    release.publish(VERSION, genuine_zip())
    first = install(VERSION, cache_dir=tmp_path, base_url=release.base_url)
    release.requests.clear()

    second = install(f"v{VERSION}", cache_dir=tmp_path, base_url=release.base_url)

    assert second == first
    assert release.requests == []


def test_cached_binary_that_changed_since_install_is_downloaded_again(
    release: Release, tmp_path: Path
) -> None:
    release.publish(VERSION, genuine_zip())
    tofu = install(VERSION, cache_dir=tmp_path, base_url=release.base_url)
    tofu.write_bytes(b"#!/bin/sh\necho tampered\n")

    again = install(VERSION, cache_dir=tmp_path, base_url=release.base_url)

    assert again.read_bytes() == tofu_script(VERSION)


def test_tampered_zip_is_refused_and_leaves_no_binary_and_no_temp_files(
    release: Release, tmp_path: Path
) -> None:
    archive = genuine_zip()
    release.publish(VERSION, archive)
    tampered = bytearray(archive)
    tampered[len(tampered) // 2] ^= 0xFF
    release.files[f"/v{VERSION}/{zip_name()}"] = bytes(tampered)

    with pytest.raises(ChecksumMismatchError) as caught:
        install(VERSION, cache_dir=tmp_path, base_url=release.base_url)

    message = str(caught.value)
    assert hashlib.sha256(archive).hexdigest() in message
    assert hashlib.sha256(tampered).hexdigest() in message
    assert "discarded" in message
    assert files_under(tmp_path) == []


def test_zip_without_a_sha256sums_entry_is_refused(release: Release, tmp_path: Path) -> None:
    release.publish(VERSION, genuine_zip(), listed=False)

    with pytest.raises(ChecksumMismatchError, match=zip_name()):
        install(VERSION, cache_dir=tmp_path, base_url=release.base_url)

    assert files_under(tmp_path) == []


def test_unpublished_version_raises_install_error_naming_the_url(
    release: Release, tmp_path: Path
) -> None:
    with pytest.raises(InstallError, match="HTTP 404") as caught:
        install("9.9.9", cache_dir=tmp_path, base_url=release.base_url)

    assert f"{release.base_url}/v9.9.9/tofu_9.9.9_SHA256SUMS" in str(caught.value)
    assert "TOFUFLOW_INSTALL_BASE_URL" in str(caught.value)
    assert "TOFUFLOW_BINARY" in str(caught.value)


def test_unreachable_mirror_raises_install_error_with_the_mirror_hint(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port once the probe is closed: the connection is refused.

    with pytest.raises(InstallError, match="TOFUFLOW_INSTALL_BASE_URL"):
        install(VERSION, cache_dir=tmp_path, base_url=f"http://127.0.0.1:{port}", timeout=5)


@pytest.mark.parametrize("bad", ["latest", "1.10", "1.10.6; rm -rf /", "../1.10.6", "01.2.3"])
def test_bad_version_string_raises_config_error_before_any_download(
    release: Release, tmp_path: Path, bad: str
) -> None:
    with pytest.raises(ConfigError, match="not an OpenTofu version"):
        install(bad, cache_dir=tmp_path, base_url=release.base_url)

    assert release.requests == []


def test_zip_with_a_path_traversal_member_is_refused(release: Release, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    release.publish(VERSION, release_zip({"../tofu": tofu_script(VERSION)}))

    with pytest.raises(InstallError, match=r"\.\./tofu"):
        install(VERSION, cache_dir=cache, base_url=release.base_url)

    assert files_under(tmp_path) == []


def test_zip_whose_tofu_member_is_a_symlink_is_refused(release: Release, tmp_path: Path) -> None:
    archive = release_zip({"tofu": b"/bin/sh"}, symlinks=frozenset({"tofu"}))
    release.publish(VERSION, archive)

    with pytest.raises(InstallError, match="symlink"):
        install(VERSION, cache_dir=tmp_path, base_url=release.base_url)

    assert files_under(tmp_path) == []


def test_installed_versions_lists_this_platforms_installs_newest_first(
    release: Release, tmp_path: Path
) -> None:
    for version in ("1.9.0", "1.10.0-rc1", "1.10.0"):
        release.publish(version, genuine_zip(version))
        install(version, cache_dir=tmp_path, base_url=release.base_url)

    listed = installed_versions(tmp_path)

    assert [version for version, _ in listed] == ["1.10.0", "1.10.0-rc1", "1.9.0"]
    assert all(path.is_file() for _, path in listed)


def test_cli_install_prints_the_binary_path_and_the_verified_sha256(
    release: Release, tmp_path: Path
) -> None:
    archive = genuine_zip()
    release.publish(VERSION, archive)

    result = CliRunner().invoke(
        install_command, [VERSION, "--cache-dir", str(tmp_path), "--base-url", release.base_url]
    )

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == str(tmp_path / "opentofu" / VERSION / f"{OS_NAME}_{ARCH}" / "tofu")
    assert lines[1].startswith(f"verified sha256 {hashlib.sha256(archive).hexdigest()}")


def test_cli_install_reads_mirror_and_cache_from_the_environment(
    release: Release, tmp_path: Path
) -> None:
    release.publish(DEFAULT_VERSION, genuine_zip(DEFAULT_VERSION))
    env = {"TOFUFLOW_INSTALL_BASE_URL": release.base_url, "TOFUFLOW_CACHE_DIR": str(tmp_path)}

    result = CliRunner().invoke(install_command, [], env=env)

    assert result.exit_code == 0, result.output
    assert Path(result.output.splitlines()[0]).parent.parent.name == DEFAULT_VERSION
    assert str(tmp_path) in result.output


def test_cli_install_failure_exits_nonzero_with_the_reason(
    release: Release, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        install_command, ["9.9.9", "--cache-dir", str(tmp_path), "--base-url", release.base_url]
    )

    assert result.exit_code == 1
    assert "HTTP 404" in result.output


def test_cli_help_names_the_pinned_default_and_the_mirror_setting() -> None:
    result = CliRunner().invoke(install_command, ["--help"])

    assert DEFAULT_VERSION in result.output
    assert "TOFUFLOW_INSTALL_BASE_URL" in result.output
    assert "<cache>/opentofu/<VERSION>" in result.output


# -- the release signature ------------------------------------------------------------------


def test_the_install_record_names_the_key_that_signed_the_release(
    release: Release, tmp_path: Path, keys: dict[str, ReleaseKey]
) -> None:
    release.publish(VERSION, genuine_zip())

    record = read_record(install(VERSION, cache_dir=tmp_path, base_url=release.base_url))

    assert record is not None and record.signed_by == keys["release"].fingerprint


def test_an_unsigned_release_is_refused(release: Release, tmp_path: Path) -> None:
    release.publish(VERSION, genuine_zip(), signed=False)

    with pytest.raises(SignatureError, match=f"tofu_{VERSION}_SHA256SUMS is not signed") as caught:
        install(VERSION, cache_dir=tmp_path, base_url=release.base_url)

    assert f"tofu_{VERSION}_SHA256SUMS.gpgsig" in str(caught.value)
    assert files_under(tmp_path) == []
    assert f"/v{VERSION}/{zip_name()}" not in release.requests  # refused before the zip


def test_a_swapped_sha256sums_with_a_valid_checksum_for_a_swapped_zip_is_refused(
    release: Release, tmp_path: Path, keys: dict[str, ReleaseKey]
) -> None:
    """The attack the checksum alone cannot catch: a compromised origin replaces the zip
    and SHA256SUMS together (the checksums match), keeping OpenTofu's signature file."""
    release.publish(VERSION, genuine_zip())
    signature = release.files[f"/v{VERSION}/tofu_{VERSION}_SHA256SUMS.gpgsig"]
    evil = release_zip({"tofu": b"#!/bin/sh\necho pwned\n"})
    release.publish(VERSION, evil, signed=False)
    release.files[f"/v{VERSION}/tofu_{VERSION}_SHA256SUMS.gpgsig"] = signature

    with pytest.raises(SignatureError) as caught:
        install(VERSION, cache_dir=tmp_path, base_url=release.base_url)

    message = str(caught.value)
    assert f"is not signed by {keys['release'].fingerprint}" in message
    assert "nothing was installed" in message
    assert files_under(tmp_path) == []


def test_a_release_the_attacker_signed_with_their_own_key_is_refused(
    release: Release, tmp_path: Path, keys: dict[str, ReleaseKey]
) -> None:
    release.key = keys["attacker"]
    release.publish(VERSION, release_zip({"tofu": b"#!/bin/sh\necho pwned\n"}))

    with pytest.raises(SignatureError, match=f"not signed by {keys['release'].fingerprint}"):
        install(VERSION, cache_dir=tmp_path, base_url=release.base_url)

    assert files_under(tmp_path) == []


def test_without_configuration_only_opentofus_pinned_key_is_trusted(
    release: Release, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SIGNING_KEY_ENV)
    release.publish(VERSION, genuine_zip())  # signed, but by the test's key

    with pytest.raises(SignatureError) as caught:
        install(VERSION, cache_dir=tmp_path, base_url=release.base_url)

    # The vendored key was imported and has the pinned fingerprint (else another error).
    assert f"is not signed by {OPENTOFU_SIGNING_KEY_FINGERPRINT}" in str(caught.value)
    assert OPENTOFU_SIGNING_KEY_FINGERPRINT == "E3E6E43D84CB852EADB0051D0C0AF313E5FD9F80"


def test_cli_install_refuses_a_wrongly_signed_release_with_the_reason(
    release: Release, tmp_path: Path, keys: dict[str, ReleaseKey]
) -> None:
    release.key = keys["attacker"]
    release.publish(VERSION, genuine_zip())

    result = CliRunner().invoke(
        install_command, [VERSION, "--cache-dir", str(tmp_path), "--base-url", release.base_url]
    )

    assert result.exit_code == 1
    assert f"is not signed by {keys['release'].fingerprint}" in result.output


def test_the_cli_references_install_sample_is_what_install_prints(
    release: Release, tmp_path: Path
) -> None:
    """docs/cli.md's `tofuflow install` sample, the command as written (so the default
    version and the user cache dir) against the mirror TOFUFLOW_INSTALL_BASE_URL names; the
    sample's platform is this machine's, its `<64 hex digits>` the zip's digest."""
    import os
    import sys

    from test_readme_sequences import _assert_printed, _sample, _terminal

    archive = genuine_zip(DEFAULT_VERSION)
    release.publish(DEFAULT_VERSION, archive)
    env = {
        **{k: v for k, v in os.environ.items() if k != CACHE_DIR_ENV},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "TOFUFLOW_INSTALL_BASE_URL": release.base_url,
    }
    command, sample = _sample("docs/cli.md", "On success it prints the binary's path")
    code, printed = _terminal(command, tmp_path, env)
    assert code == 0, printed
    here = {
        "/home/me/.cache": tmp_path / "cache",
        "linux_amd64": f"{OS_NAME}_{ARCH}",
        "<64 hex digits>": hashlib.sha256(archive).hexdigest(),
    }
    _assert_printed(sample, printed, "docs/cli.md's `tofuflow install` sample", here)
