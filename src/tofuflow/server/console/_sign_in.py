"""The console's sign-in: `tofuflow ui`'s one-time links, the OpenID provider's
login and callback, sign-out (also at the provider), and the check that a sign-in is
fresh enough after a session was ended.

    signin = SignIn(config, settings, policy, sessions, bindings, pages)
    signin.routes(api)                       # /console/link, /login, the callback, /logout
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import secrets
import time
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tofuflow.errors import AuthError, ForbiddenError, TofuflowError
from tofuflow.server.auth import Binding
from tofuflow.server.config import ServerConfig
from tofuflow.server.console._session import (
    ENDED_KEY,
    REAUTH_KEY,
    SIGNED_IN_AGAIN,
    SessionPolicy,
    SessionStore,
    Viewer,
    check_csrf,
    read_form,
    sign_in,
    sign_in_local,
)
from tofuflow.server.console._settings import (
    CALLBACK_PATH,
    SIGNED_OUT_PATH,
    ConsoleSettings,
    unreachable,
)

__all__ = ["DRAFT_KEY", "NOTICE_KEY", "Pages", "SignIn", "issue_sign_in_link", "safe_next"]

_log = logging.getLogger("tofuflow.server.console")
# A notice and a comment kept for the page a form came from, shown once after sign-in.
NOTICE_KEY, DRAFT_KEY, _AUTH_AFTER_KEY = "notice", "draft", "auth_after"
# What survives the session being cleared on the way through the provider's sign-in.
_CARRIED = (ENDED_KEY, REAUTH_KEY, NOTICE_KEY, DRAFT_KEY)
_CLOCK_SKEW = 10  # seconds this server's clock and the provider's may differ by
_LINK_SECONDS = 120.0


class Pages(Protocol):
    """What sign-in needs of the console: its pages."""

    def render(
        self, request: Request, template: str, status: int = 200, **values: Any
    ) -> HTMLResponse: ...

    def who(self, request: Request) -> Viewer: ...

    def unconfigured(self, request: Request) -> Response: ...


def issue_sign_in_link(app: FastAPI, lifetime: float = _LINK_SECONDS) -> str:
    """A one-time sign-in path for the local user of an embedded plane (``tofuflow ui``,
    as Jupyter's token link): good once, for ``lifetime`` seconds, kept in this process."""
    token = secrets.token_urlsafe(32)
    app.state.console_ui = True  # people sign in here only through these links
    links: dict[str, float] = app.state.console_links
    now = time.monotonic()
    for digest in [d for d, expires in links.items() if expires < now]:
        del links[digest]
    links[_digest(token)] = now + lifetime
    return f"/console/link?token={token}"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SignIn:
    """People's sign-in to the console through its OpenID provider (``settings``; None:
    only `tofuflow ui`'s links), their sessions in ``sessions``, pages by ``pages``."""

    def __init__(
        self,
        config: ServerConfig,
        settings: ConsoleSettings | None,
        policy: SessionPolicy,
        sessions: SessionStore,
        bindings: tuple[Binding, ...],
        pages: Pages,
    ) -> None:
        self.config, self.settings, self.policy = config, settings, policy
        self.sessions, self.bindings, self.pages = sessions, bindings, pages
        self.oauth = _oauth_client(settings) if settings is not None else None

    def routes(self, api: APIRouter) -> None:
        """The sign-in routes: `tofuflow ui`'s links, the provider's login and callback,
        sign-out and the signed-out page."""

        @api.get("/console/link")
        async def link(request: Request, token: str = "") -> Response:
            links: dict[str, float] = request.app.state.console_links
            expires = links.pop(_digest(token), None)  # good once
            if expires is None or expires < time.monotonic():
                return self.pages.render(request, "message.html", 403, title="Link not valid",
                                   message="This sign-in link was already used or has expired: "
                                           "run `tofuflow ui` again for a new one.",
                                   person=None)  # fmt: skip
            await run_in_threadpool(sign_in_local, request, getpass.getuser(), self.sessions)
            return RedirectResponse("/console/runs", status_code=303)

        @api.get("/console/login")
        async def login(request: Request, next: str = "/console/runs", why: str = "") -> Response:
            if self.oauth is None or self.settings is None:
                return self.pages.unconfigured(request)
            public = self.public_url(request)
            if (
                urlsplit(public).netloc != request.url.netloc
                and "moved" not in request.query_params
            ):
                # The provider returns to public_url: start there, where the state cookie
                # will be (else "State not equal" after a sign-in on another host name).
                # Once only: a proxy that rewrites Host must not make a loop.
                query = urlencode({"next": next, "why": why, "moved": "1"})
                return RedirectResponse(f"{public}/console/login?{query}", status_code=303)
            # An open page's own request that met an ended session follows its redirect
            # here by itself (a fetch does); the person's next click must still learn
            # why, so the mark survives until someone signs in.
            carried = {k: request.session[k] for k in _CARRIED if k in request.session}
            request.session.clear()
            request.session.update(carried)
            request.session["next"] = safe_next(next)
            if why in SIGNED_IN_AGAIN:  # a form's own notice, when it left one, says more
                request.session.setdefault(NOTICE_KEY, SIGNED_IN_AGAIN[why])
            problem = await self.discover()
            if problem is not None:
                return self.cannot_sign_in(request, problem)
            # A sign-in older than a session's absolute lifetime is never taken as is.
            options: dict[str, Any] = {"max_age": int(self.policy.absolute.total_seconds())}
            if carried.get(REAUTH_KEY):  # signed out, revoked, or past its lifetime
                options = {"prompt": "login", "max_age": 0}
                request.session[_AUTH_AFTER_KEY] = int(time.time())
            redirect_uri = public + CALLBACK_PATH
            response: Response = await self.oauth.authorize_redirect(
                request, redirect_uri, **options
            )
            return response

        @api.get(CALLBACK_PATH)
        async def callback(request: Request) -> Response:
            from authlib.integrations.starlette_client import OAuthError

            if self.oauth is None or self.settings is None:
                return RedirectResponse("/console/login", status_code=303)
            state = request.query_params.get("state", "")
            if not state or f"_state_idp_{state}" not in request.session:
                # Not an answer to a sign-in this browser started: nothing in it (an
                # error_description anyone could have written) is shown.
                _log.warning("console sign-in failed: an answer for no sign-in started here")
                return self.pages.render(request, "message.html", 400, title="Sign-in failed",
                                   message="Sign-in failed: this answer was not for a sign-in "
                                           "started here; sign in again.",
                                   person=None, retry=True)  # fmt: skip
            try:
                token = await self.oauth.authorize_access_token(request)
                claims = await self.claims(token)
            except (OAuthError, TofuflowError) as exc:
                _log.warning("console sign-in failed: %s", exc)
                return self.pages.render(request, "message.html", 400, title="Sign-in failed",
                                   message=f"The identity provider's answer was not accepted "
                                           f"({_oauth_reason(exc)}). Sign in again.",
                                   person=None, retry=True)  # fmt: skip
            except Exception as exc:  # httpx's or httpx2's: see unreachable
                reason = unreachable(self.settings.issuer, exc)
                if reason is None:
                    raise
                _log.warning("console sign-in: %s", reason)
                return self.cannot_sign_in(request, reason)
            target = safe_next(str(request.session.get("next") or ""))
            stale = await run_in_threadpool(self.stale_sign_in, request, claims)
            if stale is not None:
                return stale
            carried = {k: request.session[k] for k in (NOTICE_KEY, DRAFT_KEY)
                       if k in request.session}  # fmt: skip
            await run_in_threadpool(sign_in, request, claims, self.bindings, self.sessions)
            request.session.update(carried)
            return RedirectResponse(target, status_code=303)

        @api.post("/console/logout")
        async def logout(request: Request) -> Response:
            form = await read_form(request)
            sid = request.session.get("sid")
            if not isinstance(sid, str):  # already signed out (another tab did)
                return RedirectResponse(SIGNED_OUT_PATH, status_code=303)
            try:
                check_csrf(request, form.get("csrf"))
            except ForbiddenError as exc:
                return self.pages.render(request, "message.html", 403, title="Not allowed",
                                   message=str(exc), person=None)  # fmt: skip
            by = str(request.session.get("name") or "")
            await run_in_threadpool(self.sessions.end, sid, by)  # a copy is refused too
            request.session.clear()
            request.session[REAUTH_KEY] = True  # this browser's next sign-in: a password
            back = self.public_url(request) + SIGNED_OUT_PATH
            end = await self.end_session_url(back)
            return RedirectResponse(end or SIGNED_OUT_PATH, status_code=303)

        @api.get("/console/logout")
        async def logout_page() -> Response:
            return RedirectResponse(SIGNED_OUT_PATH, status_code=303)

        @api.get(SIGNED_OUT_PATH)
        async def signed_out(request: Request) -> Response:
            try:
                person = self.pages.who(request)
            except AuthError:
                return self.pages.render(request, "message.html", title="Signed out", person=None,
                                   message="You are signed out of the tofuflow console.",
                                   retry=True)  # fmt: skip
            return self.pages.render(
                request, "message.html", title="Still signed in", person=person,
                message="You are still signed in: sign out with the button at the top.",
            )  # fmt: skip

    async def discover(self) -> str | None:
        """None once the provider's discovery document is loaded; else why not, in one
        line (logged as one line too: a typo in the issuer is not a crash)."""
        if self.oauth is None or self.settings is None:
            return "the console has no sign-in configured"
        try:
            await self.oauth.load_server_metadata()
        except Exception as exc:  # httpx's or httpx2's errors: see unreachable
            reason = unreachable(self.settings.discovery_url, exc)
            if reason is None:
                raise
            _log.warning("console sign-in: %s", reason)
            return reason
        return None

    def cannot_sign_in(self, request: Request, reason: str) -> Response:
        return self.pages.render(request, "message.html", 503, title="Cannot sign in",
                           message=f"Sign-in is not possible now: {reason}. Try again "
                                   "later, or ask the console's operator to check [console] "
                                   "issuer.",
                           person=None, retry=True)  # fmt: skip

    def stale_sign_in(self, request: Request, claims: dict[str, Any]) -> Response | None:
        """A sign-in the provider did not make fresh enough, or None: it must be newer than
        the person's last signed-out or revoked session, newer than the absolute lifetime,
        and, when a password was asked for (prompt=login), made after that request. The
        first time, the browser goes round again asking for a password (strictly newer);
        after that, a page (newer but for the clocks' difference)."""
        auth_time = claims.get("auth_time")
        asked = request.session.get(_AUTH_AFTER_KEY)
        ended = self.sessions.last_ended(str(claims.get("sub")), str(claims.get("iss") or ""))
        if isinstance(auth_time, int | float) and not isinstance(auth_time, bool):
            floor = max(
                time.time() - self.policy.absolute.total_seconds(),
                asked if isinstance(asked, int) else 0,
                ended.timestamp() if ended else 0,
            )
            if auth_time >= floor - (_CLOCK_SKEW if asked is not None else 0):
                return None
        elif ended is None or asked is not None:
            return None  # a provider that says nothing of when: it was asked to, at least
        if asked is None:
            request.session[REAUTH_KEY] = True
            target = str(request.session.get("next") or "/console/runs")
            return RedirectResponse(f"/console/login?next={quote(target, safe='')}",
                                    status_code=303)  # fmt: skip
        _log.warning("console sign-in refused: the provider did not ask for the password again")
        return self.pages.render(request, "message.html", 403, title="Sign-in failed",
                           message="Your identity provider signed you in without asking for "
                                   "your password again, after your session here was ended. "
                                   "Sign out at your provider, then sign in again.",
                           person=None, retry=True)  # fmt: skip

    async def end_session_url(self, back: str) -> str | None:
        """The provider's end-session (RP-initiated logout) URL returning to ``back``, when
        its discovery document advertises one."""
        if self.oauth is None or self.settings is None or await self.discover() is not None:
            return None
        endpoint = (await self.oauth.load_server_metadata()).get("end_session_endpoint")
        if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
            return None
        query = urlencode({"client_id": self.settings.client_id,
                           "post_logout_redirect_uri": back})  # fmt: skip
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    async def claims(self, token: dict[str, Any]) -> dict[str, Any]:
        """The ID token's verified claims, plus what the userinfo endpoint adds (groups
        live there at some providers); ``sub`` must agree."""
        if self.oauth is None:
            raise ForbiddenError("the console has no sign-in configured")
        claims = dict(token.get("userinfo") or {})
        if not claims.get("sub"):
            raise ForbiddenError("the identity provider sent no ID token: is openid a scope?")
        metadata = await self.oauth.load_server_metadata()
        if metadata.get("userinfo_endpoint"):
            extra = dict(await self.oauth.userinfo(token=token))
            if extra.get("sub") == claims["sub"]:
                claims = {**extra, **claims}
        return claims

    def public_url(self, request: Request) -> str:
        return self.config.public_url.rstrip("/") or str(request.base_url).rstrip("/")


def _oauth_client(settings: ConsoleSettings) -> Any:
    from authlib.integrations.starlette_client import OAuth

    oauth = OAuth()
    return oauth.register(
        "idp",
        client_id=settings.client_id,
        client_secret=settings.client_secret(),
        server_metadata_url=settings.discovery_url,
        client_kwargs={"scope": " ".join(settings.scopes), "code_challenge_method": "S256"},
    )


def _oauth_reason(exc: Exception) -> str:
    description = getattr(exc, "description", None) or getattr(exc, "error", None)
    return str(description or exc)[:300]


def safe_next(target: str) -> str:
    """``target`` when it is a path of this console, else the runs list: never another
    site (an open redirect)."""
    # Only a path of this console: never another site (an open redirect).
    if target.startswith("/console/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/console/runs"
