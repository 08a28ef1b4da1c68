"""The binary's ``http`` backend protocol: ``/v1/state/{workspace}`` and its lock address."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from tofuflow.server._state import StateService, validate_workspace_name
from tofuflow.server.api._common import ContextDep, check_md5, json_object, read_body

__all__ = ["router"]

_MAX_LOCK_INFO = 64 * 1024


def router(service: StateService, context: ContextDep, max_bytes: int) -> APIRouter:
    api = APIRouter(tags=["state"])

    # LOCK and UNLOCK are WebDAV methods OpenAPI cannot describe: served, not documented.
    @api.api_route(
        "/v1/state/{workspace:path}/lock", methods=["LOCK", "UNLOCK"], include_in_schema=False
    )
    async def lock(workspace: str, request: Request) -> Response:
        ctx = await context(request)
        name = validate_workspace_name(workspace)
        body = await read_body(request, _MAX_LOCK_INFO)
        info = json_object(body, "LockInfo") if body.strip() else None
        if request.method == "LOCK":
            await run_in_threadpool(service.lock, ctx, name, info or {})
        else:
            await run_in_threadpool(service.unlock, ctx, name, info)
        return Response(status_code=200)

    @api.get("/v1/state/{workspace:path}", summary="Read the current state")
    async def read_state(workspace: str, request: Request) -> Response:
        ctx = await context(request)
        name = validate_workspace_name(workspace)
        body = await run_in_threadpool(service.read, ctx, name)
        if body is None:
            return Response(status_code=204)
        return Response(body, media_type="application/json")

    @api.post("/v1/state/{workspace:path}", summary="Write a new state version")
    async def write_state(workspace: str, request: Request, ID: str | None = None) -> Response:
        ctx = await context(request)
        name = validate_workspace_name(workspace)
        body = await read_body(request, max_bytes)
        check_md5(body, request.headers.get("content-md5"))
        await run_in_threadpool(service.write, ctx, name, body, ID)
        return Response(status_code=200)

    @api.delete("/v1/state/{workspace:path}", summary="Delete the current state")
    async def delete_state(workspace: str, request: Request) -> Response:
        ctx = await context(request)
        name = validate_workspace_name(workspace)
        await run_in_threadpool(service.delete, ctx, name)
        return Response(status_code=200)

    return api
