"""How a task runs the binary: in a worker thread it can stop, in a private copy.

Airflow stops a task by raising ``AirflowTaskTimeout`` in its main thread (execution
timeout) or by calling ``on_kill`` (SIGTERM). If the binary ran in the main thread, that
exception would unwind past the driver while the binary kept running, holding the state
lock. So the work runs in a worker thread; the main thread waits, and on any interruption
sets the runner's cancel event (SIGINT → grace period → SIGKILL) and waits for the
binary to stop — releasing the lock — before letting the interruption go on.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from tofuflow.runs import Runner
from tofuflow.tofu import Event, Redactor
from tofuflow.tofu._events import parse_event

__all__ = ["TaskWork", "working_copy"]

T = TypeVar("T")
# Longer than the driver's grace period (30 s): SIGINT, wait, SIGKILL, then report.
_STOP_WAIT_SECONDS = 60.0
# Never copied into a working copy: local state, plans, the binary's own directories.
_SKIP = re.compile(r"^(\.terraform|\.git|.*\.tfplan|terraform\.tfstate.*|errored\.tfstate)$")
_OVERRIDE = "tofuflow_backend_override.tf"


class TaskWork:
    """One task's runs of the binary: a cancel event, log forwarding, collected events."""

    def __init__(self, log: Any, binary: str | None = None) -> None:
        self.log = log
        self.cancel = threading.Event()
        self.events: list[Event] = []
        # Values the driver does not know are secret (sensitive stack inputs), masked in
        # every line this task logs.
        self.redactor = Redactor()
        self._binary = binary
        self._done: threading.Event | None = None

    def runner(self) -> Runner:
        return Runner(on_output=self._on_output, cancel_event=self.cancel, binary=self._binary)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in a worker thread; an interruption of the waiting main
        thread (timeout, signal) first stops the binary gracefully, then propagates."""
        result: list[T] = []
        error: list[BaseException] = []
        done = threading.Event()

        def target() -> None:
            try:
                result.append(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the main thread as is
                error.append(exc)
            finally:
                done.set()

        # An Event, not Thread.join: an exception interrupting join() makes Python 3.11
        # mark the thread as finished although it still runs.
        self._done = done
        threading.Thread(target=target, name="tofuflow-task", daemon=True).start()
        try:
            while not done.wait(0.2):
                pass
        except BaseException:
            self.stop()
            raise
        if error:
            raise error[0]
        return result[0]

    def stop(self) -> bool:
        """Cancel and wait for the binary to stop; True when nothing is left running."""
        self.cancel.set()
        done = self._done
        if done is None or done.is_set():
            return True
        return done.wait(_STOP_WAIT_SECONDS)

    def _on_output(self, stream: str, line: str) -> None:
        # Lines arrive redacted (the driver masks every registered secret first).
        line = self.redactor.redact(line)
        event = parse_event(line)
        if event is None:
            if line.strip():
                self.log.info("%s", line)
            return
        self.events.append(event)
        if event.message and event.type != "version":
            log = self.log.warning if event.level in ("warn", "error") else self.log.info
            log("%s", event.message)


@contextmanager
def working_copy(source: Path, label: str, root: str | None = None) -> Iterator[Path]:
    """A private copy of the configuration directory for one task, removed afterwards.

    The DAG folder may be read-only or shared by concurrent runs, and the copy will hold
    the plan file (which can carry secrets). If the binary left ``errored.tfstate``
    behind (it could not save state), the copy is kept and its path logged by the caller.
    """
    if not source.is_dir():
        raise FileNotFoundError(f"the workspace directory {source} does not exist")
    base = Path(root).expanduser() if root else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    holder = Path(tempfile.mkdtemp(prefix=f"tofuflow-{_safe(label)}-", dir=base))
    target = holder / source.name
    shutil.copytree(source, target, symlinks=True, ignore=_ignored)
    try:
        yield target
    finally:
        if not (target / "errored.tfstate").exists():
            shutil.rmtree(holder, ignore_errors=True)


def _ignored(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if _SKIP.match(n) or n == _OVERRIDE}


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", label)[:60]
