"""Named leases in the database: one leader among replicas that share it (the reaper).

is_leader = leader(engine, "reaper", holder="reaper@host:1234", ttl=timedelta(seconds=90))
if is_leader(): ...        # takes or renews the lease; False while another holds it
is_leader.release()        # on shutdown, so another replica takes over at once
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from tofuflow.server.storage._db import Lease, utcnow, write_session

__all__ = ["Leader", "acquire", "leader", "release"]


def acquire(engine: Engine, name: str, holder: str, ttl: dt.timedelta) -> bool:
    """Take or renew ``name`` for ``ttl``; False while another holder's lease runs."""
    now = utcnow()
    try:
        with write_session(engine) as session:
            lease = session.get(Lease, name, with_for_update=True)
            if lease is None:
                session.add(Lease(name=name, holder=holder, expires_at=now + ttl))
                return True
            if lease.holder != holder and lease.expires_at > now:
                return False
            lease.holder, lease.expires_at = holder, now + ttl
            return True
    except IntegrityError:  # two replicas inserted the first row at once: the other won
        return False


def release(engine: Engine, name: str, holder: str) -> None:
    with write_session(engine) as session:
        lease = session.get(Lease, name, with_for_update=True)
        if lease is not None and lease.holder == holder:
            session.delete(lease)


class Leader:
    """A ``Callable[[], bool]``: am I (``holder``) the leader for ``name`` right now?"""

    def __init__(self, engine: Engine, name: str, holder: str, ttl: dt.timedelta) -> None:
        self.engine, self.name, self.holder, self.ttl = engine, name, holder, ttl

    def __call__(self) -> bool:
        return acquire(self.engine, self.name, self.holder, self.ttl)

    def release(self) -> None:
        release(self.engine, self.name, self.holder)


def leader(engine: Engine, name: str, holder: str, ttl: dt.timedelta) -> Leader:
    """The leader check for ``holder``; each call renews the lease for ``ttl``."""
    return Leader(engine, name, holder, ttl)
