"""What the server gives an in-server reaper (``tofuflow.envs.Reaper``), without importing it.

    due = lambda: any_due(engine)          # a cheap look in the table: anything to reap?
    token = ReaperToken(engine)            # token(): its own short-lived applier token
    is_leader = leases.leader(engine, "reaper", holder, ttl)

``ReapPolicy`` is the retry back-off and orphan rule the server applies to failed destroys.

The reaper talks to its own server over HTTP with that token, so its destroys go through
the same run lifecycle, policy and audit as anyone else's. ``tofuflow server`` puts the
pieces together (``tofuflow.cli``).
"""

from __future__ import annotations

import datetime as dt
import threading

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tofuflow.server._envs import ReapPolicy, is_due
from tofuflow.server.admin import create_token
from tofuflow.server.storage._db import Environment, utcnow

__all__ = ["ReapPolicy", "ReaperToken", "any_due"]


def any_due(engine: Engine) -> bool:
    """A cheap look in the table (no token, no HTTP): is any environment due?"""
    now = utcnow()
    query = select(Environment).where(Environment.status != "destroyed")
    with Session(engine) as session:
        return any(is_due(env, now) for env in session.scalars(query))


class ReaperToken:
    """``token()``: the reaper's applier token, minted when needed and renewed well before
    it expires (each one lives an hour and is audited as ``token.create``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._token = ""
        self._expires = utcnow()

    def __call__(self) -> str:
        with self._lock:
            if self._expires - utcnow() < dt.timedelta(minutes=20):
                created = create_token(
                    self.engine, role="applier", workspaces="*", ttl="1h",
                    description="environment reaper (tofuflow server)",
                )  # fmt: skip
                self._token, self._expires = created.token, utcnow() + dt.timedelta(hours=1)
            return self._token
