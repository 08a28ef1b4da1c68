"""`tofuflow demo`: the main job on the embedded default (for now: a local backend)."""

from __future__ import annotations

import shutil
import threading
from importlib import resources
from pathlib import Path

import click

from tofuflow.errors import TofuflowError
from tofuflow.tofu import Event, Tofu, render_plan_text

# The progress lines worth showing a person; the rest of the -json stream is detail.
_SHOWN_EVENTS = {"apply_start", "apply_complete", "apply_errored", "diagnostic"}


def run_demo(
    workdir: Path | None, *, environment: str, destroy: bool, cancel: threading.Event
) -> int:
    """Init, plan and apply (or destroy) the quickstart; returns the exit code."""
    target = workdir or _default_dir()
    try:
        _refresh_config(target)
        tf = Tofu(
            target,
            variables={"environment": environment},
            on_event=_show_event,
            cancel_event=cancel,
        )
        click.echo(f"binary:    {tf.binary}")
        click.echo(f"directory: {target}")
        tf.init()
        planned = tf.plan(out="demo.tfplan", destroy=destroy)
        click.echo("")
        click.echo(render_plan_text(tf.show_plan("demo.tfplan")))
        if planned.has_changes:
            tf.apply("demo.tfplan")
        else:
            click.echo("Nothing to apply: the quickstart is up to date.")
        _show_result(tf)
    except TofuflowError as err:
        click.secho(f"error: {err}", fg="red", err=True)
        return 1
    return 0


def _default_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("tofuflow")) / "demo" / "quickstart"


def _refresh_config(target: Path) -> None:
    """Copy the bundled .tf files in; state and .terraform stay from earlier runs."""
    target.mkdir(parents=True, exist_ok=True)
    bundled = resources.files("tofuflow") / "_quickstart"
    for item in bundled.iterdir():
        if item.name.endswith(".tf"):
            with resources.as_file(item) as source:
                shutil.copyfile(source, target / item.name)


def _show_event(event: Event) -> None:
    if event.type in _SHOWN_EVENTS and event.message:
        click.echo(f"  {event.message}")


def _show_result(tf: Tofu) -> None:
    state = tf.state_pull()
    outputs = tf.output()
    click.echo("")
    click.echo(f"state:     serial {state.serial if state else '-'} in {tf.working_dir}")
    for name, value in outputs.items():
        click.echo(f"output {name} = {value}")
