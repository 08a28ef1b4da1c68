"""The state service: the rules the binary only checks client-side, enforced here.

Every accepted write becomes a sealed (encrypted) version; locks, writes and admin
actions append to the audit log in the same transaction as the change they describe.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

import msgspec
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, undefer
from starlette.concurrency import run_in_threadpool

from tofuflow.errors import (
    BadRequestError,
    ConfigError,
    ConflictError,
    DocumentError,
    ForbiddenError,
    LockedError,
    NotFoundError,
)
from tofuflow.server import _audit
from tofuflow.server._locks import (
    WorkspaceRow,
    check_lock,
    check_lock_owner,
    check_unlock,
    lock_id_of,
)
from tofuflow.server._packing import pack_state, unpack_state
from tofuflow.server._paging import Page, decode_cursor, fill_page, grant_filter
from tofuflow.server._sealed import open_record, seal_record
from tofuflow.server.auth import Permission, Principal
from tofuflow.server.crypto import Keyring, Sealed
from tofuflow.server.storage._blobs import BlobStore
from tofuflow.server.storage._db import StateVersion, Workspace, utcnow, write_session

__all__ = [
    "FastPath",
    "StateService",
    "VersionInfo",
    "WriteChecks",
    "state_aad",
    "validate_workspace_name",
]

_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_NAME = re.compile(rf"^{_SEGMENT}(/{_SEGMENT}){{0,7}}$")
_MAX_NAME = 200
# Bounds of the database columns: past them PostgreSQL fails the write (a 500), and SQLite
# cannot bind an integer beyond 64 bits.
_MAX_SERIAL = 2**63 - 1  # BIGINT
_MAX_VERSION = 2**31 - 1  # INTEGER
_MAX_LINEAGE = 64  # the binary writes a 36-character UUID


def validate_workspace_name(name: str) -> str:
    """Names are ``[A-Za-z0-9._-]`` segments joined by ``/``: no ``..``, no absolute paths."""
    if len(name) > _MAX_NAME or not _NAME.match(name) or name.rsplit("/", 1)[-1] == "lock":
        raise BadRequestError(
            f"invalid workspace name {name[:80]!r}: use up to 8 '/'-separated segments of "
            "letters, digits, '.', '_' and '-', each starting with a letter or digit, at most "
            f"{_MAX_NAME} characters in all, not ending in '/lock'"
        )
    return name


@dataclass(frozen=True)
class VersionInfo:
    workspace: str
    version: int
    serial: int
    lineage: str
    size: int
    sha256: str
    created_at: dt.datetime
    created_by: str
    run_id: str | None
    source: str

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["created_at"] = self.created_at.isoformat()
        return data


@dataclass(frozen=True)
class RequestContext:
    principal: Principal
    client: str | None = None
    run_id: str | None = None

    @property
    def actor(self) -> _audit.Actor:
        return _audit.Actor(self.principal.subject, self.principal.claims, self.client)


@dataclass(frozen=True)
class WriteChecks:
    """What ``StateService`` worked out about a POST before its transaction."""

    via: str
    serial: int
    lineage: str
    digest: str

    def audit_detail(
        self, version: int, size: int, override: bool, held_by: str | None
    ) -> dict[str, Any]:
        """The ``state.write`` event's detail, alike on every path."""
        return {"version": version, "sha256": self.digest, "size": size, "override": override,
                "via": self.via, **({"lock_held_by": held_by} if held_by else {})}  # fmt: skip

    def written(
        self, ctx: RequestContext, name: str, version: int, size: int, created: dt.datetime
    ) -> VersionInfo:
        """What a fast path answers for the version it stored."""
        return VersionInfo(
            workspace=name, version=version, serial=self.serial, lineage=self.lineage,
            size=size, sha256=self.digest, created_at=created,
            created_by=ctx.principal.subject, run_id=ctx.run_id, source="write",
        )  # fmt: skip


class FastPath(Protocol):
    """A database's own LOCK, POST and UNLOCK, applying ``StateService``'s rules."""

    async def lock(
        self, ctx: RequestContext, name: str, info: Mapping[str, Any], via: str
    ) -> None: ...

    async def unlock(
        self, ctx: RequestContext, name: str, info: Mapping[str, Any] | None
    ) -> None: ...

    async def write(
        self, ctx: RequestContext, name: str, body: bytes, lock_id: str | None, checks: WriteChecks
    ) -> VersionInfo | None: ...


class StateService:
    """State operations; each method checks the caller's permission first."""

    def __init__(
        self,
        engine: Engine,
        keyring: Keyring,
        blobs: BlobStore | None = None,
        *,
        max_state_bytes: int = 50 * 1024 * 1024,
    ) -> None:
        self.engine = engine
        self.keyring = keyring
        self.blobs = blobs
        # server.max_state_bytes: no stored version is decompressed past it (or its size).
        self.max_state_bytes = max_state_bytes
        # Set by the app from [[workspace_settings]] require_apply_session: how a workspace
        # takes state writes, "apply_session" (the default) or "simple_applier".
        self.state_writes: Callable[[str], str] = lambda workspace: "apply_session"
        # LOCK, POST and UNLOCK (issue 18), plugged in by ``create_app``: on SQLite without
        # a blob store plain statements committed in groups by one writer thread
        # (``_state_fast``), on PostgreSQL two round trips on the event loop's own
        # connections (``_state_pg``); None keeps them on the ORM path.
        self.fast: FastPath | None = None

    def check_keys(self) -> None:
        """Refuse to serve (ConfigError) when the newest state version is sealed with a key
        this server is not configured with: a mistyped ``[keys.current]`` path makes a new
        key, and the server would answer every read with 500 and seal new versions under
        a key nobody meant to use. Older versions under a dropped key are found when read.
        """
        newest = (
            select(StateVersion.key_id, StateVersion.version, Workspace.name)
            .join(Workspace, Workspace.id == StateVersion.workspace_id)
            .order_by(StateVersion.id.desc())
            .limit(1)
        )
        with self.engine.connect() as connection:
            row = connection.execute(newest).first()
        if row is None or row.key_id in self.keyring.key_ids:
            return
        current = self.keyring.current
        path = getattr(current, "path", None)
        source = getattr(current, "source", None)
        if source and row.key_id.rpartition(":")[0] == current.key_id.rpartition(":")[0]:
            raise ConfigError(  # the same salt, another key: only the passphrase differs
                f"the newest state version ({row.name}, version {row.version}) is sealed "
                f"with key {row.key_id}: the passphrase this server was given ({source}) is "
                "not the one the data was written with (the salt file is the same). Set "
                "that passphrase; if you changed it on purpose, give the old one as a "
                "[[keys.previous]] passphrase key (its own passphrase_env) and re-wrap with "
                "`tofuflow server keys rotate`. Not starting, so that nothing is sealed or "
                "served with the wrong key"
            )
        raise ConfigError(
            f"the newest state version ({row.name}, version {row.version}) is sealed with key "
            f"{row.key_id}, which this server is not configured with: keys.current is key "
            f"{current.key_id}{f' ({path})' if path else ''}. If its path or id is mistyped, "
            "fix it; if the key was rotated, list the old one under [[keys.previous]] (and "
            "re-wrap with `tofuflow server keys rotate`). Not starting, so that nothing is "
            "sealed or served with the wrong key"
        )

    def _require_session(self, ctx: RequestContext, name: str) -> str:
        """Only an approved run's apply session changes state, unless the workspace opted
        into the simple applier mode; an admin's write is break-glass (audited as such).
        Returns how this change is allowed: the ``via`` of its audit event."""
        if ctx.run_id:
            return "apply_session"
        if self.state_writes(name) == "simple_applier":
            return "simple_applier"
        if ctx.principal.can(Permission.OVERRIDE, name):
            return "break_glass"
        raise ForbiddenError(
            f"{ctx.principal.subject} may not change {name} directly: this workspace takes "
            "state writes only from an approved run's apply session (the default). Use "
            "`tofuflow plan` and `tofuflow apply`; an admin can opt the workspace into the "
            "simple applier mode with `require_apply_session = false` in a "
            "[[workspace_settings]] entry of the server's configuration"
        )

    # -- HTTP backend protocol ----------------------------------------------------------

    def read(self, ctx: RequestContext, name: str) -> bytes | None:
        """The current state body, or None when there is none yet."""
        ctx.principal.require(Permission.READ_STATE, name)
        with self._tx() as session:
            ws = _find(session, name)
            if ws is None or ws.current_version is None:
                _audit.append(session, ctx.actor, "state.read", workspace=name, status=204)
                return None
            version = _version_row(session, ws, ws.current_version)
            _audit.append(session, ctx.actor, "state.read", workspace=name, serial=ws.serial)
        return self._open(name, version)

    def write(
        self, ctx: RequestContext, name: str, body: bytes, lock_id: str | None
    ) -> VersionInfo | None:
        """Store ``body`` as a new version; None for an identical retry of the current one."""
        checks = self._write_checks(ctx, name, body)
        serial, lineage, digest = checks.serial, checks.lineage, checks.digest
        with self._tx() as session:
            ws = self._workspace_for_update(session, name)
            check_lock(ws, lock_id)
            check_lock_owner(ws, ctx.principal, "write")
            held_by = ws.locked_by
            override = self._override_active(ws, ctx)
            if not override and _is_identical_retry(ws, serial, digest, session):
                return None
            if not override:
                _check_rules(ws, serial, lineage)
            row = self._store(session, ws, body, serial, lineage, digest, ctx, "write")
            if override:
                ws.override_by = ws.override_until = None
            _audit.append(
                session, ctx.actor, "state.write", workspace=name, serial=serial,
                detail=checks.audit_detail(row.version, len(body), override, held_by),
                run_id=ctx.run_id,
            )  # fmt: skip
            return _info(name, row)

    def _write_checks(self, ctx: RequestContext, name: str, body: bytes) -> WriteChecks:
        ctx.principal.require(Permission.WRITE_STATE, name)
        via = self._require_session(ctx, name)
        serial, lineage = state_identity(body)
        return WriteChecks(via, serial, lineage, hashlib.sha256(body).hexdigest())

    async def write_async(
        self, ctx: RequestContext, name: str, body: bytes, lock_id: str | None
    ) -> VersionInfo | None:
        """``write`` from the event loop: through ``fast`` when there is one."""
        if self.fast is None:
            return await run_in_threadpool(self.write, ctx, name, body, lock_id)
        checks = self._write_checks(ctx, name, body)
        return await self.fast.write(ctx, name, body, lock_id, checks)

    async def lock_async(self, ctx: RequestContext, name: str, info: Mapping[str, Any]) -> None:
        """``lock`` from the event loop: through ``fast`` when there is one."""
        if self.fast is None:
            return await run_in_threadpool(self.lock, ctx, name, info)
        ctx.principal.require(Permission.LOCK, name)
        await self.fast.lock(ctx, name, info, self._require_session(ctx, name))

    async def unlock_async(
        self, ctx: RequestContext, name: str, info: Mapping[str, Any] | None
    ) -> None:
        """``unlock`` from the event loop: through ``fast`` when there is one."""
        if self.fast is None:
            return await run_in_threadpool(self.unlock, ctx, name, info)
        if info is not None:
            lock_id_of(info)  # a malformed ID is refused before the permission check
        ctx.principal.require(Permission.UNLOCK, name)
        await self.fast.unlock(ctx, name, info)

    def lock(self, ctx: RequestContext, name: str, info: Mapping[str, Any]) -> None:
        ctx.principal.require(Permission.LOCK, name)
        via = self._require_session(ctx, name)
        lock_id = lock_id_of(info)
        with self._tx() as session:
            ws = self._workspace_for_update(session, name)
            held_by_other = ws.locked_by != ctx.principal.subject
            # Re-locking with the same ID is an idempotent retry, but only by the holder.
            if ws.lock_id is not None and (ws.lock_id != lock_id or held_by_other):
                raise LockedError(f"workspace {name} is locked by {ws.locked_by}", ws.lock_info)
            ws.lock_id, ws.lock_info = lock_id, dict(info)
            ws.locked_by, ws.locked_at = ctx.principal.subject, utcnow()
            _audit.append(
                session, ctx.actor, "state.lock", workspace=name, serial=ws.serial,
                detail={"lock_id": lock_id, "operation": info.get("Operation"), "via": via},
            )  # fmt: skip

    def unlock(self, ctx: RequestContext, name: str, info: Mapping[str, Any] | None) -> None:
        """Release the lock. An empty body (Terraform's force-unlock) needs admin; an
        ID-only body (OpenTofu's force-unlock) needs admin unless the caller holds it."""
        lock_id = lock_id_of(info) if info is not None else ""
        ctx.principal.require(Permission.UNLOCK, name)
        with self._tx() as session:
            ws = _find(session, name, for_update=True)
            if ws is None or ws.lock_id is None:
                return  # already unlocked: unlocking is idempotent
            forced = check_unlock(ws, ctx.principal, lock_id)
            _audit.append(
                session, ctx.actor, "state.force_unlock" if forced else "state.unlock",
                workspace=name, serial=ws.serial,
                detail={"lock_id": ws.lock_id, "held_by": ws.locked_by},
            )  # fmt: skip
            ws.lock_id = ws.lock_info = ws.locked_by = ws.locked_at = None

    def delete(self, ctx: RequestContext, name: str) -> None:
        """Drop the current state (versions are kept for the record)."""
        ctx.principal.require(Permission.DELETE_STATE, name)
        with self._tx() as session:
            ws = _require(session, name, for_update=True)
            if ws.lock_id is not None:
                raise LockedError(f"workspace {name} is locked; unlock it first", ws.lock_info)
            _audit.append(session, ctx.actor, "state.delete", workspace=name, serial=ws.serial)
            ws.current_version = ws.serial = ws.lineage = None

    # -- versions and admin actions -----------------------------------------------------

    def workspaces(
        self, ctx: RequestContext, *, limit: int = 100, cursor: str | None = None
    ) -> Page[dict[str, Any]]:
        """A page of the workspaces the caller may list, by name."""

        def fetch(after: list[Any] | None, n: int) -> list[Workspace]:
            query = select(Workspace).order_by(Workspace.name).limit(n)
            if after is not None:
                query = query.where(Workspace.name > after[0])
            narrow = grant_filter(Workspace.name, ctx.principal)
            return list(session.scalars(query if narrow is None else query.where(narrow)))

        with Session(self.engine) as session:
            page = fill_page(
                fetch, lambda ws: ctx.principal.can(Permission.LIST_VERSIONS, ws.name),
                lambda ws: [ws.name], kind="workspaces", limit=limit,
                after=decode_cursor(cursor, "workspaces", (str,)),
            )  # fmt: skip
            items = [
                {
                    "name": ws.name,
                    "serial": ws.serial,
                    "version": ws.current_version,
                    "locked": ws.lock_id is not None,
                    "state_writes": self.state_writes(ws.name),
                    **({"lock": _lock_view(ws)} if ws.lock_id is not None else {}),
                }
                for ws in page.items
            ]
        return Page(items, page.next_cursor)

    def versions(
        self, ctx: RequestContext, name: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page[VersionInfo]:
        """A page of a workspace's versions, oldest first."""
        ctx.principal.require(Permission.LIST_VERSIONS, name)
        kind = "versions"

        def fetch(after: list[Any] | None, n: int) -> list[StateVersion]:
            query = (
                select(StateVersion)
                .where(StateVersion.workspace_id == ws.id)
                .order_by(StateVersion.version)
                .limit(n)
            )
            if after is not None:
                query = query.where(StateVersion.version > after[0])
            return list(session.scalars(query))

        with Session(self.engine) as session:
            ws = _require(session, name)
            page = fill_page(
                fetch, lambda _row: True, lambda row: [row.version], kind=kind, limit=limit,
                after=decode_cursor(cursor, kind, (int,)),
            )  # fmt: skip
            return Page([_info(name, row) for row in page.items], page.next_cursor)

    def version_body(self, ctx: RequestContext, name: str, version: int) -> bytes:
        ctx.principal.require(Permission.READ_STATE, name)
        with self._tx() as session:
            ws = _require(session, name)
            row = _version_row(session, ws, version)
            _audit.append(
                session, ctx.actor, "state.read_version", workspace=name, serial=row.serial,
                detail={"version": version},
            )  # fmt: skip
        return self._open(name, row)

    def diff(self, ctx: RequestContext, name: str, old: int, new: int) -> dict[str, Any]:
        """Which resources and outputs differ between two versions (names only, no values)."""
        from tofuflow.server._diff import diff_states

        before = self.version_body(ctx, name, old)
        after = self.version_body(ctx, name, new)
        return {"workspace": name, "from": old, "to": new, **diff_states(before, after)}

    def rollback(self, ctx: RequestContext, name: str, version: int) -> VersionInfo:
        """Write version ``version``'s content again as a new version with a higher serial."""
        ctx.principal.require(Permission.ROLLBACK, name)
        with self._tx() as session:
            ws = _require(session, name, for_update=True)
            if ws.lock_id is not None:
                raise LockedError(f"workspace {name} is locked; wait or unlock", ws.lock_info)
            target = _version_row(session, ws, version)
            doc = json.loads(self._open(name, target))
            doc["serial"] = (ws.serial or 0) + 1
            body = json.dumps(doc, indent=2).encode() + b"\n"
            digest = hashlib.sha256(body).hexdigest()
            row = self._store(
                session, ws, body, doc["serial"], target.lineage, digest, ctx, "rollback"
            )
            _audit.append(
                session, ctx.actor, "state.rollback", workspace=name, serial=row.serial,
                detail={"restored_version": version, "new_version": row.version},
            )  # fmt: skip
            return _info(name, row)

    def arm_override(self, ctx: RequestContext, name: str, minutes: int, reason: str) -> None:
        """Let the caller's next write skip the lineage/serial rules (``state push -force``)."""
        ctx.principal.require(Permission.OVERRIDE, name)
        if not reason.strip():
            raise BadRequestError("an override needs a reason; it goes to the audit log")
        if not 1 <= minutes <= 60:
            raise BadRequestError("override minutes must be between 1 and 60")
        with self._tx() as session:
            ws = self._workspace_for_update(session, name)
            ws.override_by = ctx.principal.subject
            ws.override_until = utcnow() + dt.timedelta(minutes=minutes)
            _audit.append(
                session, ctx.actor, "state.override_armed", workspace=name, serial=ws.serial,
                detail={"minutes": minutes, "reason": reason},
            )  # fmt: skip

    def record_refusal(
        self, ctx: RequestContext, action: str, name: str | None, status: int, reason: str
    ) -> None:
        """Audit a refused request (its own transaction: the change itself rolled back)."""
        with self._tx() as session:
            _audit.append(
                session, ctx.actor, action, outcome="refused", status=status, workspace=name,
                detail={"reason": reason[:500]},
            )  # fmt: skip

    # -- internals ----------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with write_session(self.engine) as session:
            yield session

    def _workspace_for_update(self, session: Session, name: str) -> Workspace:
        return workspace_for_update(session, name)

    def _override_active(self, ws: WorkspaceRow, ctx: RequestContext) -> bool:
        until = ws.override_until
        if until is None or ws.override_by != ctx.principal.subject:
            return False
        until = until if until.tzinfo else until.replace(tzinfo=dt.UTC)
        return until > utcnow() and ctx.principal.can(Permission.OVERRIDE, ws.name)

    def _store(
        self,
        session: Session,
        ws: Workspace,
        body: bytes,
        serial: int,
        lineage: str,
        digest: str,
        ctx: RequestContext,
        source: str,
    ) -> StateVersion:
        number = (_latest_version(session, ws) or 0) + 1
        sealed = self.keyring.seal(pack_state(body), state_aad(ws.name, number))
        blob_key = None
        if self.blobs is not None:
            blob_key = f"state/{ws.id}/{number}-{uuid.uuid4().hex}"
            self.blobs.put(blob_key, sealed.ciphertext)
        row = StateVersion(
            workspace_id=ws.id, version=number, serial=serial, lineage=lineage, size=len(body),
            sha256=digest, created_by=ctx.principal.subject, run_id=ctx.run_id, source=source,
            key_id=sealed.key_id, wrapped_key=sealed.wrapped_key, nonce=sealed.nonce,
            ciphertext=None if blob_key else sealed.ciphertext, blob_key=blob_key,
        )  # fmt: skip
        session.add(row)
        ws.current_version, ws.serial, ws.lineage = number, serial, lineage
        return row

    def current_body(self, session: Session, name: str) -> bytes | None:
        """The current state of ``name`` for the server's own use (no permission check)."""
        ws = _find(session, name)
        if ws is None or ws.current_version is None:
            return None
        return self._open(name, _version_row(session, ws, ws.current_version))

    def seal_record(self, data: bytes, aad: bytes) -> dict[str, Any]:
        return seal_record(self.keyring, self.blobs, data, aad, "records")

    def open_record(self, record: Mapping[str, Any], aad: bytes, what: str) -> bytes:
        return open_record(self.keyring, self.blobs, record, aad, what)

    def _open(self, name: str, row: StateVersion) -> bytes:
        ciphertext = row.ciphertext
        if ciphertext is None:
            if self.blobs is None or row.blob_key is None:
                raise NotFoundError(f"version {row.version} of {name} has no stored body")
            ciphertext = self.blobs.get(row.blob_key)
        sealed = Sealed(row.key_id, row.wrapped_key, row.nonce, ciphertext)
        plaintext = self.keyring.open(sealed, state_aad(name, row.version))
        # The bound is the server's body limit, or the size this version was stored with
        # when the limit was lowered since: the sealed plaintext is the server's own.
        return unpack_state(
            plaintext, limit=max(self.max_state_bytes, row.size or 0),
            what=f"version {row.version} of {name}",
        )  # fmt: skip


class _Instance(msgspec.Struct):
    """Any JSON object: an instance's fields are not read here."""


class _Output(msgspec.Struct):
    value: Any


class _Resource(msgspec.Struct):
    mode: Any
    type: Any
    name: Any
    instances: list[_Instance] | None = None


class _StateHead(msgspec.Struct):
    """What ``State.from_json`` requires of a plain v4 document, read without building it:
    the rest of the body is checked as JSON and skipped."""

    version: int
    serial: Annotated[int, msgspec.Meta(ge=0)]
    lineage: Annotated[str, msgspec.Meta(min_length=1)]
    outputs: dict[str, _Output] | None = None
    resources: list[_Resource] | None = None
    encryption_version: Any = msgspec.UNSET


_HEAD = msgspec.json.Decoder(_StateHead)


def _quick_identity(body: bytes) -> tuple[int, str] | None:
    """``(serial, lineage)`` of a well-formed plain state, else None.

    Stricter than ``State.from_json`` (issue 18: that builds the whole 256 KiB document
    to read two fields): whatever this does not accept goes to it, for its verdict and its
    error message, so a body is accepted or refused exactly as before.
    """
    if not body.isascii():
        try:
            body.decode()  # msgspec skips a string without checking that it is UTF-8
        except UnicodeDecodeError:
            return None
    try:
        head = _HEAD.decode(body)
    except (msgspec.MsgspecError, RecursionError):
        return None
    if (
        head.encryption_version is not msgspec.UNSET
        or head.version != 4
        or head.serial > _MAX_SERIAL
    ):
        return None
    return head.serial, head.lineage


def state_identity(body: bytes) -> tuple[int, str]:
    """``(serial, lineage)`` of a state body, plain v4 or OpenTofu's encrypted envelope."""
    from tofuflow.tofu import State

    quick = _quick_identity(body)
    if quick is not None:
        return _checked_identity(*quick)
    try:
        state = State.from_json(body)
    except DocumentError as exc:
        raise BadRequestError(f"the body was refused: {exc}") from exc
    except RecursionError as exc:
        raise BadRequestError(
            "the body is not a state document: its JSON is nested too deeply"
        ) from exc
    return _checked_identity(state.serial, state.lineage)


def _checked_identity(serial: int, lineage: str) -> tuple[int, str]:
    if not lineage:
        raise BadRequestError("the state has no lineage; push a state written by tofu/terraform")
    if len(lineage) > _MAX_LINEAGE:
        raise BadRequestError(
            f"the state's lineage is longer than {_MAX_LINEAGE} characters; push a state "
            "written by tofu/terraform (its lineage is a UUID)"
        )
    if serial > _MAX_SERIAL:
        raise BadRequestError(
            f"the state's serial {serial} is out of range (at most {_MAX_SERIAL}); "
            "push a state written by tofu/terraform"
        )
    return serial, lineage


def state_aad(name: str, version: int) -> bytes:
    # Binds each ciphertext to its place: a version copied elsewhere will not decrypt.
    return f"tofuflow-state:v1;workspace={name};version={version}".encode()


def _is_identical_retry(ws: Workspace, serial: int, digest: str, session: Session) -> bool:
    if ws.current_version is None or serial != ws.serial:
        return False
    current = _version_row(session, ws, ws.current_version)
    if current.sha256 == digest:
        return True
    raise ConflictError(
        f"serial {serial} is already stored for {ws.name} with different content: another "
        "writer got there first. Run `tofu refresh` or re-plan, then apply again"
    )


def _check_rules(ws: WorkspaceRow, serial: int, lineage: str) -> None:
    if ws.current_version is None:
        return
    if lineage != ws.lineage:
        raise ConflictError(
            f"lineage {lineage} does not match {ws.name}'s lineage {ws.lineage}: this is a "
            "different state. Check the backend address; to replace it deliberately an "
            f"admin arms an override: POST /v1/workspaces/{ws.name}/override"
        )
    if ws.serial is not None and serial < ws.serial:
        raise ConflictError(
            f"serial {serial} is older than the stored serial {ws.serial} of {ws.name}: the "
            "state moved on since it was read. Re-run plan/apply against the current state"
        )


def workspace_for_update(session: Session, name: str) -> Workspace:
    """The workspace's row, locked for this transaction; created first if it has none
    (a workspace with no state yet has nothing else to lock)."""
    ws = _find(session, name, for_update=True)
    if ws is not None:
        return ws
    try:
        with session.begin_nested():
            ws = Workspace(name=name)
            session.add(ws)
    except IntegrityError:  # created concurrently (PostgreSQL): use that one
        ws = _find(session, name, for_update=True)
        if ws is None:
            raise
    return ws


def _find(session: Session, name: str, *, for_update: bool = False) -> Workspace | None:
    query = select(Workspace).where(Workspace.name == name)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).first()


def _require(session: Session, name: str, *, for_update: bool = False) -> Workspace:
    ws = _find(session, name, for_update=for_update)
    if ws is None:
        raise NotFoundError(f"workspace {name} does not exist")
    return ws


def _version_row(session: Session, ws: Workspace, version: int) -> StateVersion:
    if not 1 <= version <= _MAX_VERSION:
        raise NotFoundError(f"workspace {ws.name} has no version {version}")
    row = session.scalars(
        select(StateVersion)
        .where(StateVersion.workspace_id == ws.id, StateVersion.version == version)
        .options(undefer(StateVersion.ciphertext))  # read after the session closes
    ).first()
    if row is None:
        raise NotFoundError(f"workspace {ws.name} has no version {version}")
    return row


def _latest_version(session: Session, ws: Workspace) -> int | None:
    row = session.scalars(
        select(StateVersion.version)
        .where(StateVersion.workspace_id == ws.id)
        .order_by(StateVersion.version.desc())
        .limit(1)
    ).first()
    return row


def _info(name: str, row: StateVersion) -> VersionInfo:
    return VersionInfo(
        workspace=name, version=row.version, serial=row.serial, lineage=row.lineage,
        size=row.size, sha256=row.sha256, created_at=row.created_at, created_by=row.created_by,
        run_id=row.run_id, source=row.source,
    )  # fmt: skip


def _lock_view(ws: Workspace) -> dict[str, Any]:
    """Who holds a workspace's lock, since when, for what (the ID is no secret: see
    ``_locks``)."""
    info = ws.lock_info or {}
    return {
        "held_by": ws.locked_by,
        "since": ws.locked_at.isoformat() if ws.locked_at else None,
        "id": ws.lock_id,
        "who": info.get("Who"),
        "operation": info.get("Operation"),
    }
