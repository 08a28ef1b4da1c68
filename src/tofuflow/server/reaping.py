"""What the server gives an in-server reaper (``tofuflow.envs.Reaper``), without importing it.

    due = lambda: due_environments(engine)   # a cheap look in the table: what to reap?
    token = ReaperToken(engine)              # token(name): an applier token for that one
    is_leader = leases.leader(engine, "reaper", holder, ttl)

``ReapPolicy`` is the retry back-off and orphan rule the server applies to failed destroys.

The reaper talks to its own server over HTTP, each destroy with a token scoped to the one
environment it destroys (never ``*``), so its destroys go through the same run lifecycle,
policy and audit as anyone else's. ``tofuflow server`` puts the pieces together
(``tofuflow.cli``).
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

__all__ = ["ReapPolicy", "ReaperToken", "due_environments"]


def due_environments(engine: Engine) -> list[str]:
    """A cheap look in the table (no token, no HTTP): the environments due for a destroy."""
    now = utcnow()
    query = select(Environment).where(Environment.status != "destroyed")
    with Session(engine) as session:
        return sorted(env.name for env in session.scalars(query) if is_due(env, now))


class ReaperToken:
    """``token(name)``: the reaper's applier token for environment ``name`` only, minted
    when needed and renewed well before it expires (each one lives an hour and is audited
    as ``token.create``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, dt.datetime]] = {}

    def __call__(self, name: str) -> str:
        with self._lock:
            now = utcnow()
            # Forget the ones past their use: an environment is destroyed once.
            self._tokens = {k: v for k, v in self._tokens.items() if v[1] > now}
            token, expires = self._tokens.get(name, ("", now))
            if expires - now < dt.timedelta(minutes=20):
                created = create_token(
                    self.engine, role="applier", workspaces=name, ttl="1h",
                    description=f"environment reaper (tofuflow server): {name}",
                )  # fmt: skip
                token, expires = created.token, now + dt.timedelta(hours=1)
                self._tokens[name] = (token, expires)
            return token
