"""The http backend's hot path on PostgreSQL: LOCK, POST and UNLOCK, each one transaction
in two round trips on the event loop's own connections (issue 18).

    fast = PostgresStatePath.for_service(service)    # None unless PostgreSQL (psycopg 3)
    await fast.write(ctx, name, body, lock_id, checked)

Through the ORM a LOCK → POST 256 KiB → UNLOCK cycle cost about 21 ms of server CPU: an
uncached token look-up per request (a pooled connection, its pre-ping and reset), an ORM
session with its flushes and identity map, a dozen round trips and two thread-pool hops
per request. Here each request runs on an ``AsyncConnection`` that the event loop drives
itself (no thread): its reads (the token's revocation, the workspace row and its audit
chain's head locked ``FOR UPDATE``, its versions, the event's id) go out as one query;
the rules run in Python; its writes and the ``COMMIT`` go out as a second. The statements
of a round trip travel as one multi-statement query with client-side parameters: a
pipeline of separate statements cost more in psycopg than everything else here.
PostgreSQL's own group commit lets concurrent transactions share a WAL flush, so no writer
thread batches them. With a blob store, a version's body is uploaded from a worker thread
inside its transaction, as on the ORM path.

What does not change (``_state_fast`` keeps the same promises on SQLite):

* the rules and their messages are ``StateService``'s own, applied to the locked row;
* an answer leaves only after its ``COMMIT`` returned (``synchronous_commit`` as set);
* the audit event is appended in the change's transaction exactly as ``_audit.append``
  appends it: after the chain's head row is locked, with an id drawn after that lock,
  chained to the head, the head moved to it;
* an API token's revocation is read inside that transaction, so a principal from the
  verified-token cache (``Authenticator.cached``) is refused at once once revoked, whichever
  replica revoked it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.concurrency import run_in_threadpool

from tofuflow.errors import AuthError, ConflictError, LockedError
from tofuflow.server import _audit
from tofuflow.server._chains import GENESIS, ORIGIN, chain_of, record_hash
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
from tofuflow.server._state_fast import _Event, _revoked_message, _Workspace
from tofuflow.server.storage._db import utcnow

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from tofuflow.server.auth import Authenticator

__all__ = ["PostgresStatePath"]

_T = TypeVar("_T")

# Connections per event loop: the ORM engine's pool size ([database] pool_size), this when
# the engine has no such pool. A request past it waits its turn.
_POOL_SIZE = 10
# An idle connection is closed after this long (the next request opens one again).
_IDLE_SECONDS = 30.0


_REVOKED = "SELECT revoked_at FROM api_tokens WHERE token_id = %s"
_WORKSPACE_COLUMNS = (
    "w.id, w.name, w.current_version, w.serial, w.lineage, w.lock_id, w.lock_info, "
    "w.locked_by, w.override_by, w.override_until"
)
# The workspace's row, then its chain's head, locked in that order (the ORM path's order:
# the row, then ``_audit.append``). No row when either is missing: see ``_make_rows``.
_LOCK_ROWS = (
    f"SELECT {_WORKSPACE_COLUMNS}, h.last_hash FROM workspaces w "  # noqa: S608 - fixed text
    "JOIN audit_chains h ON h.name = %s WHERE w.name = %s FOR UPDATE OF w, h"
)
_LOCK_WORKSPACE = f"SELECT {_WORKSPACE_COLUMNS} FROM workspaces w WHERE w.name = %s FOR UPDATE"  # noqa: S608
_CREATE_WORKSPACE = (
    "INSERT INTO workspaces (name, created_at) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING"
)
# A chain's first event makes its head row, at the origin (``_audit._locked_head``).
_CREATE_HEAD = (
    "INSERT INTO audit_chains (name, last_id, last_hash) SELECT %s, "
    "coalesce((SELECT last_id FROM audit_chains WHERE name = %s), 0), "
    "coalesce((SELECT last_hash FROM audit_chains WHERE name = %s), %s) "
    "ON CONFLICT (name) DO NOTHING"
)
# Statements of their own after the locks: READ COMMITTED gives each a snapshot taken
# after the locks were granted, so the versions are those of the writer that held them,
# and the event's id is drawn after its chain's head was locked (ids rise in chain order).
_VERSIONS = (
    "SELECT (SELECT max(v.version) FROM state_versions v WHERE v.workspace_id = w.id), "
    "(SELECT v.sha256 FROM state_versions v WHERE v.workspace_id = w.id "
    "AND v.version = w.current_version) FROM workspaces w WHERE w.name = %s"
)
_NEXT_EVENT_ID = "SELECT nextval(pg_get_serial_sequence('audit_events', 'id'))"
_INSERT_EVENT = (
    "INSERT INTO audit_events (id, ts, actor, actor_claims, action, workspace, serial, "
    'outcome, status, client, detail, run_id, "commit", prev_hash, hash) '
    "VALUES (%s, %s, %s, %s::json, %s, %s, %s, 'ok', 200, %s, %s::json, %s, NULL, %s, %s)"
)
_MOVE_HEAD = "UPDATE audit_chains SET last_id = %s, last_hash = %s WHERE name = %s"
_INSERT_VERSION = (
    "INSERT INTO state_versions (workspace_id, version, serial, lineage, size, sha256, "
    "created_at, created_by, run_id, source, key_id, wrapped_key, nonce, ciphertext, "
    "blob_key) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'write', %s, %s, %s, %s, %s)"
)
_TAKE_LOCK = (
    "UPDATE workspaces SET lock_id = %s, lock_info = %s::json, locked_by = %s, "
    "locked_at = %s WHERE id = %s"
)
# The ORM stores a None JSON value as JSON null; so does this.
_RELEASE_LOCK = (
    "UPDATE workspaces SET lock_id = NULL, lock_info = 'null'::json, locked_by = NULL, "
    "locked_at = NULL WHERE id = %s"
)
_IDLE = 0  # psycopg.pq.TransactionStatus.IDLE (psycopg is imported only when used)


@dataclasses.dataclass
class _Locked:
    """What a change read in its first round trip, under its row locks."""

    ws: _Workspace
    prev_hash: str  # the hash of its chain's newest event
    event_id: int  # drawn after the chain's head was locked
    latest: int | None = None  # the highest version number stored (a delete keeps them)
    current_sha256: str | None = None


class _Tx:
    """One change's transaction on one connection. Its statements are queued with ``add``
    and go out together with ``send``, one round trip for them all: the parameters are
    bound client-side (``AsyncClientCursor``), so several statements fit one query."""

    def __init__(self, connection: AsyncConnection[Any]) -> None:
        from psycopg import AsyncClientCursor

        self.connection = connection
        self.cursor = AsyncClientCursor(connection)
        self.pending: list[tuple[str, Sequence[Any]]] = [("BEGIN", ())]
        self.appended = False  # only a change that appended its audit event commits
        self.sends = 0

    def add(self, query: str, params: Sequence[Any] = ()) -> None:
        self.pending.append((query, params))

    async def send(self) -> list[Any]:
        """Run the queued statements; the first row of each (None where it has none)."""
        statements, self.pending = self.pending, []
        self.sends += 1
        await self.cursor.execute(
            "; ".join(query for query, _ in statements),
            [value for _, params in statements for value in params],
        )
        rows = []
        cursor = self.cursor
        while True:
            result = cursor.pgresult
            rows.append(await cursor.fetchone() if result is not None and result.ntuples else None)
            if not cursor.nextset():
                return rows


class PostgresStatePath:
    """LOCK, POST and UNLOCK of ``StateService`` on PostgreSQL, each one transaction in
    two round trips.

    The caller has checked the permission and the apply-session rule (``StateService``
    does, before it comes here); everything read from or written to the database happens
    in the change's transaction.
    """

    def __init__(self, service: StateService, conninfo: str, pool_size: int = _POOL_SIZE) -> None:
        self.service = service
        self.authn: Authenticator | None = None  # set by the app: revocation messages
        self._conninfo = conninfo
        self.pool_size = pool_size
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pool] = (
            weakref.WeakKeyDictionary()
        )

    @classmethod
    def for_service(cls, service: StateService) -> PostgresStatePath | None:
        """The fast path for ``service``'s database, or None where the ORM path stays."""
        from sqlalchemy import event
        from sqlalchemy.pool import QueuePool

        engine = service.engine
        if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg":
            return None
        conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        size = engine.pool.size() if isinstance(engine.pool, QueuePool) else _POOL_SIZE
        path = cls(service, conninfo, size)
        # Its connections end with the engine's (the embedded plane and tests dispose it).
        event.listen(engine, "engine_disposed", lambda _engine: path.close())
        return path

    def close(self) -> None:
        """Close every idle connection now, and each busy one when its request ends."""
        for pool in list(self._pools.values()):
            pool.close()
        self._pools.clear()

    async def lock(self, ctx: RequestContext, name: str, info: Mapping[str, Any], via: str) -> None:
        lock_id = lock_id_of(info)
        await self._run(lambda tx: self._lock(tx, ctx, name, info, lock_id, via))

    async def unlock(self, ctx: RequestContext, name: str, info: Mapping[str, Any] | None) -> None:
        lock_id = lock_id_of(info) if info is not None else ""
        await self._run(lambda tx: self._unlock(tx, ctx, name, lock_id))

    async def write(
        self, ctx: RequestContext, name: str, body: bytes, lock_id: str | None, checks: WriteChecks
    ) -> VersionInfo | None:
        return await self._run(lambda tx: self._write(tx, ctx, name, body, lock_id, checks))

    # -- in the change's transaction ----------------------------------------------------

    async def _lock(
        self, tx: _Tx, ctx: RequestContext, name: str, info: Mapping[str, Any], lock_id: str,
        via: str,
    ) -> None:  # fmt: skip
        locked = _made(await self._lock_rows(tx, ctx, name, create=True), name)
        ws = locked.ws
        held_by_other = ws.locked_by != ctx.principal.subject
        # Re-locking with the same ID is an idempotent retry, but only by the holder.
        if ws.lock_id is not None and (ws.lock_id != lock_id or held_by_other):
            raise LockedError(f"workspace {name} is locked by {ws.locked_by}", ws.lock_info)
        subject = ctx.principal.subject
        tx.add(_TAKE_LOCK, (lock_id, json.dumps(dict(info)), subject, utcnow(), ws.id))
        _append(
            tx, locked, ctx, "state.lock", workspace=name, serial=ws.serial,
            detail={"lock_id": lock_id, "operation": info.get("Operation"), "via": via},
        )  # fmt: skip

    async def _unlock(self, tx: _Tx, ctx: RequestContext, name: str, lock_id: str) -> None:
        locked = await self._lock_rows(tx, ctx, name, create=False)
        if locked is None or locked.ws.lock_id is None:
            return  # already unlocked: unlocking is idempotent
        ws = locked.ws
        forced = check_unlock(ws, ctx.principal, lock_id)
        tx.add(_RELEASE_LOCK, (ws.id,))
        _append(
            tx, locked, ctx, "state.force_unlock" if forced else "state.unlock",
            workspace=name, serial=ws.serial,
            detail={"lock_id": ws.lock_id, "held_by": ws.locked_by},
        )  # fmt: skip

    async def _write(
        self, tx: _Tx, ctx: RequestContext, name: str, body: bytes, lock_id: str | None,
        checks: WriteChecks,
    ) -> VersionInfo | None:  # fmt: skip
        locked = _made(await self._lock_rows(tx, ctx, name, create=True, versions=True), name)
        ws = locked.ws
        check_lock(ws, lock_id)
        check_lock_owner(ws, ctx.principal, "write")
        held_by = ws.locked_by
        override = self.service._override_active(ws, ctx)
        serial, lineage, digest = checks.serial, checks.lineage, checks.digest
        if not override and _is_identical_retry(locked, serial, digest):
            return None
        if not override:
            _check_rules(ws, serial, lineage)
        number = (locked.latest or 0) + 1
        sealed = self.service.keyring.seal(pack_state(body), state_aad(name, number))
        ciphertext: bytes | None = sealed.ciphertext
        blob_key = None
        if self.service.blobs is not None:  # uploaded before the row that names it commits
            blob_key = f"state/{ws.id}/{number}-{uuid.uuid4().hex}"
            await run_in_threadpool(self.service.blobs.put, blob_key, sealed.ciphertext)
            ciphertext = None
        created = utcnow()
        tx.add(
            _INSERT_VERSION,
            (ws.id, number, serial, lineage, len(body), digest, created,
             ctx.principal.subject, ctx.run_id, sealed.key_id, sealed.wrapped_key,
             sealed.nonce, ciphertext, blob_key),
        )  # fmt: skip
        tx.add(_STORE_OVERRIDDEN if override else _STORE, (number, serial, lineage, ws.id))
        _append(
            tx, locked, ctx, "state.write", workspace=name, serial=serial,
            detail=checks.audit_detail(number, len(body), override, held_by), run_id=ctx.run_id,
        )  # fmt: skip
        return checks.written(ctx, name, number, len(body), created)

    # -- one transaction ----------------------------------------------------------------

    async def _run(self, work: Callable[[_Tx], Awaitable[_T]]) -> _T:
        """``work`` in a transaction of its own: ``BEGIN`` goes out with its first
        statements, ``COMMIT`` with its last ones if it appended its audit event (else
        ``ROLLBACK``: it changed nothing), and the caller is answered after that.

        When the first round trip finds its connection dropped (a database restart, an
        idle timeout), nothing of the change can have committed: it runs once more on a
        new connection, as the ORM engine's pre-ping would have it."""
        for attempt in (1, 2):
            async with self._pool().connection() as connection:
                tx = _Tx(connection)
                try:
                    result = await work(tx)
                    tx.add("COMMIT" if tx.appended else "ROLLBACK")
                    await tx.send()
                    return result
                except BaseException as exc:
                    await _roll_back(connection)
                    if attempt == 1 and tx.sends == 1 and connection.closed and _is_dropped(exc):
                        self._pool().close_idle()  # dropped too, most likely
                        continue
                    raise
        raise RuntimeError("unreachable: the second attempt returns or raises")

    def _pool(self) -> _Pool:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            pool = self._pools[loop] = _Pool(self._conninfo, loop, self.pool_size)
        return pool

    async def _lock_rows(
        self, tx: _Tx, ctx: RequestContext, name: str, *, create: bool, versions: bool = False
    ) -> _Locked | None:
        """The first round trip: the token's revocation, the workspace's row and its
        chain's head locked, the versions (``versions``) and the next event id. None when
        the workspace does not exist and ``create`` is false."""
        token_id = ctx.principal.token_id
        if token_id is not None:
            tx.add(_REVOKED, (token_id,))
        chain = chain_of(name)
        rows = await _read_locked(tx, name, chain, versions)
        if token_id is not None:
            self._check_token(rows[-3 - versions], token_id)
        if rows[-2 - versions] is None:  # the workspace or its chain's head is missing
            if not await _make_rows(tx, name, chain, create=create):
                return None
            rows = await _read_locked(tx, name, chain, versions)
        row, next_id = rows[-2 - versions], rows[-1]
        if row is None:  # pragma: no cover - both rows exist and are this change's
            raise RuntimeError(f"the rows of workspace {name} could not be locked")
        locked = _Locked(_workspace(row), prev_hash=row[10], event_id=int(next_id[0]))
        if versions and rows[-2] is not None:
            locked.latest, locked.current_sha256 = rows[-2]
        return locked

    def _check_token(self, row: Sequence[Any] | None, token_id: str) -> None:
        """An API token revoked since it was verified (maybe through another replica) is
        refused here, in the transaction of the change it asks for."""
        if row is not None and row[0] is None:
            return
        if self.authn is not None:
            self.authn.forget(token_id)
        revoked = row[0].astimezone(dt.UTC) if row is not None else None
        raise AuthError(_revoked_message(token_id, revoked))


_STORE = "UPDATE workspaces SET current_version = %s, serial = %s, lineage = %s WHERE id = %s"
_STORE_OVERRIDDEN = (
    "UPDATE workspaces SET current_version = %s, serial = %s, lineage = %s, "
    "override_by = NULL, override_until = NULL WHERE id = %s"
)


async def _read_locked(tx: _Tx, name: str, chain: str, versions: bool) -> list[Any]:
    """Send what is queued, then the locking read, the versions (if asked) and the event
    id, in that order (the last ``2 + versions`` rows)."""
    tx.add(_LOCK_ROWS, (chain, name))
    if versions:
        tx.add(_VERSIONS, (name,))
    tx.add(_NEXT_EVENT_ID)
    return await tx.send()


async def _make_rows(tx: _Tx, name: str, chain: str, *, create: bool) -> bool:
    """Queue making the workspace's row (if ``create``) and its chain's head row, each
    only if missing; False when the workspace does not exist and ``create`` is false.

    The row is locked first, as always. A head row made here commits only with its
    chain's first event (a change without one rolls back)."""
    tx.add(_LOCK_WORKSPACE, (name,))
    (found,) = await tx.send()
    if found is None:
        if not create:
            return False
        # Created concurrently (another replica): the insert waits for it, then does nothing.
        tx.add(_CREATE_WORKSPACE, (name, utcnow()))
    tx.add(_CREATE_HEAD, (chain, ORIGIN, ORIGIN, GENESIS))
    return True


async def _roll_back(connection: AsyncConnection[Any]) -> None:
    """End a failed change's transaction; a connection that cannot is not used again."""
    from psycopg import Error

    if connection.closed or connection.info.transaction_status == _IDLE:
        return
    try:
        await connection.execute("ROLLBACK")
    except Error:
        await connection.close()


def _is_dropped(exc: BaseException) -> bool:
    from psycopg import OperationalError

    return isinstance(exc, OperationalError)


def _made(locked: _Locked | None, name: str) -> _Locked:
    if locked is None:  # pragma: no cover - ``_lock_rows`` makes a missing row when asked
        raise RuntimeError(f"workspace {name} was not made")
    return locked


def _workspace(row: Sequence[Any]) -> _Workspace:
    return _Workspace(
        id=row[0], name=row[1], current_version=row[2], serial=row[3], lineage=row[4],
        lock_id=row[5], lock_info=row[6], locked_by=row[7], override_by=row[8],
        override_until=row[9],
    )  # fmt: skip


def _is_identical_retry(locked: _Locked, serial: int, digest: str) -> bool:
    ws = locked.ws
    if ws.current_version is None or serial != ws.serial:
        return False
    if locked.current_sha256 == digest:
        return True
    raise ConflictError(
        f"serial {serial} is already stored for {ws.name} with different content: another "
        "writer got there first. Run `tofu refresh` or re-plan, then apply again"
    )


def _append(
    tx: _Tx, locked: _Locked, ctx: RequestContext, action: str, *, workspace: str,
    serial: int | None, detail: Mapping[str, Any], run_id: str | None = None,
) -> None:  # fmt: skip
    """``_audit.append`` in plain statements: the same row, the same chain, the head row
    locked in the first round trip.

    Only ``state.*`` events come here; those call for no notification (``notify._events``
    builds them for run, environment and drift events only).
    """
    actor = ctx.actor
    event = _Event(
        id=locked.event_id, ts=utcnow(), actor=actor.subject,
        actor_claims=dict(actor.claims) if actor.claims else None, action=action,
        workspace=workspace, serial=serial, outcome="ok", status=200, client=actor.client,
        detail=dict(detail), run_id=run_id, commit=None, prev_hash=locked.prev_hash,
    )  # fmt: skip
    event.hash = record_hash(event.prev_hash, _audit.event_json(event))
    tx.add(
        _INSERT_EVENT,
        (event.id, event.ts, event.actor, json.dumps(event.actor_claims), action, workspace,
         serial, event.client, json.dumps(event.detail), run_id, event.prev_hash, event.hash),
    )  # fmt: skip
    tx.add(_MOVE_HEAD, (event.id, event.hash, chain_of(workspace)))
    tx.appended = True


class _Pool:
    """Up to ``size`` autocommit connections for one event loop, newest idle first; one
    idle for ``_IDLE_SECONDS`` is closed."""

    def __init__(self, conninfo: str, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self._conninfo = conninfo
        self._loop = loop
        self._free = asyncio.Semaphore(size)
        self._idle: list[tuple[AsyncConnection[Any], float]] = []
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        async with self._free:
            connection = await self._take()
            try:
                yield connection
            finally:
                self._give_back(connection)

    async def _take(self) -> AsyncConnection[Any]:
        from psycopg import AsyncConnection

        while self._idle:
            connection, _ = self._idle.pop()
            if not connection.closed:
                return connection
        return await AsyncConnection.connect(self._conninfo, autocommit=True)

    def _give_back(self, connection: AsyncConnection[Any]) -> None:
        usable = not connection.closed and connection.info.transaction_status == _IDLE
        if self._closed or not usable:
            connection.pgconn.finish()  # nothing waits on it: close() would do just this
            return
        self._idle.append((connection, time.monotonic()))
        if self._sweep is None:
            self._sweep = self._loop.call_later(_IDLE_SECONDS, self._close_stale)

    def _close_stale(self) -> None:
        self._sweep = None
        cutoff = time.monotonic() - _IDLE_SECONDS
        stale = [c for c, since in self._idle if since <= cutoff]
        self._idle = [(c, since) for c, since in self._idle if since > cutoff]
        for connection in stale:
            connection.pgconn.finish()
        if self._idle:
            self._sweep = self._loop.call_later(_IDLE_SECONDS, self._close_stale)

    def close(self) -> None:
        """From any thread: the idle connections now, the busy ones as they come back."""
        self._closed = True
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not self._loop and self._loop.is_running():
            try:
                self._loop.call_soon_threadsafe(self.close_idle)
                return
            except RuntimeError:  # the loop closed meanwhile: nothing else touches the pool
                pass
        self.close_idle()

    def close_idle(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        idle, self._idle = self._idle, []
        for connection, _ in idle:
            connection.pgconn.finish()
