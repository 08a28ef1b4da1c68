"""One audit chain per workspace: writers to different workspaces never wait for each other,
and verification is as strong as it was with one chain (issue 18).

On PostgreSQL the single tip row every append locked held each writer until the writer
before it had committed: 96 % of the write path's waiting was for that one row. Here the
same sequences run against SQLite and a real PostgreSQL: appends that interleave and commit
out of id order, tampering by a database owner, an upgrade of a log written before the
chains split, and checkpoints and offline exports across it.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import delete, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from _services.fixtures import fresh_pg_database
from tofuflow.errors import ConflictError
from tofuflow.server import _audit
from tofuflow.server._chains import GENESIS
from tofuflow.server.checkpoints import (
    CHECKPOINT_FORMAT_V1,
    EXPORT_FORMAT,
    CheckpointKeeper,
    CheckpointStore,
    Ed25519FileSigner,
    checkpoint_payload,
    covers,
    record_hash,
    verify_export,
)
from tofuflow.server.console._chain import ChainStatus
from tofuflow.server.storage import make_engine, migrate
from tofuflow.server.storage._db import AuditChain, AuditEvent, write_session

ACTOR = _audit.Actor("token:tester")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    made = make_engine(database_url)
    migrate(made)
    yield made
    made.dispose()


def _append(engine: Engine, workspace: str | None, action: str = "state.write") -> int:
    with write_session(engine) as session:
        return _audit.append(session, ACTOR, action, workspace=workspace).id


def _keeper(engine: Engine, tmp_path: Path) -> CheckpointKeeper:
    signer = Ed25519FileSigner.load_or_create(tmp_path / "audit-signing.key")
    return CheckpointKeeper(engine, signer, CheckpointStore(None, tmp_path))


def _export(engine: Engine, *checkpoints: dict[str, Any]) -> dict[str, Any]:
    """What `tofuflow audit export` writes: the events the first checkpoint covers."""
    with Session(engine) as session:
        rows = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
        events = [_audit.event_json(e) for e in rows]
    events = [e for e in events if covers(checkpoints[0], e)]
    return {"format": EXPORT_FORMAT, "events": events, "checkpoints": list(checkpoints)}


def _public_key(tmp_path: Path) -> bytes:
    return Ed25519FileSigner.load_or_create(tmp_path / "audit-signing.key").public_key_pem()


def test_each_event_follows_the_one_before_it_in_its_own_workspace(engine: Engine) -> None:
    order = ["app/dev", "app/prod", None, "app/dev", "app/prod", "app/dev", None]
    ids = [_append(engine, workspace) for workspace in order]
    with Session(engine) as session:
        events = {e.id: e for e in session.scalars(select(AuditEvent))}
        heads = {h.name: (h.last_id, h.last_hash) for h in session.scalars(select(AuditChain))}
    previous: dict[str | None, str] = {}
    for event_id, workspace in zip(ids, order, strict=True):
        event = events[event_id]
        assert event.prev_hash == previous.get(workspace, GENESIS)  # a fresh log's origin
        previous[workspace] = event.hash
    assert heads == {
        "*": (0, GENESIS),
        "app/dev": (ids[5], events[ids[5]].hash),
        "app/prod": (ids[4], events[ids[4]].hash),
        "": (ids[6], events[ids[6]].hash),
    }
    with Session(engine) as session:
        assert _audit.verify(session) == _audit.VerifyResult(True, 7)


def test_a_writer_to_one_workspace_does_not_wait_for_a_writer_to_another(
    pg_cluster: tuple[str, Any],
) -> None:
    """The write that used to queue behind any uncommitted append now commits at once;
    one to the same workspace still waits (its chain must not fork)."""
    engine = make_engine(fresh_pg_database(pg_cluster[0]))
    migrate(engine)
    _append(engine, "app/dev")
    _append(engine, "app/prod")
    holder = Session(engine)
    holder.begin()
    _audit.append(holder, ACTOR, "state.write", workspace="app/dev")  # holds app/dev's head

    def timed(workspace: str) -> float:
        started = time.monotonic()
        with write_session(engine) as session:
            session.execute(text("SET LOCAL lock_timeout = '3s'"))
            _audit.append(session, ACTOR, "state.write", workspace=workspace)
        return time.monotonic() - started

    assert timed("app/prod") < 1.0
    assert timed("new/workspace") < 1.0  # a chain's first event makes its head row
    blocked: list[BaseException | None] = []
    waiter = threading.Thread(target=lambda: blocked.append(_raises(lambda: timed("app/dev"))))
    waiter.start()
    waiter.join()
    assert blocked and "lock timeout" in str(blocked[0]).lower(), blocked
    holder.commit()
    holder.close()
    with Session(engine) as session:
        assert _audit.verify(session).ok
    engine.dispose()


def _raises(call: Any) -> BaseException | None:
    try:
        call()
    except Exception as exc:  # the assertion reads it
        return exc
    return None


def test_events_committed_out_of_id_order_are_not_mistaken_for_tampering(
    pg_cluster: tuple[str, Any], tmp_path: Path
) -> None:
    """An append takes its id, then commits after a later id of another workspace: the
    console's incremental walk and the checkpoints have passed that id by then."""
    engine = make_engine(fresh_pg_database(pg_cluster[0]))
    migrate(engine)
    status, keeper = ChainStatus(engine), _keeper(engine, tmp_path)
    _append(engine, "app/dev")
    assert status.check("app/dev").ok
    late = Session(engine)
    late.begin()
    late_id = _audit.append(late, ACTOR, "state.write", workspace="app/dev").id
    early_other = _append(engine, "app/prod")
    assert early_other > late_id
    assert status.check("app/dev").ok  # the uncommitted event is not its newest yet
    first = keeper.checkpoint()
    assert not covers(first, {"id": late_id, "workspace": "app/dev"})
    late.commit()
    late.close()
    _append(engine, "app/dev")  # follows the late event
    assert status.check("app/dev") == _audit.VerifyResult(True, 3)
    with Session(engine) as session:
        assert _audit.verify(session) == _audit.VerifyResult(True, 4)
    second = keeper.checkpoint()
    assert second["events"] == 4 and second["heads"]["app/dev"][0] > early_other
    check = verify_export(_export(engine, second, first), _public_key(tmp_path))
    assert check.ok and check.events == 4, check
    engine.dispose()


def test_a_removed_newest_event_of_one_workspace_is_caught(engine: Engine) -> None:
    """By `verify` and by the console's status of that workspace's chain, at once."""
    for workspace in ("app/dev", "app/prod", "app/dev", "app/prod"):
        _append(engine, workspace)
    status, walks_every_time = ChainStatus(engine), ChainStatus(engine, full_every=0)
    assert status.check("app/dev").ok and walks_every_time.check("app/dev").ok
    _append(engine, "app/dev")
    _delete_newest(engine, "app/dev")  # one the page has not checked yet
    with Session(engine) as session:
        result = _audit.verify(session)
    assert not result.ok and result.reason == "the newest events of workspace app/dev were removed"
    assert walks_every_time.check("app/dev").reason == result.reason
    assert status.check("app/dev").reason == result.reason
    assert status.check("app/prod") == _audit.VerifyResult(True, 2)
    _delete_newest(engine, "app/prod")  # the newest the page had checked of its chain
    assert status.check("app/prod") == _audit.VerifyResult(False, 2, 4, "was removed")


def _delete_newest(engine: Engine, workspace: str) -> None:
    """What the database's owner can do: delete a workspace's newest event."""
    with write_session(engine) as session:
        newest = session.scalar(
            select(AuditEvent.id).where(AuditEvent.workspace == workspace).order_by(
                AuditEvent.id.desc()).limit(1)
        )  # fmt: skip
        session.execute(delete(AuditEvent).where(AuditEvent.id == newest))


def test_deleting_a_whole_workspaces_events_and_head_is_caught_by_the_checkpoint(
    engine: Engine, tmp_path: Path
) -> None:
    """The database alone cannot tell that a chain never existed; the signed checkpoint
    names its head, so the server refuses to sign again and an export fails offline."""
    for workspace in ("app/dev", "app/prod", None, "app/dev"):
        _append(engine, workspace)
    keeper = _keeper(engine, tmp_path)
    signed = keeper.checkpoint()
    assert signed["chains"] == 3 and set(signed["heads"]) == {"app/dev", "app/prod", ""}
    with write_session(engine) as session:
        session.execute(delete(AuditEvent).where(AuditEvent.workspace == "app/prod"))
        session.execute(delete(AuditChain).where(AuditChain.name == "app/prod"))
    with Session(engine) as session:
        assert _audit.verify(session).ok  # the chains that are left are intact
    with pytest.raises(ConflictError, match=r"the newest of workspace app/prod it signed, is "
                                             r"missing.*nothing was signed"):  # fmt: skip
        keeper.checkpoint()
    check = verify_export(_export(engine, signed), _public_key(tmp_path))
    assert not check.ok
    assert "signed event 2 of workspace app/prod, which this export lacks" in check.problem


def test_an_export_with_a_workspaces_newest_events_cut_off_does_not_verify(
    engine: Engine, tmp_path: Path
) -> None:
    for workspace in ("app/dev", "app/prod", "app/dev"):
        _append(engine, workspace)
    signed = _keeper(engine, tmp_path).checkpoint()
    doc = _export(engine, signed)
    assert verify_export(doc, _public_key(tmp_path)).ok
    cut = {**doc, "events": doc["events"][:-1]}  # app/dev's newest
    assert "covers events this export lacks" in verify_export(cut, _public_key(tmp_path)).problem
    forged = json.loads(json.dumps(doc))
    forged["checkpoints"][0]["heads"]["app/dev"][0] = 1  # heads no longer what it signed
    check = verify_export(forged, _public_key(tmp_path))
    assert "its chain heads are not the ones it signed" in check.problem
    newer = {**doc, "events": [*doc["events"], _unsigned_next(doc["events"])]}
    check = verify_export(newer, _public_key(tmp_path))
    assert check.problem == (
        "events of workspace app/prod after 2 are not covered by a signed checkpoint"
    )


def _unsigned_next(events: list[dict[str, Any]]) -> dict[str, Any]:
    """A real next event of app/prod, that no checkpoint covers."""
    prod = [e for e in events if e["workspace"] == "app/prod"][-1]
    event = {**prod, "id": events[-1]["id"] + 1, "prev_hash": prod["hash"], "serial": 9}
    event["hash"] = record_hash(event["prev_hash"], event)
    return event


def test_a_log_written_before_the_split_keeps_verifying_and_new_chains_start_at_its_end(
    database_url: str, tmp_path: Path
) -> None:
    """A database at revision 0011, with one global chain and a format-1 checkpoint of
    it, upgrades: no event is rewritten, the old checkpoint still matches, and the next
    checkpoint and an export covering both verify."""
    engine = make_engine(database_url)
    config = Config()
    config.set_main_option(
        "script_location", str(Path(_audit.__file__).parent / "storage" / "migrations")
    )
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0011")
    previous = GENESIS
    with engine.begin() as connection:  # what 0011's append wrote: one chain for all
        for event_id, workspace in enumerate(["app/dev", None, "app/prod"], start=1):
            row = {"id": event_id, "ts": "2026-01-02T03:04:05.000006Z", "actor": "token:old",
                   "actor_claims": None, "action": "state.write", "workspace": workspace,
                   "serial": None, "outcome": "ok", "status": 200, "client": None,
                   "detail": None, "run_id": None, "commit": None}  # fmt: skip
            digest = record_hash(previous, row)
            connection.execute(
                text("INSERT INTO audit_events (id, ts, actor, action, workspace, outcome, "
                     "status, prev_hash, hash) VALUES (:id, :ts, 'token:old', 'state.write', "
                     ":ws, 'ok', 200, :prev, :hash)"),
                {"id": event_id, "ts": "2026-01-02 03:04:05.000006", "ws": workspace,
                 "prev": previous, "hash": digest},
            )  # fmt: skip
            previous = digest
        connection.execute(text("INSERT INTO audit_head (id, last_hash) VALUES (1, :h)"),
                           {"h": previous})  # fmt: skip
        if engine.dialect.name == "postgresql":  # as if the ids had come from the sequence
            connection.execute(text("SELECT setval('audit_events_id_seq', 3)"))
    signer = Ed25519FileSigner.load_or_create(tmp_path / "audit-signing.key")
    old = {"format": CHECKPOINT_FORMAT_V1, "event_id": 3, "hash": previous, "events": 3,
           "signed_at": "2026-01-02T03:04:06.000000Z", "key_id": signer.key_id,
           "algorithm": signer.algorithm}  # fmt: skip
    old["signature"] = base64.b64encode(signer.sign(checkpoint_payload(old))).decode()
    store = CheckpointStore(None, tmp_path)
    store.put(old)

    migrate(engine)  # 0011 -> head
    with Session(engine) as session:
        assert _audit.read_origin(session) == (3, previous)
        assert _audit.verify(session) == _audit.VerifyResult(True, 3)
    dev = _append(engine, "app/dev")
    with Session(engine) as session:
        assert session.get_one(AuditEvent, dev).prev_hash == previous  # begins at the origin
    _append(engine, None)
    keeper = CheckpointKeeper(engine, signer, store)
    new = keeper.checkpoint()
    assert new["origin"] == {"event_id": 3, "hash": previous} and new["events"] == 5
    check = verify_export(_export(engine, new, old), signer.public_key_pem())
    assert check.ok and check.events == 5 and check.checkpoints == 2, check

    with write_session(engine) as session:  # rewriting a pre-split event is still caught
        session.execute(update(AuditEvent).where(AuditEvent.id == 2).values(actor="token:x"))
    with Session(engine) as session:
        assert _audit.verify(session).first_bad_id == 2
    engine.dispose()
