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

import pytest
from click.testing import CliRunner

from tofuflow.cli._install_cmd import install as install_command
from tofuflow.errors import ChecksumMismatchError, ConfigError, InstallError
from tofuflow.tofu._install import DEFAULT_VERSION, host_platform, install, installed_versions

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
class Release:
    """The files the server serves (URL path -> body) and every path it was asked for."""

    base_url: str
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def publish(self, version: str, archive: bytes, *, listed: bool = True) -> None:
        """Serve ``archive`` and a SHA256SUMS in the real `sha256sum` format."""
        digest = hashlib.sha256(archive).hexdigest()
        lines = [f"{'0' * 64}  tofu_{version}_windows_386.zip"]
        if listed:
            lines.append(f"{digest}  {zip_name(version)}")
        self.files[f"/v{version}/tofu_{version}_SHA256SUMS"] = "\n".join(lines).encode() + b"\n"
        self.files[f"/v{version}/{zip_name(version)}"] = archive


@pytest.fixture
def release() -> Iterator[Release]:
    state = Release(base_url="")

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
