"""The reaper: destroys expired environments, retries with back-off, never forgets one.

    report = reap_once(client, holder="reaper@host")      # `tofuflow env reap`
    Reaper(url, token_factory, interval=30, is_leader=leader).start()   # inside the server

Each expired environment is claimed (a lease), destroyed through the normal run lifecycle
with the reaper's own applier identity, and closed; a failure is recorded on the control
plane, which schedules the retry and reports the environment orphaned after a few. A
reaper killed mid-destroy stops renewing its claim; the next pass takes over.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tofuflow.envs._lifecycle import destroy_environment
from tofuflow.errors import ConflictError, TofuflowError
from tofuflow.project import WorkspaceConfig
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
    lease_seconds: int = 60,
    sources: Mapping[str, WorkspaceConfig] | None = None,
) -> ReapReport:
    """One pass: destroy every environment that is due; report what happened.

    ``sources``: the workspaces of the caller's tofuflow.toml; an environment made from
    one of them is destroyed with its identity (``destroy_environment``'s ``base``)."""
    holder = holder or default_holder()
    report = ReapReport()
    for env in control_plane.environments(due=True):
        base = (sources or {}).get(env.get("source_workspace") or "")
        _reap(control_plane, env, report, holder, runner, lease_seconds, base)
    report.orphans = [e for e in control_plane.environments() if e["status"] == "orphaned"]
    _log_orphans(report)
    return report


def _reap(
    control_plane: ControlPlane, env: dict[str, Any], report: ReapReport, holder: str,
    runner: Runner | None, lease_seconds: int, base: WorkspaceConfig | None = None,
) -> None:  # fmt: skip
    """Destroy one due environment; the outcome goes into ``report``."""
    name = env["name"]
    _log.info("reaper: destroying environment %s (expired %s)", name, env.get("expires_at"))
    try:
        destroy_environment(
            name, control_plane, runner, holder=holder, lease_seconds=lease_seconds,
            context={"trigger": "reaper"}, base=base,
        )  # fmt: skip
    except ConflictError as exc:
        if "is being destroyed by" in str(exc) or "not due" in str(exc):
            report.skipped[name] = str(exc)  # another reaper took it first
            _log.info("reaper: skipped environment %s: %s", name, exc)
            return
        report.failed[name] = str(exc)
    except TofuflowError as exc:
        report.failed[name] = str(exc)
    else:
        report.destroyed.append(name)
        _log.info("reaper: destroyed environment %s", name)
        return
    _log.warning("reaper: could not destroy environment %s: %s", name, report.failed[name])


def _log_orphans(report: ReapReport) -> None:
    for orphan in report.orphans:
        _log.error(
            "reaper: environment %s is ORPHANED after %d failed destroys (last error: %s); "
            "next attempt %s", orphan["name"], orphan["attempts"], orphan["last_error"],
            orphan["next_attempt_at"],
        )  # fmt: skip


class Reaper:
    """Runs a reaping pass every ``interval`` seconds in a thread, while ``is_leader()``.

    Replicas sharing one control plane pass a leader check (``tofuflow server`` passes a
    database lease, ``tofuflow.server.leases.leader``) so that one of them reaps; without
    one every instance reaps, and claims keep them apart. ``due`` names the environments
    to destroy (the server looks in its own table); ``token_factory(name)`` gives a
    control-plane token for that one environment, so a destroy can touch nothing else.
    """

    def __init__(
        self,
        url: str,
        token_factory: Callable[[str], str],
        *,
        interval: float = 30.0,
        is_leader: Callable[[], bool] | None = None,
        due: Callable[[], Sequence[str]],
        holder: str | None = None,
        runner: Runner | None = None,
        lease_seconds: int = 60,
        identity: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.url = url
        # The cloud identity of its destroys (raw plan/apply tables, as in tofuflow.toml):
        # without one the binary gets what the host has.
        self.identity = dict(identity or {})
        self.token_factory = token_factory
        self.interval = interval
        self.is_leader: Callable[[], bool] = is_leader or (lambda: True)
        self.due = due
        self.holder = holder or default_holder()
        self.runner = runner or Runner(cancel_event=threading.Event())
        self.lease_seconds = lease_seconds
        self.last_report: ReapReport | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Reaper:
        self._thread = threading.Thread(target=self._loop, name="tofuflow-reaper", daemon=True)
        self._thread.start()
        _log.info("reaper %s: started, a pass every %.0fs", self.holder, self.interval)
        return self

    def wake(self) -> None:
        """Pass now rather than at the end of the interval (the console's Destroy)."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self.runner.cancel_event is not None:
            self.runner.cancel_event.set()
        if self._thread is not None:
            self._thread.join(timeout)
        _log.info("reaper %s: stopped", self.holder)

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.tick()
            except Exception:  # the loop must outlive any one pass
                _log.exception("reaper: pass failed; trying again in %.0fs", self.interval)

    def tick(self) -> ReapReport | None:
        """One pass, if this instance is the leader and something is due."""
        names = list(self.due())
        if not names:
            return None
        if not self.is_leader():
            _log.debug("reaper %s: not the leader; another replica reaps", self.holder)
            return None
        _log.info("reaper %s: pass started (leader)", self.holder)
        report = ReapReport()
        for name in names:
            with ControlPlane(self.url, self.token_factory(name)) as client:
                try:
                    env = client.environment(name)
                except TofuflowError as exc:
                    report.failed[name] = str(exc)
                    continue
                base = None
                if self.identity:
                    source = env.get("source_workspace") or name
                    base = WorkspaceConfig(name=source, directory=Path(), identity=self.identity)
                _reap(client, env, report, self.holder, self.runner, self.lease_seconds, base)
                with contextlib.suppress(TofuflowError):
                    env = client.environment(name)
                    if env["status"] == "orphaned":
                        report.orphans.append(env)
        _log_orphans(report)
        self.last_report = report
        _log.info(
            "reaper %s: pass done: %d destroyed, %d failed, %d skipped, %d orphaned",
            self.holder, len(report.destroyed), len(report.failed),
            len(report.skipped), len(report.orphans),
        )  # fmt: skip
        return report
