"""A workspace's audit events are read from that workspace's own index entries, at any
size of the log.

With ``workspace = name ... ORDER BY id LIMIT n`` PostgreSQL may walk the whole log by id
and discard the other workspaces' events, when it expects the workspace's events to be
spread evenly; for a workspace whose events are all old (the console's newest 50) or all
new (a page of ``/v1/audit?workspace=`` after an early cursor) that reads nearly every
row: ≈ 0.4 s at 1,000,000 events. The statements the server really sends are explained
here, on a log where one workspace has only old events and another only new ones.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import event, text

from _services.fixtures import fresh_pg_database
from tofuflow.server._audit import AuditQuery, query_events
from tofuflow.server._paging import encode_cursor
from tofuflow.server.auth import Grant, Principal, Role
from tofuflow.server.console._queries import workspace_events
from tofuflow.server.storage import make_engine, migrate


def _rows_read(plan: dict[str, Any]) -> int:
    """Rows every node of an EXPLAIN ANALYZE plan produced or threw away."""
    node = plan.get("Plan", plan)
    own = node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
    return int(own + sum(_rows_read(child) for child in node.get("Plans", [])))


def test_one_workspaces_events_are_read_from_its_own_entries_not_the_whole_log(
    pg_cluster: tuple[str, Any],
) -> None:
    engine = make_engine(fresh_pg_database(pg_cluster[0]))
    migrate(engine)
    with engine.begin() as connection:
        # 20,000 events of an old workspace, 300,000 of 100 others, 20,000 of a new one
        # (the chain's hashes do not matter here).
        connection.execute(
            text("""
            INSERT INTO audit_events (ts, actor, action, workspace, outcome, status,
                                      prev_hash, hash)
            SELECT now(), 'token:t', 'state.read',
                   CASE WHEN i <= 20000 THEN 'old/heavy'
                        WHEN i > 320000 THEN 'new/heavy'
                        ELSE 'other/' || (i % 100) END,
                   'ok', 200, repeat('0', 64), repeat('0', 64)
            FROM generate_series(1, 340000) AS i""")
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE audit_events"))

    admin = Principal("admin", "token", (Grant(Role.ADMIN, "*"),))
    sent: list[tuple[str, Any]] = []

    def record(*args: Any) -> None:
        if "audit_events" in args[2]:
            sent.append((args[2], args[3]))

    event.listen(engine, "before_cursor_execute", record)
    newest = workspace_events(engine, admin, "old/heavy")
    page = query_events(engine, admin, AuditQuery(workspace="new/heavy", limit=100),
                        encode_cursor("audit", [100]))  # fmt: skip
    event.remove(engine, "before_cursor_execute", record)
    assert [e["id"] for e in newest] == list(range(19951, 20001))
    assert [e["id"] for e in page.items] == list(range(320001, 320101))

    assert len(sent) == 2, sent
    with engine.connect() as connection:
        for statement, parameters in sent:
            explained = connection.exec_driver_sql(
                f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", parameters
            ).scalar_one()
            plan = (json.loads(explained) if isinstance(explained, str) else explained)[0]
            read = _rows_read(plan)
            assert read <= 1_000, (statement, read, json.dumps(plan)[:2000])
    engine.dispose()
