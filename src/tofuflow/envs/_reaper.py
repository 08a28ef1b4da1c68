"""The reaper: destroys expired environments, retries with back-off, never forgets one.

    report = reap_once(client, holder="reaper@host")      # `tofuflow env reap`
    Reaper(url, token_factory, interval=30, engine=engine).start()   # inside the server

Each expired environment is claimed (a lease), destroyed through the normal run lifecycle
with the reaper's own applier identity, and closed; a failure is recorded on the control
plane, which schedules the retry and reports the environment orphaned after a few. A
reaper killed mid-destroy stops renewing its claim; the next pass takes over.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tofuflow.envs._lifecycle import destroy_environment
from tofuflow.errors import ConflictError, TofuflowError
from tofuflow.runs import ControlPlane, Runner

__all__ = ["ReapReport", "Reaper", "default_holder", "reap_once"]

_log = logging.getLogger("tofuflow.reaper")


def default_holder() -> str:
    """Unique per reaper: host, process and a random tag (replicas may share a process)."""
    return f"reaper@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class ReapReport:
    destroyed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    orphans: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.orphans

    def to_json(self) -> dict[str, Any]:
        return {"destroyed": self.destroyed, "failed": self.failed, "skipped": self.skipped,
                "orphans": self.orphans}  # fmt: skip


def reap_once(
    control_plane: ControlPlane,
    *,
    holder: str | None = None,
    runner: Runner | None = None,
    lease_seconds: int = 300,
) -> ReapReport:
    """One pass: destroy every environment that is due; report what happened."""
    holder = holder or default_holder()
    report = ReapReport()
    for env in control_plane.environments(due=True):
        name = env["name"]
        try:
            destroy_environment(
                name, control_plane, runner, holder=holder, lease_seconds=lease_seconds,
                context={"trigger": "reaper"},
            )  # fmt: skip
        except ConflictError as exc:
            if "is being destroyed by" in str(exc) or "not due" in str(exc):
                report.skipped[name] = str(exc)  # another reaper took it first
                continue
            report.failed[name] = str(exc)
        except TofuflowError as exc:
            report.failed[name] = str(exc)
        else:
            report.destroyed.append(name)
            _log.info("reaper: destroyed environment %s", name)
            continue
        _log.warning("reaper: could not destroy environment %s: %s", name, report.failed[name])
    report.orphans = [e for e in control_plane.environments() if e["status"] == "orphaned"]
    for orphan in report.orphans:
        _log.error(
            "reaper: environment %s is ORPHANED after %d failed destroys (last error: %s); "
            "next attempt %s", orphan["name"], orphan["attempts"], orphan["last_error"],
            orphan["next_attempt_at"],
        )  # fmt: skip
    return report


class Reaper:
    """Runs ``reap_once`` every ``interval`` seconds in a thread, as the elected leader.

    With ``engine`` (inside the server), replicas sharing one database elect one leader
    through a lease; without it every instance reaps, and claims keep them apart.
    """

    def __init__(
        self,
        url: str,
        token_factory: Callable[[], str],
        *,
        interval: float = 30.0,
        engine: Any = None,
        holder: str | None = None,
        runner: Runner | None = None,
    ) -> None:
        self.url = url
        self.token_factory = token_factory
        self.interval = interval
        self.engine = engine
        self.holder = holder or default_holder()
        self.runner = runner or Runner(cancel_event=threading.Event())
        self.last_report: ReapReport | None = None
        # A cheap check before each pass (the server looks in its table directly).
        self.due: Callable[[], bool] = lambda: True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Reaper:
        self._thread = threading.Thread(target=self._loop, name="tofuflow-reaper", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self.runner.cancel_event is not None:
            self.runner.cancel_event.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.engine is not None:
            from tofuflow.server._leases import release

            with contextlib.suppress(Exception):
                release(self.engine, "reaper", self.holder)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # the loop must outlive any one pass
                _log.exception("reaper: pass failed; trying again in %.0fs", self.interval)

    def tick(self) -> ReapReport | None:
        """One pass, if this instance is the leader and something is due."""
        if not self.due():
            return None
        if self.engine is not None:
            from tofuflow.server._leases import acquire

            lease = dt.timedelta(seconds=max(self.interval * 3, 30))
            if not acquire(self.engine, "reaper", self.holder, lease):
                return None
        with ControlPlane(self.url, self.token_factory()) as client:
            self.last_report = reap_once(client, holder=self.holder, runner=self.runner)
        return self.last_report
