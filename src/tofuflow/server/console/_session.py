"""Who is looking at the console: the signed-in person, their session and its CSRF token.

The session lives in a signed cookie (Starlette's SessionMiddleware, itsdangerous):
HttpOnly, SameSite=Lax, Secure unless ``insecure_cookie`` (loopback http only), scoped to
``/console``. It holds the person's audit-safe claims, never a token. Idle and absolute
expiry are checked here on every request; roles are recomputed from the claims and the
current ``[[bindings]]`` on every request, so a changed binding applies at once.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from tofuflow.errors import AuthError, ForbiddenError
from tofuflow.server.auth import (
    Binding,
    Grant,
    Permission,
    Principal,
    Role,
    principal_from_claims,
    safe_claims,
)

__all__ = [
    "SESSION_COOKIE",
    "SessionPolicy",
    "Viewer",
    "check_csrf",
    "sign_in",
    "sign_in_local",
    "viewer",
]

SESSION_COOKIE = "tofuflow_console"
_DISPLAY_CLAIMS = ("name", "preferred_username", "email")
_GROUP_CLAIMS = ("groups", "roles")  # where bindings look for groups (auth/_bindings.py)


@dataclass(frozen=True)
class SessionPolicy:
    """How long a session lasts: unused (idle) and at most (absolute)."""

    idle: dt.timedelta = dt.timedelta(minutes=30)
    absolute: dt.timedelta = dt.timedelta(hours=12)


@dataclass(frozen=True)
class Viewer:
    """The signed-in person: their principal (roles), a display name, the CSRF token."""

    principal: Principal
    name: str
    csrf: str

    @property
    def is_admin(self) -> bool:
        """An admin of every workspace (tokens, notifications, dead letters)."""
        return self.principal.can(Permission.MANAGE_TOKENS, "*")


def sign_in(request: Request, claims: Mapping[str, Any], bindings: Sequence[Binding]) -> None:
    """Start a session for verified ``claims`` (a new CSRF token; the old session ends).

    Only the groups some binding names are kept: a person in 200 Entra groups would
    otherwise need a cookie larger than browsers store (4 KB), and sign in forever."""
    display = next((str(claims[c]) for c in _DISPLAY_CLAIMS if claims.get(c)), "")
    kept = safe_claims(claims)
    named = {group for binding in bindings for group in binding.groups}
    for key in _GROUP_CLAIMS:
        value = kept.get(key)
        if isinstance(value, list | str):
            kept[key] = [g for g in ([value] if isinstance(value, str) else value) if g in named]
    _start(request, claims=kept, name=display[:200] or str(claims.get("sub")))


def sign_in_local(request: Request, user: str) -> None:
    """Start a session for the local user who owns the embedded plane (``tofuflow ui``):
    an admin there, as the tokens the embedded plane mints itself are."""
    _start(request, local=user, name=user)


def _start(request: Request, **values: Any) -> None:
    request.session.clear()
    now = int(time.time())
    request.session.update({**values, "iat": now, "seen": now, "csrf": secrets.token_urlsafe(32)})


def viewer(request: Request, policy: SessionPolicy, bindings: Sequence[Binding]) -> Viewer:
    """The person behind this request; AuthError when there is none or it expired
    (the page then redirects to the sign-in)."""
    session = request.session
    iat, seen = session.get("iat"), session.get("seen")
    if not isinstance(iat, int) or not isinstance(seen, int):
        raise AuthError("not signed in")
    now = int(time.time())
    if now - iat > policy.absolute.total_seconds():
        session.clear()
        raise AuthError("your session ended: sign in again")
    if now - seen > policy.idle.total_seconds():
        session.clear()
        raise AuthError("your session was idle too long: sign in again")
    if not _background(request):
        session["seen"] = now
    return Viewer(_principal(session, bindings), str(session["name"]), session["csrf"])


def _background(request: Request) -> bool:
    """A request the page makes by itself (a server-sent event stream, an htmx refresh it
    triggers): it is not the person's activity, so it does not keep an idle session alive."""
    accept = request.headers.get("accept", "")
    return accept.startswith("text/event-stream") or (
        request.method == "GET" and request.headers.get("hx-request") == "true"
    )


def _principal(session: Mapping[str, Any], bindings: Sequence[Binding]) -> Principal:
    local, claims = session.get("local"), session.get("claims")
    if isinstance(local, str):
        return Principal(f"local:{local}", "token", (Grant(Role.ADMIN, "*"),))
    if isinstance(claims, dict):
        return principal_from_claims(claims, bindings)
    raise AuthError("not signed in")


def check_csrf(request: Request, submitted: object) -> None:
    """Refuse (403) a state-changing form that does not carry this session's token."""
    expected = request.session.get("csrf")
    if not (
        isinstance(expected, str)
        and isinstance(submitted, str)
        and secrets.compare_digest(expected.encode(), submitted.encode())
    ):
        raise ForbiddenError(
            "the form's CSRF token is missing or does not match your session: reload the "
            "page and submit it again"
        )
