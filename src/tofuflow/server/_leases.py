"""Named leases in the database: one leader among replicas that share it (the reaper)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from tofuflow.server.storage._db import Lease, utcnow, write_session

__all__ = ["acquire", "release"]


def acquire(engine: Engine, name: str, holder: str, ttl: dt.timedelta) -> bool:
    """Take or renew ``name`` for ``ttl``; False while another holder's lease runs."""
    now = utcnow()
    try:
        with write_session(engine) as session:
            lease = session.get(Lease, name, with_for_update=True)
            if lease is None:
                session.add(Lease(name=name, holder=holder, expires_at=now + ttl))
                return True
            expires = lease.expires_at
            expires = expires if expires.tzinfo else expires.replace(tzinfo=dt.UTC)
            if lease.holder != holder and expires > now:
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
