"""Who is looking at the console: the signed-in person, their session and its CSRF token.

The session lives in a signed cookie (Starlette's SessionMiddleware, itsdangerous):
HttpOnly, SameSite=Lax, Secure unless ``insecure_cookie`` (loopback http only), scoped to
``/console``. It holds the person's audit-safe claims, never a token. Idle and absolute
expiry are checked here on every request; roles are recomputed from the claims and the
current ``[[bindings]]`` on every request, so a changed binding applies at once.

The cookie also names a row of ``console_sessions`` (``SessionStore``): a session is live
only while its row is, so signing out, or an admin revoking a person's sessions, refuses
that cookie on every replica from then on, even a copy of it. The row's ``expires_at``
follows the person's activity (idle expiry, within a minute, capped at the absolute), so
the server knows which sessions are still valid without the cookie.

A session that ended by sign-out, revocation or its absolute lifetime leaves ``REAUTH_KEY``
in the cleared cookie: the next sign-in asks the provider for the password again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from starlette.requests import Request

from tofuflow.errors import AuthError, ForbiddenError
from tofuflow.server import _audit
from tofuflow.server.auth import (
    Binding,
    Grant,
    Permission,
    Principal,
    Role,
    principal_from_claims,
    safe_claims,
)
from tofuflow.server.storage._db import ConsoleSession, utcnow, write_session

__all__ = [
    "ENDED_KEY",
    "REAUTH_KEY",
    "SESSION_COOKIE",
    "SESSION_ENDED",
    "SIGNED_IN_AGAIN",
    "SessionPolicy",
    "SessionStore",
    "Viewer",
    "check_csrf",
    "read_form",
    "sign_in",
    "sign_in_local",
    "viewer",
    "why_code",
]

SESSION_COOKIE = "tofuflow_console"
# A session the server ended (sign-out elsewhere, an admin's revoke) leaves this mark in
# the cleared cookie, so every later request says why, not just the first.
ENDED_KEY = "ended"
SESSION_ENDED = "your session was ended (signed out or revoked): sign in again"
_PAST_LIFETIME = "your session ended: sign in again"
_IDLE = "your session was idle too long: sign in again"
# The next sign-in must be a fresh authentication at the provider (prompt=login).
REAUTH_KEY = "reauth"
# Why a session is over, as the sign-in link's `why=` code, and what the page the person
# lands on after signing in again says: fixed text, never the link's own.
_WHY_CODES = {_IDLE: "idle", SESSION_ENDED: "ended", _PAST_LIFETIME: "expired"}
SIGNED_IN_AGAIN = {
    "idle": "Your session was idle too long, so you were signed in again.",
    "ended": "Your session was ended (signed out or revoked), so you were signed in again.",
    "expired": "Your session reached its time limit, so you were signed in again.",
}
_DISPLAY_CLAIMS = ("name", "preferred_username", "email")
_GROUP_CLAIMS = ("groups", "roles")  # where bindings look for groups (auth/_bindings.py)


@dataclass(frozen=True)
class SessionPolicy:
    """How long a session lasts: unused (idle) and at most (absolute)."""

    idle: dt.timedelta = dt.timedelta(minutes=30)
    absolute: dt.timedelta = dt.timedelta(hours=12)


@dataclass(frozen=True)
class Viewer:
    """The signed-in person: their principal (roles), a display name, the CSRF token,
    and the id of their session (``SessionStore``)."""

    principal: Principal
    name: str
    csrf: str
    sid: str = ""
    # False for the page's own background requests: they do not keep a session alive.
    active: bool = True

    @property
    def is_admin(self) -> bool:
        """An admin of every workspace (tokens, notifications, dead letters)."""
        return self.principal.can(Permission.MANAGE_TOKENS, "*")


class SessionStore:
    """The server's record of console sessions: live while not ended and not expired.

        store = SessionStore(engine, policy)
        sid = store.open("alice", "https://login.example.com", "Alice")
        store.live(sid, active=True)    # True; her activity keeps it from idling out
        store.end(sid)                  # signed out: this cookie is refused from now on
        store.revoke(actor, "alice", "https://login.example.com")   # every one of hers

    Only a hash of the id is kept, so the table gives no one a session.
    """

    def __init__(self, engine: Engine, policy: SessionPolicy | None = None) -> None:
        self.engine = engine
        self.policy = policy or SessionPolicy()
        # How much idle time a request may use up before the row is moved on: one write a
        # minute at most per person, and the server's idle expiry as late as the cookie's.
        self._slack = min(self.policy.idle / 10, dt.timedelta(minutes=1))

    def open(self, subject: str, issuer: str, name: str) -> str:
        sid, now = secrets.token_urlsafe(32), utcnow()
        with write_session(self.engine) as session:
            # Rows past their expiry (idle or absolute) are of no use to anyone: forget them.
            session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < now))
            session.add(ConsoleSession(
                id_hash=_sid_hash(sid), subject=subject[:512], issuer=issuer[:512],
                name=name[:255], created_at=now, expires_at=self._idle_until(now, now),
            ))  # fmt: skip
        return sid

    def _idle_until(self, created: dt.datetime, now: dt.datetime) -> dt.datetime:
        return min(created + self.policy.absolute, now + self.policy.idle + self._slack)

    def live(self, sid: str, *, active: bool = False) -> bool:
        """Not ended, not idle, not past its absolute expiry; ``active`` (the person did
        something) moves its idle expiry on."""
        now = utcnow()
        with Session(self.engine) as session:
            row = session.get(ConsoleSession, _sid_hash(sid))
            if row is None or row.ended_at is not None or _aware(row.expires_at) <= now:
                return False
            moved = self._idle_until(_aware(row.created_at), now)
            if not active or _aware(row.expires_at) >= min(moved, now + self.policy.idle):
                return True  # not the person's doing, or moved on less than a minute ago
        with write_session(self.engine) as session:
            session.execute(
                update(ConsoleSession)  # an ended row keeps its expiry (``last_ended``)
                .where(ConsoleSession.id_hash == _sid_hash(sid), ConsoleSession.ended_at.is_(None))
                .values(expires_at=moved)
            )
        return True

    def end(self, sid: str, by: str) -> None:
        """Signing out: this session only."""
        with write_session(self.engine) as session:
            row = session.get(ConsoleSession, _sid_hash(sid), with_for_update=True)
            if row is not None and row.ended_at is None:
                self._ended(row, utcnow(), by)

    def _ended(self, row: ConsoleSession, now: dt.datetime, by: str) -> None:
        # Kept until its absolute expiry: the next sign-in must be newer (``last_ended``).
        row.ended_at, row.ended_by = now, by[:512]
        row.expires_at = _aware(row.created_at) + self.policy.absolute

    def last_ended(self, subject: str, issuer: str) -> dt.datetime | None:
        """When a session of this person was last signed out or revoked (kept until
        that session's absolute expiry)."""
        query = select(func.max(ConsoleSession.ended_at)).where(
            ConsoleSession.subject == subject, ConsoleSession.issuer == issuer
        )
        with Session(self.engine) as session:
            moment = session.scalar(query)
        return _aware(moment) if moment is not None else None

    def revoke(self, actor: _audit.Actor, subject: str, issuer: str) -> int:
        """End every live session of one person (audited); how many there were."""
        now = utcnow()
        with write_session(self.engine) as session:
            rows = session.scalars(
                select(ConsoleSession).where(
                    ConsoleSession.subject == subject, ConsoleSession.issuer == issuer,
                    ConsoleSession.ended_at.is_(None), ConsoleSession.expires_at > now,
                ).with_for_update()
            ).all()  # fmt: skip
            for row in rows:
                self._ended(row, now, actor.subject)
            detail = {"subject": subject, "issuer": issuer, "sessions": len(rows)}
            _audit.append(session, actor, "console.sessions_revoked", detail=detail)
        return len(rows)

    def active(self, limit: int = 500) -> list[dict[str, Any]]:
        """Valid sessions (not ended, not idle, not past their absolute expiry), newest
        first: who, from which issuer, since and until when at the latest."""
        query = (
            select(ConsoleSession)
            .where(ConsoleSession.ended_at.is_(None), ConsoleSession.expires_at > utcnow())
            .order_by(ConsoleSession.created_at.desc())
            .limit(limit)
        )
        with Session(self.engine) as session:
            return [
                {"subject": row.subject, "issuer": row.issuer, "name": row.name,
                 "created_at": _aware(row.created_at).isoformat(),
                 "expires_at": (_aware(row.created_at) + self.policy.absolute).isoformat()}
                for row in session.scalars(query)
            ]  # fmt: skip


def _sid_hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def sign_in(
    request: Request,
    claims: Mapping[str, Any],
    bindings: Sequence[Binding],
    store: SessionStore,
) -> None:
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
    name = display[:200] or str(claims.get("sub"))
    sid = store.open(str(claims.get("sub")), str(claims.get("iss") or ""), name)
    _start(request, sid, claims=kept, name=name)


def sign_in_local(request: Request, user: str, store: SessionStore) -> None:
    """Start a session for the local user who owns the embedded plane (``tofuflow ui``):
    an admin there, as the tokens the embedded plane mints itself are."""
    sid = store.open(f"local:{user}", "local", user)
    _start(request, sid, local=user, name=user)


def _start(request: Request, sid: str, **values: Any) -> None:
    request.session.clear()
    now = int(time.time())
    request.session.update(
        {**values, "sid": sid, "iat": now, "seen": now, "csrf": secrets.token_urlsafe(32)}
    )


def why_code(reason: str) -> str:
    """The sign-in link's ``why=`` for an AuthError's ``reason``: "idle", "ended",
    "expired", or "" when the person simply is not signed in."""
    return _WHY_CODES.get(reason, "")


def viewer(request: Request, policy: SessionPolicy, bindings: Sequence[Binding]) -> Viewer:
    """The person behind this request; AuthError when there is none or it expired
    (the page then redirects to the sign-in)."""
    session = request.session
    iat, seen, sid = session.get("iat"), session.get("seen"), session.get("sid")
    if not isinstance(iat, int) or not isinstance(seen, int) or not isinstance(sid, str):
        ended = session.get(ENDED_KEY)
        raise AuthError(ended if isinstance(ended, str) else SESSION_ENDED if ended else
                        "not signed in")  # fmt: skip
    now = int(time.time())
    # The cleared cookie keeps why: the open page's own requests often meet the end
    # first, and the person's next click must still say why they sign in again.
    if now - iat > policy.absolute.total_seconds():
        session.clear()
        session[REAUTH_KEY] = True
        session[ENDED_KEY] = _PAST_LIFETIME
        raise AuthError(_PAST_LIFETIME)
    if now - seen > policy.idle.total_seconds():
        session.clear()
        session[ENDED_KEY] = _IDLE
        raise AuthError(_IDLE)
    active = not _background(request)
    if active:
        session["seen"] = now
    principal = _principal(session, bindings)
    return Viewer(principal, str(session["name"]), session["csrf"], sid, active)


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


_MAX_FORM = 64 * 1024


async def read_form(request: Request) -> dict[str, str]:
    """An url-encoded form, first value of each field (no multipart: the console sends
    none)."""
    body = await request.body()
    if len(body) > _MAX_FORM:
        raise ForbiddenError("the form is too large")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[0] for key, values in fields.items()}
