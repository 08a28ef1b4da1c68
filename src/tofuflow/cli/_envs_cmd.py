"""`tofuflow env create | list | extend | destroy | reap`: ephemeral environments."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import sys
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import click

from tofuflow._time import shown_span, shown_time
from tofuflow.cli._common import (
    PROJECT_OPTION,
    cli_runner,
    configured_url,
    control_plane,
    fail,
    identity_table,
    load_project_file,
    project_url,
    saying_how_far,
)
from tofuflow.errors import ConfigError, TofuflowError

__all__ = ["env"]


@click.group("env")
def env() -> None:
    """Ephemeral environments: a workspace's configuration, its own state, a TTL.

    \b
      tofuflow env create pr-42 --from app/dev --ttl 2h --var name=pr-42
      tofuflow env list
      tofuflow env extend pr-42 --by 1h
      tofuflow env destroy pr-42
      tofuflow env deploy pr-42  one created with --no-apply, from its snapshot
      tofuflow env reap          one reaper pass (`tofuflow server` runs one every
                                 30 s; the embedded plane only when you run this)

    Every create and destroy is a normal run: planned, checked by policy (an environment's
    changes are routine unless it is production or touches protected resources), applied
    with a short-lived apply session and audited. When the TTL ends, the control plane's
    reaper destroys the environment from the snapshot it keeps, retries failures with
    back-off and reports those it cannot destroy as orphans.
    """


@env.command("create")
@click.argument("name")
@click.option("--from", "source", required=True, help="The workspace whose configuration to use.")
@click.option("--ttl", default="2h", show_default=True, help="Time to live: 90m, 2h, 1d...")
@click.option("--owner", help="Who answers for it (default: your user name).")
@click.option(
    "--var", "variables", multiple=True, metavar="KEY=VALUE",
    help="A variable of this environment (repeatable); wins over the workspace's.",
)  # fmt: skip
@click.option(
    "--no-apply",
    is_flag=True,
    help="Only register it; `tofuflow env deploy NAME` deploys it later (or never).",
)
@PROJECT_OPTION
def env_create(
    name: str, source: str, ttl: str, owner: str | None, variables: tuple[str, ...],
    no_apply: bool, project_path: Path | None,
) -> None:  # fmt: skip
    """Create environment NAME from workspace --from, then plan and apply it."""
    from tofuflow.ci import detect_run_context
    from tofuflow.cli import CANCELLABLE
    from tofuflow.envs import create_environment, deploy_environment, parse_duration

    CANCELLABLE.set()
    try:
        seconds = parse_duration(ttl)
        extra = _parse_vars(variables)
        project = load_project_file(project_path)
        ws = project.workspace(source)
        context = detect_run_context(cwd=ws.directory).to_json()
        table, where = ws.identity.get("apply"), identity_table(ws.name, "apply")
        with control_plane("apply", project_url(project), table, where=where) as client:
            created = create_environment(
                ws, name, client, ttl_seconds=seconds, owner=owner or getpass.getuser(),
                variables=extra, context=context,
            )  # fmt: skip
            expires = shown_time(created["expires_at"], seconds=False)
            click.echo(f"environment {name}: registered from {source}, expires {expires} "
                       f"(in {shown_span(seconds)}; owner {created['owner']})")  # fmt: skip
            if no_apply:
                click.echo(f"`tofuflow env deploy {name}` deploys it")
                return
            stays = (
                f"environment {name} stays until {expires}, when the reaper destroys it; "
                f"`tofuflow env destroy {name}` removes it now"
            )
            try:
                with saying_how_far(lambda: _last_run(client, name), stays):
                    run = deploy_environment(
                        name, client, cli_runner(None), context=context, base=ws,
                        on_undeclared=_warn_undeclared(name, set(extra)),
                    )  # fmt: skip
            except TofuflowError as err:  # it exists, undeployed: say so, and the way out
                raise click.ClickException(
                    f"{err}\nenvironment {name} is registered but not deployed: "
                    f"`tofuflow env destroy {name}` removes it (then create it again)"
                ) from err
    except TofuflowError as err:
        raise fail(err) from err
    click.echo(f"environment {name}: run {run['id']} {run['status']}")


def _warn_undeclared(name: str, given: set[str]) -> Callable[[str, Collection[str]], None]:
    """Tells of a variable the environment's configuration does not declare: the binary
    ignores it, so a typo silently deploys the default."""

    from tofuflow.runs import ignored_variable

    def warn(variable: str, declared: Collection[str]) -> None:
        where = "--var" if variable in given else "variable"
        subject = f"{where} {variable} of environment {name}"
        click.echo(f"Warning: {ignored_variable(subject, variable, declared)}", err=True)

    return warn


@env.command("deploy")
@click.argument("name")
@PROJECT_OPTION
def env_deploy(name: str, project_path: Path | None) -> None:
    """Plan and apply NAME from the configuration stored when it was created.

    For an environment registered with `env create --no-apply`, or one to bring back in
    line with its snapshot. Routine changes apply at once; others wait for an approver.
    """
    from tofuflow.ci import detect_run_context
    from tofuflow.cli import CANCELLABLE
    from tofuflow.envs import deploy_environment

    CANCELLABLE.set()
    try:
        with _teardown_plane(project_path, name) as (client, base):
            context = detect_run_context().to_json()
            stays = f"`tofuflow env deploy {name}` again finishes it"
            with saying_how_far(lambda: _last_run(client, name), stays):
                run = deploy_environment(
                    name, client, cli_runner(None), context=context, base=base,
                    on_undeclared=_warn_undeclared(name, set()),
                )  # fmt: skip
    except TofuflowError as err:
        raise fail(err) from err
    click.echo(f"environment {name}: run {run['id']} {run['status']}")


@env.command("list")
@click.option("--all", "include_destroyed", is_flag=True, help="Include destroyed ones.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@PROJECT_OPTION
def env_list(include_destroyed: bool, as_json: bool, project_path: Path | None) -> None:
    """Environments with their age, TTL left, owner and resource count."""
    try:
        with control_plane("read", configured_url(project_path)) as client:
            rows = client.environments(include_destroyed=include_destroyed)
    except TofuflowError as err:
        raise fail(err) from err
    if as_json:
        click.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    if not rows:
        click.echo("no environments")
        return
    click.echo(f"{'NAME':<28} {'STATUS':<11} {'OWNER':<20} {'AGE':>6} {'TTL LEFT':>8} "
               f"{'RES':>4}  FROM")  # fmt: skip
    for row in rows:
        status = row["status"]
        if status == "active" and row["ttl_left_seconds"] == 0:
            status = "expired"  # waiting for a reaper pass (`tofuflow env reap`)
        click.echo(
            f"{row['name']:<28} {status:<11} {row['owner'][:20]:<20} "
            f"{shown_span(row['age_seconds']):>6} {shown_span(row['ttl_left_seconds']):>8} "
            f"{row['resources'] if row['resources'] is not None else '-':>4}  "
            f"{row['source_workspace']}"
        )
        if row["status"] in {"orphaned", "destroying"} and row.get("last_error"):
            click.echo(f"    last error (attempt {row['attempts']}): {_brief(row['last_error'])}")


@env.command("extend")
@click.argument("name")
@click.option("--by", "ttl", required=True, help="How much longer: 30m, 2h, 1d...")
@PROJECT_OPTION
def env_extend(name: str, ttl: str, project_path: Path | None) -> None:
    """Push NAME's expiry back by --by (counted from its current expiry)."""
    from tofuflow.envs import parse_duration

    try:
        seconds = parse_duration(ttl)
        with control_plane("plan", configured_url(project_path)) as client:
            row = client.extend_environment(name, seconds)
    except TofuflowError as err:
        raise fail(err) from err
    left = row.get("ttl_left_seconds")
    after = f" (in {shown_span(left)})" if isinstance(left, int) else ""
    click.echo(f"environment {name}: expires {shown_time(row['expires_at'], seconds=False)}{after}")


@env.command("destroy")
@click.argument("name")
@PROJECT_OPTION
def env_destroy(name: str, project_path: Path | None) -> None:
    """Destroy NAME now, through plan → policy → apply, from its stored snapshot."""
    from tofuflow.cli import CANCELLABLE
    from tofuflow.envs import destroy_environment

    CANCELLABLE.set()
    # This process, not the user: a second `env destroy` of the same environment (another
    # job, another terminal) must wait for the first, not take its claim over. A Ctrl-C'd
    # destroy releases its claim; a killed one holds it until its lease runs out.
    holder = f"{getpass.getuser()}@cli:{socket.gethostname()}:{os.getpid()}"
    try:
        with _teardown_plane(project_path, name) as (client, base):
            left = (
                f"environment {name} is left destroying: run `tofuflow env destroy {name}` "
                "again, or the reaper retries it"
            )
            with saying_how_far(lambda: _last_run(client, name), left):
                row = destroy_environment(
                    name, client, cli_runner(None), holder=holder, force=True, base=base
                )
    except TofuflowError as err:
        raise fail(err) from err
    click.echo(f"environment {name}: {row['status']} (run {row['last_run_id']})")


@env.command("reap")
@click.option("--json", "as_json", is_flag=True, help="Print the pass's report as JSON.")
@click.option(
    "--lease", default="1m", show_default=True,
    help="How long a claim lasts unrenewed: if this reaper dies, the next pass takes its "
    "environments over after this long.",
)  # fmt: skip
@PROJECT_OPTION
def env_reap(as_json: bool, lease: str, project_path: Path | None) -> None:
    """One reaper pass: destroy every expired environment (for cron and schedulers).

    \b
    Exit codes: 0 nothing left behind, 1 a destroy failed or an environment is orphaned.
    """
    from tofuflow.cli import CANCELLABLE
    from tofuflow.envs import parse_duration, reap_once

    CANCELLABLE.set()
    try:
        lease_seconds = parse_duration(lease)
        project = _project_or_none(project_path)
        with control_plane("apply", configured_url(project_path)) as client:
            report = reap_once(
                client, runner=cli_runner(None), lease_seconds=lease_seconds,
                sources=project.workspaces if project is not None else None,
            )  # fmt: skip
    except TofuflowError as err:
        raise fail(err) from err
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        _print_report(report)
    sys.exit(0 if report.ok else 1)


def _project_or_none(project_path: Path | None) -> Any:
    """The project when there is a tofuflow.toml (``--project``, or one found upward from
    here), else None: environments can be destroyed without a checkout. A broken file is
    an error, not a reason to go on without its identities."""
    from tofuflow.project import find_project_file

    if project_path is None and find_project_file() is None:
        return None
    return load_project_file(project_path)


@contextlib.contextmanager
def _teardown_plane(project_path: Path | None, name: str) -> Iterator[tuple[Any, Any]]:
    """The control plane for deploying or destroying environment ``name``, and its source
    workspace when tofuflow.toml defines it: both as that workspace's apply identity, as
    the environment was created. Which workspace that is only the control plane knows, so
    it is asked first as the file's first apply identity (or the token in the
    environment)."""
    project = _project_or_none(project_path)
    url = project_url(project) if project is not None else configured_url(project_path)
    workspaces = project.workspaces if project is not None else {}
    tables = {n: ws.identity.get("apply") for n, ws in workspaces.items()}
    owner = next((n for n, table in tables.items() if table and table.get("source")), None)
    first = tables[owner] if owner else None
    where = identity_table(owner, "apply") if owner else None
    with control_plane("apply", url, first, where=where) as probe:
        source = workspaces.get(probe.environment(name).get("source_workspace") or "")
        table = source.identity.get("apply") if source is not None else None
        if url is None or (table or None) == first:  # the embedded plane ignores identities
            yield probe, source
            return
    where = identity_table(source.name, "apply") if source is not None else None
    with control_plane("apply", url, table, where=where) as client:
        yield client, source


def _print_report(report: Any) -> None:
    for name in report.destroyed:
        click.echo(f"destroyed  {name}")
    for name, error in report.failed.items():
        click.echo(f"FAILED     {name}: {error}", err=True)
    for name, reason in report.skipped.items():
        click.echo(f"skipped    {name}: {reason}")
    for orphan in report.orphans:
        click.echo(
            f"ORPHANED   {orphan['name']} (owner {orphan['owner']}, {orphan['attempts']} "
            f"failed destroys; next try {orphan['next_attempt_at']}): {orphan['last_error']}",
            err=True,
        )
    if not (report.destroyed or report.failed or report.skipped or report.orphans):
        click.echo("nothing to reap")


def _parse_vars(pairs: tuple[str, ...]) -> dict[str, str]:
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--var {pair!r}: write it as KEY=VALUE, e.g. --var name=pr-42")
        parsed[key.strip()] = value
    return parsed


def _brief(error: str) -> str:
    """An error's first and last lines: what failed, and the binary's final word on it."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    if len(lines) <= 1:
        return (lines or [""])[0][:300]
    return f"{lines[0][:150]} … {lines[-1][-150:]}"


def _last_run(client: Any, name: str) -> Any:
    """The environment's newest run (None when none started or it cannot be read)."""
    try:
        runs = client.runs(workspace=name, limit=1)
    except TofuflowError:
        return None
    return runs[0] if runs else None
