"""The http backend's hot path on SQLite: LOCK, POST and UNLOCK in plain sqlite3 statements,
committed in groups (issue 18).

    fast = SqliteStatePath.for_service(service)      # None unless SQLite without a blob store
    await fast.write(ctx, name, body, lock_id, checked)

Through the ORM a LOCK → POST 256 KiB → UNLOCK cycle cost about 20 ms of server CPU, most
of it SQLAlchemy, and every thread-pool thread did its own BEGIN IMMEDIATE and fsync while
the others queued for SQLite's single write lock. Here one connection takes whatever
requests are waiting, runs each in a SAVEPOINT of one transaction on the event loop, commits
once in a thread (the fsync) and only then answers them. PostgreSQL has its own path
(``_state_pg``); SQLite with a blob store keeps the ORM path in ``StateService``.

What does not change:

* the rules and their messages are ``StateService``'s own (``check_lock``,
  ``check_lock_owner``, ``_check_rules``, ``_override_active``), applied to the same row;
* a refused request rolls back to its savepoint alone; the others in its group commit;
* an answer leaves only after the COMMIT that holds it returned (``synchronous=FULL``);
* each change appends its audit event in its own transaction, chained exactly as
  ``_audit.append`` chains it (``audit verify`` cannot tell the two apart), after the
  in-process write lock that the ORM writers take too;
* an API token's revocation is read inside that transaction, so a principal from the
  verified-token cache (``Authenticator.cached``) is refused at once once revoked, whichever
  replica revoked it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from tofuflow.errors import AuthError, LockedError
from tofuflow.server import _audit
from tofuflow.server._chains import GENESIS, chain_of, record_hash
from tofuflow.server._locks import check_lock, check_lock_owner, check_unlock, lock_id_of
from tofuflow.server._packing import pack_state
from tofuflow.server._state import (
    RequestContext,
    StateService,
    VersionInfo,
    WriteChecks,
    _check_rules,
    state_aad,
)
from tofuflow.server.storage._db import utcnow, write_lock

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from tofuflow.server.auth import Authenticator

__all__ = ["GroupWriter", "SqliteStatePath"]

_T = TypeVar("_T")
# A group larger than this waits for the next commit: one fsync covers plenty.
_MAX_GROUP = 64
# The connection is closed after this long without work and opened again on the next.
_IDLE_SECONDS = 30.0
# How long the writer's thread waits for another process's write lock (``storage._db``'s).
_BUSY_MS = 30000


class GroupWriter:
    """One sqlite3 connection that runs the jobs submitted to it, those waiting together in
    one transaction, each in its own savepoint, and commits them at once.

        value = await writer.run(lambda cursor: ...)   # after its COMMIT returned

    The statements run on the event loop that submitted them; only the COMMIT, whose
    fsync waits for the disk, goes to the writer's thread, which releases the write lock
    when it is done. A thread running every statement cost more CPU in hand-offs of the
    GIL than the statements themselves (issue 18). When the write lock is busy (another
    writer in this process, or another process holding SQLite's), the whole group goes to
    the thread instead, which waits for the lock: the event loop never does.
    """

    def __init__(
        self, path: str, lock: threading.Lock | None = None, *, inline: bool = True
    ) -> None:
        self.path = path
        self._lock = lock if lock is not None else threading.Lock()
        # False when a job may wait on the network (sealing with a cloud KMS key): then
        # every group runs in a thread, as the jobs must not stall the event loop.
        self.inline = inline
        self._connection: sqlite3.Connection | None = None
        self._used = 0.0
        self._closer: asyncio.TimerHandle | None = None
        # Per event loop: the jobs waiting for its drain task (a server has one loop).
        self._queues: dict[asyncio.AbstractEventLoop, collections.deque[_Job]] = {}
        self._drains: set[asyncio.Task[None]] = set()

    async def run(self, job: Callable[[sqlite3.Cursor], _T]) -> _T:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[_T] = loop.create_future()
        waiting = self._queues.get(loop)
        if waiting is None:
            waiting = self._queues[loop] = collections.deque()
            drain = loop.create_task(self._drain(loop, waiting))
            self._drains.add(drain)
            drain.add_done_callback(self._drains.discard)
        waiting.append(_Job(job, waiter))
        return await waiter

    async def _drain(
        self, loop: asyncio.AbstractEventLoop, waiting: collections.deque[_Job]
    ) -> None:
        """Commits what ``waiting`` holds, group after group, until it is empty. It starts
        on the loop's next turn, so the requests of this turn form its first group."""
        group: list[_Job] = []
        try:
            while waiting:
                group = [waiting.popleft() for _ in range(min(len(waiting), _MAX_GROUP))]
                await self._commit_group(loop, group)
                _settle(group)
                group = []
        except BaseException:  # cancelled with the loop: nobody is left waiting
            for job in [*group, *waiting]:
                job.waiter.cancel()
            raise
        finally:
            del self._queues[loop]
            self._used = time.monotonic()
            if self._closer is None:
                self._closer = loop.call_later(_IDLE_SECONDS, self._close_idle)

    async def _commit_group(self, loop: asyncio.AbstractEventLoop, group: list[_Job]) -> None:
        if self.inline and self._lock.acquire(blocking=False):
            committing = self._begin_here(loop, group)
            if committing is not None:
                await committing
                return
        await loop.run_in_executor(None, self._commit_waiting, group)

    def _begin_here(
        self, loop: asyncio.AbstractEventLoop, group: list[_Job]
    ) -> asyncio.Future[None] | None:
        """With the write lock held: run ``group`` on this loop and hand its COMMIT, and the
        lock, to a thread (the future of that; one already done when the transaction
        failed, each job then carrying the error). None when another process holds
        SQLite's lock. The lock is released in every case but the hand-over."""
        try:
            connection = self._open()
            if not _begin_now(connection):
                self._lock.release()
                return None
            self._run_jobs(connection, group)
            # The thread commits and releases the lock, even if this task is cancelled.
            return loop.run_in_executor(None, self._finish, connection, group)
        except Exception as exc:  # the connection or the transaction itself failed
            try:
                self._fail(group, exc)
            finally:
                self._lock.release()
            failed: asyncio.Future[None] = loop.create_future()
            failed.set_result(None)
            return failed

    def _open(self) -> sqlite3.Connection:
        """The connection (the caller holds the write lock)."""
        if self._connection is None:
            self._connection = _connect(self.path)
        return self._connection

    def _close_idle(self) -> None:
        """Close the connection after ``_IDLE_SECONDS`` without work; the next job opens it
        again."""
        self._closer = None
        if self._queues:
            return  # a drain is running: it schedules this again when it ends
        idle = time.monotonic() - self._used
        if idle < _IDLE_SECONDS:
            loop = asyncio.get_running_loop()
            self._closer = loop.call_later(_IDLE_SECONDS - idle, self._close_idle)
        elif self._connection is not None and self._lock.acquire(blocking=False):
            try:
                self._connection.close()
                self._connection = None
            finally:
                self._lock.release()

    @staticmethod
    def _run_jobs(connection: sqlite3.Connection, group: list[_Job]) -> None:
        """Each job in its own savepoint of the open transaction; a refusal rolls back that
        job's changes only."""
        cursor = connection.cursor()
        try:
            for job in group:
                if job.waiter.cancelled():
                    continue  # its caller is gone: nothing is done for it
                cursor.execute("SAVEPOINT request")
                try:
                    job.value = job.work(cursor)
                except Exception as exc:  # a refusal: this request's changes only
                    cursor.execute("ROLLBACK TO request")
                    job.error = exc
                cursor.execute("RELEASE request")
        finally:
            cursor.close()

    def _finish(self, connection: sqlite3.Connection, group: list[_Job]) -> None:
        """In the thread: COMMIT the transaction the loop filled, then release the lock."""
        try:
            connection.execute("COMMIT")
        except Exception as exc:  # the transaction failed: nothing of it holds
            self._fail(group, exc)
        finally:
            self._lock.release()

    def _commit_waiting(self, group: list[_Job]) -> None:
        """In a thread: wait for the write lock (and another process's), then run the whole
        group in one transaction and commit it."""
        with self._lock:
            try:
                connection = self._open()
                connection.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
                connection.execute("BEGIN IMMEDIATE")
                self._run_jobs(connection, group)
                connection.execute("COMMIT")
                connection.execute("PRAGMA busy_timeout = 0")
            except Exception as exc:  # the transaction failed: nothing of it holds
                self._fail(group, exc)

    def _fail(self, group: list[_Job], exc: Exception) -> None:
        """``exc`` for every job of a failed transaction, and the connection dropped (its
        transaction rolls back as it closes; the next group opens a new one). The caller
        holds the write lock."""
        for job in group:
            job.error = exc
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
            self._connection = None


@dataclasses.dataclass
class _Job:
    work: Callable[[sqlite3.Cursor], Any]
    waiter: asyncio.Future[Any]
    value: Any = None
    error: BaseException | None = None


def _begin_now(connection: sqlite3.Connection) -> bool:
    """BEGIN IMMEDIATE without waiting (the connection's busy timeout is 0); False when
    another connection holds SQLite's write lock."""
    try:
        connection.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return False
        raise
    return True


def _settle(jobs: list[_Job]) -> None:
    for job in jobs:
        if job.waiter.done():  # cancelled meanwhile
            continue
        if job.error is not None:
            job.waiter.set_exception(job.error)
        else:
            job.waiter.set_result(job.value)


def _connect(path: str) -> sqlite3.Connection:
    """A connection with the pragmas of ``storage._db`` (WAL, synchronous=FULL), but a busy
    timeout of 0: the event loop must not wait for another process's write lock."""
    connection = sqlite3.connect(path, timeout=_BUSY_MS / 1000, isolation_level=None,
                                 check_same_thread=False)  # fmt: skip
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=0", "foreign_keys=ON"):
        connection.execute(f"PRAGMA {pragma}")
    return connection


class SqliteStatePath:
    """LOCK, POST and UNLOCK of ``StateService`` on SQLite through a ``GroupWriter``.

    The caller has checked the permission and the apply-session rule (``StateService``
    does, before it comes here); everything read from or written to the database happens
    in the writer's transaction.
    """

    def __init__(self, service: StateService, writer: GroupWriter) -> None:
        self.service = service
        self.writer = writer
        self.authn: Authenticator | None = None  # set by the app: revocation messages

    @classmethod
    def for_service(cls, service: StateService) -> SqliteStatePath | None:
        """The fast path for ``service``'s database, or None where the ORM path stays."""
        engine: Engine = service.engine
        database = engine.url.database
        if engine.dialect.name != "sqlite" or not database or database == ":memory:":
            return None
        if service.blobs is not None:  # a blob upload does not belong in the writer
            return None
        inline = service.keyring.seals_in_process
        return cls(service, GroupWriter(database, write_lock(engine), inline=inline))

    async def lock(self, ctx: RequestContext, name: str, info: Mapping[str, Any], via: str) -> None:
        lock_id = lock_id_of(info)
        await self.writer.run(lambda cursor: self._lock(cursor, ctx, name, info, lock_id, via))

    async def unlock(self, ctx: RequestContext, name: str, info: Mapping[str, Any] | None) -> None:
        lock_id = lock_id_of(info) if info is not None else ""
        await self.writer.run(lambda cursor: self._unlock(cursor, ctx, name, lock_id))

    async def write(
        self, ctx: RequestContext, name: str, body: bytes, lock_id: str | None, checks: WriteChecks
    ) -> VersionInfo | None:
        return await self.writer.run(
            lambda cursor: self._write(cursor, ctx, name, body, lock_id, checks)
        )

    # -- in the writer's transaction ----------------------------------------------------

    def _lock(
        self, cursor: sqlite3.Cursor, ctx: RequestContext, name: str,
        info: Mapping[str, Any], lock_id: str, via: str,
    ) -> None:  # fmt: skip
        self._check_token(cursor, ctx)
        ws = _workspace_for_update(cursor, name)
        held_by_other = ws.locked_by != ctx.principal.subject
        # Re-locking with the same ID is an idempotent retry, but only by the holder.
        if ws.lock_id is not None and (ws.lock_id != lock_id or held_by_other):
            raise LockedError(f"workspace {name} is locked by {ws.locked_by}", ws.lock_info)
        cursor.execute(
            "UPDATE workspaces SET lock_id = ?, lock_info = ?, locked_by = ?, locked_at = ? "
            "WHERE id = ?",
            (lock_id, json.dumps(dict(info)), ctx.principal.subject, _time(utcnow()), ws.id),
        )
        _append(
            cursor, ctx, "state.lock", workspace=name, serial=ws.serial,
            detail={"lock_id": lock_id, "operation": info.get("Operation"), "via": via},
        )  # fmt: skip

    def _unlock(self, cursor: sqlite3.Cursor, ctx: RequestContext, name: str, lock_id: str) -> None:
        self._check_token(cursor, ctx)
        ws = _find(cursor, name)
        if ws is None or ws.lock_id is None:
            return  # already unlocked: unlocking is idempotent
        forced = check_unlock(ws, ctx.principal, lock_id)
        _append(
            cursor, ctx, "state.force_unlock" if forced else "state.unlock",
            workspace=name, serial=ws.serial,
            detail={"lock_id": ws.lock_id, "held_by": ws.locked_by},
        )  # fmt: skip
        cursor.execute(
            "UPDATE workspaces SET lock_id = NULL, lock_info = 'null', locked_by = NULL, "
            "locked_at = NULL WHERE id = ?",
            (ws.id,),
        )

    def _write(
        self, cursor: sqlite3.Cursor, ctx: RequestContext, name: str, body: bytes,
        lock_id: str | None, checks: WriteChecks,
    ) -> VersionInfo | None:  # fmt: skip
        self._check_token(cursor, ctx)
        ws = _workspace_for_update(cursor, name)
        check_lock(ws, lock_id)
        check_lock_owner(ws, ctx.principal, "write")
        held_by = ws.locked_by
        override = self.service._override_active(ws, ctx)
        serial, lineage, digest = checks.serial, checks.lineage, checks.digest
        if not override and _is_identical_retry(cursor, ws, serial, digest):
            return None
        if not override:
            _check_rules(ws, serial, lineage)
        latest = cursor.execute(
            "SELECT max(version) FROM state_versions WHERE workspace_id = ?", (ws.id,)
        ).fetchone()[0]
        number = (latest or 0) + 1
        sealed = self.service.keyring.seal(pack_state(body), state_aad(name, number))
        created = utcnow()
        cursor.execute(
            "INSERT INTO state_versions (workspace_id, version, serial, lineage, size, sha256, "
            "created_at, created_by, run_id, source, key_id, wrapped_key, nonce, ciphertext, "
            "blob_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'write', ?, ?, ?, ?, NULL)",
            (ws.id, number, serial, lineage, len(body), digest, _time(created),
             ctx.principal.subject, ctx.run_id, sealed.key_id, sealed.wrapped_key, sealed.nonce,
             sealed.ciphertext),
        )  # fmt: skip
        override_clause = ", override_by = NULL, override_until = NULL" if override else ""
        cursor.execute(
            f"UPDATE workspaces SET current_version = ?, serial = ?, lineage = ?{override_clause} "  # noqa: S608 - a fixed clause
            "WHERE id = ?",
            (number, serial, lineage, ws.id),
        )
        _append(
            cursor, ctx, "state.write", workspace=name, serial=serial,
            detail=checks.audit_detail(number, len(body), override, held_by), run_id=ctx.run_id,
        )  # fmt: skip
        return checks.written(ctx, name, number, len(body), created)

    def _check_token(self, cursor: sqlite3.Cursor, ctx: RequestContext) -> None:
        """An API token revoked since it was verified (maybe through another replica) is
        refused here, in the transaction of the change it asks for."""
        token_id = ctx.principal.token_id
        if token_id is None:
            return
        row = cursor.execute(
            "SELECT revoked_at FROM api_tokens WHERE token_id = ?", (token_id,)
        ).fetchone()
        if row is not None and row[0] is None:
            return
        if self.authn is not None:
            self.authn.forget(token_id)
        revoked = _parse_time(row[0]) if row is not None else None
        raise AuthError(_revoked_message(token_id, revoked))


def _revoked_message(token_id: str, revoked: dt.datetime | None) -> str:
    from tofuflow.server.auth._tokens import _INVALID, TOKEN_PREFIX

    if revoked is None:  # the row is gone
        return _INVALID
    return (
        f"API token {TOKEN_PREFIX}{token_id} was revoked at "
        f"{revoked.replace(tzinfo=dt.UTC).isoformat()}; ask an admin for a new token"
    )


@dataclasses.dataclass(slots=True)
class _Workspace:
    """A ``workspaces`` row as the rules read it (``_locks.WorkspaceRow``); building an ORM
    instance instead cost more than the statements."""

    id: int
    name: str
    current_version: int | None = None
    serial: int | None = None
    lineage: str | None = None
    lock_id: str | None = None
    lock_info: dict[str, Any] | None = None
    locked_by: str | None = None
    override_by: str | None = None
    override_until: dt.datetime | None = None


def _find(cursor: sqlite3.Cursor, name: str) -> _Workspace | None:
    row = cursor.execute(
        "SELECT id, name, current_version, serial, lineage, lock_id, lock_info, locked_by, "
        "override_by, override_until FROM workspaces WHERE name = ?",
        (name,),
    ).fetchone()
    if row is None:
        return None
    lock_info = json.loads(row[6]) if row[6] is not None else None
    return _Workspace(
        id=row[0], name=row[1], current_version=row[2], serial=row[3], lineage=row[4],
        lock_id=row[5], lock_info=lock_info, locked_by=row[7], override_by=row[8],
        override_until=_parse_time(row[9]),
    )  # fmt: skip


def _workspace_for_update(cursor: sqlite3.Cursor, name: str) -> _Workspace:
    """The workspace's row, created first if it has none (``_state.workspace_for_update``);
    the transaction already holds SQLite's write lock."""
    ws = _find(cursor, name)
    if ws is not None:
        return ws
    created = utcnow()
    cursor.execute(
        "INSERT INTO workspaces (name, created_at) VALUES (?, ?)", (name, _time(created))
    )
    if cursor.lastrowid is None:  # pragma: no cover - sqlite3 sets it after an INSERT
        raise RuntimeError("SQLite did not report the new workspace's id")
    return _Workspace(cursor.lastrowid, name)


def _is_identical_retry(cursor: sqlite3.Cursor, ws: _Workspace, serial: int, digest: str) -> bool:
    from tofuflow.errors import ConflictError

    if ws.current_version is None or serial != ws.serial:
        return False
    row = cursor.execute(
        "SELECT sha256 FROM state_versions WHERE workspace_id = ? AND version = ?",
        (ws.id, ws.current_version),
    ).fetchone()
    if row is not None and row[0] == digest:
        return True
    raise ConflictError(
        f"serial {serial} is already stored for {ws.name} with different content: another "
        "writer got there first. Run `tofu refresh` or re-plan, then apply again"
    )


@dataclasses.dataclass
class _Event:
    """An audit event's fields, as ``_audit.event_json`` reads them from a row."""

    id: int
    ts: dt.datetime
    actor: str
    actor_claims: dict[str, Any] | None
    action: str
    workspace: str | None
    serial: int | None
    outcome: str
    status: int
    client: str | None
    detail: dict[str, Any] | None
    run_id: str | None
    commit: str | None
    prev_hash: str
    hash: str = ""


_HEAD_AND_LAST_ID = (
    "SELECT (SELECT last_hash FROM audit_chains WHERE name IN (?, '*') ORDER BY name = '*' "
    "LIMIT 1), (SELECT max(id) FROM audit_events)"
)


def _append(
    cursor: sqlite3.Cursor, ctx: RequestContext, action: str, *, workspace: str,
    serial: int | None, detail: Mapping[str, Any], run_id: str | None = None,
) -> None:  # fmt: skip
    """``_audit.append`` in plain statements: the same row, the same chain.

    Only ``state.*`` events come here; those call for no notification (``notify._events``
    builds them for run, environment and drift events only).
    """
    chain = chain_of(workspace)
    # The chain's head (or the origin, for its first event) and the last id, in one step.
    head, last_id = cursor.execute(_HEAD_AND_LAST_ID, (chain,)).fetchone()
    actor = ctx.actor
    event = _Event(
        id=(last_id or 0) + 1, ts=utcnow(), actor=actor.subject,
        actor_claims=dict(actor.claims) if actor.claims else None, action=action,
        workspace=workspace, serial=serial, outcome="ok", status=200, client=actor.client,
        detail=dict(detail), run_id=run_id, commit=None,
        prev_hash=head if head is not None else GENESIS,
    )  # fmt: skip
    event.hash = record_hash(event.prev_hash, _audit.event_json(event))
    cursor.execute(
        "INSERT INTO audit_events (id, ts, actor, actor_claims, action, workspace, serial, "
        'outcome, status, client, detail, run_id, "commit", prev_hash, hash) '
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
        (event.id, _time(event.ts), event.actor, json.dumps(event.actor_claims), action,
         workspace, serial, event.outcome, event.status, event.client, json.dumps(event.detail),
         run_id, event.prev_hash, event.hash),
    )  # fmt: skip
    cursor.execute(
        "INSERT INTO audit_chains (name, last_id, last_hash) VALUES (?, ?, ?) ON CONFLICT (name) "
        "DO UPDATE SET last_id = excluded.last_id, last_hash = excluded.last_hash",
        (chain, event.id, event.hash),
    )


def _time(moment: dt.datetime) -> str:
    """A UTC time as SQLAlchemy stores a DateTime in SQLite ("%Y-%m-%d %H:%M:%S.%f", as
    ``isoformat`` spells it several times faster)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment.isoformat(" ", "microseconds")


def _parse_time(text: str | None) -> dt.datetime | None:
    # Naive, as SQLAlchemy hands SQLite's times back (the rule functions expect that).
    return dt.datetime.fromisoformat(text) if text is not None else None
