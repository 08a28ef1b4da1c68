"""`tofuflow ui`: the web console of the embedded control plane, for the local user."""

from __future__ import annotations

import contextlib
import threading
import webbrowser
from pathlib import Path

import click

__all__ = ["ui"]


@click.command("ui")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="TOFUFLOW_SERVER_CONFIG",
    help="Server TOML of the embedded plane (default: $TOFUFLOW_SERVER_CONFIG, else your "
    "data directory's).",
)
@click.option("--no-browser", is_flag=True, help="Print the link only; do not open a browser.")
def ui(config_path: Path | None, no_browser: bool) -> None:
    """Open the web console of the embedded control plane on this machine.

    \b
    It starts the embedded plane (the one `tofuflow plan` and `apply` use without a
    server) on 127.0.0.1 and prints a sign-in link that works once, within two minutes,
    for you (an admin there): no password, as Jupyter does. Ctrl-C stops it.
    """
    from tofuflow.cli._common import fail
    from tofuflow.embedded import running
    from tofuflow.errors import TofuflowError
    from tofuflow.server.console import issue_sign_in_link

    with contextlib.ExitStack() as stack:
        try:
            plane = stack.enter_context(running(str(config_path) if config_path else None))
        except TofuflowError as err:  # a bad configuration, a database it cannot upgrade
            raise fail(err) from err
        link = plane.url + issue_sign_in_link(plane.app)
        click.echo(f"tofuflow console: {link}", nl=True)
        click.echo("The link signs you in once. Ctrl-C stops the console.", err=True)
        if not no_browser:
            webbrowser.open(link)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            click.echo("Stopped.", err=True)
