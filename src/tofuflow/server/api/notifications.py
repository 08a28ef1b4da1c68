"""Notification deliveries for admins: the dead letters, and sending one again."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.engine import Engine

from tofuflow.server.api._common import ContextDep
from tofuflow.server.auth import Permission
from tofuflow.server.notify import deliveries, retry_delivery

__all__ = ["DeliveryId", "router"]

# A BIGINT primary key: ids past it cannot exist (and SQLite cannot bind them).
DeliveryId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def router(engine: Engine, context: ContextDep) -> APIRouter:
    api = APIRouter(tags=["notifications"])

    @api.get("/v1/notifications/deliveries", summary="Notification deliveries (admins)")
    async def list_deliveries(
        request: Request,
        status: Annotated[str, Query(pattern="^(pending|delivered|dead)$")] = "dead",
        destination: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        ctx = await context(request)
        ctx.principal.require(Permission.MANAGE_TOKENS, "*", "read notification deliveries")
        return await run_in_threadpool(deliveries, engine, status, destination, limit)

    @api.post("/v1/notifications/deliveries/{delivery_id}/retry",
              summary="Send a dead-lettered delivery again (admins)")  # fmt: skip
    async def retry(request: Request, delivery_id: DeliveryId) -> dict[str, Any]:
        ctx = await context(request)
        ctx.principal.require(Permission.MANAGE_TOKENS, "*", "retry notification deliveries")
        return await run_in_threadpool(retry_delivery, engine, delivery_id)

    return api
