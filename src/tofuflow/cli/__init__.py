"""The `tofuflow` command.

Imports stay lazy: `tofuflow --help` must start fast, so each command imports what it
needs when it runs.
"""

from __future__ import annotations

# First: a Ctrl-C while the rest loads is one line, not a traceback (until started()).
from tofuflow.cli._starting import started

# isort: split
import atexit
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import NoReturn

import click

from tofuflow._version import __version__
from tofuflow.cli._drift_cmd import drift
from tofuflow.cli._envs_cmd import env
from tofuflow.cli._init_cmd import init
from tofuflow.cli._install_cmd import install
from tofuflow.cli._pipeline_cmd import pipeline
from tofuflow.cli._policy_cmd import policy
from tofuflow.cli._run_all_cmd import run_all
from tofuflow.cli._runs_cmd import apply, approve, audit, plan, rollback, runs, unlock
from tofuflow.cli._server_cmd import server
from tofuflow.cli._state_cmd import state
from tofuflow.cli._ui_cmd import ui

__all__ = ["main"]

# Set on SIGTERM (what CI agents and Airflow send to stop a task): every running
# command then stops gracefully instead of being killed with the lock held.
CANCEL = threading.Event()
# Set by commands that watch CANCEL; any other command simply exits on SIGTERM.
CANCELLABLE = threading.Event()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tofuflow")
def cli() -> None:
    """Run OpenTofu from pipelines and workflow schedulers, safely.

    \b
    Start here:
      tofuflow demo        the main job: plan → policy → approve → apply the quickstart
      tofuflow version     which binary tofuflow will drive
      tofuflow install     fetch a verified OpenTofu release
      tofuflow plan WS     plan a workspace of tofuflow.toml, submit it for the policy check
      tofuflow apply RUN   apply an approved run (here or on another machine)
      tofuflow server      run the control plane (remote, encrypted, audited state)
      tofuflow env         ephemeral environments with a TTL, always torn down
      tofuflow drift       what changed outside tofuflow, and what the checkout would change
      tofuflow rollback    re-plan the configuration an earlier run applied
      tofuflow run-all     plan/apply/destroy many workspaces in dependency order
      tofuflow init        write a commented tofuflow.toml for the configurations found here
      tofuflow unlock WS   release a state lock whose holder is gone (admin)
      tofuflow state push  a state file (local state, errored.tfstate) into a workspace (admin)
      tofuflow ui          the web console of the embedded plane, signed in by a link

    tofuflow drives `tofu` when it is on PATH, else a tofu it installed, else
    `terraform`; set TOFUFLOW_BINARY to choose explicitly.
    """


@cli.command("version")
def version_cmd() -> None:
    """Show tofuflow's version and the binary it will drive."""
    from tofuflow.errors import BinaryError
    from tofuflow.tofu import find_binary

    click.echo(f"tofuflow {__version__}")
    try:
        click.echo(f"binary   {find_binary()}")
    except BinaryError as err:
        raise click.ClickException(str(err)) from err


@cli.command("demo")
@click.option(
    "--dir",
    "workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to run it (default: <user data dir>/tofuflow/demo/quickstart).",
)
@click.option("--environment", default="dev", show_default=True, help="Value of var.environment.")
@click.option("--destroy", is_flag=True, help="Tear the quickstart down instead.")
def demo_cmd(workdir: Path | None, environment: str, destroy: bool) -> None:
    """The main job: plan → policy check → approval → apply of the bundled quickstart.

    \b
    It runs through the embedded control plane (in-process on 127.0.0.1, SQLite and a
    generated 0600 key under your data directory): the plan is made read-only, checked
    by the built-in policies (creating files is routine: auto-approved), applied with a
    short-lived apply session, and recorded in the hash-chained audit log, which is
    verified at the end. The first run creates three files; later runs find no changes.
    --destroy removes them (deletions need a person: the demo approves as you).
    """
    from tofuflow.cli._demo import run_demo

    CANCELLABLE.set()
    sys.exit(run_demo(workdir, environment=environment, destroy=destroy, cancel=CANCEL))


for command in (
    init, install, server, plan, apply, approve, rollback, runs, audit, policy, pipeline,
    env, drift, run_all, unlock, ui, state,
):  # fmt: skip
    cli.add_command(command)
started()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    del frame
    CANCEL.set()
    if not CANCELLABLE.is_set():
        raise SystemExit(128 + signum)


def main() -> None:
    """Console-script entry point.

    Usage errors exit 1, not click's 2: for `tofuflow plan`, 2 means "changes".
    """
    signal.signal(signal.SIGTERM, _on_sigterm)
    atexit.register(signal.signal, signal.SIGINT, signal.SIG_IGN)  # runs last: see _exit
    try:
        code = cli.main(prog_name="tofuflow", standalone_mode=False)
    except click.exceptions.UsageError as err:
        err.show()
        _exit(1)
    except click.ClickException as err:
        err.show()
        _exit(err.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        _exit(1)
    _exit(code if isinstance(code, int) else 0)


def _exit(code: int) -> NoReturn:
    """Exit with the command's ``code``. Ctrl-C from here on (closing the embedded plane,
    its threads, the interpreter's own finalization, where Python restores the default
    SIGINT handler) would kill the process with SIGINT, exit 130 without a word, after
    the command had done its work and said so: it ends the process with ``code`` now
    instead, and during finalization it is ignored."""

    def now(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)

    signal.signal(signal.SIGINT, now)
    sys.exit(code)
