"""Ctrl-C after `tofuflow plan` submitted its run: the run stands, and the person is told
which it is and what to do, not click's bare `Aborted.` (the id may not be printed yet)."""

from __future__ import annotations

import click
import pytest

from tofuflow.cli._common import saying_the_run_stands


@pytest.mark.parametrize(
    ("status", "next_step"),
    [
        ("approved", "`tofuflow apply 0123456789abcdef` applies it, `tofuflow runs cancel "
                     "0123456789abcdef` drops it"),
        ("needs_approval", "`tofuflow approve 0123456789abcdef` (an approver), then `tofuflow "
                           "apply 0123456789abcdef`; `tofuflow runs cancel 0123456789abcdef` "
                           "drops it"),
        ("no_changes", "nothing to apply"),
        ("denied", "nothing to apply"),
    ],
)  # fmt: skip
def test_an_interrupt_after_the_plan_was_decided_names_the_run(status: str, next_step: str) -> None:
    run = {"id": "0123456789abcdef", "workspace": "app/dev", "status": status}
    with pytest.raises(click.ClickException) as caught, saying_the_run_stands(run):
        raise KeyboardInterrupt
    assert caught.value.message == (
        f"interrupted: the plan of app/dev had finished: run 0123456789abcdef is {status}; "
        f"{next_step}"
    )


def test_without_an_interrupt_nothing_is_said() -> None:
    with saying_the_run_stands({"id": "0123456789abcdef", "workspace": "w", "status": "x"}):
        pass
