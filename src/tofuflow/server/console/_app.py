"""The console's routes on the control plane's FastAPI app, and the offline ``/docs``.

Every page reads through the same services as the API (``RunService``, ``StateService``,
the audit log) with the signed-in person's principal, so a page can never show or do
more than that person's role allows: buttons are hidden for roles that lack them, and the
server refuses the action anyway.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from fnmatch import fnmatchcase
from functools import partial
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.middleware.sessions import SessionMiddleware
from starlette.staticfiles import StaticFiles

from tofuflow.errors import (
    AuthError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    RequestError,
)
from tofuflow.server._audit import AuditQuery, query_events
from tofuflow.server._drift import DriftService
from tofuflow.server._envs import EnvironmentService
from tofuflow.server._paging import MAX_PAGE, Page
from tofuflow.server._runs import RunService
from tofuflow.server._state import RequestContext, StateService, validate_workspace_name
from tofuflow.server.auth import Binding, Permission
from tofuflow.server.config import ServerConfig
from tofuflow.server.console._chain import ChainStatus
from tofuflow.server.console._queries import (
    RunFilter,
    derived_environments,
    newest_event,
    run_fingerprint,
    runs_page,
    workspace_events,
    workspace_lock,
)
from tofuflow.server.console._session import (
    ENDED_KEY,
    REAUTH_KEY,
    SESSION_COOKIE,
    SESSION_ENDED,
    SessionPolicy,
    SessionStore,
    Viewer,
    check_csrf,
    read_form,
    viewer,
    why_code,
)
from tofuflow.server.console._settings import (
    ConsoleSettings,
)
from tofuflow.server.console._sign_in import DRAFT_KEY, NOTICE_KEY, SignIn, safe_next
from tofuflow.server.console._views import (
    OutputRow,
    ResourceSection,
    context_facts,
    plan_sections,
    story_steps,
)
from tofuflow.server.notify import deliveries, retry_delivery

__all__ = ["install_console", "install_offline_docs"]

_log = logging.getLogger("tofuflow.server.console")
_HERE = Path(__file__).parent
_STATUSES = ("planning", "needs_approval", "approved", "applying", "applied", "denied",
             "failed", "cancelled", "no_changes")  # fmt: skip
# Scripts and styles only from this server: an injected <script> could not run anyway.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self' {issuer}; frame-ancestors 'none'; base-uri 'none'"
)
_SSE_POLL_SECONDS = 0.5
_SSE_MAX_SECONDS = 600  # the browser reconnects (the session is checked all along too)
_SSE_SESSION_SECONDS = 2.0  # a stream re-checks its session this often, and per event
_SESSION_OVER = (
    "Your session ended (signed out, revoked or expired), so this page no longer updates. "
    "You are signed out: sign in again."
)
_SSE_LIST_SECONDS = 1.0
_EXTENSIONS = {"1h": 1, "1d": 24}  # the environments page's Extend buttons
_SECTIONS_KEPT = 64  # runs whose plan view is kept in memory
# Only these have ever had an apply (and so a log) behind them.
_MAY_HAVE_LOG = frozenset({"applying", "applied", "failed", "cancelled", "superseded"})


def install_console(
    app: FastAPI,
    config: ServerConfig,
    *,
    runs: RunService,
    state: StateService,
    environments: EnvironmentService,
    bindings: Sequence[Binding],
) -> None:
    """Mount the console under ``/console`` (and ``/`` redirects there)."""
    settings = config.console_settings(str(config.source or "configuration"))
    console = _Console(config, settings, runs, state, environments, tuple(bindings))
    app.state.console_links = {}  # one-time sign-in links (``issue_sign_in_link``)
    app.mount("/console/static", StaticFiles(directory=_HERE / "static"), name="console-static")
    app.include_router(console.router())
    # Without [console], sessions come only from `tofuflow ui`'s one-time links.
    secure = not settings.insecure_cookie if settings else config.base_url.startswith("https:")
    app.add_middleware(
        SessionMiddleware, secret_key=_session_key(settings), session_cookie=SESSION_COOKIE,
        max_age=int(console.policy.absolute.total_seconds()), path="/console",
        same_site="lax", https_only=secure,
    )  # fmt: skip


def _session_key(settings: ConsoleSettings | None) -> str:
    name = settings.session_key_env if settings else "TOFUFLOW_CONSOLE_SESSION_KEY"
    key = os.environ.get(name, "").strip()
    if key or settings is None:  # without [console], only this process makes sessions
        return key or secrets.token_urlsafe(32)
    _log.warning(
        "%s is not set: console sessions are signed with a key of this process only (they "
        "end when it restarts, and replicas behind a load balancer must share one key)",
        name,
    )
    return secrets.token_urlsafe(32)


class _Console:
    def __init__(
        self,
        config: ServerConfig,
        settings: ConsoleSettings | None,
        runs: RunService,
        state: StateService,
        environments: EnvironmentService,
        bindings: tuple[Binding, ...],
    ) -> None:
        self.config, self.settings = config, settings
        self.runs, self.state, self.bindings = runs, state, bindings
        self.environments = environments
        self.engine = state.engine
        self.policy = (
            SessionPolicy(settings.session_idle, settings.session_absolute)
            if settings
            else SessionPolicy()
        )
        self.sessions = SessionStore(self.engine, self.policy)
        self.chain = ChainStatus(self.engine)
        self.drift = DriftService(self.engine)
        self._sections: OrderedDict[str, tuple[list[ResourceSection], list[OutputRow]]] = (
            OrderedDict()
        )
        self._sections_lock = threading.Lock()
        self.templates = Environment(
            loader=FileSystemLoader(_HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )
        self.templates.filters["when"] = _when
        self.templates.filters["duration"] = _duration
        self.signin = SignIn(config, settings, self.policy, self.sessions, bindings, self)

    # -- plumbing -----------------------------------------------------------------------

    def render(
        self, request: Request, template: str, status: int = 200, **values: Any
    ) -> HTMLResponse:
        if values.get("person") is not None:  # shown once, after the sign-in it asked for
            values.setdefault("notice", request.session.pop(NOTICE_KEY, None))
            draft = request.session.get(DRAFT_KEY)
            if isinstance(draft, dict) and draft.get("path") == request.url.path:
                values.setdefault("draft", str(request.session.pop(DRAFT_KEY)["comment"]))
        html = self.templates.get_template(template).render(request=request, **values)
        issuer = _origin(self.settings.issuer) if self.settings else ""
        headers = {
            "Content-Security-Policy": _CSP.format(issuer=issuer),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store",
        }
        return HTMLResponse(html, status_code=status, headers=headers)

    def who(self, request: Request) -> Viewer:
        return viewer(request, self.policy, self.bindings)

    def ctx(self, request: Request, person: Viewer) -> RequestContext:
        client = request.client.host if request.client else None
        request.state.principal = person.principal  # for the access log
        return RequestContext(person.principal, client)

    async def page(
        self, request: Request, build: Callable[[Viewer], Awaitable[Response]]
    ) -> Response:
        """Run ``build`` for the signed-in person; sign-in, refusals and errors as pages."""
        try:
            person = self.who(request)
            live = partial(self.sessions.live, person.sid, active=person.active)
            if not await run_in_threadpool(live):
                # Keep saying why: the page's own background requests often meet the
                # ended session first, and the person's next click must not read
                # "not signed in".
                request.session.clear()
                request.session[ENDED_KEY] = True
                request.session[REAUTH_KEY] = True
                raise AuthError(SESSION_ENDED)
        except AuthError as signal:
            if self.settings is None:
                return self.unconfigured(request)
            return await self.to_sign_in(request, str(signal))
        request.state.principal = person.principal  # for the access log, on every page
        try:
            return await build(person)
        except ForbiddenError as exc:
            await self.refused(request, person, 403, str(exc))
            return self.render(request, "message.html", 403, title="Not allowed",
                               message=str(exc), person=person)  # fmt: skip
        except RequestError as exc:
            if exc.status != 404:
                await self.refused(request, person, exc.status, str(exc))
            return self.render(request, "message.html", exc.status, title="Cannot do that",
                               message=str(exc), person=person)  # fmt: skip

    async def to_sign_in(self, request: Request, why: str) -> Response:
        """No valid session: the page's own requests learn that the session is over (and
        stop); a form sent goes back to its page, saying so; anything else to sign-in."""
        if request.headers.get("accept", "").startswith("text/event-stream"):
            return StreamingResponse(_one_event("ended", _SESSION_OVER),
                                     media_type="text/event-stream")  # fmt: skip
        if request.headers.get("hx-request") == "true":  # swapped in for the stale part
            return self.render(request, "_ended.html", message=_SESSION_OVER, person=None)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.method == "POST":
            # Never back to the POST's own URL, which has no GET: to the form's page.
            target = _form_page(request)
            verb = request.url.path.rsplit("/", 1)[-1]
            request.session[NOTICE_KEY] = (
                f"Your session had ended, so your {verb} was not done: sign in again and "
                f"{verb} again."
            )
            try:
                comment = (await read_form(request)).get("comment", "").strip()
            except ForbiddenError:  # too large to keep: the notice says what to do
                comment = ""
            if comment:
                request.session[DRAFT_KEY] = {"path": target, "comment": comment[:1000]}
        code = why_code(why)
        login = f"/console/login?next={quote(target, safe='')}" + (f"&why={code}" if code else "")
        return RedirectResponse(login, status_code=303)

    def unconfigured(self, request: Request) -> Response:
        """No OpenID sign-in here: under `tofuflow ui` (it issued links) people sign in
        only through its one-time links; otherwise the console is not set up."""
        if getattr(request.app.state, "console_ui", False):
            return self.render(request, "message.html", 401, title="Not signed in",
                               message=_UI_ONLY, person=None)  # fmt: skip
        return self.render(request, "message.html", 503, title="Console not set up",
                           message=_NOT_CONFIGURED, person=None)  # fmt: skip

    async def refused(self, request: Request, person: Viewer, status: int, reason: str) -> None:
        workspace = request.path_params.get("workspace")
        await run_in_threadpool(
            self.state.record_refusal, self.ctx(request, person),
            f"console.{request.method.lower()}", workspace, status, reason,
        )  # fmt: skip

    # -- routes -------------------------------------------------------------------------

    def router(self) -> APIRouter:
        api = APIRouter(include_in_schema=False)
        self.signin.routes(api)
        self._run_routes(api)
        self._action_routes(api)

        @api.get("/")
        async def root() -> Response:
            return RedirectResponse("/console/runs", status_code=303)

        @api.get("/console")
        async def home() -> Response:
            return RedirectResponse("/console/runs", status_code=303)

        @api.get("/console/workspaces/{workspace:path}")
        async def workspace_page(
            workspace: str,
            request: Request,
            old: Annotated[int | None, Query(ge=1)] = None,
            new: Annotated[int | None, Query(ge=1)] = None,
        ) -> Response:
            async def build(person: Viewer) -> Response:
                name = validate_workspace_name(workspace)
                ctx = self.ctx(request, person)
                data = await run_in_threadpool(self.workspace_data, ctx, name, old, new)
                return self.render(request, "workspace.html", person=person, **data)

            return await self.page(request, build)

        @api.get("/console/environments")
        async def environments_page(request: Request) -> Response:
            async def build(person: Viewer) -> Response:
                ctx = self.ctx(request, person)
                envs = await run_in_threadpool(
                    lambda: _every(
                        lambda cursor: self.environments.list(
                            ctx, due=False, include_destroyed=False, limit=MAX_PAGE, cursor=cursor
                        )
                    )
                )
                can_extend = {e["name"]: ctx.principal.can(Permission.CREATE_RUN, e["name"])
                              for e in envs}  # fmt: skip
                # Who may `tofuflow env destroy` it: appliers and above.
                can_destroy = {e["name"]: ctx.principal.can(Permission.APPLY_RUN, e["name"])
                               for e in envs}  # fmt: skip
                return self.render(request, "environments.html", person=person, envs=envs,
                                   can_extend=can_extend, can_destroy=can_destroy)  # fmt: skip

            return await self.page(request, build)

        @api.get("/console/environments/{name:path}/destroy")
        async def destroy_confirm(name: str, request: Request) -> Response:
            async def build(person: Viewer) -> Response:
                ctx = self.ctx(request, person)
                ctx.principal.require(Permission.APPLY_RUN, name)
                env = await run_in_threadpool(self.environments.get, ctx, name)
                return self.render(request, "destroy.html", person=person, env=env)

            return await self.page(request, build)

        @api.post("/console/environments/{name:path}/destroy")
        async def destroy(name: str, request: Request) -> Response:
            async def build(person: Viewer) -> Response:
                form = await read_form(request)
                check_csrf(request, form.get("csrf"))
                ctx = self.ctx(request, person)
                ctx.principal.require(Permission.APPLY_RUN, name)
                if form.get("confirm", "").strip() != name:
                    raise BadRequestError(
                        f"type the environment's name, {name}, to confirm the destroy"
                    )
                # It expires now: the reaper destroys it as any expired one (audited).
                await run_in_threadpool(self.environments.expire_now, ctx, name)
                wake = getattr(request.app.state, "wake_reaper", None)
                if wake is not None:
                    wake()
                return RedirectResponse("/console/environments", status_code=303)

            return await self.page(request, build)

        @api.post("/console/environments/{name:path}/extend")
        async def extend(name: str, request: Request) -> Response:
            async def build(person: Viewer) -> Response:
                form = await read_form(request)
                check_csrf(request, form.get("csrf"))
                hours = _EXTENSIONS.get(form.get("by", ""))
                if hours is None:
                    raise BadRequestError(f"extend by one of {', '.join(_EXTENSIONS)}")
                ctx, ttl = self.ctx(request, person), dt.timedelta(hours=hours)
                await run_in_threadpool(self.environments.extend, ctx, name, ttl)
                return RedirectResponse("/console/environments", status_code=303)

            return await self.page(request, build)

        @api.get("/console/drift")
        async def drift_page(request: Request) -> Response:
            async def build(person: Viewer) -> Response:
                ctx = self.ctx(request, person)
                reports = await run_in_threadpool(
                    lambda: _every(
                        lambda cursor: self.drift.latest(ctx, None, limit=MAX_PAGE, cursor=cursor)
                    )
                )
                return self.render(request, "drift.html", person=person, reports=reports)

            return await self.page(request, build)

        @api.get("/console/notifications")
        async def notifications_page(request: Request) -> Response:
            async def build(person: Viewer) -> Response:
                self.ctx(request, person).principal.require(
                    Permission.MANAGE_TOKENS, "*", "read notification deliveries"
                )
                dead, pending = await run_in_threadpool(
                    lambda: (deliveries(self.engine, "dead"), deliveries(self.engine, "pending"))
                )
                return self.render(request, "notifications.html", person=person, dead=dead,
                                   pending=pending)  # fmt: skip

            return await self.page(request, build)

        @api.post("/console/notifications/{delivery_id}/retry")
        async def retry_notification(delivery_id: int, request: Request) -> Response:
            async def build(person: Viewer) -> Response:
                form = await read_form(request)
                check_csrf(request, form.get("csrf"))
                self.ctx(request, person).principal.require(
                    Permission.MANAGE_TOKENS, "*", "retry notification deliveries"
                )
                await run_in_threadpool(retry_delivery, self.engine, delivery_id)
                return RedirectResponse("/console/notifications", status_code=303)

            return await self.page(request, build)

        @api.get("/console/sessions")
        async def sessions_page(request: Request) -> Response:
            async def build(person: Viewer) -> Response:
                self.ctx(request, person).principal.require(
                    Permission.MANAGE_TOKENS, "*", "list people's console sessions"
                )
                sessions = await run_in_threadpool(self.sessions.active)
                return self.render(request, "sessions.html", person=person, sessions=sessions)

            return await self.page(request, build)

        @api.post("/console/sessions/revoke")
        async def revoke_sessions(request: Request) -> Response:
            async def build(person: Viewer) -> Response:
                form = await read_form(request)
                check_csrf(request, form.get("csrf"))
                ctx = self.ctx(request, person)
                ctx.principal.require(
                    Permission.MANAGE_TOKENS, "*", "revoke people's console sessions"
                )
                subject, issuer = form.get("subject", ""), form.get("issuer", "")
                if not subject:
                    raise BadRequestError("name the person whose sessions to revoke (subject)")
                await run_in_threadpool(self.sessions.revoke, ctx.actor, subject, issuer)
                return RedirectResponse("/console/sessions", status_code=303)

            return await self.page(request, build)

        @api.post("/console/workspaces/{workspace:path}/unlock")
        async def unlock(workspace: str, request: Request) -> Response:
            async def build(person: Viewer) -> Response:
                form = await read_form(request)
                check_csrf(request, form.get("csrf"))
                name = validate_workspace_name(workspace)
                # No lock id: a force-unlock, which needs the admin role (audited).
                await run_in_threadpool(self.state.unlock, self.ctx(request, person), name, None)
                return RedirectResponse(f"/console/workspaces/{name}", status_code=303)

            return await self.page(request, build)

        return api

    def _run_routes(self, api: APIRouter) -> None:
        @api.get("/console/runs")
        async def runs_list(
            request: Request,
            workspace: str = "",
            status: str = "",
            requester: str = "",
            commit: str = "",
            pipeline: str = "",
            pipeline_run: str = "",
            cursor: str = "",
        ) -> Response:
            async def build(person: Viewer) -> Response:
                where = RunFilter(
                    workspace.strip(), status if status in _STATUSES else "",
                    requester.strip(), commit.strip().lower(), pipeline.strip()[:255],
                    pipeline_run.strip()[:255],
                )  # fmt: skip
                page = await run_in_threadpool(
                    runs_page, self.engine, person.principal, where, cursor or None
                )
                return self.render(request, "runs.html", person=person, page=page, where=where,
                                   statuses=_STATUSES)  # fmt: skip

            return await self.page(request, build)

        @api.get("/console/events/runs")
        async def runs_events(request: Request) -> Response:
            async def build(person: Viewer) -> Response:
                return StreamingResponse(
                    self.list_changes(request, person), media_type="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
                )  # fmt: skip

            return await self.page(request, build)

        @api.get("/console/runs/{run_id}")
        async def run_page(run_id: str, request: Request) -> Response:
            async def build(person: Viewer) -> Response:
                data = await run_in_threadpool(self.run_data, self.ctx(request, person), run_id)
                return self.render(request, "run.html", person=person, **data)

            return await self.page(request, build)

        @api.get("/console/runs/{run_id}/live")
        async def run_live(run_id: str, request: Request) -> Response:
            async def build(person: Viewer) -> Response:
                data = await run_in_threadpool(self.live_data, self.ctx(request, person), run_id)
                return self.render(request, "_live.html", person=person, **data)

            return await self.page(request, build)

        @api.get("/console/runs/{run_id}/events")
        async def run_events(
            run_id: str, request: Request, after: Annotated[int, Query(ge=0)] = 0
        ) -> Response:
            async def build(person: Viewer) -> Response:
                ctx = self.ctx(request, person)
                await run_in_threadpool(self.runs.get, ctx, run_id)
                return StreamingResponse(
                    self.changes(request, person, ctx, run_id, after),
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
                )  # fmt: skip

            return await self.page(request, build)

        @api.get("/console/runs/{run_id}/story.json")
        async def story_export(run_id: str, request: Request) -> Response:
            async def build(person: Viewer) -> Response:
                ctx = self.ctx(request, person)
                data = await run_in_threadpool(self.story_export, ctx, run_id)
                return JSONResponse(data, headers={
                    "Content-Disposition": f'attachment; filename="run-{run_id}-story.json"',
                    "Cache-Control": "no-store",
                })  # fmt: skip

            return await self.page(request, build)

        @api.get("/console/runs/{run_id}/story")
        async def story_page(run_id: str, request: Request) -> Response:
            async def build(person: Viewer) -> Response:
                data = await run_in_threadpool(self.story_data, self.ctx(request, person), run_id)
                return self.render(request, "story.html", person=person, **data)

            return await self.page(request, build)

    def _action_routes(self, api: APIRouter) -> None:
        @api.post("/console/runs/{run_id}/approve")
        async def approve(run_id: str, request: Request) -> Response:
            async def build(person: Viewer) -> Response:
                form = await read_form(request)
                check_csrf(request, form.get("csrf"))
                ctx = self.ctx(request, person)
                comment = form.get("comment", "")[:1000]
                await run_in_threadpool(self.runs.approve, ctx, run_id, comment)
                return RedirectResponse(f"/console/runs/{run_id}", status_code=303)

            return await self.page(request, build)

        @api.post("/console/runs/{run_id}/cancel")
        async def cancel(run_id: str, request: Request) -> Response:
            async def build(person: Viewer) -> Response:
                form = await read_form(request)
                check_csrf(request, form.get("csrf"))
                ctx = self.ctx(request, person)
                reason = f"cancelled in the console by {ctx.principal.subject}"
                await run_in_threadpool(self.runs.cancel, ctx, run_id, reason)
                return RedirectResponse(f"/console/runs/{run_id}", status_code=303)

            return await self.page(request, build)

        @api.post("/console/runs/{run_id}/reject")
        async def reject(run_id: str, request: Request) -> Response:
            async def build(person: Viewer) -> Response:
                form = await read_form(request)
                check_csrf(request, form.get("csrf"))
                ctx = self.ctx(request, person)
                await run_in_threadpool(self.reject, ctx, run_id, form.get("comment", ""))
                return RedirectResponse(f"/console/runs/{run_id}", status_code=303)

            return await self.page(request, build)

    # -- data (in a worker thread) ------------------------------------------------------

    def run_data(self, ctx: RequestContext, run_id: str) -> dict[str, Any]:
        run = self.runs.get(ctx, run_id)
        resources: list[ResourceSection] = []
        outputs: list[OutputRow] = []
        if run["summary"] is not None:
            resources, outputs = self.sections(ctx, run_id)
        log = self.runs.log(ctx, run_id) if run["status"] in _MAY_HAVE_LOG else []
        return {
            "run": run, "resources": resources, "outputs": outputs,
            "context": context_facts(run.get("context") or {}, run.get("commit")),
            "log": "".join(text for _, text in log), "log_seq": log[-1][0] if log else 0,
            **self.live_data(ctx, run_id, run),
        }  # fmt: skip

    def sections(
        self, ctx: RequestContext, run_id: str
    ) -> tuple[list[ResourceSection], list[OutputRow]]:
        """The plan's masked view; a run's plan never changes once uploaded, so the views of
        recent runs are kept (masked: no sensitive value is held), after the caller's
        right to read the run was checked."""
        with self._sections_lock:
            cached = self._sections.get(run_id)
            if cached is not None:
                self._sections.move_to_end(run_id)
                return cached
        built = plan_sections(self.runs.plan(ctx, run_id))
        with self._sections_lock:
            self._sections[run_id] = built
            while len(self._sections) > _SECTIONS_KEPT:
                self._sections.popitem(last=False)
        return built

    def live_data(
        self, ctx: RequestContext, run_id: str, run: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        run = run or self.runs.get(ctx, run_id)
        principal = ctx.principal
        events = _run_events(self.engine, principal, run_id)
        return {
            "run": run,
            "steps": story_steps(events),
            # Role, expiry and fingerprint of each issuance: never a credential or token.
            "credentials": [
                e["detail"] or {} for e in events if e["action"] == "credentials.issued"
            ],
            "can_approve": run["status"] == "needs_approval"
            and principal.can(Permission.APPROVE_RUN, run["workspace"]),
            "own_run": run["requester"] == principal.subject
            and not self.self_approval_allowed(run["workspace"]),
            # What RunService.cancel allows someone who did not request the run.
            "can_cancel": run["status"] in {"needs_approval", "approved"}
            and principal.can(Permission.APPLY_RUN, run["workspace"]),
        }

    def self_approval_allowed(self, workspace: str) -> bool:
        """As RunService.approve decides: every [[workspace_settings]] entry matching the
        workspace allows it (none matching: not allowed)."""
        matching = [p for p in self.runs.workspace_policies if fnmatchcase(workspace, p.match)]
        return bool(matching) and all(p.allow_self_approval for p in matching)

    def story_data(self, ctx: RequestContext, run_id: str) -> dict[str, Any]:
        run = self.runs.get(ctx, run_id)
        events = _run_events(self.engine, ctx.principal, run_id)
        chain = self.chain.check(run["workspace"])
        return {"run": run, "steps": story_steps(events), "chain": chain}

    def story_export(self, ctx: RequestContext, run_id: str) -> dict[str, Any]:
        """The run's slice of the audit log for an auditor: every event with its hashes
        (re-checkable against its workspace's chain), and that chain's verification now."""
        run = self.runs.get(ctx, run_id)
        events = _run_events(self.engine, ctx.principal, run_id)
        chain = self.chain.check(run["workspace"])
        return {
            "run": run["id"], "workspace": run["workspace"], "events": events,
            "chain": {"workspace": run["workspace"], "ok": chain.ok, "checked": chain.checked,
                      "first_bad_id": chain.first_bad_id, "reason": chain.reason},
        }  # fmt: skip

    def workspace_data(
        self, ctx: RequestContext, name: str, old: int | None, new: int | None
    ) -> dict[str, Any]:
        try:
            versions = _every(
                lambda cursor: self.state.versions(ctx, name, limit=MAX_PAGE, cursor=cursor)
            )  # checks the right to list them
        except NotFoundError:  # no state yet (a new environment): still its page
            ctx.principal.require(Permission.LIST_VERSIONS, name)
            versions = []
        page = runs_page(self.engine, ctx.principal, RunFilter(workspace=name), None)
        # Names only (resources, attributes, outputs), never values: readers may see it.
        diff = self.state.diff(ctx, name, old, new) if old and new else None
        return {
            "name": name, "versions": list(reversed(versions)), "diff": diff,
            "can_unlock": ctx.principal.can(Permission.FORCE_UNLOCK, name),
            "lock": workspace_lock(self.engine, name),
            "state_writes": self.runs.state_writes(name),
            "steps": story_steps(workspace_events(self.engine, ctx.principal, name)),
            "runs": page.runs[:10],
            "environments": derived_environments(self.engine, ctx.principal, name),
            "drift": self._newest_drift(ctx, name),
        }  # fmt: skip

    def _newest_drift(self, ctx: RequestContext, name: str) -> dict[str, Any] | None:
        if not ctx.principal.can(Permission.READ_RUNS, name):
            return None
        try:
            reports = self.drift.latest(ctx, name, limit=1).items
        except NotFoundError:  # never checked
            return None
        return reports[0] if reports else None

    def reject(self, ctx: RequestContext, run_id: str, comment: str) -> None:
        """Decide a run that waits for one. From a page opened before someone approved it,
        Reject would cancel the approved run: refused, saying what it is now."""
        run = self.runs.get(ctx, run_id)
        ctx.principal.require(Permission.APPROVE_RUN, run["workspace"])
        if run["status"] != "needs_approval":
            raise ConflictError(
                f"run {run_id} is {run['status']} now, not waiting for a decision: reload "
                "its page to see who decided (to stop an approved run, Cancel it there)"
            )
        reason = f"rejected by {ctx.principal.subject}" + (f": {comment}" if comment else "")
        self.runs.cancel(ctx, run_id, reason[:500])

    async def changes(
        self, request: Request, person: Viewer, ctx: RequestContext, run_id: str, after: int
    ) -> AsyncIterator[str]:
        """Server-sent events: ``log`` with each new chunk of the apply's output (as
        escaped text), ``changed`` whenever the run's status or story moves on, ``ended``
        (and the stream ends) once the session is over."""
        last: tuple[Any, ...] | None = None
        loop = asyncio.get_running_loop()
        started = checked = loop.time()
        yield "retry: 2000\n\n"
        while loop.time() - started < _SSE_MAX_SECONDS:
            if await request.is_disconnected():
                return
            chunks = await run_in_threadpool(self.runs.log, ctx, run_id, after)
            current = await run_in_threadpool(run_fingerprint, self.engine, run_id)
            news = bool(chunks) or (last is not None and current != last)
            if news or loop.time() - checked >= _SSE_SESSION_SECONDS:
                over, checked = await self.session_over(request, person), loop.time()
                if over is not None:
                    if over:
                        yield _sse("ended", over)
                    return
            for seq, text in chunks:
                yield _sse("log", text)
                after = seq
            if last is not None and current != last:
                yield f"event: changed\ndata: {current[0]}\n\n"
            last = current
            await asyncio.sleep(_SSE_POLL_SECONDS)

    async def list_changes(self, request: Request, person: Viewer) -> AsyncIterator[str]:
        """Server-sent events: ``changed`` whenever anything was audited (a run created,
        decided, approved, applied…): the runs list then reloads its table; ``ended``
        once the session is over."""
        last: int | None = None
        loop = asyncio.get_running_loop()
        started = checked = loop.time()
        yield "retry: 2000\n\n"
        while loop.time() - started < _SSE_MAX_SECONDS:
            if await request.is_disconnected():
                return
            current = await run_in_threadpool(newest_event, self.engine)
            if (last is not None and current != last) or (
                loop.time() - checked >= _SSE_SESSION_SECONDS
            ):
                over, checked = await self.session_over(request, person), loop.time()
                if over is not None:
                    if over:
                        yield _sse("ended", over)
                    return
            if last is not None and current != last:
                yield "event: changed\ndata: runs\n\n"
            last = current
            await asyncio.sleep(_SSE_LIST_SECONDS)

    async def session_over(self, request: Request, person: Viewer) -> str | None:
        """Whether a stream's session still stands: None while it does; "" when its idle
        time ran out as of the cookie it started with (the browser reconnects with its
        current cookie, which decides); else why it is over."""
        started = request.session  # as the stream's request brought it
        now = time.time()
        if now - int(started.get("iat") or 0) > self.policy.absolute.total_seconds():
            return _SESSION_OVER
        if not await run_in_threadpool(self.sessions.live, person.sid):
            return _SESSION_OVER
        if now - int(started.get("seen") or 0) > self.policy.idle.total_seconds():
            return ""
        return None


def _sse(event: str, text: str) -> str:
    """One server-sent event carrying ``text`` as escaped HTML."""
    lines = html.escape(text).split("\n")
    return f"event: {event}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


async def _one_event(event: str, text: str) -> AsyncIterator[str]:
    yield _sse(event, text)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _form_page(request: Request) -> str:
    """The page a form was sent from: its Referer on this console, else the page the
    form's action belongs to (a run's, a workspace's, the list it came from)."""
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.netloc == request.url.netloc and referer.path.startswith("/console/"):
        return safe_next(referer.path + (f"?{referer.query}" if referer.query else ""))
    parent = request.url.path.rsplit("/", 1)[0]
    if parent.startswith(("/console/runs/", "/console/workspaces/")):
        return safe_next(parent)
    for listing in ("/console/environments", "/console/notifications", "/console/sessions"):
        if parent.startswith(listing):
            return listing
    return "/console/runs"


def _when(moment: object) -> str:
    """An ISO timestamp as people read it: ``2026-12-05 01:02:45 UTC``."""
    try:
        parsed = dt.datetime.fromisoformat(str(moment).replace("Z", "+00:00"))
    except ValueError:
        return str(moment)
    aware = parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return aware.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: object) -> str:
    """``5400`` as ``1 h 30 min``."""
    total = int(seconds) if isinstance(seconds, int | float) else 0
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3600)
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{rest // 60} min"]
    return " ".join(p for p in parts if p) if total >= 60 else f"{total} s"


_UI_ONLY = (
    "You are not signed in (signed out, or this browser never was). This console signs "
    "you in only through the one-time links `tofuflow ui` prints: run `tofuflow ui` again "
    "for a new one."
)
_NOT_CONFIGURED = (
    "Sign-in is not configured: add a [console] table with your OpenID provider's issuer "
    "and client id to the server's TOML (docs/console.md). For the embedded control plane "
    "on this machine, run `tofuflow ui`."
)


def install_offline_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI from the installed swagger-ui-bundle (no CDN), with the bearer
    and basic schemes the API accepts."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.openapi.utils import get_openapi
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs/static", StaticFiles(directory=swagger_ui_path), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} — API",
            swagger_js_url="/docs/static/swagger-ui-bundle.js",
            swagger_css_url="/docs/static/swagger-ui.css",
            swagger_favicon_url="/docs/static/favicon-32x32.png",
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes,
            )  # fmt: skip
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "A tofuflow API token (tfw_…) or an OIDC ID token"},
                "basic": {"type": "http", "scheme": "basic",
                          "description": "Any user name; the token as the password (the "
                                         "http backend's TF_HTTP_PASSWORD)"},
            }  # fmt: skip
            schema["security"] = [{"bearer": []}, {"basic": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _every(fetch: Callable[[str | None], Page[Any]]) -> list[Any]:
    """Every item of a paged list, following its cursors."""
    items: list[Any] = []
    cursor: str | None = None
    while True:
        page = fetch(cursor)
        items.extend(page.items)
        if page.next_cursor is None:
            return items
        cursor = page.next_cursor


def _run_events(engine: Any, principal: Any, run_id: str) -> list[dict[str, Any]]:
    """Every audit event of one run the viewer may read, oldest first."""
    query = AuditQuery(run=run_id, limit=MAX_PAGE)
    return _every(lambda cursor: query_events(engine, principal, query, cursor))
