"""Ephemeral environments: register, extend, list, and the destroyer's claim protocol."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from tofuflow.errors import BadRequestError
from tofuflow.server._envs import EnvironmentService
from tofuflow.server._paging import next_link
from tofuflow.server._state import validate_workspace_name
from tofuflow.server.api._common import ContextDep, PageCursor, PageLimit

__all__ = ["Claim", "ClaimDone", "ClaimFailed", "ClaimRun", "Extend", "NewEnvironment", "router"]

_YEAR = 365 * 86400


class NewEnvironment(BaseModel):
    name: str = Field(description="The environment's workspace name (its own state)")
    source_workspace: str = Field(description="The workspace whose configuration it uses")
    ttl_seconds: int = Field(
        ge=1, le=_YEAR, description="Time to live; the reaper destroys it after"
    )
    owner: str = Field(min_length=1, max_length=255)
    context: dict[str, Any] = Field(default_factory=dict, description="Commit, CI run, ...")
    snapshot: str = Field(description="base64 zip of the configuration (tofuflow.runs)")


class Extend(BaseModel):
    ttl_seconds: int = Field(ge=1, le=_YEAR)


class Claim(BaseModel):
    holder: str = Field(min_length=1, max_length=255, description="Who destroys it")
    lease_seconds: int = Field(ge=5, le=3600, default=60)
    force: bool = Field(default=False, description="Destroy before it expires")


class ClaimRun(BaseModel):
    holder: str = Field(min_length=1, max_length=255)
    run_id: str = Field(min_length=1, max_length=32)


class ClaimDone(BaseModel):
    holder: str = Field(min_length=1, max_length=255)


class ClaimFailed(BaseModel):
    holder: str = Field(min_length=1, max_length=255)
    error: str = Field(default="", max_length=20000)


def router(envs: EnvironmentService, context: ContextDep) -> APIRouter:
    api = APIRouter(tags=["environments"])

    @api.post("/v1/environments", summary="Register an environment")
    async def create_environment(body: NewEnvironment, request: Request) -> dict[str, Any]:
        ctx = await context(request)
        name = validate_workspace_name(body.name)
        source = validate_workspace_name(body.source_workspace)
        try:
            snapshot = base64.b64decode(body.snapshot, validate=True)
        except ValueError as exc:
            raise BadRequestError("snapshot must be base64 (a zip of the configuration)") from exc
        return await run_in_threadpool(
            lambda: envs.create(
                ctx, name, source_workspace=source, ttl=dt.timedelta(seconds=body.ttl_seconds),
                owner=body.owner, context=body.context, snapshot=snapshot,
            )
        )  # fmt: skip

    @api.get("/v1/environments")
    async def list_environments(
        request: Request,
        response: Response,
        due: bool = False,
        include_destroyed: bool = False,
        limit: PageLimit = 100,
        cursor: PageCursor = None,
    ) -> list[dict[str, Any]]:
        ctx = await context(request)
        page = await run_in_threadpool(
            lambda: envs.list(
                ctx, due=due, include_destroyed=include_destroyed, limit=limit, cursor=cursor
            )
        )
        response.headers.update(next_link(request, page.next_cursor))
        return page.items

    @api.get("/v1/environments/{name:path}/snapshot")
    async def environment_snapshot(name: str, request: Request) -> Response:
        data = await run_in_threadpool(envs.snapshot, await context(request), name)
        return Response(data, media_type="application/zip")

    @api.get("/v1/environments/{name:path}")
    async def get_environment(name: str, request: Request) -> dict[str, Any]:
        return await run_in_threadpool(envs.get, await context(request), name)

    _claim_routes(api, envs, context)
    return api


def _claim_routes(api: APIRouter, envs: EnvironmentService, context: ContextDep) -> None:
    @api.post("/v1/environments/{name:path}/extend")
    async def extend_environment(name: str, body: Extend, request: Request) -> dict[str, Any]:
        ctx = await context(request)
        ttl = dt.timedelta(seconds=body.ttl_seconds)
        return await run_in_threadpool(envs.extend, ctx, name, ttl)

    @api.post("/v1/environments/{name:path}/claim")
    async def claim_environment(name: str, body: Claim, request: Request) -> dict[str, Any]:
        ctx = await context(request)
        lease = dt.timedelta(seconds=body.lease_seconds)
        return await run_in_threadpool(
            lambda: envs.claim(ctx, name, body.holder, lease, force=body.force)
        )

    @api.post("/v1/environments/{name:path}/run")
    async def environment_run(name: str, body: ClaimRun, request: Request) -> dict[str, str]:
        ctx = await context(request)
        await run_in_threadpool(envs.record_run, ctx, name, body.holder, body.run_id)
        return {"environment": name, "run": body.run_id}

    @api.post("/v1/environments/{name:path}/destroyed")
    async def environment_destroyed(name: str, body: ClaimDone, request: Request) -> dict[str, Any]:
        return await run_in_threadpool(envs.destroyed, await context(request), name, body.holder)

    @api.post("/v1/environments/{name:path}/failed")
    async def environment_failed(name: str, body: ClaimFailed, request: Request) -> dict[str, Any]:
        ctx = await context(request)
        return await run_in_threadpool(envs.failed, ctx, name, body.holder, body.error)
