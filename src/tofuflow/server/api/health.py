"""Liveness, readiness and Prometheus metrics (unauthenticated)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tofuflow.server.storage._blobs import BlobStore

__all__ = ["Metrics", "router"]

_log = logging.getLogger("tofuflow.server")


class Metrics:
    """The app's Prometheus metrics; the middleware in ``create_app`` feeds them."""

    def __init__(self) -> None:
        # A registry per app, so several apps (tests) in one process do not collide.
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tofuflow_http_requests_total", "HTTP requests", ["method", "route", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "tofuflow_http_request_seconds", "HTTP request latency", ["method", "route"],
            registry=self.registry,
        )  # fmt: skip


def router(engine: Engine, blobs: BlobStore | None, metrics: Metrics) -> APIRouter:
    api = APIRouter(tags=["health"])

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz() -> Response:
        failed = await run_in_threadpool(_unready, engine, blobs)
        if failed is not None:
            # Unauthenticated endpoint: name the component, keep the details in the log.
            return JSONResponse({"status": "unavailable", "reason": f"{failed} check failed"}, 503)
        return JSONResponse({"status": "ready"})

    @api.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return api


def _unready(engine: Engine, blobs: BlobStore | None) -> str | None:
    """The first component that is not reachable, or None."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:  # readiness reports any failure instead of raising it
        _log.exception("readiness: database check failed")
        return "database"
    try:
        if blobs is not None:
            blobs.check()
    except Exception:
        _log.exception("readiness: blob store check failed")
        return "blob store"
    return None
