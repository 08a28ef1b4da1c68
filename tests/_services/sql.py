"""The SQL a block sends, to check what a request reads (not just what it answers)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine


@contextmanager
def sql_sent(target: Any = Engine) -> Iterator[list[str]]:
    """The statements ``target`` sends while the block runs: one engine, or by default
    every engine of this process (a threaded server's too)."""
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    event.listen(target, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(target, "before_cursor_execute", record)
