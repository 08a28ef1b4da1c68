"""Drift checks: record one (planner), read the newest report per workspace."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from tofuflow.server._drift import DriftService
from tofuflow.server._paging import next_link
from tofuflow.server._state import validate_workspace_name
from tofuflow.server.api._common import ContextDep, PageCursor, PageLimit

__all__ = ["DriftCheck", "router"]


class DriftCheck(BaseModel):
    status: str = Field(pattern="^(drift|none|error)$")
    report: dict[str, Any] = Field(default_factory=dict)


def router(drift: DriftService, context: ContextDep) -> APIRouter:
    api = APIRouter(tags=["drift"])

    @api.post("/v1/workspaces/{workspace:path}/drift", summary="Record a check")
    async def record_drift(workspace: str, body: DriftCheck, request: Request) -> dict[str, Any]:
        ctx = await context(request)
        name = validate_workspace_name(workspace)
        return await run_in_threadpool(drift.record, ctx, name, body.status, body.report)

    @api.get("/v1/drift", summary="The newest drift report per workspace")
    async def latest_drift(
        request: Request,
        response: Response,
        workspace: str | None = None,
        limit: PageLimit = 100,
        cursor: PageCursor = None,
    ) -> list[dict[str, Any]]:
        ctx = await context(request)
        page = await run_in_threadpool(
            lambda: drift.latest(ctx, workspace, limit=limit, cursor=cursor)
        )
        response.headers.update(next_link(request, page.next_cursor))
        return page.items

    return api
