"""The audit log: query events the caller may read; verify the hash chain; sign its head."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tofuflow.errors import ForbiddenError, NotFoundError
from tofuflow.server._audit import AuditQuery, query_events, verify
from tofuflow.server._paging import next_link
from tofuflow.server.api._common import ContextDep, PageCursor, PageLimit
from tofuflow.server.auth import Permission
from tofuflow.server.checkpoints import CheckpointKeeper
from tofuflow.server.notify._events import audit_verify_failed

__all__ = ["router"]

_MAX_ID = 2**63 - 1  # BIGINT: event ids past it cannot exist (and SQLite cannot bind them)


class _SharedWalk:
    """One walk of the whole log at a time: a request takes the result of a walk that began
    after it arrived (so nothing appended or altered before it is missed), else waits and
    runs the next. Requests arriving during a walk share the one after it, instead of each
    costing the server a walk (about 23 s of CPU at 1,000,000 events)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: tuple[float, dict[str, Any]] | None = None

    def result(self, arrived: float, walk: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        with self._lock:
            if self._last is not None and self._last[0] >= arrived:
                return self._last[1]
            began = time.monotonic()
            answer = walk()
            self._last = (began, answer)
            return answer


def router(engine: Engine, context: ContextDep, keeper: CheckpointKeeper) -> APIRouter:
    api = APIRouter(tags=["audit"])

    @api.get("/v1/audit", summary="Audit events the caller may read")
    async def audit_events(
        request: Request,
        response: Response,
        run: str | None = None,
        commit: str | None = None,
        workspace: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        after: Annotated[int, Query(ge=0, le=_MAX_ID, description="Events after this id")] = 0,
        limit: PageLimit = 100,
        cursor: PageCursor = None,
    ) -> list[dict[str, Any]]:
        ctx = await context(request)
        query = AuditQuery(run, commit, workspace, actor, action, after, limit)
        page = await run_in_threadpool(query_events, engine, ctx.principal, query, cursor)
        response.headers.update(next_link(request, page.next_cursor))
        return page.items

    walks = _SharedWalk()

    # Every event of every workspace: it needs read rights on all of them (its failures
    # name workspaces), as the checkpoints below do.
    @api.get("/v1/audit/verify", summary="Verify the hash chain")
    async def audit_verify(request: Request) -> dict[str, Any]:
        ctx = await context(request)
        try:
            ctx.principal.require(Permission.READ_RUNS, "*")
        except ForbiddenError as exc:
            raise ForbiddenError(
                f"the audit chain check reads every workspace's events, so it needs a grant on "
                f"*: {exc}"
            ) from exc
        arrived = time.monotonic()

        def check() -> dict[str, Any]:
            with Session(engine) as session:
                result = verify(session)
            if not result.ok:
                audit_verify_failed(engine, result.first_bad_id, result.reason)
            return {"ok": result.ok, "checked": result.checked,
                    "first_bad_id": result.first_bad_id, "reason": result.reason}  # fmt: skip

        return await run_in_threadpool(walks.result, arrived, check)

    # Both need read rights on every event (a grant matching "*"): a checkpoint covers them all.
    @api.post("/v1/audit/checkpoints", summary="Sign the chain's head (after checking it)")
    async def audit_checkpoint(request: Request) -> dict[str, Any]:
        ctx = await context(request)
        ctx.principal.require(Permission.READ_RUNS, "*")
        return await run_in_threadpool(keeper.checkpoint)

    @api.get("/v1/audit/checkpoints/latest", summary="The newest stored signed checkpoint")
    async def audit_latest_checkpoint(request: Request) -> dict[str, Any]:
        ctx = await context(request)
        ctx.principal.require(Permission.READ_RUNS, "*")
        latest = await run_in_threadpool(keeper.store.latest)
        if latest is None:
            raise NotFoundError(f"no audit checkpoint in {keeper.store.name} yet")
        return latest

    return api
