"""pyvider-components: a provider that refreshes real objects, offline (PROTOCOLS §6).

Built-in ``terraform_data`` never drifts; ``pyvider_file_content`` writes a file and reads
it back on refresh, so editing or deleting the file out of band is real drift. The
provider is not a project dependency: it is installed on demand into its own venv under
the repository's ``.cache/`` (git-ignored; ~40 s the first time, then reused) and handed
to the binary through a filesystem mirror and a CLI configuration file, no registry.

    def test_x(pyvider: Pyvider, monkeypatch): monkeypatch.setenv(*pyvider.cli_config_env)

A test that needs it FAILS, never skips, when it cannot be installed.
"""

from __future__ import annotations

import fcntl
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["PROVIDER_SOURCE", "Pyvider", "ensure_pyvider", "pyvider"]

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache"
PACKAGE = "pyvider-components"
PROVIDER_SOURCE = "local/providers/pyvider"
_READY = ".tofuflow-ready"
_INSTALL_TIMEOUT = 600


@dataclass(frozen=True)
class Pyvider:
    venv: Path
    version: str
    mirror: Path
    cli_config: Path

    @property
    def cli_config_env(self) -> tuple[str, str]:
        """``("TF_CLI_CONFIG_FILE", path)``: what the binary needs to find the provider."""
        return "TF_CLI_CONFIG_FILE", str(self.cli_config)


def ensure_pyvider(cache: Path = CACHE) -> Pyvider:
    """Install pyvider-components (once) and build the mirror and CLI config for it."""
    cache.mkdir(parents=True, exist_ok=True)
    with _exclusive(cache / "pyvider.lock"):
        venv = cache / "pyvider-venv"
        if not (venv / _READY).is_file():
            _install(venv)
        version = _version(venv)
        mirror = cache / "pyvider-mirror"
        launcher = mirror / PROVIDER_SOURCE / version / _platform() / "terraform-provider-pyvider"
        launcher.parent.mkdir(parents=True, exist_ok=True)
        # The plugin handshake: pyvider reads PLUGIN_MAGIC_COOKIE_VALUE, the binary sets
        # TF_PLUGIN_MAGIC_COOKIE.
        _write_if_changed(launcher, (
            "#!/bin/sh\n"
            'export PLUGIN_MAGIC_COOKIE_VALUE="$TF_PLUGIN_MAGIC_COOKIE"\n'
            f'exec "{venv / "bin" / "pyvider"}" provide "$@"\n'
        ))  # fmt: skip
        launcher.chmod(0o755)
        cli_config = cache / "pyvider.tfrc"
        _write_if_changed(cli_config, (
            "provider_installation {\n"
            "  filesystem_mirror {\n"
            f"    path    = \"{mirror}\"\n"
            '    include = ["local/providers/*"]\n'
            "  }\n"
            "  direct {\n"
            '    exclude = ["local/providers/*"]\n'
            "  }\n"
            "}\n"
        ))  # fmt: skip
    return Pyvider(venv=venv, version=version, mirror=mirror, cli_config=cli_config)


@pytest.fixture(scope="session")
def pyvider() -> Pyvider:
    """pyvider-components ready for the binary; a clear failure when it cannot be."""
    try:
        return ensure_pyvider()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


def _install(venv: Path) -> None:
    shutil.rmtree(venv, ignore_errors=True)  # a half-built venv from an interrupted run
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", PACKAGE],
    ]
    for argv in steps:
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeError(_failed(venv, argv, str(exc))) from exc
        if done.returncode != 0:
            raise RuntimeError(_failed(venv, argv, (done.stderr or done.stdout)[-3000:]))
    if not (venv / "bin" / "pyvider").is_file():
        raise RuntimeError(_failed(venv, ["pip install", PACKAGE], "no bin/pyvider afterwards"))
    (venv / _READY).write_text(f"{PACKAGE}\n")


def _failed(venv: Path, argv: list[str], detail: str) -> str:
    return (
        f"cannot install {PACKAGE} for the drift tests (a provider that refreshes real "
        f"objects, PROTOCOLS §6) into {venv}: `{' '.join(argv)}` failed:\n{detail.strip()}\n"
        f"These tests need it. Make PyPI (or a mirror pip is configured for) reachable, or "
        f"install it by hand: {sys.executable} -m venv {venv} && "
        f"{venv}/bin/pip install {PACKAGE} && touch {venv / _READY}"
    )


def _version(venv: Path) -> str:
    probe = "import importlib.metadata as m; print(m.version('pyvider'))"
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    version = done.stdout.strip()
    if done.returncode != 0 or not version:
        raise RuntimeError(
            f"pyvider is installed in {venv} but its version cannot be read "
            f"({done.stderr.strip()[-500:]}): delete {venv} to reinstall it"
        )
    return version


def _platform() -> str:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        machine, machine
    )
    return f"{sys.platform}_{arch}"  # linux_amd64, darwin_arm64


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """One installer at a time (parallel test processes share the cache)."""
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
