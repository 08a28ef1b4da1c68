"""Workspaces, their state versions and the admin actions on them (rollback, override)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from tofuflow.server._paging import next_link
from tofuflow.server._state import StateService, validate_workspace_name
from tofuflow.server.api._common import ContextDep, PageCursor, PageLimit

__all__ = ["OverrideRequest", "RollbackRequest", "router"]


class RollbackRequest(BaseModel):
    version: int = Field(ge=1, description="The version whose content becomes current again")


class OverrideRequest(BaseModel):
    minutes: int = Field(ge=1, le=60, default=10)
    reason: str = Field(min_length=1, max_length=500)


def router(service: StateService, context: ContextDep) -> APIRouter:
    api = APIRouter()

    @api.get("/v1/workspaces", tags=["workspaces"], summary="Workspaces the caller may read")
    async def list_workspaces(
        request: Request,
        response: Response,
        limit: PageLimit = 100,
        cursor: PageCursor = None,
    ) -> list[dict[str, Any]]:
        ctx = await context(request)
        page = await run_in_threadpool(lambda: service.workspaces(ctx, limit=limit, cursor=cursor))
        response.headers.update(next_link(request, page.next_cursor))
        return page.items

    @api.get("/v1/workspaces/{workspace:path}/versions", tags=["versions"])
    async def list_versions(
        workspace: str,
        request: Request,
        response: Response,
        limit: PageLimit = 100,
        cursor: PageCursor = None,
    ) -> list[dict[str, Any]]:
        ctx = await context(request)
        name = validate_workspace_name(workspace)
        page = await run_in_threadpool(
            lambda: service.versions(ctx, name, limit=limit, cursor=cursor)
        )
        response.headers.update(next_link(request, page.next_cursor))
        return [row.to_json() for row in page.items]

    @api.get("/v1/workspaces/{workspace:path}/versions/{version}", tags=["versions"])
    async def get_version(workspace: str, version: int, request: Request) -> Response:
        ctx = await context(request)
        name = validate_workspace_name(workspace)
        body = await run_in_threadpool(service.version_body, ctx, name, version)
        return Response(body, media_type="application/json")

    @api.get("/v1/workspaces/{workspace:path}/diff", tags=["versions"])
    async def diff(workspace: str, request: Request, old: int, new: int) -> dict[str, Any]:
        ctx = await context(request)
        name = validate_workspace_name(workspace)
        return await run_in_threadpool(service.diff, ctx, name, old, new)

    @api.post("/v1/workspaces/{workspace:path}/rollback", tags=["admin"])
    async def rollback(workspace: str, body: RollbackRequest, request: Request) -> dict[str, Any]:
        ctx = await context(request)
        name = validate_workspace_name(workspace)
        info = await run_in_threadpool(service.rollback, ctx, name, body.version)
        return info.to_json()

    @api.post("/v1/workspaces/{workspace:path}/override", tags=["admin"])
    async def override(workspace: str, body: OverrideRequest, request: Request) -> dict[str, str]:
        ctx = await context(request)
        name = validate_workspace_name(workspace)
        await run_in_threadpool(service.arm_override, ctx, name, body.minutes, body.reason)
        return {"status": "armed", "workspace": name}

    return api
