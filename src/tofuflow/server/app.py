"""The control plane's ASGI app.

    app = create_app(ServerConfig.load())     # then: uvicorn.run(app)

``create_app`` wires the services to the routers in ``tofuflow.server.api`` (state,
workspaces, runs, environments, drift, audit, health) and the web console
(``tofuflow.server.console``), serves ``/docs`` from vendored assets, and installs the
error handlers and the metrics middleware.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tofuflow._version import __version__
from tofuflow.errors import (
    AuthError,
    CryptoError,
    ForbiddenError,
    LockedError,
    RateLimitedError,
    RequestError,
    StorageError,
    TofuflowError,
)
from tofuflow.policy import PolicySet
from tofuflow.server._drift import DriftService
from tofuflow.server._envs import EnvironmentService, ReapPolicy
from tofuflow.server._limits import RateLimiter, limited_path, rate_limited
from tofuflow.server._runs import RunService, WorkspacePolicy
from tofuflow.server._state import RequestContext, StateService
from tofuflow.server._state_fast import SqliteStatePath
from tofuflow.server._state_pg import PostgresStatePath
from tofuflow.server.api import (
    audit,
    drift,
    environments,
    health,
    notifications,
    runs,
    state,
    workspaces,
)
from tofuflow.server.api._common import Confirm, ContextDep
from tofuflow.server.auth import (
    Authenticator,
    OidcVerifier,
    Principal,
    bindings_from_config,
    issuers_from_config,
    parse_ttl,
)
from tofuflow.server.checkpoints import CheckpointKeeper, CheckpointStore, signer_from_config
from tofuflow.server.config import ServerConfig
from tofuflow.server.console import install_console, install_offline_docs
from tofuflow.server.crypto import keyring_from_config
from tofuflow.server.logs import plain_handler
from tofuflow.server.notify import NotifyConfig, NotifyMetrics, Sender, enable
from tofuflow.server.storage import blob_store_from_config, holds_sealed, make_engine, migrate

__all__ = ["create_app", "start_sender"]

_log = logging.getLogger("tofuflow.server")
_access = logging.getLogger("tofuflow.server.access")

_ANONYMOUS = Principal(subject="anonymous", kind="anonymous", grants=(), claims={})


def create_app(config: ServerConfig) -> FastAPI:
    """Build the app: open (and migrate) the database, load keys, stores and issuers."""
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = make_engine(
        config.effective_database_url, pool_size=config.database_pool_size,
        max_overflow=config.database_max_overflow,
    )  # fmt: skip
    migrate(engine)
    blobs = blob_store_from_config(config.blobs)
    # A key is made by itself only for a database that holds nothing sealed yet: one made
    # later would be this process's alone (a replica's, a mistyped path's).
    keyring = keyring_from_config(config.keys, config.data_dir, create=not holds_sealed(engine))
    service = StateService(
        engine, keyring, blobs, max_state_bytes=config.max_state_bytes
    )  # fmt: skip
    service.check_keys()
    issuers = issuers_from_config(list(config.oidc_issuers))
    verifier = OidcVerifier(issuers) if issuers else None
    authn = Authenticator(engine, verifier, bindings_from_config(list(config.bindings)))
    # LOCK, POST and UNLOCK on the database's own path, where it has one (issue 18).
    fast = SqliteStatePath.for_service(service) or PostgresStatePath.for_service(service)
    if fast is not None:
        fast.authn = authn  # a revoked token's message, and forgetting it at once
    service.fast = fast
    notify = NotifyConfig.from_config(config.notifications, config.base_url)
    if notify.destinations:
        enable(engine)  # outbox rows from now on, in the transactions that cause them

    app = FastAPI(
        title="tofuflow control plane",
        version=__version__,
        description="Remote, encrypted, versioned, locked and audited OpenTofu state.",
        docs_url=None,  # served by install_offline_docs: no CDN
        redoc_url=None,
    )
    install_offline_docs(app)
    app.state.config, app.state.engine, app.state.service = config, engine, service
    app.state.notify = notify
    metrics = health.Metrics()
    _install_error_handlers(app, _refusal_auditor(service, authn))
    _install_server_error_handlers(app)
    limiter = RateLimiter(config.rate_limit, config.rate_burst)
    _install_rate_limit_handler(app)
    app.state.notify_metrics = NotifyMetrics(metrics.registry, engine)
    context = _context_dependency(authn, limiter)

    run_service = _run_service(config, service)
    environment_service = _environment_service(config, service)
    run_service.is_environment = environment_service.exists
    app.state.runs, app.state.environments = run_service, environment_service
    max_bytes = config.max_state_bytes
    # Order matters where paths overlap: routers are matched in the order they are added.
    app.include_router(health.router(engine, blobs, metrics))
    app.include_router(state.router(
        service, context, max_bytes,
        _context_dependency(authn, limiter, cached=service.fast is not None),
        _confirmation(authn),
    ))  # fmt: skip
    app.include_router(workspaces.router(service, context))
    app.include_router(runs.router(run_service, context, max_bytes))
    app.include_router(environments.router(environment_service, context))
    app.include_router(drift.router(DriftService(engine), context))
    keeper = CheckpointKeeper(
        engine,
        signer_from_config(config.audit_signing_key, config.data_dir),
        CheckpointStore(blobs, config.data_dir),
    )
    app.state.checkpoints = keeper
    app.include_router(audit.router(engine, context, keeper))
    app.include_router(notifications.router(engine, context))
    install_console(
        app, config, runs=run_service, state=service, environments=environment_service,
        bindings=authn.bindings,
    )  # fmt: skip
    _install_observability(app, metrics)  # last: outermost, it sees every request
    return app


def start_sender(app: FastAPI) -> Sender | None:
    """Start the notification sender beside a serving app (``tofuflow server`` and the
    embedded plane call it; ``sender.stop()`` on shutdown). None without destinations.
    Replicas on one database each start one; the ``notifier`` lease picks who sends."""
    notify: NotifyConfig = app.state.notify
    if not notify.destinations:
        return None
    holder = f"notify@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    return Sender(app.state.engine, notify, holder, app.state.notify_metrics).start()


def _run_service(config: ServerConfig, service: StateService) -> RunService:
    run_service = RunService(
        service.engine, service.keyring, service.blobs, PolicySet.load(config.policies_dir),
        [WorkspacePolicy.from_config(e, i) for i, e in enumerate(config.workspace_settings)],
        approval_ttl=parse_ttl(config.approval_ttl), session_ttl=parse_ttl(config.session_ttl),
        session_lease=parse_ttl(config.session_lease), max_document_bytes=config.max_state_bytes,
    )  # fmt: skip
    service.state_writes = run_service.state_writes
    run_service.sts_endpoint = config.sts_endpoint
    return run_service


def _environment_service(config: ServerConfig, service: StateService) -> EnvironmentService:
    reap = ReapPolicy(
        retry_backoff=parse_ttl(config.retry_backoff), max_backoff=parse_ttl(config.max_backoff),
        orphan_after=config.orphan_after, max_ttl=parse_ttl(config.max_env_ttl),
    )  # fmt: skip
    return EnvironmentService(service.engine, service, reap)


def _context_dependency(
    authn: Authenticator, limiter: RateLimiter, *, cached: bool = False
) -> ContextDep:
    """``cached``: an API token verified before is taken from ``Authenticator.cached``;
    only for routes whose changes read its revocation in their transaction."""

    async def context(request: Request) -> RequestContext:
        header = request.headers.get("authorization")
        principal = authn.cached(header) if cached else None
        if principal is None:
            principal = await run_in_threadpool(authn.authenticate, header)
        else:
            request.state.cached_principal = True
        request.state.principal = principal
        if limited_path(request.scope["path"]):  # what the router matched: no URL built
            wait = limiter.take(principal.subject)
            if wait is not None:
                raise rate_limited(principal.subject, wait)
        client = request.client.host if request.client else None
        # Only an apply-session token ties a request to a run; a header could be forged.
        run_id = principal.claims.get("run_id")
        return RequestContext(principal, client, str(run_id) if run_id else None)

    return context


def _confirmation(authn: Authenticator) -> Confirm:
    """Before a request with a cached principal is refused: is its token still valid? A
    revoked token hears 401 before anything else, as it did before the cache."""

    async def confirm(request: Request) -> None:
        if getattr(request.state, "cached_principal", False):
            request.state.cached_principal = False
            try:
                await run_in_threadpool(authn.authenticate, request.headers.get("authorization"))
            except TofuflowError:
                # The refusal is audited as uncached callers' are: by no one.
                request.state.principal = None
                raise

    return confirm


def _install_observability(app: FastAPI, metrics: health.Metrics) -> None:
    app.add_middleware(_Observed, metrics=metrics, lane=_StateLane(app))


class _Observed:
    """Counts, times and logs each request, and answers an unexpected error in JSON.

    A plain ASGI middleware: ``BaseHTTPMiddleware`` runs each request in a task with its
    own streams, which cost more CPU than the counting. It reads what it needs from the
    scope, builds no ``Request``, and keeps the metric children of each (method, route,
    status) it has seen: ``labels()`` per request cost as much as the counting (issue 18).
    """

    def __init__(self, app: ASGIApp, metrics: health.Metrics, lane: _StateLane) -> None:
        self.app, self.metrics, self.lane = app, metrics, lane
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: list[int] = []

        async def send_noting_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await (self.lane.take(scope) or self.app)(scope, receive, send_noting_status)
        except Exception:  # a bug or a broken dependency: answer, count and log it here
            _log.exception("%s %s: unexpected error", scope["method"], scope["path"][:300])
            if not status:  # else the answer is under way: the client sees it cut short
                status.append(500)
                await JSONResponse(
                    {"error": "internal server error: the server log has the details",
                     "code": "internal_error"},
                    status_code=500,
                )(scope, receive, send)  # fmt: skip
        elapsed = time.perf_counter() - started
        code = status[0] if status else 500
        method = scope["method"]
        template = getattr(scope.get("route"), "path", "unmatched")
        counted, timed = self._metrics(method, template, code)
        counted.inc()
        timed.observe(elapsed)
        _log_request(scope, method, code, elapsed)

    def _metrics(self, method: str, template: str, code: int) -> tuple[Any, Any]:
        key = (method, template, code)
        children = self._children.get(key)
        if children is None:
            children = (
                self.metrics.requests.labels(method, template, str(code)),
                self.metrics.latency.labels(method, template),
            )
            if len(self._children) < _MAX_METRIC_CHILDREN:  # methods are the client's
                self._children[key] = children
        return children


class _StateLane:
    """LOCK, UNLOCK and POST of ``/v1/state/...``, the binary's every write, served by the
    route the app's router would pick, behind the app's own exception handlers, without
    the layers between: the console's session cookie, FastAPI's exit stack and the scan of
    every route before the state routes cost more than serving LOCK itself (issue 18).

    Only the plain Starlette routes of ``api/state.py`` are taken, and only where they
    match in full; nothing before them in the router matches ``/v1/state/`` (a test holds
    that this picks what the router picks). Anything else goes the whole way.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._routes: list[Route] | None = None
        self._stack: ASGIApp | None = None

    def take(self, scope: Scope) -> ASGIApp | None:
        """The lane for this request, its route set in ``scope``; None for the whole app."""
        path, method = scope["path"], scope["method"]
        if not path.startswith("/v1/state/") or scope.get("root_path"):
            return None
        if method != "POST" and not (method in ("LOCK", "UNLOCK") and path.endswith("/lock")):
            return None
        if self._stack is None:
            self._build()
        for route in self._routes or ():
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope["router"], scope["route"] = self.app.router, route
                scope.update(child_scope)
                return self._stack
        return None

    def _build(self) -> None:
        self._routes = [
            route for route in self.app.router.routes
            if type(route) is Route and route.path.startswith("/v1/state/")
        ]  # fmt: skip
        # The handlers as Starlette's build_middleware_stack hands them to its own.
        handlers = {
            key: handler for key, handler in self.app.exception_handlers.items()
            if key not in (500, Exception)
        }  # fmt: skip
        self._stack = ExceptionMiddleware(_handle, handlers=handlers, debug=self.app.debug)


async def _handle(scope: Scope, receive: Receive, send: Send) -> None:
    await scope["route"].handle(scope, receive, send)


# Routes x methods x statuses the app answers are far fewer; anything past this is counted
# through ``labels()`` as before.
_MAX_METRIC_CHILDREN = 4096


def _log_request(scope: Scope, method: str, status: int, elapsed: float) -> None:
    """One line per request: never the query string (it may carry secrets) or a token."""
    if not _access.isEnabledFor(logging.INFO):
        return
    principal = scope.get("state", {}).get("principal")
    subject = principal.subject if isinstance(principal, Principal) else "anonymous"
    path = _logged_path(scope["path"])
    plain = plain_handler(_access, logging.INFO)
    if plain is not None:  # the line the record would become, without the record
        plain.write_plain(
            logging.INFO, _access.name, f"{method} {path} {status} {subject} {elapsed * 1000:.1f}ms"
        )
        return
    _access.info(
        "%s %s %d %s %.1fms", method, path, status, subject, elapsed * 1000,
        extra={"method": method, "path": path, "status": status, "subject": subject,
               "duration_ms": round(elapsed * 1000, 1)},
    )  # fmt: skip


def _logged_path(path: str) -> str:
    """The path as ``Request.url.path`` spells it, cut to 300 characters: ``?``, ``#`` and
    ``\\`` escaped, tabs and line breaks dropped, so a path cannot forge a log line."""
    if not path.isprintable():
        path = path.replace("\t", "").replace("\r", "").replace("\n", "")
    return path.replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")[:300]


AuditRefusal = Callable[[Request, int, str], Awaitable[None]]


def _refusal_auditor(service: StateService, authn: Authenticator) -> AuditRefusal:
    def who(request: Request) -> Principal:
        """The caller, also for requests refused before the endpoint authenticated them."""
        principal = getattr(request.state, "principal", None)
        if isinstance(principal, Principal):
            return principal
        try:
            principal = authn.authenticate(request.headers.get("authorization"))
        except TofuflowError:
            return _ANONYMOUS
        request.state.principal = principal  # for the request log
        return principal

    async def audit_refusal(request: Request, status: int, reason: str) -> None:
        principal = await run_in_threadpool(who, request)
        client = request.client.host if request.client else None
        workspace = request.path_params.get("workspace")
        if workspace:  # PostgreSQL's text holds no NUL, and a refused name may carry one
            workspace = str(workspace)[:255].replace("\x00", "\ufffd")
        action = f"http.{request.method.lower()}"
        ctx = RequestContext(principal, client)
        await run_in_threadpool(
            service.record_refusal, ctx, action, workspace or None,
            status, reason,
        )  # fmt: skip

    return audit_refusal


def _install_error_handlers(app: FastAPI, audit_refusal: AuditRefusal) -> None:
    """Refusals become 4xx JSON answers, each one audited."""

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

    @app.exception_handler(StarletteHTTPException)
    async def routing(request: Request, exc: StarletteHTTPException) -> Response:
        # No such path (404) or method (405): Starlette's own answer, in the common form.
        code = {404: "not_found_error", 405: "method_not_allowed"}.get(exc.status_code)
        message = (
            f"no {request.method} {request.url.path[:200]} in this API: the routes are in "
            "/openapi.json"
            if code
            else str(exc.detail)
        )
        await audit_refusal(request, exc.status_code, message)
        return JSONResponse(
            {"error": message, "code": code or "http_error"},
            status_code=exc.status_code,
            headers=dict(exc.headers or {}),
        )

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
            {"error": str(exc), "code": "auth_error"},
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="tofuflow", Bearer'},
        )

    @app.exception_handler(ForbiddenError)
    async def forbidden(request: Request, exc: ForbiddenError) -> Response:
        await audit_refusal(request, 403, str(exc))
        return JSONResponse({"error": str(exc), "code": "forbidden_error"}, status_code=403)


def _install_rate_limit_handler(app: FastAPI) -> None:
    @app.exception_handler(RateLimitedError)
    async def too_many(request: Request, exc: RateLimitedError) -> Response:
        # Not audited (see server/_limits.py): counted in /metrics and the access log.
        return JSONResponse(
            {"error": str(exc), "code": "rate_limited_error"},
            status_code=429,
            headers={"Retry-After": str(exc.retry_after)},
        )


def _install_server_error_handlers(app: FastAPI) -> None:
    """The server's own failures: not refusals, so not audited."""

    # Logged too: the binary shows none of the answer ("giving up after 3 attempt(s)"), so
    # the server log is where its operator learns which key is missing or what is away.
    @app.exception_handler(CryptoError)
    async def crypto(request: Request, exc: CryptoError) -> Response:
        _log.error("%s %s: server key problem: %s", request.method, request.url.path, exc)
        return JSONResponse(
            {"error": f"server key problem: {exc}", "code": "crypto_error"}, status_code=500
        )

    @app.exception_handler(StorageError)
    async def storage(request: Request, exc: StorageError) -> Response:
        _log.error("%s %s: storage unavailable: %s", request.method, request.url.path, exc)
        # 503: the store may come back, and the binary retries 5xx.
        return JSONResponse(
            {"error": f"storage unavailable: {exc}", "code": "storage_error"}, status_code=503
        )
