"""Run a stack graph: dependencies first, at most ``parallelism`` at once, failures contained.

    report = run_graph(graph, task, parallelism=4)          # task(name) -> Outcome
    report = run_graph(graph, task, parallelism=4, reverse=True)   # dependants first

A stack starts once every stack it waits for has **succeeded**. When one fails or waits
for an approval, exactly the stacks that (transitively) wait for it are skipped and
everything else still runs. The scheduler knows nothing about tofu: ``task`` is any
callable, which is how the unit tests drive it.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from graphlib import TopologicalSorter
from typing import Literal

from tofuflow.stacks._graph import Graph, dependants

__all__ = ["Outcome", "Report", "Status", "run_graph"]

Status = Literal["succeeded", "failed", "awaiting_approval", "skipped", "cancelled"]
# What a task may return ("cancelled": stopped while it ran); the scheduler decides the
# rest ("skipped", and "cancelled" for a stack it never started).
_TASK_STATUSES = ("succeeded", "failed", "awaiting_approval", "cancelled")
_LABELS: Mapping[Status, str] = {
    "succeeded": "succeeded",
    "failed": "failed",
    "awaiting_approval": "awaiting approval",
    "skipped": "skipped",
    "cancelled": "not started (cancelled)",
}


@dataclass(frozen=True)
class Outcome:
    """What happened to one stack.

    A task returns ``Outcome(status, detail, run_id, notes, changed)``; the scheduler
    fills in ``name`` and the times (``time.monotonic()``), or builds a ``skipped``
    outcome (``blocked_by``: the failed or waiting stacks that caused it) or a
    ``cancelled`` one (not started because the run was cancelled; a task returns
    ``cancelled`` when it was stopped while running).
    """

    status: Status
    detail: str = ""
    run_id: str | None = None
    notes: tuple[str, ...] = ()
    changed: bool = False  # the stack's plan has changes (applied or not)
    name: str = ""
    started: float | None = None
    finished: float | None = None
    blocked_by: tuple[str, ...] = ()

    @property
    def duration(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started

    @property
    def label(self) -> str:
        if self.status == "cancelled" and self.started is not None:
            return "stopped (cancelled)"  # it was running when the run was cancelled
        return _LABELS[self.status]


@dataclass
class Report:
    """Every stack's outcome, in the order they finished (or were skipped)."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)
    started: float = 0.0
    finished: float = 0.0
    max_running: int = 0  # the most stacks that ran at the same time
    interrupted: bool = False  # Ctrl-C stopped the run (the stacks it reached say how far)

    def with_status(self, *statuses: Status) -> list[str]:
        return [name for name, o in self.outcomes.items() if o.status in statuses]

    @property
    def ok(self) -> bool:
        return all(o.status == "succeeded" for o in self.outcomes.values())

    @property
    def wall_time(self) -> float:
        return self.finished - self.started

    def counts(self) -> dict[Status, int]:
        found: dict[Status, int] = {}
        for outcome in self.outcomes.values():
            found[outcome.status] = found.get(outcome.status, 0) + 1
        return found


def run_graph(
    graph: Graph,
    task: Callable[[str], Outcome],
    *,
    parallelism: int,
    reverse: bool = False,
    cancel: threading.Event | None = None,
    on_start: Callable[[str], None] | None = None,
    on_finish: Callable[[Outcome], None] | None = None,
) -> Report:
    """Run ``task`` for every stack of ``graph`` (stack → the stacks it depends on).

    ``reverse=True`` runs dependants first (a destroy). At most ``parallelism`` tasks run
    at once, on worker threads; when several stacks are ready, the one with the longest
    chain of stacks waiting behind it starts first. A task that raises counts as failed.
    Once ``cancel`` is set no further stack starts (the rest are ``cancelled``); running
    tasks are expected to watch the same event. ``on_start`` and ``on_finish`` are
    called from the calling thread, one at a time.
    """
    if parallelism < 1:
        raise ValueError(f"parallelism must be at least 1, got {parallelism}")
    waits_for: dict[str, frozenset[str]] = dict(dependants(graph) if reverse else graph)
    for name in list(waits_for):
        waits_for[name] = frozenset(waits_for[name])
    priority = _chain_lengths(waits_for)
    sorter = TopologicalSorter(waits_for)
    sorter.prepare()  # graphlib.CycleError; stack_graph() reports cycles more clearly first

    report = Report(started=time.monotonic())
    ready: list[tuple[int, str]] = []
    running: dict[Future[Outcome], str] = {}

    def settle(outcome: Outcome) -> None:
        report.outcomes[outcome.name] = outcome
        sorter.done(outcome.name)
        if on_finish is not None:
            on_finish(outcome)

    def collect_ready() -> None:
        # Stacks behind a failure settle at once, which may make more stacks ready.
        while names := sorter.get_ready():
            for name in sorted(names):
                blocked = _blocked_by(waits_for[name], report.outcomes)
                if cancel is not None and cancel.is_set():
                    settle(Outcome("cancelled", "the run was cancelled", name=name))
                elif blocked:
                    because = ", ".join(f"{b} {report.outcomes[b].label}" for b in blocked)
                    settle(Outcome("skipped", because, name=name, blocked_by=blocked))
                else:
                    heapq.heappush(ready, (-priority[name], name))

    def drive(pool: ThreadPoolExecutor) -> None:
        collect_ready()
        while ready or running:
            while ready and len(running) < parallelism:
                _, name = heapq.heappop(ready)
                if cancel is not None and cancel.is_set():
                    settle(Outcome("cancelled", "the run was cancelled", name=name))
                    continue
                if on_start is not None:
                    on_start(name)
                running[pool.submit(_timed, task, name)] = name
            report.max_running = max(report.max_running, len(running))
            if not running:
                collect_ready()
                continue
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in sorted(finished, key=lambda f: running[f]):
                if running[future] not in report.outcomes:  # else settled before an interrupt
                    settle(future.result())
                running.pop(future)
            collect_ready()

    with ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix="stack") as pool:
        try:
            try:
                drive(pool)
            except KeyboardInterrupt:
                # Ctrl-C in the calling thread: start nothing more and let the running
                # tasks stop (they watch ``cancel``), then report what each stack did. A
                # second Ctrl-C while they stop goes through.
                if cancel is None or cancel.is_set():
                    raise
                cancel.set()
                report.interrupted = True
                drive(pool)
        except BaseException:
            if cancel is not None:
                cancel.set()
            for future in running:
                future.cancel()
            raise
    for name in waits_for:  # an interrupt can leave a stack unsettled in the sorter
        if name not in report.outcomes:
            report.outcomes[name] = Outcome("cancelled", "the run was cancelled", name=name)
    report.finished = time.monotonic()
    return report


def _timed(task: Callable[[str], Outcome], name: str) -> Outcome:
    started = time.monotonic()
    try:
        outcome = task(name)
        if outcome.status not in _TASK_STATUSES:
            raise ValueError(f"a task must return one of {_TASK_STATUSES}, not {outcome.status}")
    except Exception as exc:  # a task's bug must not take the other stacks down
        outcome = Outcome("failed", f"{type(exc).__name__}: {exc}")
    return replace(outcome, name=name, started=started, finished=time.monotonic())


def _blocked_by(waits_for: frozenset[str], outcomes: Mapping[str, Outcome]) -> tuple[str, ...]:
    """The failed or waiting stacks (not the skipped ones in between) behind a skip."""
    roots: set[str] = set()
    for name in waits_for:
        outcome = outcomes[name]
        if outcome.status == "skipped":
            roots.update(outcome.blocked_by)
        elif outcome.status != "succeeded":
            roots.add(name)
    return tuple(sorted(roots))


def _chain_lengths(waits_for: Mapping[str, frozenset[str]]) -> dict[str, int]:
    """For each stack, the length of the longest chain of stacks that wait for it."""
    behind = dependants(waits_for)
    length: dict[str, int] = {}
    # Those nobody waits for first; a stack's value follows from those waiting for it.
    order = list(TopologicalSorter(behind).static_order())
    for name in order:
        length[name] = 1 + max((length[b] for b in behind.get(name, ())), default=0)
    return length
