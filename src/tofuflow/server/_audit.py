"""The audit log: append-only, each event hash-chained to the one before it in its chain.

An event's hash covers its id, its content and the previous event's hash, so changing,
removing or reordering any event breaks its chain from that event on, and ``verify`` names
the first one that no longer fits. There is one chain per workspace and one for events
about no workspace (``_chains``); each chain's newest event is kept in a head row
(``audit_chains``), which an appender locks, so only writers to the same workspace wait
for each other. A signed checkpoint covers every chain's head at once (``checkpoints``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Text, cast, or_, select
from sqlalchemy.orm import Session

from tofuflow.server._chains import (
    GENESIS,
    ORIGIN,
    SORTED_HASHED_FIELDS,
    ChainTips,
    chain_hash,
    chain_label,
    chain_of,
    record_hash,
)
from tofuflow.server._paging import Page, decode_cursor, fill_page, grant_filter, one_workspace
from tofuflow.server.notify._events import from_audit
from tofuflow.server.storage._db import AuditChain, AuditEvent, utcnow

__all__ = [
    "GENESIS",
    "Actor",
    "AuditQuery",
    "ChainWalk",
    "VerifyResult",
    "append",
    "event_hash",
    "event_json",
    "query_events",
    "read_origin",
    "verify",
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
    # locked: appenders to one chain queue on its row until they commit, so the less
    # happens between the lock and the COMMIT, the more writes commit per second.
    session.flush()
    head = _locked_head(session, chain_of(workspace))
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
    session.flush()  # assigns the id (after the lock: ids rise in chain order), hashed below
    event.hash = event_hash(event)
    head.last_id, head.last_hash = event.id, event.hash
    from_audit(session, event)  # the outbox row commits or rolls back with the event
    return event


def _locked_head(session: Session, name: str) -> AuditChain:
    """The chain's head row, locked until the caller's transaction ends (so the chain
    never forks); a chain's first event makes its row, starting at the origin."""
    head = session.get(AuditChain, name, with_for_update=True)
    if head is not None:
        return head
    origin_id, origin_hash = read_origin(session)
    insert = _insert_for(session)(AuditChain.__table__).values(
        name=name, last_id=origin_id, last_hash=origin_hash
    )
    # Two first events of one chain race to make its row: one inserts, the other waits
    # for it here and then locks the row that won.
    session.execute(insert.on_conflict_do_nothing(index_elements=["name"]))
    return session.get_one(AuditChain, name, with_for_update=True, populate_existing=True)


def _insert_for(session: Session) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def read_origin(session: Session) -> tuple[int, str]:
    """Where the chains begin: the last event of the log from before they split (0012),
    or event 0 and the genesis hash."""
    origin = session.get(AuditChain, ORIGIN)
    return (0, GENESIS) if origin is None else (origin.last_id, origin.last_hash)


def event_hash(event: AuditEvent) -> str:
    return record_hash(event.prev_hash, event_json(event))


def verify(session: Session, batch: int = 5000) -> VerifyResult:
    """Walk every chain from its start; report the first event that does not fit."""
    return ChainWalk(read_origin(session), batch).walk(session)


class ChainWalk:
    """Checks the log in id order, from where it last stopped, then squares every chain
    with its head row (so the newest events of a chain cannot go missing unnoticed).

    Memory holds one batch of events and one (id, hash) per chain. Writers to different
    chains commit in any order, so an event may appear below ids already read; the walk
    then reads that chain's missed events from its index before going on.
    """

    def __init__(self, origin: tuple[int, str], batch: int = 5000) -> None:
        self.tips = ChainTips(*origin)
        self.after = 0  # every event up to this id was read in id order
        self.checked = 0
        self.batch = batch

    def resume(self, heads: Mapping[str, Sequence[Any]], after: int) -> None:
        """Continue after a checkpoint: ``heads`` were checked, and every event to ``after``."""
        self.tips.seed((name, int(head[0]), str(head[1])) for name, head in heads.items())
        self.after = after

    def walk(self, session: Session) -> VerifyResult:
        while True:
            rows = session.execute(
                _HASHED.where(_EVENTS.id > self.after).order_by(_EVENTS.id).limit(self.batch)
            ).all()
            for row in rows:
                if (bad := self._follow(session, row)) is not None:
                    return bad
                self.after = max(self.after, row[0])
            if len(rows) < self.batch:
                break
        if problem := self.tips.origin_problem():
            return VerifyResult(False, self.checked, self.tips.origin_id, problem)
        return self._square_heads(session)

    def _follow(self, session: Session, row: Any) -> VerifyResult | None:
        event_id, prev_hash, stored, *values = row
        key = self.tips.key(event_id, values[_WORKSPACE])
        tip_id, tip_hash = self.tips.tip(key)
        if event_id <= tip_id and key != ORIGIN:
            return None  # read already, by a catch-up of its chain
        # Events of this chain may have committed after the walk passed their ids.
        caught = prev_hash == tip_hash or key == ORIGIN
        if not caught and (bad := self._catch_up(session, key, tip_id, event_id)) is not None:
            return bad
        if problem := self.tips.follow(event_id, values[_WORKSPACE], prev_hash, stored):
            return VerifyResult(False, self.checked, event_id, problem)
        values[_TS] = _utc(values[_TS])
        for index in _JSON_INDEXES:
            if values[index] is not None:
                values[index] = json.loads(values[index])
        if chain_hash(prev_hash, values) != stored:
            return VerifyResult(False, self.checked, event_id, "content does not match its hash")
        self.checked += 1
        return None

    def walk_chain(self, session: Session, name: str) -> VerifyResult:
        """Check one chain from where this walk left it to its end, and its head row: the
        events of one workspace, read from its index, whatever the size of the log.
        (Its events from before the chains split are checked by the whole walk.)"""
        tip_id = self.tips.tip(name)[0]
        if (bad := self._catch_up(session, name, tip_id, None)) is not None:
            return bad
        return self._square_heads(session, only=name)

    def _catch_up(
        self, session: Session, key: str, after: int, before: int | None
    ) -> VerifyResult | None:
        workspace = _EVENTS.workspace
        where = [_EVENTS.id > after] + ([_EVENTS.id < before] if before is not None else [])
        where.append(or_(workspace.is_(None), workspace == "") if key == "" else workspace == key)
        for row in session.execute(_HASHED.where(*where).order_by(_EVENTS.id)).all():
            if (bad := self._follow(session, row)) is not None:
                return bad
        return None

    def _square_heads(self, session: Session, only: str | None = None) -> VerifyResult:
        """Every head row (or ``only`` that chain's) with the hash of the event it names:
        the newest event of a chain cannot go missing either."""
        chains = AuditChain.__table__.c
        statement = select(chains.name, chains.last_id, chains.last_hash, _EVENTS.hash).outerjoin(
            AuditEvent.__table__, _EVENTS.id == chains.last_id
        )
        if only is not None:
            statement = statement.where(chains.name == only)
        heads = session.execute(statement)
        seen = set()
        for name, last_id, last_hash, found in heads.all():
            seen.add(name)
            if name == ORIGIN:
                if (last_id, last_hash) != (self.tips.origin_id, self.tips.origin_hash):
                    return VerifyResult(False, self.checked, None, "the chains' origin was changed")
                continue
            tip_id = self.tips.tip(name)[0]
            # A head past the walk: appended since the walk read that far.
            if last_id > tip_id and (bad := self._catch_up(session, name, tip_id, last_id + 1)):
                return bad
            if self.tips.tip(name) != (last_id, last_hash) or found != last_hash:
                removed = f"the newest events of {chain_label(name)} were removed"
                return VerifyResult(False, self.checked, None, removed)
        wanted = self.tips.heads().keys() if only is None else self.tips.heads().keys() & {only}
        for name in wanted - seen:
            removed = f"the head of {chain_label(name)} was removed"
            return VerifyResult(False, self.checked, None, removed)
        return VerifyResult(True, self.checked)


_EVENTS = AuditEvent.__table__.c
_TS = SORTED_HASHED_FIELDS.index("ts")
_WORKSPACE = SORTED_HASHED_FIELDS.index("workspace")
_JSON_FIELDS = ("actor_claims", "detail")
_JSON_INDEXES = tuple(SORTED_HASHED_FIELDS.index(name) for name in _JSON_FIELDS)
# Plain tuples of the hashed fields, not ORM objects (an ORM object cost several times the
# hashing). The JSON columns come as their text and are decoded with json.loads, as the JSON
# type would (the driver's JSON loader cost as much again as the rest of the fetch).
_HASHED = select(
    _EVENTS.id, _EVENTS.prev_hash, _EVENTS.hash,
    *(cast(_EVENTS[n], Text) if n in _JSON_FIELDS else _EVENTS[n] for n in SORTED_HASHED_FIELDS),
)  # fmt: skip


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
