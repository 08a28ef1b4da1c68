"""`tofuflow demo`: the main job on the embedded default control plane."""

from __future__ import annotations

import shutil
import threading
from importlib import resources
from pathlib import Path

import click

from tofuflow.cli._common import (
    SHOWN_EVENTS,
    plan_stopped,
    print_decision,
    print_verify,
)
from tofuflow.errors import TofuCancelledError, TofuflowError
from tofuflow.tofu import Event, render_plan_text

WORKSPACE = "demo/quickstart"


def run_demo(
    workdir: Path | None, *, environment: str, destroy: bool, cancel: threading.Event
) -> int:
    """Plan → policy → approve → apply the quickstart through the embedded control plane."""
    from tofuflow.ci import detect_run_context
    from tofuflow.embedded import data_dir
    from tofuflow.project import WorkspaceConfig
    from tofuflow.runs import Runner, apply_run, connect, interrupted_summary, plan_workspace

    target = workdir or _default_dir()
    runner = Runner(on_event=_show_event, cancel_event=cancel)
    try:
        _refresh_config(target)
        workspace = WorkspaceConfig(
            name=WORKSPACE,
            directory=target,
            variables={"environment": environment, "out_dir": str(target / "out")},
        )
        with connect("read", description="tofuflow demo") as reader:
            click.echo(f"control plane: embedded at {reader.url} ({data_dir()})")
            click.echo(f"directory:     {target}")
            with connect("plan", description="tofuflow demo") as planner:
                context = detect_run_context(cwd=target).to_json()
                try:
                    outcome = plan_workspace(workspace, planner, context, runner, destroy=destroy)
                except (TofuCancelledError, KeyboardInterrupt):
                    again = f"run `{_again(workdir, environment, destroy)}` again"
                    click.secho(f"error: {plan_stopped(WORKSPACE, again)}", fg="red", err=True)
                    return 1
            click.echo("")
            click.echo(render_plan_text(outcome.plan))
            print_decision(outcome.run)
            run_id, status = outcome.run["id"], outcome.run["status"]
            if status == "denied":
                return 3
            if status == "needs_approval":
                # The embedded plane is single-user: the person at this machine approves.
                with connect("approve", description="tofuflow demo") as approver:
                    approver.approve(run_id, "approved by the local user (tofuflow demo)")
                click.echo(f"run {run_id}: approved by the local user")
            if outcome.plan.has_changes:
                with connect("apply", description="tofuflow demo") as applier:
                    try:
                        done = apply_run(run_id, workspace, applier, runner)
                    except (TofuCancelledError, KeyboardInterrupt) as err:
                        # Stopped gracefully (Ctrl-C, SIGTERM): how far it got, where the
                        # state is and what next, as `tofuflow apply` says it.
                        if str(err):
                            click.secho(f"error: {err}", fg="red", err=True)
                        line = interrupted_summary(
                            applier.run(run_id),
                            f"run `{_again(workdir, environment, destroy)}` again to finish",
                        )
                        click.secho(f"error: {line}", fg="red", err=True)
                        return 1
                result = done.get("result") or {}
                click.echo(
                    f"run {run_id}: {done['status']} — state serial {result.get('serial')}, "
                    f"version {done.get('state_version')} of workspace {WORKSPACE}"
                )
            else:
                click.echo("Nothing to apply: the quickstart is up to date.")
            print_verify(reader.audit_verify())
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
    if event.type in SHOWN_EVENTS and event.message:
        click.echo(f"  {event.message}")


def _again(workdir: Path | None, environment: str, destroy: bool) -> str:
    """The demo command as it was run (no tofuflow.toml holds its workspace, so the way
    to go on is the demo itself)."""
    import shlex

    words = ["tofuflow", "demo"]
    if workdir is not None:
        words += ["--dir", str(workdir)]
    if environment != "dev":
        words += ["--environment", environment]
    if destroy:
        words.append("--destroy")
    return shlex.join(words)
