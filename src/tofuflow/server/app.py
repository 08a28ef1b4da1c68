"""The control plane's ASGI app.

    app = create_app(ServerConfig.load())     # then: uvicorn.run(app)

Routes: the HTTP backend protocol at ``/v1/state/{workspace}`` (lock address
``/v1/state/{workspace}/lock``), versions and admin actions under
``/v1/workspaces/{workspace}``, and ``/healthz``, ``/readyz``, ``/metrics``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.orm import Session

from tofuflow._version import __version__
from tofuflow.errors import (
    AuthError,
    BadRequestError,
    CryptoError,
    ForbiddenError,
    LockedError,
    PayloadTooLargeError,
    RequestError,
    StorageError,
    TofuflowError,
)
from tofuflow.policy import PolicySet
from tofuflow.server._audit import AuditQuery, query_events, verify
from tofuflow.server._authn import Authenticator
from tofuflow.server._drift import DriftService
from tofuflow.server._envs import EnvironmentService, ReapPolicy
from tofuflow.server._runs import RunService, WorkspacePolicy
from tofuflow.server._state import RequestContext, StateService, validate_workspace_name
from tofuflow.server.auth import (
    OidcVerifier,
    Principal,
    bindings_from_config,
    issuers_from_config,
    parse_ttl,
)
from tofuflow.server.config import ServerConfig
from tofuflow.server.crypto import keyring_from_config
from tofuflow.server.storage._blobs import BlobStore, blob_store_from_config
from tofuflow.server.storage._db import make_engine, migrate

__all__ = ["create_app"]

_log = logging.getLogger("tofuflow.server")

_ANONYMOUS = Principal(subject="anonymous", kind="anonymous", grants=(), claims={})


class RollbackRequest(BaseModel):
    version: int = Field(ge=1, description="The version whose content becomes current again")


class OverrideRequest(BaseModel):
    minutes: int = Field(ge=1, le=60, default=10)
    reason: str = Field(min_length=1, max_length=500)


def create_app(config: ServerConfig) -> FastAPI:
    """Build the app: open (and migrate) the database, load keys, stores and issuers."""
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = make_engine(config.effective_database_url)
    migrate(engine)
    blobs = blob_store_from_config(config.blobs)
    service = StateService(engine, keyring_from_config(config.keys, config.data_dir), blobs)
    issuers = issuers_from_config(list(config.oidc_issuers))
    verifier = OidcVerifier(issuers) if issuers else None
    authn = Authenticator(engine, verifier, bindings_from_config(list(config.bindings)))

    app = FastAPI(
        title="tofuflow control plane",
        version=__version__,
        description="Remote, encrypted, versioned, locked and audited OpenTofu state.",
    )
    app.state.config, app.state.engine, app.state.service = config, engine, service
    metrics = _Metrics()
    _install_error_handlers(app, service, authn)
    _install_metrics(app, metrics)

    async def principal_of(request: Request) -> Principal:
        principal = await run_in_threadpool(
            authn.authenticate, request.headers.get("authorization")
        )
        request.state.principal = principal
        return principal

    async def context(request: Request) -> RequestContext:
        client = request.client.host if request.client else None
        principal = await principal_of(request)
        # Only an apply-session token ties a request to a run; a header could be forged.
        run_id = principal.claims.get("run_id")
        return RequestContext(principal, client, str(run_id) if run_id else None)

    runs = RunService(
        engine, service.keyring, blobs, PolicySet.load(config.policies_dir),
        [WorkspacePolicy.from_config(e, i) for i, e in enumerate(config.workspace_settings)],
        approval_ttl=parse_ttl(config.approval_ttl), session_ttl=parse_ttl(config.session_ttl),
    )  # fmt: skip
    app.state.runs = runs
    service.session_only = runs.requires_apply_session
    reap = ReapPolicy(
        retry_backoff=parse_ttl(config.retry_backoff), max_backoff=parse_ttl(config.max_backoff),
        orphan_after=config.orphan_after, max_ttl=parse_ttl(config.max_env_ttl),
    )  # fmt: skip
    environments = EnvironmentService(engine, service, reap)
    runs.is_environment = environments.exists
    app.state.environments = environments
    _health_routes(app, engine, blobs, metrics)
    _state_routes(app, service, context, config.max_state_bytes)
    _workspace_routes(app, service, context)
    _run_routes(app, runs, context, config.max_state_bytes)
    _environment_routes(app, environments, context)
    _drift_routes(app, DriftService(engine), context)
    _audit_routes(app, engine, context)
    return app


ContextDep = Callable[[Request], Awaitable[RequestContext]]


def _state_routes(app: FastAPI, service: StateService, context: ContextDep, max_bytes: int) -> None:
    # LOCK and UNLOCK are WebDAV methods OpenAPI cannot describe: served, not documented.
    @app.api_route(
        "/v1/state/{workspace:path}/lock", methods=["LOCK", "UNLOCK"], include_in_schema=False
    )
    async def lock(workspace: str, request: Request) -> Response:
        ctx = await context(request)
        name = validate_workspace_name(workspace)
        body = await _read_body(request, 64 * 1024)
        info = _json_object(body, "LockInfo") if body.strip() else None
        if request.method == "LOCK":
            await run_in_threadpool(service.lock, ctx, name, info or {})
        else:
            await run_in_threadpool(service.unlock, ctx, name, info)
        return Response(status_code=200)

    @app.get("/v1/state/{workspace:path}", tags=["state"], summary="Read the current state")
    async def read_state(workspace: str, request: Request) -> Response:
        ctx = await context(request)
        name = validate_workspace_name(workspace)
        body = await run_in_threadpool(service.read, ctx, name)
        if body is None:
            return Response(status_code=204)
        return Response(body, media_type="application/json")

    @app.post("/v1/state/{workspace:path}", tags=["state"], summary="Write a new state version")
    async def write_state(workspace: str, request: Request, ID: str | None = None) -> Response:
        ctx = await context(request)
        name = validate_workspace_name(workspace)
        body = await _read_body(request, max_bytes)
        _check_md5(body, request.headers.get("content-md5"))
        await run_in_threadpool(service.write, ctx, name, body, ID)
        return Response(status_code=200)

    @app.delete("/v1/state/{workspace:path}", tags=["state"], summary="Delete the current state")
    async def delete_state(workspace: str, request: Request) -> Response:
        ctx = await context(request)
        name = validate_workspace_name(workspace)
        await run_in_threadpool(service.delete, ctx, name)
        return Response(status_code=200)


def _workspace_routes(app: FastAPI, service: StateService, context: ContextDep) -> None:
    @app.get("/v1/workspaces", tags=["workspaces"], summary="Workspaces the caller may read")
    async def list_workspaces(request: Request) -> list[dict[str, Any]]:
        return await run_in_threadpool(service.workspaces, await context(request))

    @app.get("/v1/workspaces/{workspace:path}/versions", tags=["versions"])
    async def list_versions(workspace: str, request: Request) -> list[dict[str, Any]]:
        ctx = await context(request)
        name = validate_workspace_name(workspace)
        rows = await run_in_threadpool(service.versions, ctx, name)
        return [row.to_json() for row in rows]

    @app.get("/v1/workspaces/{workspace:path}/versions/{version}", tags=["versions"])
    async def get_version(workspace: str, version: int, request: Request) -> Response:
        ctx = await context(request)
        name = validate_workspace_name(workspace)
        body = await run_in_threadpool(service.version_body, ctx, name, version)
        return Response(body, media_type="application/json")

    @app.get("/v1/workspaces/{workspace:path}/diff", tags=["versions"])
    async def diff(workspace: str, request: Request, old: int, new: int) -> dict[str, Any]:
        ctx = await context(request)
        name = validate_workspace_name(workspace)
        return await run_in_threadpool(service.diff, ctx, name, old, new)

    @app.post("/v1/workspaces/{workspace:path}/rollback", tags=["admin"])
    async def rollback(workspace: str, body: RollbackRequest, request: Request) -> dict[str, Any]:
        ctx = await context(request)
        name = validate_workspace_name(workspace)
        info = await run_in_threadpool(service.rollback, ctx, name, body.version)
        return info.to_json()

    @app.post("/v1/workspaces/{workspace:path}/override", tags=["admin"])
    async def override(workspace: str, body: OverrideRequest, request: Request) -> dict[str, str]:
        ctx = await context(request)
        name = validate_workspace_name(workspace)
        await run_in_threadpool(service.arm_override, ctx, name, body.minutes, body.reason)
        return {"status": "armed", "workspace": name}


class NewRun(BaseModel):
    workspace: str = Field(description="The workspace (state) the run changes")
    config_digest: str = Field(min_length=64, max_length=64, pattern="^[0-9a-f]{64}$")
    context: dict[str, Any] = Field(default_factory=dict, description="Commit, CI run, ...")


class Approve(BaseModel):
    comment: str = Field(default="", max_length=1000)


class Finish(BaseModel):
    outcome: str = Field(pattern="^(applied|failed|cancelled)$")
    detail: dict[str, Any] = Field(default_factory=dict)


class CredentialIssued(BaseModel):
    stage: str = Field(pattern="^(plan|apply)$")
    cloud: str = Field(pattern="^(aws|azure|gcp|none)$")
    role: str = Field(default="", max_length=512)
    source: str = Field(default="", max_length=64, description="azure-devops, static-dev, ...")
    subject_claims: dict[str, Any] = Field(default_factory=dict)
    expires_at: str | None = Field(default=None, max_length=64)
    fingerprint: str = Field(min_length=8, max_length=64, pattern="^[0-9a-f]+$")


class Cancel(BaseModel):
    reason: str = Field(default="cancelled", max_length=500)


def _run_routes(app: FastAPI, runs: RunService, context: ContextDep, max_bytes: int) -> None:
    @app.post("/v1/runs", tags=["runs"], summary="Start a run (planner)")
    async def create_run(body: NewRun, request: Request) -> dict[str, Any]:
        name = validate_workspace_name(body.workspace)
        ctx = await context(request)
        return await run_in_threadpool(runs.create, ctx, name, body.context, body.config_digest)

    @app.get("/v1/runs", tags=["runs"])
    async def list_runs(
        request: Request, workspace: str | None = None, commit: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        ctx = await context(request)
        return await run_in_threadpool(
            lambda: runs.list(ctx, workspace=workspace, commit=commit, limit=limit)
        )

    @app.get("/v1/runs/{run_id}", tags=["runs"])
    async def get_run(run_id: str, request: Request) -> dict[str, Any]:
        return await run_in_threadpool(runs.get, await context(request), run_id)

    @app.put("/v1/runs/{run_id}/artifact", tags=["runs"], summary="Upload the plan artifact")
    async def put_artifact(run_id: str, request: Request) -> dict[str, Any]:
        ctx = await context(request)
        data = await _read_body(request, max_bytes)
        return await run_in_threadpool(runs.upload_artifact, ctx, run_id, data)

    @app.get("/v1/runs/{run_id}/artifact", tags=["runs"], summary="Download it (appliers)")
    async def get_artifact(run_id: str, request: Request) -> Response:
        data, digest = await run_in_threadpool(runs.artifact, await context(request), run_id)
        return Response(data, media_type="application/zip", headers={"X-Sha256": digest})

    @app.put("/v1/runs/{run_id}/plan", tags=["runs"], summary="Upload the plan; get a decision")
    async def put_plan(run_id: str, request: Request) -> dict[str, Any]:
        ctx = await context(request)
        data = await _read_body(request, max_bytes)
        return await run_in_threadpool(runs.upload_plan, ctx, run_id, data)

    @app.post("/v1/runs/{run_id}/approve", tags=["runs"], summary="Approve (approver role)")
    async def approve(run_id: str, body: Approve, request: Request) -> dict[str, Any]:
        return await run_in_threadpool(runs.approve, await context(request), run_id, body.comment)

    @app.post("/v1/runs/{run_id}/apply-session", tags=["runs"], summary="Start applying")
    async def open_session(run_id: str, request: Request) -> dict[str, Any]:
        return await run_in_threadpool(runs.open_session, await context(request), run_id)

    @app.post("/v1/runs/{run_id}/result", tags=["runs"], summary="Record the apply's outcome")
    async def finish(run_id: str, body: Finish, request: Request) -> dict[str, Any]:
        ctx = await context(request)
        return await run_in_threadpool(runs.finish, ctx, run_id, body.outcome, body.detail)

    @app.post(
        "/v1/runs/{run_id}/credentials",
        tags=["runs"],
        summary="Record that a stage was issued cloud credentials (never the values)",
    )
    async def credentials(run_id: str, body: CredentialIssued, request: Request) -> dict[str, Any]:
        ctx = await context(request)
        return await run_in_threadpool(runs.record_credentials, ctx, run_id, body.model_dump())

    @app.post("/v1/runs/{run_id}/cancel", tags=["runs"])
    async def cancel(run_id: str, body: Cancel, request: Request) -> dict[str, Any]:
        return await run_in_threadpool(runs.cancel, await context(request), run_id, body.reason)


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
    lease_seconds: int = Field(ge=5, le=3600, default=300)
    force: bool = Field(default=False, description="Destroy before it expires")


class ClaimRun(BaseModel):
    holder: str = Field(min_length=1, max_length=255)
    run_id: str = Field(min_length=1, max_length=32)


class ClaimDone(BaseModel):
    holder: str = Field(min_length=1, max_length=255)


class ClaimFailed(BaseModel):
    holder: str = Field(min_length=1, max_length=255)
    error: str = Field(default="", max_length=20000)


def _environment_routes(app: FastAPI, envs: EnvironmentService, context: ContextDep) -> None:
    @app.post("/v1/environments", tags=["environments"], summary="Register an environment")
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

    @app.get("/v1/environments", tags=["environments"])
    async def list_environments(
        request: Request, due: bool = False, include_destroyed: bool = False
    ) -> list[dict[str, Any]]:
        ctx = await context(request)
        return await run_in_threadpool(
            lambda: envs.list(ctx, due=due, include_destroyed=include_destroyed)
        )

    @app.get("/v1/environments/{name:path}/snapshot", tags=["environments"])
    async def environment_snapshot(name: str, request: Request) -> Response:
        data = await run_in_threadpool(envs.snapshot, await context(request), name)
        return Response(data, media_type="application/zip")

    @app.get("/v1/environments/{name:path}", tags=["environments"])
    async def get_environment(name: str, request: Request) -> dict[str, Any]:
        return await run_in_threadpool(envs.get, await context(request), name)

    @app.post("/v1/environments/{name:path}/extend", tags=["environments"])
    async def extend_environment(name: str, body: Extend, request: Request) -> dict[str, Any]:
        ctx = await context(request)
        ttl = dt.timedelta(seconds=body.ttl_seconds)
        return await run_in_threadpool(envs.extend, ctx, name, ttl)

    @app.post("/v1/environments/{name:path}/claim", tags=["environments"])
    async def claim_environment(name: str, body: Claim, request: Request) -> dict[str, Any]:
        ctx = await context(request)
        lease = dt.timedelta(seconds=body.lease_seconds)
        return await run_in_threadpool(
            lambda: envs.claim(ctx, name, body.holder, lease, force=body.force)
        )

    @app.post("/v1/environments/{name:path}/run", tags=["environments"])
    async def environment_run(name: str, body: ClaimRun, request: Request) -> dict[str, str]:
        ctx = await context(request)
        await run_in_threadpool(envs.record_run, ctx, name, body.holder, body.run_id)
        return {"environment": name, "run": body.run_id}

    @app.post("/v1/environments/{name:path}/destroyed", tags=["environments"])
    async def environment_destroyed(name: str, body: ClaimDone, request: Request) -> dict[str, Any]:
        return await run_in_threadpool(envs.destroyed, await context(request), name, body.holder)

    @app.post("/v1/environments/{name:path}/failed", tags=["environments"])
    async def environment_failed(name: str, body: ClaimFailed, request: Request) -> dict[str, Any]:
        ctx = await context(request)
        return await run_in_threadpool(envs.failed, ctx, name, body.holder, body.error)


class DriftCheck(BaseModel):
    status: str = Field(pattern="^(drift|none|error)$")
    report: dict[str, Any] = Field(default_factory=dict)


def _drift_routes(app: FastAPI, drift: DriftService, context: ContextDep) -> None:
    @app.post("/v1/workspaces/{workspace:path}/drift", tags=["drift"], summary="Record a check")
    async def record_drift(workspace: str, body: DriftCheck, request: Request) -> dict[str, Any]:
        ctx = await context(request)
        name = validate_workspace_name(workspace)
        return await run_in_threadpool(drift.record, ctx, name, body.status, body.report)

    @app.get("/v1/drift", tags=["drift"], summary="The newest drift report per workspace")
    async def latest_drift(request: Request, workspace: str | None = None) -> list[dict[str, Any]]:
        return await run_in_threadpool(drift.latest, await context(request), workspace)


def _audit_routes(app: FastAPI, engine: Any, context: ContextDep) -> None:
    @app.get("/v1/audit", tags=["audit"], summary="Audit events the caller may read")
    async def audit_events(
        request: Request,
        run: str | None = None,
        commit: str | None = None,
        workspace: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        after: int = 0,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        ctx = await context(request)
        query = AuditQuery(run, commit, workspace, actor, action, after, min(max(limit, 1), 10_000))
        return await run_in_threadpool(query_events, engine, ctx.principal, query)

    @app.get("/v1/audit/verify", tags=["audit"], summary="Verify the hash chain")
    async def audit_verify(request: Request) -> dict[str, Any]:
        await context(request)

        def check() -> dict[str, Any]:
            with Session(engine) as session:
                result = verify(session)
            return {"ok": result.ok, "checked": result.checked,
                    "first_bad_id": result.first_bad_id, "reason": result.reason}  # fmt: skip

        return await run_in_threadpool(check)


def _health_routes(app: FastAPI, engine: Any, blobs: BlobStore | None, metrics: _Metrics) -> None:
    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> Response:
        def check() -> str | None:
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

        failed = await run_in_threadpool(check)
        if failed is not None:
            # Unauthenticated endpoint: name the component, keep the details in the log.
            return JSONResponse({"status": "unavailable", "reason": f"{failed} check failed"}, 503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


class _Metrics:
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


def _install_metrics(app: FastAPI, metrics: _Metrics) -> None:
    @app.middleware("http")
    async def measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        metrics.requests.labels(request.method, template, str(response.status_code)).inc()
        metrics.latency.labels(request.method, template).observe(time.perf_counter() - started)
        return response


def _install_error_handlers(app: FastAPI, service: StateService, authn: Authenticator) -> None:
    def who(request: Request) -> Principal:
        """The caller, also for requests refused before the endpoint authenticated them."""
        principal = getattr(request.state, "principal", None)
        if isinstance(principal, Principal):
            return principal
        try:
            return authn.authenticate(request.headers.get("authorization"))
        except TofuflowError:
            return _ANONYMOUS

    async def audit_refusal(request: Request, status: int, reason: str) -> None:
        principal = await run_in_threadpool(who, request)
        client = request.client.host if request.client else None
        workspace = request.path_params.get("workspace")
        action = f"http.{request.method.lower()}"
        ctx = RequestContext(principal, client)
        await run_in_threadpool(
            service.record_refusal, ctx, action, str(workspace)[:255] if workspace else None,
            status, reason,
        )  # fmt: skip

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's default echoes the input back (it may hold secrets) in another shape.
        problems = [
            f"{'.'.join(str(p) for p in error.get('loc', ()))}: {error.get('msg', 'invalid')}"
            for error in exc.errors()
        ]
        message = "invalid request: " + "; ".join(problems)[:1000]
        await audit_refusal(request, 422, message)
        return JSONResponse({"error": message, "code": "validation_error"}, status_code=422)

    @app.exception_handler(LockedError)
    async def locked(request: Request, exc: LockedError) -> Response:
        await audit_refusal(request, 423, str(exc))
        # The binary parses this body to tell its user who holds the lock.
        return JSONResponse(exc.lock_info or {"error": str(exc)}, status_code=423)

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError) -> Response:
        await audit_refusal(request, exc.status, str(exc))
        # The code lets clients raise the same error class (e.g. PlanStaleError).
        code = re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()
        return JSONResponse({"error": str(exc), "code": code}, status_code=exc.status)

    @app.exception_handler(AuthError)
    async def unauthenticated(request: Request, exc: AuthError) -> Response:
        await audit_refusal(request, 401, str(exc))
        return JSONResponse(
            {"error": str(exc)},
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="tofuflow", Bearer'},
        )

    @app.exception_handler(ForbiddenError)
    async def forbidden(request: Request, exc: ForbiddenError) -> Response:
        await audit_refusal(request, 403, str(exc))
        return JSONResponse({"error": str(exc)}, status_code=403)

    @app.exception_handler(CryptoError)
    async def crypto(request: Request, exc: CryptoError) -> Response:
        return JSONResponse({"error": f"server key problem: {exc}"}, status_code=500)

    @app.exception_handler(StorageError)
    async def storage(request: Request, exc: StorageError) -> Response:
        # 503: the store may come back, and the binary retries 5xx.
        return JSONResponse({"error": f"storage unavailable: {exc}"}, status_code=503)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"body of {declared} bytes is over the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_md5(body: bytes, header: str | None) -> None:
    if header is None:
        return
    actual = base64.b64encode(hashlib.md5(body).digest()).decode()  # noqa: S324 - protocol
    if header.strip() != actual:
        raise BadRequestError(
            "Content-MD5 does not match the body: it was corrupted in transit; retry"
        )


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise BadRequestError(f"{what} body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise BadRequestError(f"{what} body is not valid JSON: it is nested too deeply") from exc
    if not isinstance(value, dict):
        raise BadRequestError(f"{what} body must be a JSON object")
    return value
