"""`tofuflow state push`: a state file into a workspace's state on the control plane."""

from __future__ import annotations

import difflib
import getpass
import socket
from pathlib import Path
from typing import Any

import click

from tofuflow.cli._common import (
    PROJECT_OPTION,
    configured_url,
    control_plane,
    fail,
    load_project_file,
)
from tofuflow.errors import ConfigError, DocumentError, TofuflowError

__all__ = ["state"]


@click.group("state")
def state() -> None:
    """The workspaces' state on the control plane."""


@state.command("push")
@click.argument("workspace")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@PROJECT_OPTION
def state_push(workspace: str, file: Path, project_path: Path | None) -> None:
    """Make FILE, a state file, WORKSPACE's next state version (admin role; audited).

    \b
    For a configuration whose state was a local file before tofuflow (its
    terraform.tfstate), and for the errored.tfstate an apply could not save. As
    `terraform state push` does, it takes the workspace's lock (a held lock refuses
    it), refuses a file of another lineage than the workspace's or with an older serial,
    and writes it with the serial after the workspace's.

    \b
    Example:
      tofuflow state push infra/network infra/network/terraform.tfstate
    """
    from tofuflow.runs import next_state_version

    who = f"{getpass.getuser()}@cli:{socket.gethostname()}"
    try:
        url = configured_url(project_path)
        with control_plane("admin", url, workspace=workspace) as client:
            current = client.state(workspace)
            if current is None:
                _check_known(workspace, project_path, client)
            body, serial = next_state_version(file.read_bytes(), current)
            if body is not None:
                client.push_state(workspace, body, who)
    except DocumentError as err:
        raise click.ClickException(f"{file}: {err}") from err
    except TofuflowError as err:
        raise fail(err) from err
    if body is None:
        click.echo(f"{workspace}: already holds that state (serial {serial}); nothing pushed")
        return
    click.echo(f"{workspace}: {file} pushed as state serial {serial}")


def _check_known(workspace: str, project_path: Path | None, client: Any) -> None:
    """A workspace without state gets its first version only when tofuflow.toml (or the
    control plane) knows it: a mistyped name would put the state where nothing reads it."""
    try:
        planned = set(load_project_file(project_path).workspaces)
    except ConfigError:
        if project_path is not None:
            raise
        planned = set()  # no tofuflow.toml here
    known = planned | {w["name"] for w in client.workspaces()}
    if workspace not in known:
        close = difflib.get_close_matches(workspace, sorted(known), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise click.ClickException(
            f"no workspace {workspace!r} in tofuflow.toml or on this control plane ({hint}"
            f"{len(known)} known); check the name, or add the workspace to tofuflow.toml "
            "first"
        )
