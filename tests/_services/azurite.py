"""Azurite's blob service (Microsoft's Azure Storage emulator) on a free loopback port.

    with azurite() as connection_string:
        ContainerClient.from_connection_string(connection_string, "c").create_container()

``azurite-blob`` is taken from ``<repo>/.cache/npm`` or PATH; when absent it is installed
once with npm into ``<repo>/.cache/npm`` (git-ignored), so a fresh CI machine only needs
Node.js. Override the executable with ``TOFUFLOW_AZURITE_BLOB``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from _services.npm import NPM_PREFIX, install_once

PACKAGE = "azurite@3"
START_TIMEOUT = 30.0

# Azurite's well-known development account, published in its README (not a secret).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def connection_string(port: int) -> str:
    """The connection string for the dev account on ``127.0.0.1:port``."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"
    )


def azurite_argv(executable: str, port: int, location: str) -> list[str]:
    """The command line that starts the blob service only, quietly, for any SDK version."""
    return [
        executable,
        *("--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", location),
        "--silent",
        "--skipApiVersionCheck",  # newer SDKs send API versions Azurite does not know yet
        "--loose",
        "--disableTelemetry",  # tests stay offline
    ]


@contextmanager
def azurite() -> Iterator[str]:
    """Yield a connection string to a running Azurite blob service; stops it afterwards."""
    executable = find_or_install_azurite()
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="azurite-") as location:
        stderr_path = Path(location) / "stderr.log"
        with stderr_path.open("wb") as stderr:
            # stderr goes to a file, not a pipe, so a chatty process can never block on it.
            proc = subprocess.Popen(
                azurite_argv(executable, port, str(Path(location) / "data")),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
            try:
                _wait_for_port(proc, port, stderr_path)
                yield connection_string(port)
            finally:
                _stop(proc)


def find_or_install_azurite() -> str:
    """The ``azurite-blob`` executable, installing it with npm the first time."""
    install_once(PACKAGE, lambda: _find_azurite() is not None, "the Azure Blob tests (Azurite)")
    found = _find_azurite()
    assert found is not None
    return found


def _find_azurite() -> str | None:
    local = NPM_PREFIX / "node_modules" / ".bin" / "azurite-blob"
    candidates = [os.environ.get("TOFUFLOW_AZURITE_BLOB"), str(local), shutil.which("azurite-blob")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(proc: subprocess.Popen[bytes], port: int, stderr_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    status = (
        f"exited with {proc.returncode}"
        if proc.poll() is not None
        else f"did not listen within {START_TIMEOUT:.0f}s"
    )
    stderr = stderr_path.read_text(errors="replace")[-4000:] or "(empty)"
    raise RuntimeError(f"Azurite on 127.0.0.1:{port} {status}. Its stderr:\n{stderr}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
