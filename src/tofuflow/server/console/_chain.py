"""The status of a workspace's audit chain for its runs' story pages, without walking
the whole log per view.

    status = ChainStatus(engine).check("app/prod")  # VerifyResult: ok, checked, first_bad_id

A story is one run's events, and they are all in its workspace's chain (one per workspace,
``tofuflow.server._chains``), so that chain is what the page vouches for: read from the
workspace's index, its size and not the log's sets the cost. Each chain is walked from its
start at most every ``full_every`` seconds per process (and at its first view); in between,
only the events appended since are checked, each against the one before it, with the head
row against its newest event, and the newest event checked before is re-read. So an
appended, removed or changed newest event shows at once, and a changed older event within
``full_every`` seconds. The whole log (every chain, and the events from before the chains
split) is walked by ``tofuflow server audit verify`` and before every signed checkpoint.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tofuflow.server._audit import ChainWalk, VerifyResult, event_hash, read_origin
from tofuflow.server._chains import chain_of
from tofuflow.server.storage._db import AuditEvent

__all__ = ["ChainStatus"]

_KEPT = 1024  # chains whose walk a process remembers


class ChainStatus:
    def __init__(self, engine: Engine, full_every: float = 300.0) -> None:
        self.engine = engine
        self.full_every = full_every
        self._lock = threading.Lock()
        self._walks: OrderedDict[str, tuple[ChainWalk, float]] = OrderedDict()

    def check(self, workspace: str | None) -> VerifyResult:
        name = chain_of(workspace)
        with self._lock, Session(self.engine) as session:
            now = time.monotonic()
            walk, full_at = self._walks.pop(name, (None, 0.0))
            if walk is None or now - full_at > self.full_every:
                walk, full_at = ChainWalk(read_origin(session)), now
            result = _recheck_newest(session, walk, name) or walk.walk_chain(session, name)
            if result.ok:  # else walk again at the next view: it may have been repaired
                self._walks[name] = (walk, full_at)
                while len(self._walks) > _KEPT:
                    self._walks.popitem(last=False)
            return result


def _recheck_newest(session: Session, walk: ChainWalk, name: str) -> VerifyResult | None:
    """The chain's newest event already checked must still be what it was."""
    newest = walk.tips.heads().get(name)
    if newest is None:
        return None
    event = session.get(AuditEvent, newest[0])
    if event is None or event.hash != newest[1] or event_hash(event) != event.hash:
        reason = "was removed" if event is None else "content does not match its hash"
        return VerifyResult(False, walk.checked, newest[0], reason)
    return None
