"""One embedded control plane per process and server configuration, shared by its tasks.

Without a control-plane URL, tasks use the embedded control plane: the same server code
in-process, with SQLite and a local key under the tofuflow data directory. Every task
process on a machine opens the same database, so runs planned by one task are seen by
the next. Within a process (``dag.test()``, the triggerer) it starts once.
"""

from __future__ import annotations

import atexit
import threading
from datetime import timedelta
from typing import Any

from tofuflow.runs import EmbeddedControlPlane

__all__ = ["embedded_plane", "mint_token"]

_LOCK = threading.Lock()
_PLANES: dict[str, EmbeddedControlPlane] = {}


def embedded_plane(server_config: str | None = None) -> EmbeddedControlPlane:
    """The running embedded plane for ``server_config`` (a server TOML), started once."""
    config = _load(server_config)
    key = f"{config.effective_database_url}|{server_config or ''}"
    with _LOCK:
        plane = _PLANES.get(key)
        if plane is None:
            plane = EmbeddedControlPlane(config).__enter__()
            if not _PLANES:
                atexit.register(_close_all)
            _PLANES[key] = plane
        return plane


def mint_token(
    plane: EmbeddedControlPlane,
    role: str,
    workspace: str,
    description: str,
    lifetime: timedelta = timedelta(hours=2),
) -> str:
    """A short-lived token with ``role`` on ``workspace``; its description (which the audit
    log records with every event the token causes) names the Airflow task."""
    minutes = max(int(lifetime.total_seconds() // 60) + 1, 5)
    return plane.token(
        role, f"{minutes}m", workspaces=workspace or "*",
        description=description or f"tofuflow airflow provider ({role})",
    )  # fmt: skip


def _load(server_config: str | None) -> Any:
    """The server configuration (relative paths in it are relative to the file)."""
    from tofuflow.server.config import ServerConfig

    return ServerConfig.load(server_config)


def _close_all() -> None:
    with _LOCK:
        planes = list(_PLANES.values())
        _PLANES.clear()
    for plane in planes:
        plane.__exit__(None, None, None)
