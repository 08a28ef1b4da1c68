"""Cursors and the SQL narrowing of list pages (server/_paging.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Column, MetaData, String, Table, create_engine, insert, select

from tofuflow.errors import BadRequestError
from tofuflow.server._paging import cursor_time, decode_cursor, encode_cursor, grant_filter
from tofuflow.server.auth import Grant, Principal, Role, workspace_matches


def test_a_cursor_gives_back_its_key_and_only_to_its_own_list() -> None:
    at = dt.datetime(2026, 12, 5, 1, 2, 3, 456789, tzinfo=dt.UTC)
    cursor = encode_cursor("runs", [at, "r1"])
    key = decode_cursor(cursor, "runs", (str, str))
    assert key is not None and cursor_time(key[0], "runs") == at and key[1] == "r1"
    with pytest.raises(BadRequestError, match="cursor is not one the audit list handed out"):
        decode_cursor(cursor, "audit", (int,))
    with pytest.raises(BadRequestError):
        decode_cursor(encode_cursor("audit", [2**63]), "audit", (int,))  # past BIGINT
    with pytest.raises(BadRequestError):
        decode_cursor(encode_cursor("audit", [True]), "audit", (int,))
    assert decode_cursor(None, "audit", (int,)) is None and decode_cursor("", "x", ()) is None


NAMES = ["app/prod", "app/eu/prod", "app_x", "app%y", "apq/z", "other/prod", "a/b", "APP/prod"]


@pytest.mark.parametrize("pattern", ["app/*", "*prod", "app_?", "app%?", "a?p/*", "*"])
def test_the_sql_narrowing_keeps_every_workspace_the_grant_matches(pattern: str) -> None:
    engine = create_engine("sqlite://")
    table = Table("t", MetaData(), Column("name", String))
    table.metadata.create_all(engine)
    principal = Principal("p", "token", (Grant(Role.READER, pattern),))
    with engine.begin() as connection:
        connection.execute(insert(table), [{"name": n} for n in NAMES])
        narrow = grant_filter(table.c.name, principal)
        query = select(table.c.name) if narrow is None else select(table.c.name).where(narrow)
        kept = set(connection.scalars(query))
    assert {n for n in NAMES if workspace_matches(pattern, n)} <= kept


def test_no_grants_narrow_to_nothing() -> None:
    engine = create_engine("sqlite://")
    table = Table("t", MetaData(), Column("name", String))
    table.metadata.create_all(engine)
    narrow = grant_filter(table.c.name, Principal("anonymous", "anonymous", ()))
    with engine.begin() as connection:
        connection.execute(insert(table), [{"name": n} for n in NAMES])
        assert (
            narrow is not None
            and list(connection.scalars(select(table.c.name).where(narrow))) == []
        )


def test_audit_timestamps_keep_the_spelling_their_hashes_cover() -> None:
    from tofuflow.server._audit import _utc

    paris = dt.timezone(dt.timedelta(hours=1))
    assert _utc(dt.datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05.000000Z"
    assert _utc(dt.datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=paris)) == "2026-01-02T02:04:05.000007Z"
