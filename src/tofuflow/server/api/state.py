"""The binary's ``http`` backend protocol: ``/v1/state/{workspace}`` and its lock address."""

from __future__ import annotations

from collections.abc import Awaitable

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from tofuflow.errors import TofuflowError
from tofuflow.server._state import StateService, validate_workspace_name
from tofuflow.server.api._common import Confirm, ContextDep, check_md5, json_object, read_body

__all__ = ["router"]

_MAX_LOCK_INFO = 64 * 1024


async def _unconfirmed(request: Request) -> None:
    return None


def router(
    service: StateService,
    context: ContextDep,
    max_bytes: int,
    changes: ContextDep | None = None,
    confirm: Confirm = _unconfirmed,
) -> APIRouter:
    """``changes``: the context of LOCK, UNLOCK and POST, which may come from the
    verified-token cache (their transactions read the token's revocation); ``confirm``
    re-authenticates such a caller before a refusal."""
    api = APIRouter(tags=["state"])
    changes = changes or context

    async def refusing(request: Request, work: Awaitable[None]) -> None:
        # The context may come from the verified-token cache: a revoked token must hear
        # 401 before any other refusal, as without the cache.
        try:
            await work
        except TofuflowError:
            await confirm(request)
            raise

    # LOCK and UNLOCK are WebDAV methods OpenAPI cannot describe: served, not documented,
    # so a plain Starlette route (FastAPI's per-request parameter handling costs CPU).
    async def lock(request: Request) -> Response:
        async def work() -> None:
            ctx = await changes(request)
            name = validate_workspace_name(request.path_params["workspace"])
            body = await read_body(request, _MAX_LOCK_INFO)
            info = json_object(body, "LockInfo") if body.strip() else None
            if request.method == "LOCK":
                await service.lock_async(ctx, name, info or {})
            else:
                await service.unlock_async(ctx, name, info)

        await refusing(request, work())
        return Response(status_code=200)

    api.add_route(
        "/v1/state/{workspace:path}/lock", lock, methods=["LOCK", "UNLOCK"],
        include_in_schema=False,
    )  # fmt: skip

    @api.get("/v1/state/{workspace:path}", summary="Read the current state")
    async def read_state(workspace: str, request: Request) -> Response:
        ctx = await context(request)
        name = validate_workspace_name(workspace)
        body = await run_in_threadpool(service.read, ctx, name)
        if body is None:
            return Response(status_code=204)
        return Response(body, media_type="application/json")

    # POST is served by a plain Starlette route too (issue 18: FastAPI's parameter handling
    # per request showed in the write path's profile); the FastAPI route after it only
    # documents it in /openapi.json (the fuzz test reads that), since the first route
    # that matches a path and method serves it.
    async def serve_write(request: Request) -> Response:
        async def work() -> None:
            ctx = await changes(request)
            name = validate_workspace_name(request.path_params["workspace"])
            body = await read_body(request, max_bytes)
            check_md5(body, request.headers.get("content-md5"))
            await service.write_async(ctx, name, body, request.query_params.get("ID"))

        await refusing(request, work())
        return Response(status_code=200)

    api.add_route(
        "/v1/state/{workspace:path}", serve_write, methods=["POST"], include_in_schema=False
    )

    @api.post("/v1/state/{workspace:path}", summary="Write a new state version")
    async def write_state(workspace: str, request: Request, ID: str | None = None) -> Response:
        return await serve_write(request)  # the route above answers first

    @api.delete("/v1/state/{workspace:path}", summary="Delete the current state")
    async def delete_state(workspace: str, request: Request) -> Response:
        ctx = await context(request)
        name = validate_workspace_name(workspace)
        await run_in_threadpool(service.delete, ctx, name)
        return Response(status_code=200)

    return api
