"""How a task runs the binary: in a worker thread it can stop.

Airflow stops a task by raising ``AirflowTaskTimeout`` in its main thread (execution
timeout) or by calling ``on_kill`` (SIGTERM). If the binary ran in the main thread, that
exception would unwind past the driver while the binary kept running, holding the state
lock. So the work runs in a worker thread; the main thread waits, and on any interruption
sets the runner's cancel event (SIGINT → grace period → SIGKILL) and waits for the
binary to stop — releasing the lock — before letting the interruption go on.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from tofuflow.runs import Runner
from tofuflow.tofu import Event, Redactor, parse_event

__all__ = ["TaskWork"]

T = TypeVar("T")
# Inside Airflow's own grace: its supervisor SIGKILLs a task 5 s after SIGTERM. The binary
# got SIGINT at once; if it needs longer to stop, it finishes on its own (its output goes
# to files, not to pipes that die with this process), and if it cannot report, the apply
# session's lease lapses and the control plane fails the run and frees the lock.
_STOP_WAIT_SECONDS = 3.0


class TaskWork:
    """One task's runs of the binary: a cancel event, log forwarding, collected events."""

    def __init__(self, log: Any, binary: str | None = None, work_dir: str | None = None) -> None:
        self.log = log
        self.work_dir = work_dir  # where the private working copies go (default: temp)
        self.cancel = threading.Event()
        self.events: list[Event] = []
        # Values the driver does not know are secret (sensitive stack inputs), masked in
        # every line this task logs.
        self.redactor = Redactor()
        self._binary = binary
        self._done: threading.Event | None = None

    def runner(self) -> Runner:
        return Runner(
            on_output=self._on_output, cancel_event=self.cancel, binary=self._binary,
            work_dir=self.work_dir,
        )  # fmt: skip

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
        # In a copy of this task's context: Airflow's structured log carries the task's
        # identity (dag_id, run_id, ...) in context variables, so the binary's lines logged
        # from the worker thread keep it in the scheduler's log stream.
        context = contextvars.copy_context()
        threading.Thread(
            target=context.run, args=(target,), name="tofuflow-task", daemon=True
        ).start()
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
