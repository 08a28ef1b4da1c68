"""The control plane for tests: in a thread (fast) or as a real process (for SIGKILL)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


@dataclass
class RunningServer:
    url: str
    app: Any = None
    process: subprocess.Popen[bytes] | None = None

    def state_url(self, workspace: str) -> str:
        return f"{self.url}/v1/state/{workspace}"

    def backend_env(self, workspace: str, token: str) -> dict[str, str]:
        """The http backend configured entirely through env vars (nothing on argv)."""
        address = self.state_url(workspace)
        return {
            "TF_HTTP_ADDRESS": address,
            "TF_HTTP_LOCK_ADDRESS": f"{address}/lock",
            "TF_HTTP_UNLOCK_ADDRESS": f"{address}/lock",
            "TF_HTTP_USERNAME": "pipeline",
            "TF_HTTP_PASSWORD": token,
            "TF_HTTP_RETRY_MAX": "1",
            "TF_HTTP_RETRY_WAIT_MIN": "0",
        }


@contextmanager
def threaded_server(config: Any) -> Iterator[RunningServer]:
    """Serve ``create_app(config)`` with uvicorn in a thread on a free port: the same
    machinery as the runner's embedded control plane."""
    from tofuflow.embedded import EmbeddedControlPlane

    with EmbeddedControlPlane(config) as plane:
        yield RunningServer(plane.url, app=plane.app)


def cli_token(config_file: Path, role: str = "admin") -> str:
    """A token created as an operator does, `tofuflow server tokens create --role ROLE`
    against the server configuration ``config_file`` (its database)."""
    done = subprocess.run(
        [sys.executable, "-c", "from tofuflow.cli import main; main()", "server", "tokens",
         "create", "--role", role],
        capture_output=True, text=True, check=True,
        env={**os.environ, "TOFUFLOW_SERVER_CONFIG": str(config_file)},
    )  # fmt: skip
    return done.stdout.strip()


@contextmanager
def process_server(
    config_file: Path, port: int, log: Path, *options: str
) -> Iterator[RunningServer]:
    """Run `tofuflow server` as its own process (so a test can SIGKILL it); ``options``
    go on its command line (e.g. ``"--workers", "2"``)."""
    env = {**os.environ, "TOFUFLOW_SERVER_CONFIG": str(config_file)}
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from tofuflow.cli import main; main()", "server",
             "--port", str(port), *options],
            env=env, stdout=sink, stderr=sink,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc=proc, log=log)
        yield RunningServer(url, process=proc)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=20)


def _wait_healthy(
    url: str, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None
) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            text = log.read_text() if log else ""
            raise RuntimeError(f"tofuflow server exited with {proc.returncode}:\n{text}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"tofuflow server at {url} did not become healthy within 60 s")
