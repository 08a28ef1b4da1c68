"""Notifications (issue 17): a transactional outbox, a sender, and its destinations.

    config = NotifyConfig.from_config(server_config.notifications, server_config.public_url)
    enable(engine)                                   # outbox rows from now on
    sender = Sender(engine, config, holder).start()  # the leader among replicas delivers

Events, destinations, the payload schema and how to verify a webhook's signature:
docs/notifications.md.
"""

from __future__ import annotations

from tofuflow.server.notify._config import (
    DESTINATION_KEYS,
    SETTINGS_KEYS,
    Destination,
    NotifyConfig,
    console_link,
)
from tofuflow.server.notify._deliver import sign
from tofuflow.server.notify._deliveries import STATUSES, deliveries, retry_delivery
from tofuflow.server.notify._events import EVENTS, SCHEMA, disable, enable, enqueue
from tofuflow.server.notify._metrics import NotifyMetrics
from tofuflow.server.notify._sender import Sender, dead_letter_counts

__all__ = [
    "DESTINATION_KEYS",
    "EVENTS",
    "SCHEMA",
    "SETTINGS_KEYS",
    "STATUSES",
    "Destination",
    "NotifyConfig",
    "NotifyMetrics",
    "Sender",
    "console_link",
    "dead_letter_counts",
    "deliveries",
    "disable",
    "enable",
    "enqueue",
    "retry_delivery",
    "sign",
]
