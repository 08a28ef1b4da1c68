"""The audit log: query events the caller may read; verify the hash chain; sign its head."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tofuflow.errors import NotFoundError
from tofuflow.server._audit import AuditQuery, query_events, verify
from tofuflow.server._paging import next_link
from tofuflow.server.api._common import ContextDep, PageCursor, PageLimit
from tofuflow.server.auth import Permission
from tofuflow.server.checkpoints import CheckpointKeeper
from tofuflow.server.notify._events import audit_verify_failed

__all__ = ["router"]

_MAX_ID = 2**63 - 1  # BIGINT: event ids past it cannot exist (and SQLite cannot bind them)


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

    @api.get("/v1/audit/verify", summary="Verify the hash chain")
    async def audit_verify(request: Request) -> dict[str, Any]:
        await context(request)

        def check() -> dict[str, Any]:
            with Session(engine) as session:
                result = verify(session)
            if not result.ok:
                audit_verify_failed(engine, result.first_bad_id, result.reason)
            return {"ok": result.ok, "checked": result.checked,
                    "first_bad_id": result.first_bad_id, "reason": result.reason}  # fmt: skip

        return await run_in_threadpool(check)

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
