"""How a task runs the binary: a worker thread the main thread's interruption stops first,
and a private working copy of the configuration."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

import pytest

from tofuflow.airflow._work import TaskWork


class Interrupted(BaseException):
    """Stands for Airflow's AirflowTaskTimeout: raised in the main thread by SIGALRM."""


@pytest.fixture
def alarm() -> Iterator[None]:
    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, raise_interrupt)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def test_call_returns_the_result_and_raises_the_error() -> None:
    work = TaskWork(logging.getLogger("t"))
    assert work.call(lambda a, b=0: a + b, 2, b=3) == 5
    with pytest.raises(KeyError, match="boom"):
        work.call(lambda: {}["boom"])


def test_an_interruption_stops_the_work_before_it_propagates(alarm: None) -> None:
    work = TaskWork(logging.getLogger("t"))
    stopped_at: list[float] = []

    def binary_like() -> None:
        # Like the driver: runs until cancelled, then takes a moment to stop gracefully.
        while not work.cancel.wait(0.05):
            pass
        time.sleep(0.5)
        stopped_at.append(time.monotonic())

    signal.setitimer(signal.ITIMER_REAL, 0.3)
    with pytest.raises(Interrupted):
        work.call(binary_like)
    raised_at = time.monotonic()
    assert stopped_at and stopped_at[0] <= raised_at  # stopped first, then propagated
    assert work.stop() is True  # on_kill afterwards finds nothing left running


def test_stop_from_another_thread_cancels_the_running_work() -> None:
    work = TaskWork(logging.getLogger("t"))
    threading.Timer(0.2, work.stop).start()
    assert work.call(lambda: work.cancel.wait(10)) is True


def test_output_lines_and_json_events_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    work = TaskWork(logging.getLogger("tofu-lines"))
    runner = work.runner()
    assert runner.cancel_event is work.cancel
    on_output = runner.on_output
    assert on_output is not None
    with caplog.at_level(logging.INFO, logger="tofu-lines"):
        on_output("stdout", '{"@level":"info","@message":"Terraform 1.11.4","type":"version"}')
        on_output("stdout", '{"@level":"info","@message":"x: Creating...","type":"apply_start"}')
        on_output("stderr", "plain line")
        on_output("stdout", '{"@level":"error","@message":"Error: boom","type":"diagnostic"}')
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "x: Creating..."), ("INFO", "plain line"), ("WARNING", "Error: boom"),
    ]  # fmt: skip
    assert [e.type for e in work.events] == ["version", "apply_start", "diagnostic"]
