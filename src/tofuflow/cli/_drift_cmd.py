"""`tofuflow drift`: refresh-only and configuration checks, recorded on the control plane."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tofuflow.cli._common import (
    control_plane,
    distinct_identities,
    fail,
    identity_table,
    load_project_file,
    project_url,
    wired,
)
from tofuflow.errors import ConfigError, TofuflowError

if TYPE_CHECKING:
    from tofuflow.project import WorkspaceConfig

__all__ = ["drift"]

_FORMATS = ("text", "markdown", "json")  # tofuflow.drift.FORMATS, without importing it here


@click.command("drift")
@click.argument("workspaces", nargs=-1, metavar="[WORKSPACE]...")
@click.option(
    "--format", "fmt", type=click.Choice(_FORMATS), default="text", show_default=True,
    help="How to write the report.",
)  # fmt: skip
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path),
    help="Write the report (in --format) to FILE; the text report still goes to stdout.",
)  # fmt: skip
@click.option(
    "--project", "project_path", type=click.Path(dir_okay=False, path_type=Path),
    help="The tofuflow.toml to use (default: searched upward from the current directory).",
)  # fmt: skip
def drift(
    workspaces: tuple[str, ...], fmt: str, output: Path | None, project_path: Path | None
) -> None:
    """Check WORKSPACEs for drift (default: every workspace of tofuflow.toml).

    \b
    Per workspace, read-only and without taking the state lock:
      plan -refresh-only   objects changed or deleted outside tofuflow
      plan -refresh=false  the configuration in this checkout differs from the state
    Each result is recorded on the control plane (GET /v1/drift) with the run and commit
    that last applied the workspace. A locked workspace is not checked: the holder is
    named and the lock left as it was. Needs the planner role (TOFUFLOW_PLAN_TOKEN or
    TOFUFLOW_TOKEN with a remote control plane).

    \b
    Exit codes: 0 no drift, 2 drift in at least one workspace,
                1 an error in at least one workspace (the others are still checked
                and reported), or a usage error.
    """
    from tofuflow.cli import CANCEL, CANCELLABLE
    from tofuflow.drift import check_drift, render_drift, render_drift_text
    from tofuflow.runs import Runner

    CANCELLABLE.set()
    if output is not None and not output.resolve().parent.is_dir():
        raise click.UsageError(  # before minutes of checks, not after them
            f"--output {output}: the directory {output.resolve().parent} does not exist; "
            "create it, or give another path"
        )
    try:
        project = load_project_file(project_path)
        names = list(dict.fromkeys(workspaces)) or sorted(project.workspaces)
        if not names:
            raise ConfigError(
                f"{project.path}: no workspaces are defined; add a [workspaces.NAME] table"
            )
        selected = [project.workspace(name) for name in names]
        identity, where = _plan_identity(selected)
        with control_plane("plan", project_url(project), identity, where=where) as client:
            selected = [wired(ws, project, client) for ws in selected]
            report = check_drift(selected, client, Runner(cancel_event=CANCEL))
    except TofuflowError as err:
        raise fail(err) from err
    text = render_drift_text(report)
    if output is not None:
        click.echo(clean(text), nl=False)  # the results first, whatever happens to the file
        try:
            output.write_text(render_drift(report, fmt), encoding="utf-8")
        except OSError as err:
            raise click.ClickException(f"cannot write the report to {output}: {err}") from err
        click.echo(f"report written to {output}", err=True)
    else:
        click.echo(clean(text if fmt == "text" else render_drift(report, fmt)), nl=False)
    for ws in report.workspaces:
        if ws.status == "error" or ws.not_recorded:
            click.echo(clean(f"Error: {ws.workspace}: {ws.error or ws.not_recorded}"), err=True)
    sys.exit(report.exit_code)


def _plan_identity(
    selected: Iterable[WorkspaceConfig],
) -> tuple[Mapping[str, Any] | None, str | None]:
    """The plan stage's identity table, when every selected workspace that has one with a
    token source has the same one (one token is presented for the whole command), and
    where it is (the first workspace that has it); (None, None) otherwise."""
    distinct = distinct_identities(selected, "plan")
    if len(distinct) != 1:
        return None, None
    ((name, table),) = distinct.items()
    return table, identity_table(name, "plan")


def clean(text: str) -> str:
    """On an Azure Pipelines agent, names from the report must not carry a logging command."""
    from tofuflow.ci import neutralise, on_agent

    if not on_agent():
        return text
    return "".join(neutralise(line) for line in text.splitlines(keepends=True))
