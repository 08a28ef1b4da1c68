"""Notification deliveries for admins: the dead letters, and sending one again."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tofuflow.errors import ConflictError, NotFoundError
from tofuflow.server.api._common import ContextDep
from tofuflow.server.auth import Permission
from tofuflow.server.notify._events import wakeup
from tofuflow.server.storage._db import (
    NotificationDelivery,
    NotificationEvent,
    utcnow,
    write_session,
)

__all__ = ["router"]

_STATUSES = ("pending", "delivered", "dead")


def router(engine: Engine, context: ContextDep) -> APIRouter:
    api = APIRouter(tags=["notifications"])

    @api.get("/v1/notifications/deliveries", summary="Notification deliveries (admins)")
    async def deliveries(
        request: Request,
        status: Annotated[str, Query(pattern="^(pending|delivered|dead)$")] = "dead",
        destination: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        ctx = await context(request)
        ctx.principal.require(Permission.MANAGE_TOKENS, "*")
        return await run_in_threadpool(_list, engine, status, destination, limit)

    @api.post("/v1/notifications/deliveries/{delivery_id}/retry",
              summary="Send a dead-lettered delivery again (admins)")  # fmt: skip
    async def retry(request: Request, delivery_id: int) -> dict[str, Any]:
        ctx = await context(request)
        ctx.principal.require(Permission.MANAGE_TOKENS, "*")
        view = await run_in_threadpool(_retry, engine, delivery_id)
        wakeup.set()
        return view

    return api


def _view(delivery: NotificationDelivery, event: NotificationEvent) -> dict[str, Any]:
    return {
        "id": delivery.id, "destination": delivery.destination, "status": delivery.status,
        "attempts": delivery.attempts, "last_error": delivery.last_error,
        "created_at": delivery.created_at.isoformat(),
        "delivered_at": delivery.delivered_at.isoformat() if delivery.delivered_at else None,
        "event": {"id": event.uid, "event": event.event, "workspace": event.workspace,
                  "occurred_at": event.payload.get("occurred_at")},
    }  # fmt: skip


def _list(engine: Engine, status: str, destination: str | None, limit: int) -> list[Any]:
    query = (
        select(NotificationDelivery, NotificationEvent)
        .join(NotificationEvent, NotificationEvent.id == NotificationDelivery.event_id)
        .where(NotificationDelivery.status == status)
        .order_by(NotificationDelivery.id)
        .limit(limit)
    )
    if destination:
        query = query.where(NotificationDelivery.destination == destination)
    with Session(engine) as session:
        return [_view(d, e) for d, e in session.execute(query).all()]


def _retry(engine: Engine, delivery_id: int) -> dict[str, Any]:
    with write_session(engine) as session:
        delivery = session.get(NotificationDelivery, delivery_id, with_for_update=True)
        if delivery is None:
            raise NotFoundError(f"no delivery {delivery_id}; GET /v1/notifications/deliveries "
                                "lists them")  # fmt: skip
        if delivery.status != "dead":
            raise ConflictError(f"delivery {delivery_id} is {delivery.status}: only a dead "
                                "letter is sent again")  # fmt: skip
        delivery.status, delivery.attempts = "pending", 0
        delivery.next_attempt_at = utcnow()
        event = session.get_one(NotificationEvent, delivery.event_id)  # a foreign key
        return _view(delivery, event)
