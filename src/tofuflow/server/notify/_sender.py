"""The sender: fans outbox events out to destinations and delivers them, at least once.

    sender = Sender(engine, config, holder="notify@host:pid")
    sender.start()      # a thread beside the server; sender.stop() on shutdown
    sender.run_once()   # one pass (tests, benchmarks)

Replicas on one database elect one sender through the ``notifier`` lease (as the reaper
does). Each destination gets its deliveries in event order: a failed attempt holds the
ones behind it until it succeeds or is dead-lettered after ``max_attempts`` failures, with
exponential back-off between attempts. A delivery is marked delivered only after the
receiver said so, so a sender killed mid-send sends it again after a restart (the
``Idempotency-Key`` header lets receivers drop the repeat).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tofuflow.server import leases
from tofuflow.server.notify._config import Destination, NotifyConfig, console_link
from tofuflow.server.notify._deliver import deliver
from tofuflow.server.notify._events import enqueue, environment_view, wakeup
from tofuflow.server.storage._db import (
    Environment,
    NotificationDelivery,
    NotificationEvent,
    Workspace,
    utcnow,
    write_session,
)

__all__ = ["Sender"]

_log = logging.getLogger("tofuflow.server.notify")
_BATCH = 200
_LINGER = 0.05
_PRUNE_EVERY = 3600.0


class Sender:
    def __init__(
        self, engine: Engine, config: NotifyConfig, holder: str, metrics: Any = None
    ) -> None:
        self.engine, self.config, self.holder = engine, config, holder
        self.destinations = {d.name: d for d in config.destinations}
        self.metrics = metrics
        self.leader = leases.leader(engine, "notifier", holder, dt.timedelta(seconds=config.lease))
        self._leading_until = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = httpx.Client(timeout=config.timeout, follow_redirects=False)
        workers = max(min(len(self.destinations), 8), 1)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="tofuflow-notify-send")
        self._scanned = 0.0
        self._pruned = 0.0
        self._done = _Outcome()  # sent, not yet written down

    # -- the thread -----------------------------------------------------------------------

    def start(self) -> Sender:
        self._thread = threading.Thread(target=self._loop, name="tofuflow-notify", daemon=True)
        self._thread.start()
        return self

    def stop(self, drain: float = 0.0) -> None:
        """Stop sending. ``drain``: first deliver, for up to that many seconds, what is
        due now (the embedded plane ends with its command: no later pass would send it);
        a destination that fails keeps its back-off and gets it next time."""
        self._stop.set()
        wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config.timeout + 5)
        if drain > 0:
            self._drain(time.monotonic() + drain)
        try:
            self.book()  # what was sent is written down before the lease goes
        except Exception:  # the database is away: those are sent again (at least once)
            _log.warning("notifications: could not record the last deliveries")
        try:
            self.leader.release()
        except Exception:  # shutting down anyway: the lease lapses by itself
            _log.warning("notifications: could not release the sender's lease")
        self._pool.shutdown(wait=True)
        self._client.close()

    def _drain(self, deadline: float) -> None:
        try:
            if not self._is_leader():  # another process sends them
                return
            self.scan()
            while time.monotonic() < deadline:
                fanned, sent = self.book(), self.deliver_due()
                if not fanned and not sent:
                    return
        except Exception:  # the database is away: the next sender sends them
            _log.exception("notifications: could not send what was due before stopping")

    def _loop(self) -> None:
        while not self._stop.is_set():
            wakeup.clear()
            try:
                busy = self.run_once() if self._is_leader() else False
            except Exception:  # the database is away: try again on the next tick
                _log.exception("notifications: a sender pass failed")
                busy = False
            if not busy and wakeup.wait(self.config.poll_interval):
                # Woken by a commit: let the ones right behind it join the same pass
                # (fewer write transactions beside the state writes, a little latency).
                self._stop.wait(_LINGER)

    def _is_leader(self) -> bool:
        """Renew the lease a third of its term ahead, not on every tick (a write each)."""
        now = time.monotonic()
        if now < self._leading_until:
            return True
        if self.leader():
            self._leading_until = now + self.config.lease / 3
            return True
        self._leading_until = 0.0
        return False

    # -- one pass -------------------------------------------------------------------------

    def run_once(self) -> bool:
        """Scan, book, deliver what is due; True when there may be more to do now."""
        now = time.monotonic()
        if now - self._scanned >= self.config.poll_interval:
            self._scanned = now
            self.scan()
        if now - self._pruned >= _PRUNE_EVERY:
            self._pruned = now
            self.prune()
        fanned = self.book()
        sent = self.deliver_due()
        return fanned >= _BATCH or sent > 0

    def book(self) -> int:
        """One write transaction (none when there is nothing to write): the outcomes of
        the last pass's sends, and one delivery row per (new event, destination that
        wants it). Returns how many events were fanned out."""
        done, self._done = self._done, _Outcome()
        waiting = select(NotificationEvent.id).where(NotificationEvent.fanned_out.is_(False))
        with Session(self.engine) as session:  # a read first: no write lock for nothing
            new = session.scalars(waiting.limit(1)).first() is not None
        if not new and not done.delivered and not done.failed:
            return 0
        now = utcnow()
        with write_session(self.engine) as session:
            self._record(session, done, now)
            return self._fan_out(session, now) if new else 0

    def _fan_out(self, session: Session, now: dt.datetime) -> int:
        events = session.scalars(
            select(NotificationEvent).where(NotificationEvent.fanned_out.is_(False))
            .order_by(NotificationEvent.id).limit(_BATCH).with_for_update()
        ).all()  # fmt: skip
        for event in events:
            for destination in self.destinations.values():
                if destination.wants(event.event, event.workspace):
                    session.add(NotificationDelivery(
                        event_id=event.id, destination=destination.name, status="pending",
                        attempts=0, created_at=now, next_attempt_at=now,
                    ))  # fmt: skip
            event.fanned_out = True
        return len(events)

    def deliver_due(self) -> int:
        """Every destination's due head, destinations side by side. Their outcomes are
        written by the next ``book`` (the next pass comes at once while any wait): a
        sender killed before that sends them again (at least once, same idempotency key)."""
        outcomes = list(self._pool.map(self._send, self.destinations.values()))
        for outcome in outcomes:
            self._done.delivered += outcome.delivered
            self._done.failed += outcome.failed
        return sum(len(outcome.delivered) + len(outcome.failed) for outcome in outcomes)

    def _send(self, destination: Destination) -> _Outcome:
        """In event order; stops at the first failure (it holds the ones behind it) unless
        that failure dead-letters it."""
        outcome = _Outcome()
        for delivery_id, attempts, event_uid, payload in self._pending(destination.name):
            key = f"{event_uid}.{destination.name}"
            body = {**payload, "id": event_uid,
                    "link": console_link(self.config.console_url, payload)}  # fmt: skip
            error = deliver(destination, body, key, self._client)
            if error is None:
                outcome.delivered.append((delivery_id, payload))
                self._count("delivered", destination.name)
                continue
            dead = attempts + 1 >= self.config.max_attempts
            outcome.failed.append((delivery_id, attempts + 1, error, dead))
            self._count("failures", destination.name)
            _log.warning(
                "notifications: %s to %s failed: %s%s", payload.get("event"),
                destination.name, error, " (dead-lettered)" if dead else "",
            )  # fmt: skip
            if not dead:
                break
        return outcome

    def _pending(self, destination: str) -> Iterator[tuple[int, int, str, dict[str, Any]]]:
        """The head of the destination's queue, oldest first, while it is due."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(NotificationDelivery.id, NotificationDelivery.attempts,
                       NotificationDelivery.next_attempt_at,
                       NotificationEvent.uid, NotificationEvent.payload)
                .join(NotificationEvent, NotificationEvent.id == NotificationDelivery.event_id)
                .where(NotificationDelivery.destination == destination,
                       NotificationDelivery.status == "pending")
                .order_by(NotificationDelivery.event_id).limit(_BATCH)
            ).all()  # fmt: skip
        now = utcnow()
        for delivery_id, attempts, next_at, uid, payload in rows:
            if next_at is not None and _utc(next_at) > now:
                return  # the head waits for its back-off: so does everything behind it
            yield delivery_id, attempts, uid, dict(payload)

    def _record(self, session: Session, done: _Outcome, now: dt.datetime) -> None:
        if done.delivered:
            session.execute(
                update(NotificationDelivery)
                .where(NotificationDelivery.id.in_([i for i, _ in done.delivered]),
                       NotificationDelivery.status == "pending")
                .values(status="delivered", delivered_at=now, last_error=None,
                        attempts=NotificationDelivery.attempts + 1)  # the one that succeeded
            )  # fmt: skip
        for delivery_id, attempts, error, dead in done.failed:
            backoff = dt.timedelta(seconds=self.config.backoff(attempts))
            session.execute(
                update(NotificationDelivery)
                .where(NotificationDelivery.id == delivery_id,
                       NotificationDelivery.status == "pending")
                .values(attempts=attempts, last_error=error[:1000],
                        status="dead" if dead else "pending",
                        next_attempt_at=None if dead else now + backoff)
            )  # fmt: skip
        if self.metrics is not None:
            for _, payload in done.delivered:
                occurred = dt.datetime.fromisoformat(str(payload["occurred_at"]))
                self.metrics.latency.observe((now - occurred).total_seconds())

    def prune(self) -> int:
        """Forget events older than ``retention`` whose every delivery was delivered
        (dead letters and pending ones stay); returns how many."""
        cutoff = utcnow() - dt.timedelta(seconds=self.config.retention)
        unfinished = select(NotificationDelivery.event_id).where(
            NotificationDelivery.status != "delivered"
        )
        with write_session(self.engine) as session:
            ids = session.scalars(
                select(NotificationEvent.id)
                .where(NotificationEvent.created_at < cutoff,
                       NotificationEvent.fanned_out.is_(True),
                       NotificationEvent.id.not_in(unfinished))
                .limit(5000)
            ).all()  # fmt: skip
            if ids:
                session.execute(
                    delete(NotificationDelivery).where(NotificationDelivery.event_id.in_(ids))
                )
                session.execute(delete(NotificationEvent).where(NotificationEvent.id.in_(ids)))
            return len(ids)

    def _count(self, what: str, destination: str) -> None:
        if self.metrics is not None:
            getattr(self.metrics, what).labels(destination).inc()

    # -- events found by looking (no transaction causes them) -----------------------------

    def scan(self) -> None:
        """Environments about to expire (each lead time once per expiry) and locks held
        longer than ``lock_held_after`` (once per lock)."""
        now = utcnow()
        with Session(self.engine) as session:
            found = self._expiring(session, now) + self._held_locks(session, now)
            keys = [key for *_, key in found]
            known = set(
                session.scalars(
                    select(NotificationEvent.dedup_key).where(NotificationEvent.dedup_key.in_(keys))
                )
            )
        for event, workspace, payload, key in found:
            if key not in known:
                _record_once(self.engine, event, workspace, payload, key)

    def _expiring(self, session: Session, now: dt.datetime) -> list[_Found]:
        found: list[_Found] = []
        for env in session.scalars(select(Environment).where(Environment.status == "active")):
            expires = _utc(env.expires_at)
            left = (expires - now).total_seconds()
            lead = _lead(self.config.expiry_warnings, left)
            if lead is not None:
                view = {"environment": environment_view(env, int(left))}
                key = f"expiring:{env.name}:{expires.isoformat()}:{int(lead)}"
                found.append(("environment.expiring", env.name, view, key))
        return found

    def _held_locks(self, session: Session, now: dt.datetime) -> list[_Found]:
        found: list[_Found] = []
        held = now - dt.timedelta(seconds=self.config.lock_held_after)
        locked = select(Workspace).where(
            Workspace.lock_id.is_not(None), Workspace.locked_at.is_not(None)
        )
        for ws in session.scalars(locked):
            since = _utc(ws.locked_at) if ws.locked_at is not None else now
            if since <= held:
                lock = {
                    "id": ws.lock_id,
                    "held_by": ws.locked_by,
                    "since": since.isoformat(),
                    "held_seconds": int((now - since).total_seconds()),
                }
                found.append(("lock.held", ws.name, {"lock": lock}, f"lock:{ws.name}:{ws.lock_id}"))
        return found


@dataclass
class _Outcome:
    """One destination's pass: (id, payload) delivered; (id, attempts, error, dead) failed."""

    delivered: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    failed: list[tuple[int, int, str, bool]] = field(default_factory=list)


# (event, workspace, payload, dedup key) of an event found by a scan
_Found = tuple[str, str | None, dict[str, Any], str]


def _lead(warnings: tuple[float, ...], left: float) -> float | None:
    """The shortest lead time already reached (2 h and 30 min: at 20 min left, 30 min)."""
    if left <= 0:
        return None
    reached = [w for w in warnings if left <= w]
    return min(reached) if reached else None


def _record_once(
    engine: Engine, event: str, workspace: str | None, payload: dict[str, Any], key: str
) -> None:
    try:
        with write_session(engine) as session:
            enqueue(session, event, workspace, {"actor": "tofuflow:notify", **payload},
                    dedup_key=key)  # fmt: skip
    except IntegrityError:
        pass  # another replica's sender recorded it first


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def dead_letter_counts(engine: Engine) -> dict[str, dict[str, int]]:
    """{destination: {status: count}} for /metrics (the database's numbers, any replica)."""
    with Session(engine) as session:
        rows = session.execute(
            select(NotificationDelivery.destination, NotificationDelivery.status, func.count())
            .where(NotificationDelivery.status.in_(("pending", "dead")))
            .group_by(NotificationDelivery.destination, NotificationDelivery.status)
        ).all()  # fmt: skip
    counts: dict[str, dict[str, int]] = {}
    for destination, status, count in rows:
        counts.setdefault(destination, {})[status] = int(count)
    return counts
