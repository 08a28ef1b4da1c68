"""A control-plane data set at scale, written straight into PostgreSQL with COPY.

    python benchmarks/gen_scale_dataset.py postgresql+psycopg://... [--workspaces 10000]
        [--runs 100000] [--events 1000000]

Workspaces ``team-NN/ws-NNNNN`` (100 teams) with a serial and a lock on every 50th, runs
spread over them (newest first by ``created_at``), audit events whose hash chain verifies
(``event_hash`` of the server itself, so `tofuflow audit verify` walks it), a drift report
per 10th workspace and an environment per 20th (every workspace of team-07 has both). No
state bodies: the lists and details measured read rows, not sealed versions. The newest
``DOCUMENTED_RUNS`` runs carry a sealed artifact and plan document as the server stores
them (random ciphertext of ``DOCUMENT_KIB`` KiB each, base64 in the row): what a list
must not read, since a real run holds them (a packed plan of a few hundred resources, a
zipped plan file and configuration).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).parent.parent / "src"))

TEAMS = 100
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


DOCUMENTED_RUNS = 10_000
DOCUMENT_KIB = 16


def workspace_name(index: int) -> str:
    return f"team-{index % TEAMS:02d}/ws-{index:05d}"


def generate(url: str, workspaces: int, runs: int, events: int) -> dict[str, float]:
    """Fill an empty database at ``url`` (migrated here); seconds spent per table."""
    import psycopg

    from tofuflow.server.storage import make_engine, migrate

    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    timings: dict[str, float] = {}
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as connection:
        for table, rows in (
            ("workspaces", _workspaces(workspaces)),
            ("runs", _runs(runs, workspaces)),
            ("drift_reports", _drift(workspaces, runs)),
            ("environments", _environments(workspaces)),
        ):
            started = time.perf_counter()
            _copy(connection, table, rows)
            timings[table] = time.perf_counter() - started
        started = time.perf_counter()
        heads = _copy(connection, "audit_events", _events(events, workspaces, runs))
        with connection.cursor() as cursor:  # each chain's head (the origin row stays)
            cursor.executemany(
                "INSERT INTO audit_chains (name, last_id, last_hash) VALUES (%s, %s, %s)",
                [(name, last_id, last_hash) for name, (last_id, last_hash) in heads.items()],
            )
        timings["audit_events"] = time.perf_counter() - started
        for table in ("workspaces", "audit_events", "drift_reports"):  # ids given above
            connection.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608 - ours
                f"(SELECT max(id) FROM {table}))"
            )
        connection.commit()
        # VACUUM now, not whenever autovacuum notices a million new rows (mid-measurement).
        connection.autocommit = True
        connection.execute("VACUUM ANALYZE")
    return timings


def _copy(connection: Any, table: str, rows: Any) -> Any:
    """COPY the dict rows into ``table``; returns what the generator returned (if any)."""
    first = next(rows)
    columns = list(first)
    with (
        connection.cursor() as cursor,
        cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
    ):
        copy.write_row([_cell(first[c]) for c in columns])
        while True:
            try:
                row = next(rows)
            except StopIteration as done:
                result = done.value
                break
            copy.write_row([_cell(row[c]) for c in columns])
    connection.commit()
    return result


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict) else value


def _workspaces(count: int) -> Any:
    for i in range(count):
        locked = i % 50 == 0
        yield {
            "id": i + 1, "name": workspace_name(i), "created_at": START,
            "current_version": None, "serial": i % 97 + 1, "lineage": str(uuid.UUID(int=i)),
            "lock_id": str(uuid.UUID(int=i + 1)) if locked else None,
            "lock_info": {"ID": str(uuid.UUID(int=i + 1)), "Who": "ci@runner"} if locked else None,
            "locked_by": "token:tfw_bench" if locked else None,
            "locked_at": START if locked else None,
            "override_by": None, "override_until": None,
        }  # fmt: skip


def _runs(count: int, workspaces: int) -> Any:
    for i in range(count):
        at = START + dt.timedelta(seconds=i * 7)
        documented = i >= count - DOCUMENTED_RUNS
        yield {
            "id": f"r{i:09d}", "workspace": workspace_name(i % workspaces),
            "status": ("applied", "failed", "planned", "cancelled")[i % 4],
            "created_at": at, "updated_at": at, "requester": "token:tfw_bench",
            "context": {"commit": f"{i:040x}"}, "commit": f"{i:040x}",
            "config_digest": "a" * 64, "summary": {"add": i % 3, "change": 0, "destroy": 0},
            "artifact": _sealed() if documented else None,
            "plan_document": _sealed() if documented else None,
        }  # fmt: skip


def _sealed() -> dict[str, str]:
    """A sealed record's shape (``server/_sealed.py``), its ciphertext random bytes."""
    return {"key_id": "local:bench", "wrapped_key": base64.b64encode(os.urandom(60)).decode(),
            "nonce": base64.b64encode(os.urandom(12)).decode(),
            "ciphertext": base64.b64encode(os.urandom(DOCUMENT_KIB * 1024)).decode()}  # fmt: skip


def _drift(workspaces: int, runs: int) -> Any:
    """A report per tenth workspace, naming its newest run as the one that last applied it
    (the list shows that run's commit and pipeline)."""
    for n, i in enumerate(range(7, workspaces, 10)):  # team-07 (the reader's) has some
        newest = i + (runs - 1 - i) // workspaces * workspaces if i < runs else None
        yield {
            "id": n + 1, "workspace": workspace_name(i), "checked_at": START,
            "checked_by": "token:tfw_bench", "status": "none", "serial": 1, "report": {},
            "last_applied_run": None if newest is None else f"r{newest:09d}",
            "last_applied_commit": None if newest is None else f"{newest:040x}",
        }  # fmt: skip


def _environments(workspaces: int) -> Any:
    for i in range(7, workspaces, 20):
        yield {
            "name": f"{workspace_name(i)}-pr", "source_workspace": workspace_name(i),
            "owner": "ci@example.com", "created_by": "token:tfw_bench", "created_at": START,
            "expires_at": START + dt.timedelta(days=3650), "status": "active",
            "context": {}, "snapshot": {}, "snapshot_sha256": "0" * 64, "attempts": 0,
        }  # fmt: skip


def _events(count: int, workspaces: int, runs: int) -> Any:
    """Events chained as the server chains them: one chain per workspace (``_chains``)."""
    from tofuflow.server._audit import event_hash
    from tofuflow.server._chains import ChainTips

    tips = ChainTips()
    actions = ("state.lock", "state.write", "state.unlock", "state.read", "run.created")
    for i in range(count):
        workspace = workspace_name((i // 5) % workspaces)
        event = SimpleNamespace(
            id=i + 1, ts=START + dt.timedelta(milliseconds=i * 50), actor="token:tfw_bench",
            actor_claims=None, action=actions[i % len(actions)],
            workspace=workspace, serial=i % 97 + 1,
            outcome="ok", status=200, client="127.0.0.1",
            detail={"version": i % 97 + 1}, run_id=f"r{(i // 5) % runs:09d}", commit=None,
            prev_hash=tips.tip(workspace)[1], hash="",
        )  # fmt: skip
        event.hash = event_hash(event)  # type: ignore[arg-type]  # duck-typed like the row
        tips.follow(event.id, workspace, event.prev_hash, event.hash)
        yield {k: v for k, v in vars(event).items()}
    return tips.heads()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database_url", help="an empty PostgreSQL database (SQLAlchemy URL)")
    parser.add_argument("--workspaces", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    timings = generate(args.database_url, args.workspaces, args.runs, args.events)
    print(", ".join(f"{table} {seconds:.1f} s" for table, seconds in timings.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
