"""Binary discovery and version checks, with scripts that answer like the binary."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tofuflow.errors import BinaryNotFoundError, BinaryVersionError
from tofuflow.tofu._binary import find_binary


def _fake(directory: Path, name: str, version: str, banner: str = "OpenTofu") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    doc = json.dumps({"terraform_version": version, "platform": "linux_amd64"})
    path.write_text(
        "#!/bin/sh\n"
        f'if [ "$2" = "-json" ]; then echo \'{doc}\'; else echo "{banner} v{version}"; fi\n'
    )
    path.chmod(0o755)
    return path


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("TOFUFLOW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TOFUFLOW_BINARY", raising=False)
    monkeypatch.delenv("TOFUFLOW_SKIP_VERSION_CHECK", raising=False)
    return tmp_path


def test_tofu_is_preferred_over_terraform(isolated: Path) -> None:
    _fake(isolated / "bin", "terraform", "1.11.4", "Terraform")
    _fake(isolated / "bin", "tofu", "1.10.6")
    binary = find_binary()
    assert (binary.flavor, binary.version) == ("tofu", (1, 10, 6))


def test_terraform_is_used_when_there_is_no_tofu(isolated: Path) -> None:
    _fake(isolated / "bin", "terraform", "1.11.4", "Terraform")
    binary = find_binary()
    assert (binary.flavor, binary.version_string) == ("terraform", "1.11.4")


def test_tofuflow_binary_env_wins_and_flavor_comes_from_the_banner(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake(isolated / "bin", "tofu", "1.10.6")
    custom = _fake(isolated / "opt", "iac", "1.8.0", "OpenTofu")
    monkeypatch.setenv("TOFUFLOW_BINARY", str(custom))
    binary = find_binary()
    assert (binary.path, binary.flavor) == (custom, "tofu")


def test_nothing_found_explains_how_to_install(isolated: Path) -> None:
    with pytest.raises(BinaryNotFoundError, match="tofuflow install"):
        find_binary()


def test_a_missing_explicit_binary_is_named(isolated: Path) -> None:
    with pytest.raises(BinaryNotFoundError, match="/nope/tofu"):
        find_binary("/nope/tofu")


@pytest.mark.parametrize(("name", "version"), [("tofu", "1.5.7"), ("terraform", "1.4.6")])
def test_too_old_versions_are_refused_with_the_minimum(
    isolated: Path, name: str, version: str
) -> None:
    _fake(isolated / "bin", name, version, "Terraform" if name == "terraform" else "OpenTofu")
    with pytest.raises(BinaryVersionError, match=r">= 1\.[56]"):
        find_binary()


def test_version_check_can_be_skipped_explicitly(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake(isolated / "bin", "tofu", "1.5.7")
    monkeypatch.setenv("TOFUFLOW_SKIP_VERSION_CHECK", "1")
    assert find_binary().version == (1, 5, 7)


def test_an_unreadable_version_is_a_clear_error(isolated: Path) -> None:
    path = isolated / "bin" / "tofu"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\necho not-json\n")
    path.chmod(0o755)
    with pytest.raises(BinaryVersionError, match="version -json"):
        find_binary()


def test_the_real_binary_on_this_machine_is_found() -> None:
    env_binary = os.environ.get("TOFUFLOW_BINARY")
    binary = find_binary(env_binary)
    assert binary.flavor in {"tofu", "terraform"}
    assert binary.version >= (1, 5, 0)
