"""The reaper inside `tofuflow server`: the elected replica destroys expired environments.

It talks to its own server over HTTP with its own short-lived applier token, so its
destroys go through the same run lifecycle, policy and audit as anyone else's.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tofuflow.server._envs import is_due
from tofuflow.server.auth import parse_ttl
from tofuflow.server.storage._db import Environment, utcnow

__all__ = ["start_reaper"]


def start_reaper(engine: Engine, config: Any, url: str) -> Any:
    """Start the reaper thread when ``[environments] reaper`` is on; None otherwise."""
    if not config.reaper:
        return None
    from tofuflow.envs import Reaper

    tokens = _Tokens(engine)
    reaper = Reaper(
        url, tokens.get, interval=parse_ttl(config.reap_interval).total_seconds(), engine=engine
    )
    reaper.due = lambda: any_due(engine)
    return reaper.start()


def any_due(engine: Engine) -> bool:
    """A cheap look in the table (no token, no HTTP): is any environment due?"""
    now = utcnow()
    query = select(Environment).where(Environment.status != "destroyed")
    with Session(engine) as session:
        return any(is_due(env, now) for env in session.scalars(query))


class _Tokens:
    """The reaper's applier token, minted when needed and renewed well before it expires."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._token = ""
        self._expires = utcnow()

    def get(self) -> str:
        from tofuflow.server._admin import create_token

        with self._lock:
            if self._expires - utcnow() < dt.timedelta(minutes=20):
                created = create_token(
                    self.engine, role="applier", workspaces="*", ttl="1h",
                    description="environment reaper (tofuflow server)",
                )  # fmt: skip
                self._token, self._expires = created.token, utcnow() + dt.timedelta(hours=1)
            return self._token
