"""Drift checks: record one (planner), read the newest report per workspace."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from tofuflow.server._drift import DriftService
from tofuflow.server._state import validate_workspace_name
from tofuflow.server.api._common import ContextDep

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
    async def latest_drift(request: Request, workspace: str | None = None) -> list[dict[str, Any]]:
        return await run_in_threadpool(drift.latest, await context(request), workspace)

    return api
