"""The audit chain's status for the story pages, without walking a million events per view.

    status = ChainStatus(engine).check()     # VerifyResult: ok, checked, first_bad_id, reason

The whole chain is walked at most every ``full_every`` seconds (and at the first view);
in between, only the events appended since the last walk are checked, each against the
one before it, and the head against the newest. A tampered old event is therefore found
within ``full_every`` seconds; a change to the newest checked event or after it, at once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tofuflow.server._audit import GENESIS, VerifyResult, event_hash
from tofuflow.server.storage._db import AuditEvent, AuditHead

__all__ = ["ChainStatus"]

_BATCH = 5000


@dataclass
class _Walked:
    checked: int = 0
    last_id: int = 0
    last_hash: str = GENESIS
    bad: VerifyResult | None = None


class ChainStatus:
    def __init__(self, engine: Engine, full_every: float = 300.0) -> None:
        self.engine = engine
        self.full_every = full_every
        self._lock = threading.Lock()
        self._walked: _Walked | None = None
        self._full_at = 0.0

    def check(self) -> VerifyResult:
        with self._lock, Session(self.engine) as session:
            now = time.monotonic()
            if self._walked is None or now - self._full_at > self.full_every:
                self._walked, self._full_at = _Walked(), now
            walked = self._walked
            _recheck_tip(session, walked)
            if walked.bad is None:
                _walk(session, walked)
            if walked.bad is not None:
                self._walked = None  # walk again at the next view: it may have been repaired
                return walked.bad
            return VerifyResult(True, walked.checked)


def _recheck_tip(session: Session, walked: _Walked) -> None:
    """The newest event already checked must still be what it was."""
    if walked.last_id == 0:
        return
    event = session.get(AuditEvent, walked.last_id)
    if event is None or event.hash != walked.last_hash or event_hash(event) != event.hash:
        reason = "was removed" if event is None else "content does not match its hash"
        walked.bad = VerifyResult(False, walked.checked, walked.last_id, reason)


def _walk(session: Session, walked: _Walked) -> None:
    """Check the events after ``walked.last_id``, then the head; appends that land while
    this runs are walked too (the head then points past what was read)."""
    for _ in range(3):
        while True:
            rows = session.scalars(
                select(AuditEvent)
                .where(AuditEvent.id > walked.last_id)
                .order_by(AuditEvent.id)
                .limit(_BATCH)
            ).all()
            for event in rows:
                if event.prev_hash != walked.last_hash:
                    walked.bad = VerifyResult(
                        False, walked.checked, event.id, "does not follow the event before it"
                    )
                    return
                if event_hash(event) != event.hash:
                    walked.bad = VerifyResult(
                        False, walked.checked, event.id, "content does not match its hash"
                    )
                    return
                walked.last_id, walked.last_hash = event.id, event.hash
                walked.checked += 1
            if len(rows) < _BATCH:
                break
        session.expire_all()
        head = session.get(AuditHead, 1)
        if head is None or head.last_hash == walked.last_hash:
            return
    walked.bad = VerifyResult(False, walked.checked, None, "the newest events were removed")
