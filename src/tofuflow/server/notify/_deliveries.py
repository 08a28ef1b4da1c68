"""Who sees dead letters and sends them again: admins, through the API and the console."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tofuflow.errors import ConflictError, NotFoundError
from tofuflow.server.notify._events import wakeup
from tofuflow.server.storage._db import (
    NotificationDelivery,
    NotificationEvent,
    utcnow,
    write_session,
)

__all__ = ["STATUSES", "deliveries", "retry_delivery"]

STATUSES = ("pending", "delivered", "dead")


def _view(delivery: NotificationDelivery, event: NotificationEvent) -> dict[str, Any]:
    return {
        "id": delivery.id, "destination": delivery.destination, "status": delivery.status,
        "attempts": delivery.attempts, "last_error": delivery.last_error,
        "created_at": delivery.created_at.isoformat(),
        "delivered_at": delivery.delivered_at.isoformat() if delivery.delivered_at else None,
        "event": {"id": event.uid, "event": event.event, "workspace": event.workspace,
                  "occurred_at": event.payload.get("occurred_at")},
    }  # fmt: skip


def deliveries(
    engine: Engine, status: str, destination: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Deliveries in ``status``, oldest first (at most ``limit``)."""
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


def retry_delivery(engine: Engine, delivery_id: int) -> dict[str, Any]:
    """Send a dead letter again (the sender is woken): NotFoundError, or ConflictError when
    it is not dead."""
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
        view = _view(delivery, event)
    wakeup.set()
    return view
