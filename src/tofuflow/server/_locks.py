"""The state lock's rules: what a lock ID is, and who may change state while it is held.

The http backend sends its LockInfo JSON on LOCK and UNLOCK and adds ``?ID=<lock id>`` to
writes while it holds the lock. Every 423 answer carries the holder's LockInfo (the
binary prints its ID), so the ID is no secret: the holder's identity is checked too.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any, Protocol

from tofuflow.errors import BadRequestError, ConflictError, LockedError
from tofuflow.server.auth import Permission, Principal

__all__ = [
    "MAX_LOCK_ID",
    "WorkspaceRow",
    "check_lock",
    "check_lock_owner",
    "check_unlock",
    "lock_id_of",
    "lock_view",
]

MAX_LOCK_ID = 128


class WorkspaceRow(Protocol):
    """What the state rules read of a workspace: its ``Workspace`` (ORM) or the plain row
    of ``_state_fast``."""

    @property
    def name(self) -> str: ...
    @property
    def current_version(self) -> int | None: ...
    @property
    def serial(self) -> int | None: ...
    @property
    def lineage(self) -> str | None: ...
    @property
    def lock_id(self) -> str | None: ...
    @property
    def lock_info(self) -> dict[str, Any] | None: ...
    @property
    def locked_by(self) -> str | None: ...
    @property
    def override_by(self) -> str | None: ...
    @property
    def override_until(self) -> dt.datetime | None: ...


def lock_id_of(info: Mapping[str, Any]) -> str:
    """The ``ID`` of a LockInfo body: a non-empty string of at most 128 characters."""
    lock_id = info.get("ID")
    example = '{"ID": "<uuid>", "Operation": "OperationTypeApply", "Who": "..."}'
    if lock_id is None or lock_id == "":
        raise BadRequestError(
            "lock request without an ID (the ID must be a non-empty string): send the "
            f"binary's LockInfo JSON, e.g. {example}"
        )
    if not isinstance(lock_id, str):
        raise BadRequestError(
            f"lock ID must be a non-empty string, not {json.dumps(lock_id)[:40]}: send the "
            f"binary's LockInfo JSON, e.g. {example}"
        )
    if len(lock_id) > MAX_LOCK_ID:
        raise BadRequestError(
            f"lock ID longer than {MAX_LOCK_ID} characters: send the binary's LockInfo JSON"
        )
    return lock_id


def check_lock_owner(ws: WorkspaceRow, principal: Principal, what: str) -> None:
    """While locked, only the identity that took the lock (or an admin) may change state:
    the lock ID is in every 423 answer, so knowing it must not be enough."""
    if ws.lock_id is None or ws.locked_by == principal.subject:
        return
    if principal.can(Permission.FORCE_UNLOCK, ws.name):
        return
    raise LockedError(
        f"workspace {ws.name} is locked by {ws.locked_by}: only that identity (or an admin) "
        f"may {what} while the lock is held. Wait for its run to finish",
        ws.lock_info,
    )


def check_lock(ws: WorkspaceRow, lock_id: str | None) -> None:
    """While locked, a write carries the lock's ID; while unlocked, it carries none."""
    if ws.lock_id is not None and lock_id != ws.lock_id:
        raise LockedError(
            f"workspace {ws.name} is locked by {ws.locked_by}; writes must carry its lock ID",
            ws.lock_info,
        )
    if ws.lock_id is None and lock_id:
        raise ConflictError(
            f"lock {lock_id} is not held on {ws.name} (it was released or force-unlocked): "
            "re-run the command to take a new lock"
        )


def check_unlock(ws: WorkspaceRow, principal: Principal, lock_id: str) -> bool:
    """Whether releasing the lock held on ``ws`` is forced: the holder releasing its own
    ID is not; anything else needs FORCE_UNLOCK, and a stated ID must be the held one."""
    if ws.locked_by == principal.subject and lock_id == ws.lock_id:
        return False
    principal.require(Permission.FORCE_UNLOCK, ws.name)
    if lock_id and lock_id != ws.lock_id:
        raise LockedError(
            f"lock ID {lock_id} does not match the lock held on {ws.name}", ws.lock_info
        )
    return True


def lock_view(ws: Any) -> dict[str, Any] | None:
    """The lock a ``Workspace`` row holds, as drift reports and plan decisions show it to
    the planner (who cannot list other locks' holders): id, holder, since, and the
    binary's Who / Operation / Info, each cut to 200 characters. None when unlocked."""
    if ws is None or ws.lock_id is None:
        return None
    info = ws.lock_info or {}

    def text(key: str) -> str | None:  # the binary's LockInfo is the client's JSON
        value = info.get(key)
        return str(value)[:200] if value is not None else None

    return {
        "id": ws.lock_id, "held_by": ws.locked_by,
        "since": ws.locked_at.isoformat() if ws.locked_at else None,
        "who": text("Who"), "operation": text("Operation"), "info": text("Info"),
    }  # fmt: skip
