"""The embedded default: the control plane in-process on 127.0.0.1, SQLite, a local key.

With no server configured, the runner starts the same app a deployment runs, under the
user's data directory, and mints short-lived tokens for itself — the same code, no mocks.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import httpx

from tofuflow.errors import StorageError

__all__ = ["EmbeddedControlPlane"]


class EmbeddedControlPlane:
    """``with EmbeddedControlPlane() as cp: cp.url, cp.token("planner")``."""

    def __init__(self, config: Any = None) -> None:
        from tofuflow.server.config import ServerConfig

        self.config = config or ServerConfig.load()
        self.url = ""
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._app: Any = None

    def __enter__(self) -> EmbeddedControlPlane:
        import uvicorn

        from tofuflow.server.app import create_app

        self._app = create_app(self.config)
        port = _free_port()
        self._server = uvicorn.Server(
            uvicorn.Config(self._app, host="127.0.0.1", port=port, log_level="warning",
                           lifespan="off")
        )  # fmt: skip
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{port}"
        _wait_healthy(self.url)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._app is not None:
            self._app.state.engine.dispose()

    @property
    def app(self) -> Any:
        """The running ASGI app (its ``state`` holds the engine and services)."""
        return self._app

    def token(
        self, role: str, ttl: str = "2h", *, workspaces: str = "*", description: str = ""
    ) -> str:
        """A short-lived token for this process (the local user owns the embedded plane).

        ``description`` is recorded with every audit event the token causes (say which
        task it is for); ``workspaces`` narrows it to a glob.
        """
        from tofuflow.server.admin import create_token

        created = create_token(
            self._app.state.engine, role=role, workspaces=workspaces or "*", ttl=ttl,
            description=description[:255] or f"embedded runner ({role})",
        )  # fmt: skip
        return created.token


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise StorageError(f"the embedded control plane did not start within {timeout:.0f}s")
