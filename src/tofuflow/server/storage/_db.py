"""The control plane's tables (SQLAlchemy 2) and engine set-up for SQLite and PostgreSQL.

Schema changes go through Alembic (``migrations/``); ``migrate(engine)`` brings a database
to the newest revision at start-up.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import QueuePool

from tofuflow.errors import ConfigError, StorageError

__all__ = [
    "ApiToken",
    "Approval",
    "AuditChain",
    "AuditEvent",
    "Base",
    "ConsoleSession",
    "DriftReport",
    "Environment",
    "Lease",
    "NotificationDelivery",
    "NotificationEvent",
    "Run",
    "RunLog",
    "StateVersion",
    "Workspace",
    "make_engine",
    "migrate",
    "postgres_connection_room",
    "utcnow",
    "write_lock",
    "write_session",
]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A time, always read back as aware UTC. PostgreSQL keeps the zone; SQLite (through
    SQLAlchemy) drops it, and every time this server stores is UTC, so a naive one read
    from SQLite is UTC. What is stored does not change."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)  # type: ignore[no-any-return]
        return value  # type: ignore[no-any-return]


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dt.datetime: UtcDateTime(),
        dict[str, Any]: JSON,
    }


class Workspace(Base):
    """One state (the HTTP backend has one URL per state) and its lock."""

    __tablename__ = "workspaces"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    current_version: Mapped[int | None] = mapped_column(Integer, default=None)
    serial: Mapped[int | None] = mapped_column(BigInteger, default=None)
    lineage: Mapped[str | None] = mapped_column(String(64), default=None)
    lock_id: Mapped[str | None] = mapped_column(String(128), default=None)
    lock_info: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    locked_by: Mapped[str | None] = mapped_column(String(512), default=None)
    locked_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    override_by: Mapped[str | None] = mapped_column(String(512), default=None)
    override_until: Mapped[dt.datetime | None] = mapped_column(default=None)


class StateVersion(Base):
    """Every accepted write. The body is sealed (encrypted) — never stored in plaintext."""

    __tablename__ = "state_versions"
    __table_args__ = (UniqueConstraint("workspace_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    serial: Mapped[int] = mapped_column(BigInteger)
    lineage: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(512))
    run_id: Mapped[str | None] = mapped_column(String(64), default=None)
    source: Mapped[str] = mapped_column(String(16), default="write")
    key_id: Mapped[str] = mapped_column(String(512))
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    # Loaded only when read (``_version_row`` asks for it): a list of versions never does.
    ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary, default=None, deferred=True)
    blob_key: Mapped[str | None] = mapped_column(String(512), default=None)


class ApiToken(Base):
    """An expiring API token; only the hash of its secret is kept."""

    __tablename__ = "api_tokens"

    token_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    workspaces: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column()
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class Run(Base):
    """One plan → check → approve → apply run; artifact and plan are sealed like state."""

    __tablename__ = "runs"
    # List order (0006); the console's runs list per workspace (0008).
    __table_args__ = (
        Index("ix_runs_created_at_id", "created_at", "id"),
        Index("ix_runs_workspace_created_at", "workspace", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(255), index=True)
    status: Mapped[str] = mapped_column(String(24), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    requester: Mapped[str] = mapped_column(String(512), index=True)
    requester_claims: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    context: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    commit: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    base_serial: Mapped[int | None] = mapped_column(BigInteger, default=None)
    base_lineage: Mapped[str | None] = mapped_column(String(64), default=None)
    config_digest: Mapped[str] = mapped_column(String(64))
    has_changes: Mapped[bool | None] = mapped_column(default=None)
    summary: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    decision: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    artifact_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    # Sealed, and MBs for a large plan: loaded only when read (a list of runs never does).
    artifact: Mapped[dict[str, Any] | None] = mapped_column(default=None, deferred=True)
    plan_document: Mapped[dict[str, Any] | None] = mapped_column(default=None, deferred=True)
    # The canonical digest of the plan document the policies judged (0005).
    plan_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    session_hash: Mapped[str | None] = mapped_column(String(128), default=None)
    session_expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # Renewed by the applying runner; when it lapses the runner is lost (0004).
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    result: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    state_version: Mapped[int | None] = mapped_column(Integer, default=None)

    @property
    def requester_name(self) -> str:
        """A name a person recognises: the OIDC name or e-mail, or the token's description."""
        claims = self.requester_claims or {}
        for key in ("name", "preferred_username", "email", "description"):
            value = claims.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()[:200]
        return self.requester


class RunLog(Base):
    """One chunk of an apply's output, scrubbed by the runner and sealed like state (0008)."""

    __tablename__ = "run_logs"
    __table_args__ = (UniqueConstraint("run_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    size: Mapped[int] = mapped_column(Integer)
    sealed: Mapped[dict[str, Any]] = mapped_column()


class Approval(Base):
    __tablename__ = "approvals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    approver: Mapped[str] = mapped_column(String(512))
    approver_claims: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    comment: Mapped[str] = mapped_column(String(1000), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column()


class AuditEvent(Base):
    """One append-only audit record; ``hash`` chains it to the previous one."""

    __tablename__ = "audit_events"
    # A workspace's events in id order (its newest, a page after a cursor): migration 0010.
    __table_args__ = (Index("ix_audit_events_workspace_id", "workspace", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(512))
    actor_claims: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    action: Mapped[str] = mapped_column(String(64), index=True)
    workspace: Mapped[str | None] = mapped_column(String(255), default=None)
    serial: Mapped[int | None] = mapped_column(BigInteger, default=None)
    outcome: Mapped[str] = mapped_column(String(32))
    status: Mapped[int] = mapped_column(Integer)
    client: Mapped[str | None] = mapped_column(String(128), default=None)
    detail: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    run_id: Mapped[str | None] = mapped_column(String(32), index=True, default=None)
    commit: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditChain(Base):
    """A chain's head (0012): its newest event. Locking it serialises appends to that
    chain only; the row named ``*`` is the origin where every chain begins (``_chains``)."""

    __tablename__ = "audit_chains"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    last_id: Mapped[int] = mapped_column(Integer)
    last_hash: Mapped[str] = mapped_column(String(64))


class Environment(Base):
    """An ephemeral workspace: its own state, a configuration snapshot, a time to live.

    active → destroying → destroyed; a destroy that keeps failing is ``orphaned`` (still
    retried, with back-off, and listed until someone deals with it).
    """

    __tablename__ = "environments"
    __table_args__ = (
        Index("ix_environments_created_at_name", "created_at", "name"),
        # The console's workspace page: a workspace's live environments (migration 0011).
        Index("ix_environments_source_expires", "source_workspace", "expires_at"),
    )

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    source_workspace: Mapped[str] = mapped_column(String(255))
    owner: Mapped[str] = mapped_column(String(255))
    created_by: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default="active")
    context: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    # Sealed zip of the configuration and variables; loaded only when read (lists, the
    # reaper's and the notifier's scans never do).
    snapshot: Mapped[dict[str, Any]] = mapped_column(deferred=True)
    snapshot_sha256: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    claimed_by: Mapped[str | None] = mapped_column(String(255), default=None)
    claim_expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_run_id: Mapped[str | None] = mapped_column(String(32), default=None)
    last_error: Mapped[str | None] = mapped_column(String(2000), default=None)
    destroyed_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class ConsoleSession(Base):
    """A console sign-in (0009): the signed cookie names it, so that signing out or an
    admin's revoke ends it on every replica. Only the hash of its id is kept."""

    __tablename__ = "console_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject: Mapped[str] = mapped_column(String(512), index=True)
    issuer: Mapped[str] = mapped_column(String(512))
    name: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    ended_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    ended_by: Mapped[str | None] = mapped_column(String(512), default=None)


class Lease(Base):
    """A named lease (leader election among replicas sharing one database)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[dt.datetime] = mapped_column()


class DriftReport(Base):
    """One drift check of a workspace, with what last applied it."""

    __tablename__ = "drift_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace: Mapped[str] = mapped_column(String(255), index=True)
    checked_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    checked_by: Mapped[str] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(16))  # drift | none | error
    serial: Mapped[int | None] = mapped_column(BigInteger, default=None)
    last_applied_run: Mapped[str | None] = mapped_column(String(32), default=None)
    last_applied_commit: Mapped[str | None] = mapped_column(String(64), default=None)
    report: Mapped[dict[str, Any] | None] = mapped_column(default=None)


class NotificationEvent(Base):
    """The outbox: one event to notify about, written in the transaction of its cause.

    The sender fans each event out into one delivery per matching destination.
    ``dedup_key`` keeps events found by a scan (an expiry warning) from repeating.
    """

    __tablename__ = "notification_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(32), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    event: Mapped[str] = mapped_column(String(48))
    workspace: Mapped[str | None] = mapped_column(String(255), default=None)
    dedup_key: Mapped[str | None] = mapped_column(String(255), unique=True, default=None)
    payload: Mapped[dict[str, Any]] = mapped_column()
    fanned_out: Mapped[bool] = mapped_column(default=False, index=True)


class NotificationDelivery(Base):
    """One event to one destination: pending → delivered, or dead after N failures."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (UniqueConstraint("event_id", "destination"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("notification_events.id"), index=True)
    destination: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default="pending")
    # Sends tried, the one that succeeded included, since created or last sent again.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(String(1000), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(default=None)


_WRITE = "tofuflow_write"
_WRITE_LOCKS: dict[int, threading.Lock] = {}


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A session in one write transaction: commits on success, rolls back on error.

    On SQLite, writers of this process queue on a lock instead of in SQLite's busy
    handler, which sleeps up to 100 ms between tries and serves no one in order.
    """
    lock = write_lock(engine)
    with (
        lock if lock is not None else nullcontext(),
        Session(engine, expire_on_commit=False) as session,
        session.begin(),
    ):
        session.connection(execution_options={_WRITE: True})
        yield session


def write_lock(engine: Engine) -> threading.Lock | None:
    """The lock this process's SQLite writers of ``engine`` queue on; None elsewhere."""
    return _WRITE_LOCKS.get(id(engine))


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 20) -> Engine:
    """An engine with the settings each database needs for safe concurrent writes; on
    PostgreSQL it keeps up to ``pool_size`` connections and opens ``max_overflow`` more
    under load ([database] in the server configuration)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
        parsed.port  # noqa: B018 (parsed lazily: "55x4" fails here, not in a traceback later)
    except ArgumentError:  # its words would show the URL, password and all
        raise ConfigError(
            f"the database URL ([database] url, or TOFUFLOW_DATABASE_URL) is not a database URL: "
            f"{_DATABASE_URL_FORMS}"
        ) from None
    except ValueError:
        raise ConfigError(
            "the database URL ([database] url, or TOFUFLOW_DATABASE_URL) has a port that is "
            f"not a number: {_DATABASE_URL_FORMS}"
        ) from None
    if parsed.host and "@" in parsed.host:
        raise ConfigError(
            "the database URL ([database] url, or TOFUFLOW_DATABASE_URL) has an @ after the "
            "one that ends the user and password: percent-encode @ : / ? # in the password "
            "(@ is %40)"
        )
    if parsed.drivername in {"postgres", "postgresql"}:
        # Other tools' postgres:// (SQLAlchemy knows no such dialect), and the bare
        # postgresql:// that would look for psycopg2: psycopg (3) is the driver tofuflow has.
        parsed = parsed.set(drivername="postgresql+psycopg")
        url = parsed.render_as_string(hide_password=False)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            # Token hashes and the audit log: the owner's alone, whichever command made it
            # (SQLite gives its -wal and -shm files the database file's mode).
            Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _sqlite_pragmas(engine)
        _WRITE_LOCKS[id(engine)] = threading.Lock()
        return engine
    try:
        return create_engine(
            url, pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow
        )
    except (NoSuchModuleError, ImportError) as exc:
        shown = shown_url(parsed)
        raise ConfigError(
            f"the database URL {shown} ([database] url, or TOFUFLOW_DATABASE_URL) names "
            f"{parsed.drivername!r}, which tofuflow cannot use ({exc}): {_DATABASE_URL_FORMS}"
        ) from None


_DATABASE_URL_FORMS = (
    "use postgresql+psycopg://USER@HOST:5432/DB for PostgreSQL (the postgres extra; the "
    "password in TOFUFLOW_DATABASE_URL, not the file), or sqlite:///PATH"
)


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Transactions are begun by hand below; WAL lets readers run beside the writer.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # Writers take the write lock up front (IMMEDIATE): two writers never deadlock
        # upgrading a read lock. Readers begin deferred and never wait for writers (WAL).
        write = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def postgres_connection_room(engine: Engine) -> tuple[int, int, int]:
    """PostgreSQL's ``(max_connections, superuser_reserved_connections, in use by others)``:
    the client connections of the whole cluster but ``engine``'s own."""
    pool: Any = engine.pool
    with engine.connect() as connection:
        own = pool.checkedin() + pool.checkedout() if isinstance(pool, QueuePool) else 1
        limit = int(connection.exec_driver_sql("SHOW max_connections").scalar_one())
        reserved = int(
            connection.exec_driver_sql("SHOW superuser_reserved_connections").scalar_one()
        )
        in_use = int(
            connection.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
            ).scalar_one()
        )
    return limit, reserved, max(in_use - own, 0)


# The advisory lock key migrations take on PostgreSQL (any constant no one else uses).
_MIGRATION_LOCK = 0x746F6675666C6F77  # "tofuflow"


def migrate(engine: Engine) -> None:
    """Upgrade the database to the newest schema revision (Alembic)."""
    # Alembic announces every step at INFO; an up-to-date database is the common case
    # (every embedded plane in every Airflow task opens one): keep that out of their logs.
    quiet = logging.getLogger("alembic")
    level = quiet.level
    quiet.setLevel(max(level, logging.WARNING))
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    try:
        # Replicas (or embedded planes) starting together all migrate: one at a time, the
        # others then find the schema current. SQLite: the write lock up front (BEGIN
        # IMMEDIATE); PostgreSQL: a lock held until this transaction ends.
        try:
            connection = engine.connect()
        except SQLAlchemyError as exc:
            raise _unreachable(engine, exc) from exc
        with connection, connection.execution_options(**{_WRITE: True}).begin():
            if engine.dialect.name == "postgresql":
                lock = text("SELECT pg_advisory_xact_lock(:key)")
                connection.execute(lock, {"key": _MIGRATION_LOCK})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except (SQLAlchemyError, CommandError) as exc:
        raise _upgrade_failed(engine, exc) from exc
    finally:
        quiet.setLevel(level)


_SECRET_PARAMETER = re.compile(r"pass|secret|token|key", re.IGNORECASE)


def shown_url(url: URL) -> str:
    """``url`` as messages show it: the password hidden, also as a query parameter
    (``?password=``, libpq's form), with any other secret-looking parameter."""
    query = {k: ("***" if _SECRET_PARAMETER.search(k) else v) for k, v in url.query.items()}
    return url.set(query=query).render_as_string(hide_password=True)


def holds_sealed(engine: Engine) -> bool:
    """Whether the database holds anything sealed under a key: a state version or a run's
    artifact (plans, logs and snapshots come with one of those)."""
    from sqlalchemy import select

    with engine.connect() as connection:
        for found in (
            select(StateVersion.id).limit(1),
            select(Run.id).where(Run.artifact_sha256.is_not(None)).limit(1),
        ):
            if connection.execute(found).first() is not None:
                return True
    return False


def _reason(exc: Exception) -> str:
    """The database's own words (the first line), not SQLAlchemy's wrapping."""
    cause = getattr(exc, "orig", None) or exc
    return str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__


def _unreachable(engine: Engine, exc: Exception) -> StorageError:
    """No connection at all: a wrong host, port, database, user or password, or a
    database that is down; nothing to do with the schema."""
    where = shown_url(engine.url)
    return StorageError(
        f"cannot connect to the database {where}: {_reason(exc)}. Check [database] url (or "
        "TOFUFLOW_DATABASE_URL, which wins over the file) and that the database is running "
        "and lets this user in"
    )


def _upgrade_failed(engine: Engine, exc: Exception) -> StorageError:
    """What a person needs when the schema upgrade fails: which database, at which
    revision, the database's own words (not the SQL), and what to do."""
    from alembic.migration import MigrationContext
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with engine.connect() as connection:
            revision = MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError:
        revision = None
    reason = _reason(exc)
    where = shown_url(engine.url)
    return StorageError(
        f"cannot upgrade the database {where} (at revision {revision or 'none'}) to this "
        f"tofuflow's schema: {reason}. Was it written by a newer or a development build of "
        "tofuflow? Back it up, then run that build's `tofuflow server` against it, or point "
        "tofuflow at a fresh data directory (TOFUFLOW_DATA_DIR) or [database] url"
    )
