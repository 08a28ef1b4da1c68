"""The audit log: append-only, each event hash-chained to the one before it.

An event's hash covers its id, its content and the previous event's hash, so changing,
removing or reordering any event breaks the chain from that event on, and ``verify``
names the first one that no longer fits.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Text, cast, or_, select
from sqlalchemy.orm import Session

from tofuflow.server._paging import Page, decode_cursor, fill_page, grant_filter, one_workspace
from tofuflow.server.checkpoints import GENESIS, SORTED_HASHED_FIELDS, chain_hash, record_hash
from tofuflow.server.notify._events import from_audit
from tofuflow.server.storage._db import AuditEvent, AuditHead, utcnow

__all__ = [
    "GENESIS",
    "Actor",
    "AuditQuery",
    "VerifyResult",
    "append",
    "event_hash",
    "event_json",
    "query_events",
    "verify",
    "verify_from",
]


@dataclass(frozen=True)
class Actor:
    """Who did it: a subject plus the claims worth keeping (never a token)."""

    subject: str
    claims: Mapping[str, Any] | None = None
    client: str | None = None


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_id: int | None = None
    reason: str = ""


def append(
    session: Session,
    actor: Actor,
    action: str,
    *,
    outcome: str = "ok",
    status: int = 200,
    workspace: str | None = None,
    serial: int | None = None,
    detail: Mapping[str, Any] | None = None,
    run_id: str | None = None,
    commit: str | None = None,
) -> AuditEvent:
    """Add one event inside the caller's transaction (it commits or rolls back with it),
    and the notification it calls for, if any (``tofuflow.server.notify``)."""
    # The caller's pending changes (a 256 KiB version row) go out before the head row is
    # locked: appenders queue on that row until they commit, so the less happens between
    # the lock and the COMMIT, the more writes commit per second (issue 18).
    session.flush()
    # Locking the head row serialises appenders, so the chain never forks.
    head = session.get(AuditHead, 1, with_for_update=True)
    if head is None:
        head = AuditHead(id=1, last_hash=GENESIS)
        session.add(head)
    event = AuditEvent(
        ts=utcnow(),
        actor=actor.subject,
        actor_claims=dict(actor.claims) if actor.claims else None,
        action=action,
        workspace=workspace,
        serial=serial,
        outcome=outcome,
        status=status,
        client=actor.client,
        detail=dict(detail) if detail else None,
        run_id=run_id,
        commit=commit,
        prev_hash=head.last_hash,
        hash="",
    )
    session.add(event)
    session.flush()  # assigns the id, which the hash covers
    event.hash = event_hash(event)
    head.last_hash = event.hash
    from_audit(session, event)  # the outbox row commits or rolls back with the event
    return event


def event_hash(event: AuditEvent) -> str:
    return record_hash(event.prev_hash, event_json(event))


def verify(session: Session, batch: int = 5000) -> VerifyResult:
    """Walk the chain from the first event; report the first event that does not fit."""
    return verify_from(session, 0, GENESIS, batch)


def verify_from(session: Session, after: int, previous: str, batch: int = 5000) -> VerifyResult:
    """Walk the chain from the event after ``after`` (whose hash is ``previous``)."""
    # Plain tuples of the hashed fields, not ORM objects (an ORM object cost several times
    # the hashing): memory stays bounded by one batch, read in id order by primary key. The
    # JSON columns come as their text and are decoded here with json.loads, as the JSON
    # type would (the driver's JSON loader cost as much again as the rest of the fetch).
    events = AuditEvent.__table__.c
    columns = [
        cast(events[name], Text) if name in _JSON_FIELDS else events[name]
        for name in SORTED_HASHED_FIELDS
    ]
    page = select(events.id, events.prev_hash, events.hash, *columns).order_by(events.id)
    checked, last_id = 0, after
    while True:
        rows = session.execute(page.where(events.id > last_id).limit(batch)).all()
        for event_id, prev_hash, stored, *values in rows:
            if prev_hash != previous:
                return VerifyResult(False, checked, event_id, "does not follow the event before it")
            values[_TS] = _utc(values[_TS])
            for index in _JSON_INDEXES:
                if values[index] is not None:
                    values[index] = json.loads(values[index])
            if chain_hash(prev_hash, values) != stored:
                return VerifyResult(False, checked, event_id, "content does not match its hash")
            previous, last_id, checked = stored, event_id, checked + 1
        if len(rows) < batch:
            break
    head = session.get(AuditHead, 1)
    if head is not None and head.last_hash != previous:
        return VerifyResult(False, checked, None, "the newest events were removed")
    return VerifyResult(True, checked)


_TS = SORTED_HASHED_FIELDS.index("ts")
_JSON_FIELDS = ("actor_claims", "detail")
_JSON_INDEXES = tuple(SORTED_HASHED_FIELDS.index(name) for name in _JSON_FIELDS)


def _utc(ts: dt.datetime) -> str:
    # SQLite hands back naive datetimes (stored as UTC); PostgreSQL aware ones.
    # The spelling of "%Y-%m-%dT%H:%M:%S.%fZ" (hashes cover it), several times faster.
    text = ts.isoformat(timespec="microseconds")
    if ts.tzinfo is None:
        return text + "Z"
    if text.endswith("+00:00"):
        return text[:-6] + "Z"
    return ts.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


@dataclass(frozen=True)
class AuditQuery:
    run: str | None = None
    commit: str | None = None
    workspace: str | None = None
    actor: str | None = None
    action: str | None = None
    after: int = 0
    limit: int = 100


def query_events(
    engine: Any, principal: Any, query: AuditQuery, cursor: str | None = None
) -> Page[dict[str, Any]]:
    """A page of the events matching ``query`` that ``principal`` may read, oldest first.

    Events about a workspace need read rights on it; events without one (tokens, key
    rotation) are for admins.
    """
    from sqlalchemy.orm import Session as _Session

    from tofuflow.server.auth import Permission

    # Plain rows, not ORM objects: a page of a thousand events is read-only.
    events = AuditEvent.__table__.c
    statement = select(AuditEvent.__table__).order_by(events.id)
    if query.workspace:  # one workspace's events, from its own index entries
        statement = select(AuditEvent.__table__).order_by(events.workspace, events.id)
        statement = statement.where(*one_workspace(events.workspace, query.workspace))
    for column, value in (
        (events.run_id, query.run),
        (events.actor, query.actor),
        (events.action, query.action),
    ):
        if value:
            statement = statement.where(column == value)
    if query.commit:
        statement = statement.where(events.commit.startswith(query.commit))
    narrow = grant_filter(events.workspace, principal)
    if narrow is not None:  # events without a workspace are checked against "*" below
        statement = statement.where(or_(narrow, events.workspace.is_(None)))
    key = decode_cursor(cursor, "audit", (int,))

    def fetch(after: list[Any] | None, n: int) -> list[Any]:
        start = query.after if after is None else max(query.after, after[0])
        return list(session.execute(statement.where(events.id > start).limit(n)))

    with _Session(engine) as session:
        page = fill_page(
            fetch, lambda e: principal.can(Permission.READ_RUNS, e.workspace or "*"),
            lambda e: [e.id], kind="audit", limit=query.limit, after=key,
        )  # fmt: skip
        return Page([event_json(e) for e in page.items], page.next_cursor)


def event_json(event: Any) -> dict[str, Any]:
    """An event (a row of ``audit_events``, ORM or plain) as the API answers it."""
    return {
        "id": event.id, "ts": _utc(event.ts), "actor": event.actor,
        "actor_claims": event.actor_claims, "action": event.action,
        "workspace": event.workspace, "serial": event.serial, "outcome": event.outcome,
        "status": event.status, "client": event.client, "detail": event.detail,
        "run_id": event.run_id, "commit": event.commit,
        "prev_hash": event.prev_hash, "hash": event.hash,
    }  # fmt: skip
