"""The stack scheduler with plain Python callables (order, parallelism, skips, reverse),
and the plugin cache's init lock between processes."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tofuflow.stacks._cache import LOCK_NAME, init_lock
from tofuflow.stacks._scheduler import Outcome, run_graph


class Recorder:
    """A task that records when each stack ran and how many ran at once."""

    def __init__(self, sleep: float = 0.02, results: dict[str, Outcome] | None = None) -> None:
        self.sleep = sleep
        self.results = results or {}
        self.lock = threading.Lock()
        self.times: dict[str, tuple[float, float]] = {}
        self.running = 0
        self.max_running = 0
        self.threads: set[str] = set()

    def __call__(self, name: str) -> Outcome:
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.threads.add(threading.current_thread().name)
        start = time.monotonic()
        time.sleep(self.sleep)
        end = time.monotonic()
        with self.lock:
            self.running -= 1
            self.times[name] = (start, end)
        return self.results.get(name, Outcome("succeeded", "done"))


def _layered(seed: int, layers: int = 5, width: int = 6) -> dict[str, frozenset[str]]:
    rng = random.Random(seed)  # noqa: S311 (a test graph, not a secret)
    graph: dict[str, frozenset[str]] = {}
    previous: list[str] = []
    for layer in range(layers):
        names = [f"l{layer}s{i}" for i in range(rng.randint(2, width))]
        for name in names:
            pool = list(graph)
            k = rng.randint(1, min(3, len(previous))) if previous else 0
            deps = set(rng.sample(previous, k)) if k else set()
            if pool and rng.random() < 0.3:
                deps.add(rng.choice(pool))
            graph[name] = frozenset(deps)
        previous = names
    return graph


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_stack_starts_after_its_dependencies_ended(seed: int) -> None:
    graph = _layered(seed)
    task = Recorder(sleep=0.01)
    report = run_graph(graph, task, parallelism=4)
    assert set(report.outcomes) == set(graph) and report.ok
    for name, deps in graph.items():
        for dep in deps:
            assert task.times[name][0] >= task.times[dep][1], f"{name} started before {dep} ended"


def test_no_more_than_parallelism_run_at_once_and_the_limit_is_reached() -> None:
    graph = {f"s{i}": frozenset() for i in range(12)}
    task = Recorder(sleep=0.05)
    report = run_graph(graph, task, parallelism=3)
    assert task.max_running == 3 and report.max_running == 3
    assert len(task.threads) == 3  # the pool has exactly `parallelism` workers
    one = Recorder(sleep=0.0)
    run_graph(graph, one, parallelism=1)
    assert one.max_running == 1


def test_a_chain_allows_no_parallelism_whatever_the_limit() -> None:
    graph = {"a": frozenset(), "b": frozenset({"a"}), "c": frozenset({"b"})}
    task = Recorder(sleep=0.01)
    run_graph(graph, task, parallelism=8)
    assert task.max_running == 1
    assert task.times["a"][1] <= task.times["b"][0] <= task.times["c"][0]


def test_a_failure_skips_exactly_its_transitive_dependants() -> None:
    # net ← db ← app ← web;  net ← cache;  logs alone;  app ← api (also depends on logs)
    graph = {
        "net": frozenset(), "db": frozenset({"net"}), "app": frozenset({"db"}),
        "web": frozenset({"app"}), "cache": frozenset({"net"}), "logs": frozenset(),
        "api": frozenset({"app", "logs"}),
    }  # fmt: skip
    task = Recorder(results={"db": Outcome("failed", "init failed: boom")})
    finished: list[str] = []
    report = run_graph(graph, task, parallelism=2, on_finish=lambda o: finished.append(o.name))
    assert sorted(report.with_status("skipped")) == ["api", "app", "web"]
    assert sorted(report.with_status("succeeded")) == ["cache", "logs", "net"]
    assert report.with_status("failed") == ["db"]
    assert set(task.times) == {"net", "db", "cache", "logs"}  # the skipped never ran
    web = report.outcomes["web"]
    assert web.blocked_by == ("db",) and web.detail == "db failed"  # the cause, not "app"
    assert web.duration is None and report.outcomes["db"].detail == "init failed: boom"
    assert sorted(finished) == sorted(graph) and not report.ok


def test_a_stack_awaiting_approval_skips_its_dependants_without_failing_them() -> None:
    graph = {"a": frozenset(), "b": frozenset({"a"}), "c": frozenset(), "d": frozenset({"b", "c"})}
    task = Recorder(results={"a": Outcome("awaiting_approval", "run r1 needs approval")})
    report = run_graph(graph, task, parallelism=4)
    assert report.counts() == {"awaiting_approval": 1, "skipped": 2, "succeeded": 1}
    assert report.outcomes["d"].detail == "a awaiting approval"
    assert report.outcomes["a"].label == "awaiting approval"


def test_two_failures_are_both_named_as_the_cause() -> None:
    graph = {"a": frozenset(), "b": frozenset(), "c": frozenset({"a", "b"})}
    task = Recorder(results={"a": Outcome("failed", "x"), "b": Outcome("failed", "y")})
    report = run_graph(graph, task, parallelism=2)
    assert report.outcomes["c"].blocked_by == ("a", "b")


def test_reverse_runs_dependants_first_and_skips_dependencies_of_a_failure() -> None:
    graph = {"net": frozenset(), "db": frozenset({"net"}), "app": frozenset({"db"}),
             "logs": frozenset()}  # fmt: skip
    task = Recorder(sleep=0.01)
    report = run_graph(graph, task, parallelism=4, reverse=True)
    assert report.ok
    assert task.times["app"][1] <= task.times["db"][0] <= task.times["db"][1]
    assert task.times["db"][1] <= task.times["net"][0]
    failing = Recorder(results={"app": Outcome("failed", "destroy failed")})
    report = run_graph(graph, failing, parallelism=4, reverse=True)
    assert sorted(report.with_status("skipped")) == ["db", "net"]
    assert report.with_status("succeeded") == ["logs"]


def test_a_task_that_raises_is_a_failure_and_the_others_go_on() -> None:
    def task(name: str) -> Outcome:
        if name == "bad":
            raise RuntimeError("the task broke")
        return Outcome("succeeded")

    graph = {"bad": frozenset(), "good": frozenset(), "after": frozenset({"bad"})}
    report = run_graph(graph, task, parallelism=2)
    assert report.outcomes["bad"].status == "failed"
    assert report.outcomes["bad"].detail == "RuntimeError: the task broke"
    assert report.outcomes["good"].status == "succeeded"
    assert report.outcomes["after"].status == "skipped"


def test_a_task_may_not_claim_a_status_only_the_scheduler_gives() -> None:
    report = run_graph({"a": frozenset()}, lambda n: Outcome("skipped"), parallelism=1)
    assert report.outcomes["a"].status == "failed"


def test_once_cancelled_nothing_more_starts() -> None:
    cancel = threading.Event()

    def task(name: str) -> Outcome:
        if name == "first":
            cancel.set()
        return Outcome("succeeded")

    graph = {"first": frozenset(), "second": frozenset({"first"}), "third": frozenset()}
    started: list[str] = []
    report = run_graph(graph, task, parallelism=1, cancel=cancel, on_start=started.append)
    assert started == ["first"]
    assert report.outcomes["second"].status == "cancelled"
    assert report.outcomes["third"].status == "cancelled"
    assert report.outcomes["third"].label == "not started (cancelled)"


def test_the_longest_chain_starts_first() -> None:
    graph = {"lone": frozenset(), "c1": frozenset(), "c2": frozenset({"c1"}),
             "c3": frozenset({"c2"})}  # fmt: skip
    started: list[str] = []
    run_graph(graph, lambda n: Outcome("succeeded"), parallelism=1, on_start=started.append)
    assert started[0] == "c1"


def test_callbacks_run_in_the_calling_thread() -> None:
    seen: set[str] = set()

    def note(_: object) -> None:
        seen.add(threading.current_thread().name)

    graph = {f"s{i}": frozenset() for i in range(6)}
    run_graph(graph, Recorder(sleep=0.01), parallelism=3, on_start=note, on_finish=note)
    assert seen == {threading.current_thread().name}


@pytest.mark.parametrize("bad", [0, -1])
def test_parallelism_must_be_positive(bad: int) -> None:
    with pytest.raises(ValueError, match="parallelism must be at least 1"):
        run_graph({}, Recorder(), parallelism=bad)


def test_an_empty_graph_is_an_empty_report() -> None:
    report = run_graph({}, Recorder(), parallelism=2)
    assert report.outcomes == {} and report.ok


def test_the_init_lock_excludes_other_processes_until_released(tmp_path: Path) -> None:
    probe = (
        "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
        "try:\n"
        "    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "except OSError:\n"
        "    sys.exit(3)\n"
    )
    lock = str(tmp_path / "cache" / LOCK_NAME)

    def other_process_gets_it() -> bool:
        done = subprocess.run([sys.executable, "-c", probe, lock], check=False, timeout=30)
        return done.returncode == 0

    with init_lock(tmp_path / "cache"):
        assert not other_process_gets_it()
    assert other_process_gets_it()


def test_a_first_ctrl_c_stops_starting_stacks_and_still_reports_each_one() -> None:
    """Ctrl-C lands in the calling thread (here: in on_finish, after `a` finished): the
    scheduler sets `cancel`, lets running tasks end, and returns what happened to every
    stack instead of unwinding with KeyboardInterrupt."""
    cancel = threading.Event()
    interrupts = iter([KeyboardInterrupt()])

    def on_finish(outcome: Outcome) -> None:
        error = next(interrupts, None)
        if error is not None:
            raise error

    graph = {"a": [], "b": ["a"], "c": ["b"]}
    report = run_graph(graph, Recorder(), parallelism=2, cancel=cancel, on_finish=on_finish)
    assert cancel.is_set() and report.interrupted
    assert {n: o.status for n, o in report.outcomes.items()} == {
        "a": "succeeded", "b": "cancelled", "c": "cancelled"
    }  # fmt: skip
    assert report.outcomes["b"].label == "not started (cancelled)"


def test_a_second_ctrl_c_while_tasks_stop_ends_at_once() -> None:
    def on_finish(outcome: Outcome) -> None:
        raise KeyboardInterrupt  # after each stack: the second one is while `b` stops

    with pytest.raises(KeyboardInterrupt):
        run_graph(
            {"a": [], "b": []}, Recorder(sleep=0.2), parallelism=2, on_finish=on_finish,
            cancel=threading.Event(),
        )  # fmt: skip

    def on_start(name: str) -> None:
        raise KeyboardInterrupt

    # Without a cancel event to tell the tasks, the first interrupt goes through.
    with pytest.raises(KeyboardInterrupt):
        run_graph({"a": []}, Recorder(), parallelism=1, on_start=on_start)


def test_a_task_stopped_while_running_is_labelled_so() -> None:
    stopped = Outcome("cancelled", "interrupted: 1 of 2 changes applied", started=1.0)
    assert stopped.label == "stopped (cancelled)"
    report = run_graph({"a": []}, Recorder(results={"a": stopped}), parallelism=1)
    assert report.outcomes["a"].status == "cancelled"
