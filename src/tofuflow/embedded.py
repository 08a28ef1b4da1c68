"""The embedded default: the control plane in-process on 127.0.0.1, SQLite, a local key.

With no server configured, the runner starts the same app a deployment runs, under the
user's data directory, and mints short-lived tokens for itself — the same code, no mocks.
This is the only runner-side module that imports ``tofuflow.server``.

    with running() as plane:                 # started here, or shared with an open one
        token = plane.token("planner", "2h", description="tofuflow plan app/dev")
    plane = shared_plane()                   # started once per process (Airflow workers)

Every process on a machine opens the same database, so runs planned by one process are
seen by the next; within a process one plane per server configuration runs at a time.
"""

from __future__ import annotations

import atexit
import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from types import TracebackType
from typing import Any

import httpx

from tofuflow.errors import StorageError

__all__ = ["EmbeddedControlPlane", "data_dir", "mint_token", "running", "shared_plane"]

_LOCK = threading.Lock()
# server configuration key -> [plane, number of holders]
_PLANES: dict[str, list[Any]] = {}
_ATEXIT = False
# Seconds an ending embedded plane spends sending the notifications it owes.
_NOTIFY_DRAIN = 10.0


class EmbeddedControlPlane:
    """``with EmbeddedControlPlane() as cp: cp.url, cp.token("planner")``."""

    def __init__(self, config: Any = None) -> None:
        from tofuflow.server.config import ServerConfig

        self.config = config or ServerConfig.load()
        self.url = ""
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._app: Any = None
        self._sender: Any = None

    def __enter__(self) -> EmbeddedControlPlane:
        import uvicorn

        from tofuflow.server.app import create_app, start_sender
        from tofuflow.server.serving import uvicorn_config

        self._app = create_app(self.config)
        port = _free_port()
        # The server's own protocol settings: every refused request is answered in JSON.
        self._server = uvicorn.Server(
            uvicorn_config(self._app, host="127.0.0.1", port=port, log_level="warning",
                           lifespan="off")
        )  # fmt: skip
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{port}"
        _wait_healthy(self.url)
        if not self.config.public_url and not (self.config.notifications or {}).get("console_url"):
            # No link in messages to an address that ends with this command.
            notify = self._app.state.notify
            self._app.state.notify = dataclasses.replace(notify, console_url="")
        self._sender = start_sender(self._app)  # only with [notifications] destinations
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._sender is not None:
            # The plane ends with its command: what its events owe people is sent now.
            self._sender.stop(drain=_NOTIFY_DRAIN)
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

        # On one line: a command's argv (a run id pasted with its line break) is part of it.
        one_line = " ".join("".join(c if c.isprintable() else " " for c in description).split())
        created = create_token(
            self._app.state.engine, role=role, workspaces=workspaces or "*", ttl=ttl,
            description=one_line[:255] or f"embedded runner ({role})",
        )  # fmt: skip
        return created.token

    def revoke(self, token: str) -> None:
        """Revoke a token this plane minted (audited as ``token.revoke``): a command's
        token stops working when the command ends, not when it expires. Its row is
        deleted with it, or ``tokens list`` would gain two dead tokens per command."""
        from tofuflow.server.admin import revoke_token

        token_id = token.removeprefix("tfw_").partition("_")[0]
        revoke_token(self._app.state.engine, token_id, delete=True)


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


def _load(server_config: str | None) -> Any:
    """The server configuration (relative paths in it are relative to the file)."""
    from tofuflow.server.config import ServerConfig

    return ServerConfig.load(server_config)


def data_dir(server_config: str | None = None) -> str:
    """Where the embedded plane keeps its database and key (for messages)."""
    return str(_load(server_config).data_dir)


def _acquire(server_config: str | None) -> tuple[str, EmbeddedControlPlane]:
    global _ATEXIT
    config = _load(server_config)
    key = f"{config.effective_database_url}|{server_config or ''}"
    with _LOCK:
        entry = _PLANES.get(key)
        if entry is None:
            entry = [EmbeddedControlPlane(config).__enter__(), 0]
            _PLANES[key] = entry
            if not _ATEXIT:
                atexit.register(_close_all)
                _ATEXIT = True
        entry[1] += 1
        return key, entry[0]


def _release(key: str) -> None:
    with _LOCK:
        entry = _PLANES.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _PLANES[key]
    entry[0].__exit__(None, None, None)


@contextmanager
def running(server_config: str | None = None) -> Iterator[EmbeddedControlPlane]:
    """The embedded plane for ``server_config`` (a server TOML; default: the user's),
    started for the block — or the one already running in this process."""
    key, plane = _acquire(server_config)
    try:
        yield plane
    finally:
        _release(key)


def shared_plane(server_config: str | None = None) -> EmbeddedControlPlane:
    """The embedded plane for ``server_config``, started once and kept for the process
    (Airflow task processes and the triggerer); stopped at exit."""
    _, plane = _acquire(server_config)
    return plane


def mint_token(
    plane: EmbeddedControlPlane,
    role: str,
    workspace: str = "*",
    description: str = "",
    lifetime: timedelta = timedelta(hours=2),
) -> str:
    """A short-lived token with ``role`` on ``workspace``; its description (which the audit
    log records with every event the token causes) says which process or task it is for."""
    minutes = max(int(lifetime.total_seconds() // 60) + 1, 5)
    return plane.token(
        role, f"{minutes}m", workspaces=workspace or "*",
        description=description or f"embedded runner ({role})",
    )  # fmt: skip


def _close_all() -> None:
    with _LOCK:
        planes = [entry[0] for entry in _PLANES.values()]
        _PLANES.clear()
    for plane in planes:
        plane.__exit__(None, None, None)
