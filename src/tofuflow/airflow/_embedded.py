"""One embedded control plane per process and server configuration, shared by its tasks.

Without a control-plane URL, tasks use the embedded control plane: the same server code
in-process, with SQLite and a local key under the tofuflow data directory. Every task
process on a machine opens the same database, so runs planned by one task are seen by
the next. Within a process (``dag.test()``, the triggerer) it starts once.
"""

from __future__ import annotations

import atexit
import dataclasses
import threading
from datetime import timedelta
from pathlib import Path
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
    from tofuflow.server._admin import create_token

    minutes = max(int(lifetime.total_seconds() // 60) + 1, 5)
    created = create_token(
        plane.app.state.engine, role=role, workspaces=workspace or "*", ttl=f"{minutes}m",
        description=description[:255] or f"tofuflow airflow provider ({role})",
    )  # fmt: skip
    return created.token


def _load(server_config: str | None) -> Any:
    """The server configuration; relative paths in it are relative to the file."""
    from tofuflow.server.config import ServerConfig

    config = ServerConfig.load(server_config)
    if server_config and config.policies_dir is not None and not config.policies_dir.is_absolute():
        base = Path(server_config).resolve().parent
        config = dataclasses.replace(config, policies_dir=base / config.policies_dir)
    return config


def _close_all() -> None:
    with _LOCK:
        planes = list(_PLANES.values())
        _PLANES.clear()
    for plane in planes:
        plane.__exit__(None, None, None)
