"""The audit chains' status for the story pages, without walking a million events per view.

    status = ChainStatus(engine).check()     # VerifyResult: ok, checked, first_bad_id, reason

Every chain is walked from its start at most every ``full_every`` seconds (and at the first
view); in between, only the events appended since the last walk are checked, each against
the one before it in its chain, and every chain's head row against its newest event. A
tampered old event is therefore found within ``full_every`` seconds; a change to the newest
checked event, or a removed newest event of any chain, at once.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tofuflow.server._audit import ChainWalk, VerifyResult, event_hash, read_origin
from tofuflow.server.storage._db import AuditEvent

__all__ = ["ChainStatus"]


class ChainStatus:
    def __init__(self, engine: Engine, full_every: float = 300.0) -> None:
        self.engine = engine
        self.full_every = full_every
        self._lock = threading.Lock()
        self._walk: ChainWalk | None = None
        self._full_at = 0.0

    def check(self) -> VerifyResult:
        with self._lock, Session(self.engine) as session:
            now = time.monotonic()
            if self._walk is None or now - self._full_at > self.full_every:
                self._walk, self._full_at = ChainWalk(read_origin(session)), now
            walk = self._walk
            result = _recheck_newest(session, walk) or walk.walk(session)
            if not result.ok:
                self._walk = None  # walk again at the next view: it may have been repaired
            return result


def _recheck_newest(session: Session, walk: ChainWalk) -> VerifyResult | None:
    """The newest event already checked must still be what it was."""
    heads = walk.tips.heads()
    if not heads:
        return None
    newest_id, newest_hash = max(heads.values())
    event = session.get(AuditEvent, newest_id)
    if event is None or event.hash != newest_hash or event_hash(event) != event.hash:
        reason = "was removed" if event is None else "content does not match its hash"
        return VerifyResult(False, walk.checked, newest_id, reason)
    return None
