"""Keyset pages for every list endpoint: an opaque cursor, a bounded page size.

    after = decode_cursor(cursor, "workspaces", (str,))
    page = fill_page(fetch, keep, key_of, kind="workspaces", limit=100, after=after)
    response.headers.update(next_link(request, page.next_cursor))

A cursor is the sort key of the last row the caller saw, base64url-encoded with the name
of the list it belongs to. Rows the caller may not read are dropped *before* the page is
cut, so a caller with narrow grants still gets full pages; the SQL side narrows the scan
with ``grant_filter`` where the grants translate to LIKE patterns.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, false, or_
from starlette.requests import Request

from tofuflow.errors import BadRequestError

__all__ = [
    "MAX_PAGE",
    "Page",
    "cursor_time",
    "decode_cursor",
    "encode_cursor",
    "fill_page",
    "grant_filter",
    "next_link",
    "one_workspace",
]

_MAX_INT = 2**63  # a BIGINT key; SQLite cannot bind larger
MAX_PAGE = 1000  # the largest `limit` any list accepts (documented in docs/architecture.md)

Row = TypeVar("Row")
Key = list[Any]


@dataclass(frozen=True)
class Page(Generic[Row]):
    """One page of rows and the cursor of the next one (None: this is the last page)."""

    items: list[Row]
    next_cursor: str | None = None


def encode_cursor(kind: str, key: Key) -> str:
    """``key`` as an opaque string; timestamps travel as ISO 8601 (see ``cursor_time``)."""
    raw = json.dumps([kind, key], separators=(",", ":"), default=_iso).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _iso(value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"cannot put a {type(value).__name__} in a cursor")


def decode_cursor(cursor: str | None, kind: str, shape: tuple[type, ...]) -> Key | None:
    """The sort key inside ``cursor`` (its parts of the types in ``shape``); 400 when it is
    not one this list handed out."""
    if cursor is None or cursor == "":
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise _bad_cursor(kind) from exc
    if not (isinstance(value, list) and len(value) == 2 and value[0] == kind):
        raise _bad_cursor(kind)
    key = value[1]
    if not (isinstance(key, list) and len(key) == len(shape)):
        raise _bad_cursor(kind)
    for part, expected in zip(key, shape, strict=True):
        if type(part) is not expected:
            raise _bad_cursor(kind)
        if isinstance(part, int) and not -_MAX_INT <= part < _MAX_INT:
            raise _bad_cursor(kind)
    return key


def cursor_time(value: str, kind: str) -> dt.datetime:
    """A timestamp part of a cursor key (as ``datetime.isoformat`` wrote it)."""
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise _bad_cursor(kind) from exc


def _bad_cursor(kind: str) -> BadRequestError:
    return BadRequestError(
        f"cursor is not one the {kind} list handed out: pass back the URL of the Link "
        'rel="next" header unchanged, or leave cursor out to start from the first page'
    )


def fill_page(
    fetch: Callable[[Key | None, int], Sequence[Row]],
    keep: Callable[[Row], bool],
    key_of: Callable[[Row], Key],
    *,
    kind: str,
    limit: int,
    after: Key | None,
) -> Page[Row]:
    """Up to ``limit`` rows that ``keep`` accepts, in key order, after the key ``after``.

    ``fetch(after, n)`` returns the next ``n`` rows in key order. The next cursor is only
    given when at least one more kept row exists, so the last page never points at an
    empty one.
    """
    batch = max(limit + 1, 100)
    items: list[Row] = []
    while True:
        rows = fetch(after, batch)
        for row in rows:
            if not keep(row):
                continue
            if len(items) == limit:
                return Page(items, encode_cursor(kind, key_of(items[-1])))
            items.append(row)
        if len(rows) < batch:
            return Page(items)
        after = key_of(rows[-1])


def grant_filter(column: Any, principal: Any) -> ColumnElement[bool] | None:
    """A SQL clause keeping the rows whose workspace one of the grants matches.

    None when no narrowing is possible (a ``*`` grant, or a glob with ``[...]`` that LIKE
    cannot express): the caller's ``principal.can`` check stays the rule either way; this
    only keeps a narrow-grant caller from scanning every row.
    """
    patterns = [grant.workspaces for grant in principal.grants]
    if not patterns:
        return false()
    if any(p == "*" or "[" in p for p in patterns):
        return None
    return or_(*(column.like(_like(p), escape="\\") for p in patterns))


def one_workspace(column: Any, name: str) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """``column = name``, spelled as the range ``name <= column <= name``, for a query of
    one workspace's audit events ordered by (workspace, id).

    With ``=`` PostgreSQL drops the workspace from the order (it is constant) and may
    answer "ordered by id, limit n" by walking the whole log by id, discarding other
    workspaces' events: ≈ 0.4 s for a workspace whose events are all old, at 1,000,000
    events. The range keeps the order on (workspace, id), which only that index
    (migration 0010) gives, so the page is read from the workspace's own entries.
    """
    return column >= name, column <= name


def _like(glob: str) -> str:
    escaped = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def next_link(request: Request, cursor: str | None) -> dict[str, str]:
    """The ``Link: <...>; rel="next"`` header for a page (empty on the last page)."""
    if cursor is None:
        return {}
    url = request.url.include_query_params(cursor=cursor)
    return {"Link": f'<{url.path}?{url.query}>; rel="next"'}
