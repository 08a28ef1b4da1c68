"""The sender's Prometheus metrics; pending and dead-lettered counts come from the database
at scrape time, so every replica reports the same numbers whichever one sends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy.engine import Engine

__all__ = ["NotifyMetrics"]


class NotifyMetrics:
    def __init__(self, registry: CollectorRegistry, engine: Engine) -> None:
        self.delivered = Counter(
            "tofuflow_notifications_delivered_total", "Notifications delivered",
            ["destination"], registry=registry,
        )  # fmt: skip
        self.failures = Counter(
            "tofuflow_notifications_failed_attempts_total", "Failed delivery attempts",
            ["destination"], registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            "tofuflow_notification_delivery_seconds",
            "From the event's commit to its delivery",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
            registry=registry,
        )
        registry.register(_Queue(engine))


class _Queue:
    """tofuflow_notifications_pending / _dead_letters{destination}."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def describe(self) -> list[Any]:
        return []  # collected at scrape time only

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from tofuflow.server.notify._sender import dead_letter_counts

        pending = GaugeMetricFamily(
            "tofuflow_notifications_pending",
            "Deliveries waiting to be sent",
            labels=["destination"],
        )
        dead = GaugeMetricFamily(
            "tofuflow_notifications_dead_letters",
            "Deliveries given up after max_attempts failures (GET /v1/notifications/dead)",
            labels=["destination"],
        )
        for destination, counts in sorted(dead_letter_counts(self.engine).items()):
            pending.add_metric([destination], counts.get("pending", 0))
            dead.add_metric([destination], counts.get("dead", 0))
        yield pending
        yield dead
