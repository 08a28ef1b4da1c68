"""`tofuflow plan | apply | approve | runs | audit`: runs through the control plane.

Where the control plane is: TOFUFLOW_SERVER_URL, else tofuflow.toml's [server] url, else
the embedded one (started in-process under your data directory). Which identity: a token
per stage (TOFUFLOW_PLAN_TOKEN, TOFUFLOW_APPLY_TOKEN, TOFUFLOW_APPROVE_TOKEN) or
TOFUFLOW_TOKEN; the embedded plane mints its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tofuflow._time import shown_span
from tofuflow.cli._common import (
    PROJECT_OPTION,
    RunArgument,
    WorkspaceArgument,
    agent_report,
    aligned,
    announce,
    apply_control_plane,
    clean,
    cli_runner,
    configured_url,
    console_link,
    control_plane,
    fail,
    identity_table,
    load_project_file,
    print_decision,
    print_verify,
    project_url,
    reporting,
    run_stands,
    saying_how_far,
    saying_the_plan_stopped,
    saying_the_run_stands,
    saying_what_stands,
    wired,
)
from tofuflow.errors import ConfigError, TofuflowError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["apply", "approve", "audit", "plan", "rollback", "runs", "unlock"]


@click.command("plan")
@click.argument("workspace", cls=WorkspaceArgument)
@PROJECT_OPTION
@click.option("--destroy", is_flag=True, help="Plan to destroy everything in the workspace.")
@click.option(
    "--run-id-file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
    help="Also write the run id to FILE (one line), for the stage that applies it; "
    "removed first, so a plan that fails leaves none behind. Outside the workspace's "
    "configuration (apply checks that it is unchanged).",
)  # fmt: skip
def plan(
    workspace: str, project_path: Path | None, destroy: bool, run_id_file: Path | None
) -> None:
    """Plan WORKSPACE read-only and submit it for the policy check.

    \b
    Exit codes: 0 no changes, 2 changes (approved, or waiting for an approver),
                3 denied by policy, 1 error.
    Prints the run id; apply it with `tofuflow apply RUN`, here or on another machine.
    In a pipeline: `tofuflow plan app/prod --run-id-file run-id`, publish run-id, and in
    the apply stage `tofuflow apply "$(cat run-id)"` (Azure DevOps also gets the runId
    output variable).
    """
    from tofuflow.ci import detect_run_context
    from tofuflow.cli import CANCELLABLE
    from tofuflow.runs import plan_workspace
    from tofuflow.tofu import render_plan_text

    CANCELLABLE.set()
    if run_id_file is not None:
        run_id_file.unlink(missing_ok=True)
    report = agent_report()
    planned: list[Any] = []  # the outcome, once the plan was submitted and decided

    def stands() -> str:
        if planned:  # closing the embedded control plane
            return run_stands(planned[0].run)
        return (
            f"interrupted before the plan of {workspace} started: no run was made and "
            f"nothing changed; run `tofuflow plan {workspace}` again"
        )

    try:
        with reporting(report, f"tofuflow plan {workspace}"), saying_what_stands(stands, report):
            project = load_project_file(project_path)
            ws = project.workspace(workspace)
            if run_id_file is not None:
                _outside_the_configuration(run_id_file, ws)
            context = detect_run_context(cwd=ws.directory).to_json()
            # Embedded: a token on this workspace only, unless it reads others' outputs.
            scope = "*" if ws.inputs else ws.name
            url = project_url(project)
            where = identity_table(ws.name, "plan")
            with control_plane(
                "plan", url, ws.identity.get("plan"), workspace=scope, where=where
            ) as client:
                announce(report, client.token, ws.directory)
                if report is not None:  # no console link to an embedded plane's port
                    report.console_url = os.environ.get("TOFUFLOW_CONSOLE_URL") or url or ""
                ws = wired(ws, project, client)
                with saying_the_plan_stopped(workspace, report=report):
                    outcome = plan_workspace(
                        ws, client, context, cli_runner(report), destroy=destroy
                    )
                    planned.append(outcome)
    except TofuflowError as err:
        raise fail(err, report) from err
    with saying_the_run_stands(outcome.run, report):
        click.echo(clean(report, render_plan_text(outcome.plan)))
        for warning in outcome.warnings(project.path.name):
            click.echo(f"Warning: {warning}", err=True)
        print_decision(outcome.run, report)
        if run_id_file is not None:
            run_id_file.parent.mkdir(parents=True, exist_ok=True)
            run_id_file.write_text(f"{outcome.run['id']}\n")
        link = console_link(project_url(project), outcome.run["id"])
        if link:
            click.echo(f"console: {link}")
        if report is not None:
            report.planned(ws.name, outcome.run, outcome.plan)
    sys.exit(outcome.exit_code)


@click.command("apply")
@click.argument("run_id", metavar="RUN", cls=RunArgument)
@PROJECT_OPTION
@click.option(
    "--wait-for-approval", "wait", metavar="DURATION", default="0",
    envvar="TOFUFLOW_APPROVAL_WAIT", show_default=True,
    help="When RUN still needs a person's approval, wait up to this long (e.g. 30m, 2h), "
    "saying who may approve and how; 0 refuses at once. Env: TOFUFLOW_APPROVAL_WAIT.",
)  # fmt: skip
def apply(run_id: str, project_path: Path | None, wait: str) -> None:
    """Apply approved run RUN from this checkout (which must match the planned config).

    A rollback's run, or an ephemeral environment's that waited for an approver, is
    applied from the configuration stored with it instead.

    \b
    Streams one line per resource as the binary works: [done/total elapsed] message.
    Interrupted (Ctrl-C, SIGTERM), it stops the binary gracefully, records the run
    cancelled and prints how far it got and what to run next.
    """
    from tofuflow.cli import CANCEL, CANCELLABLE
    from tofuflow.runs import (
        CONFIG_FROM_ARTIFACT,
        apply_from_artifact,
        apply_run,
        planned_changes,
    )

    CANCELLABLE.set()
    wait_seconds = _duration(wait)
    report = agent_report()
    applying = threading.Event()  # from here on saying_how_far tells what happened

    def stands() -> str | None:
        if applying.is_set():
            return None
        return (
            f"interrupted before the apply of run {run_id} started: nothing was applied and "
            f"the run is as it was; `tofuflow apply {run_id}` applies it"
        )

    try:
        with reporting(report, f"tofuflow apply {run_id}"), saying_what_stands(stands, report):
            project = load_project_file(project_path)
            with apply_control_plane(project, run_id) as (client, run):
                if run["status"] == "needs_approval" and wait_seconds:
                    link = console_link(project_url(project), run_id)
                    run = await_approval(client, run, wait_seconds, CANCEL, report, link)
                with _run_workspace(project, client, run) as ws:
                    announce(report, client.token, ws.directory)
                    if report is not None:  # no console link to an embedded plane's port
                        report.console_url = (
                            os.environ.get("TOFUFLOW_CONSOLE_URL") or project_url(project) or ""
                        )
                    from_artifact = (run.get("context") or {}).get("config_source")
                    # A rollback's configuration is the snapshot in its artifact, not this
                    # checkout.
                    apply = (
                        apply_from_artifact if from_artifact == CONFIG_FROM_ARTIFACT else apply_run
                    )
                    total = planned_changes(run)
                    applying.set()
                    with saying_how_far(lambda: client.run(run_id), report=report):
                        done = apply(run_id, ws, client, cli_runner(report, progress_of=total))
    except TofuflowError as err:
        raise fail(err, report) from err
    result = done.get("result") or {}
    click.echo(clean(report, (
        f"run {run_id}: {done['status']}; state serial {result.get('serial')}, "
        f"version {done.get('state_version')}"
    )))  # fmt: skip
    if report is not None:
        report.applied(ws.name, done)


def _outside_the_configuration(run_id_file: Path, ws: Any) -> None:
    """The run-id file inside the configuration would change it after the plan, and the
    apply, which checks that the configuration is the one planned, would refuse it."""
    from tofuflow.runs import configuration

    root = configuration(ws.directory).root.resolve()
    if run_id_file.resolve().is_relative_to(root):
        raise ConfigError(
            f"--run-id-file {run_id_file} is inside the configuration of {ws.name} ({root}): "
            "writing it would change the configuration after the plan, and `tofuflow apply` "
            "refuses a configuration that is not the one planned. Write it elsewhere, e.g. "
            "--run-id-file ../run-id, or in the agent's temp directory"
        )


@contextlib.contextmanager
def _run_workspace(project: Any, client: Any, run: Any) -> Iterator[Any]:
    """The workspace run ``run`` applies to: the checkout's, or, for an ephemeral
    environment's run (which waited for an approver), the environment's configuration as
    its snapshot holds it, with its source workspace's settings (identity) when this
    tofuflow.toml defines it."""
    name = run["workspace"]
    if (run.get("context") or {}).get("environment") != name or name in project.workspaces:
        yield project.workspace(name)
        return
    from tofuflow.envs import environment_workspace

    source = client.environment(name).get("source_workspace")
    with environment_workspace(name, client, project.workspaces.get(source)) as workspace:
        yield workspace


def _duration(text: str) -> int:
    if text.strip() in ("", "0"):
        return 0
    from tofuflow.envs import parse_duration

    try:
        return parse_duration(text)
    except TofuflowError as err:
        raise click.BadParameter(str(err), param_hint="--wait-for-approval") from err


def await_approval(
    client: Any,
    run: Any,
    seconds: int,
    cancel: Any,
    report: Any,
    link: str | None = None,
    poll: float = 5.0,
) -> Any:
    """Wait until a person decides on ``run`` (at most ``seconds``), saying how to approve
    (and where it is in the console, when ``link``)."""
    import os
    import time

    poll = float(os.environ.get("TOFUFLOW_APPROVAL_POLL_SECONDS") or poll)
    reasons = "; ".join((run.get("decision") or {}).get("approval_reasons") or []) or "policy"
    click.echo(clean(report, (
        f"run {run['id']} needs approval ({reasons}). An approver runs "
        f"`tofuflow approve {run['id']} --comment \"...\"` (approver role on "
        f"{run['workspace']}){f' or approves it in the console: {link}' if link else ''}. "
        f"Waiting up to {shown_span(seconds)}..."
    )))  # fmt: skip
    deadline = time.monotonic() + seconds
    while run["status"] == "needs_approval":
        if time.monotonic() >= deadline:
            raise click.ClickException(clean(report, (
                f"run {run['id']} still needs approval after waiting {shown_span(seconds)}: "
                f"approve it (`tofuflow approve {run['id']}`) and run `tofuflow apply "
                f"{run['id']}` again"
            )))  # fmt: skip
        if cancel.wait(min(poll, max(deadline - time.monotonic(), 0.1))):
            raise click.ClickException(f"stopped while waiting for the approval of {run['id']}")
        run = client.run(run["id"])
    click.echo(clean(report, f"run {run['id']}: {run['status']}"))
    return run


@click.command("rollback")
@click.argument("workspace", cls=WorkspaceArgument)
@click.option("--to", "to_run", required=True, metavar="RUN",
              help="The applied run whose configuration to go back to.")  # fmt: skip
@click.option("--apply", "apply_now", is_flag=True,
              help="Apply at once if the policy approves (needs the applier role).")  # fmt: skip
@PROJECT_OPTION
def rollback(workspace: str, to_run: str, apply_now: bool, project_path: Path | None) -> None:
    """Plan WORKSPACE back to the configuration that run --to applied.

    \b
    The configuration snapshot stored with that run's artifact is planned against the
    current state and goes through the normal policy check and approval: what it would
    re-create or remove is shown, and deletions need a person as usual. Apply the new
    run with `tofuflow apply RUN` (from any checkout: its configuration travels in the
    artifact), or pass --apply. It plans with the variables and var files that run
    was planned with, so a change made only in a var file is rolled back too (a var
    file given by an absolute path is read where the pipeline writes it today).
    Restoring a raw state version is the admin-only break-glass path
    (POST /v1/workspaces/WS/rollback), not this.

    \b
    Exit codes: as `tofuflow plan` (0 nothing to roll back, 2 changes, 3 denied, 1 error).
    """
    from tofuflow.ci import detect_run_context
    from tofuflow.cli import CANCELLABLE
    from tofuflow.runs import apply_from_artifact, rollback_workspace
    from tofuflow.tofu import render_plan_text

    CANCELLABLE.set()
    try:
        project = load_project_file(project_path)
        ws = project.workspace(workspace)
        context = detect_run_context(cwd=ws.directory).to_json()
        # Reading the earlier run's artifact (it may hold sensitive values) needs an applier.
        with control_plane(
            "apply", project_url(project), ws.identity.get("apply"), workspace=ws.name,
            where=identity_table(ws.name, "apply"),
        ) as client:  # fmt: skip
            outcome = rollback_workspace(ws, to_run, client, context, cli_runner(None))
            click.echo(render_plan_text(outcome.plan))
            print_decision(outcome.run)
            if apply_now and outcome.run["status"] == "approved":
                run_id = outcome.run["id"]
                again = f"run `tofuflow rollback {ws.name} --to {to_run}` to continue"
                with saying_how_far(lambda: client.run(run_id), again):
                    done = apply_from_artifact(run_id, ws, client, cli_runner(None))
                click.echo(f"run {done['id']}: {done['status']}; rolled back to run {to_run}")
                sys.exit(0)
    except TofuflowError as err:
        raise fail(err) from err
    sys.exit(outcome.exit_code)


@click.command("approve")
@click.argument("run_id", metavar="RUN", cls=RunArgument)
@click.option("--comment", default="", help="Why (goes to the audit log).")
@PROJECT_OPTION
def approve(run_id: str, comment: str, project_path: Path | None) -> None:
    """Approve run RUN (approver role; not your own run unless the workspace allows it)."""
    try:
        with control_plane("approve", configured_url(project_path)) as client:
            run = client.approve(run_id, comment)
    except TofuflowError as err:
        raise fail(err) from err
    click.echo(f"run {run_id}: {run['status']}")


@click.group("runs")
def runs() -> None:
    """List and inspect runs."""


@runs.command("list")
@click.option("--workspace", help="Only this workspace.")
@click.option("--commit", help="Only runs of this commit (a prefix is enough).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The runs as a JSON array, for scripts.")
@PROJECT_OPTION
def runs_list(
    workspace: str | None, commit: str | None, limit: int, as_json: bool,
    project_path: Path | None,
) -> None:  # fmt: skip
    """The newest runs first: when, status, workspace, who asked, commit, changes."""
    try:
        with control_plane("read", configured_url(project_path)) as client:
            rows = client.runs(workspace=workspace, commit=commit, limit=limit)
            if not rows and workspace:
                known = {w["name"] for w in client.workspaces()}
                if workspace not in known:
                    raise click.ClickException(
                        f"no workspace {workspace!r} on this control plane (it has "
                        f"{', '.join(sorted(known)) or 'none yet'}); check the name"
                    )
    except TofuflowError as err:
        raise fail(err) from err
    if as_json:
        click.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    if not rows:
        click.echo("no runs yet: `tofuflow plan WORKSPACE` starts one")
        return
    click.echo(runs_table(rows))


# How the run's workspace takes state writes (server [[workspace_settings]]).
_WRITES = {"apply_session": "session", "simple_applier": "simple"}


def runs_table(rows: list[dict[str, Any]]) -> str:
    """Runs as an aligned table with a header line."""
    header = (
        "RUN", "CREATED (UTC)", "STATUS", "WORKSPACE", "REQUESTER", "COMMIT", "CHANGES", "WRITES"
    )  # fmt: skip
    table = [header]
    for run in rows:
        summary = run.get("summary") or {}
        changes = "-"
        if summary:
            changes = (
                f"+{summary.get('add', 0)} ~{summary.get('change', 0)} -{summary.get('destroy', 0)}"
            )
        created = str(run.get("created_at") or "")[:19].replace("T", " ")
        who = str(run.get("requester_name") or run.get("requester") or "-")
        table.append((
            str(run["id"]), created, str(run["status"]), str(run["workspace"]), _shortened(who),
            (run.get("commit") or "-")[:10], changes,
            _WRITES.get(str(run.get("state_writes")), "-"),
        ))  # fmt: skip
    return aligned(table)


def _shortened(text: str, width: int = 32) -> str:
    """``text`` in at most ``width`` characters, cut at a word when one ends past the middle,
    and marked ``…`` when cut."""
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    space = cut.rfind(" ")
    return f"{cut[:space]} …" if space > width // 2 else f"{cut}…"


@runs.command("show")
@click.argument("run_id", metavar="RUN", cls=RunArgument)
@click.option(
    "--plan", "show_plan", is_flag=True,
    help="Print the whole plan instead: every resource with its attribute changes, "
    "sensitive values masked.",
)  # fmt: skip
@click.option("--markdown", is_flag=True, help="With --plan: as Markdown.")
@PROJECT_OPTION
def runs_show(run_id: str, show_plan: bool, markdown: bool, project_path: Path | None) -> None:
    """Show run RUN as JSON (status, decision, context, result), or its whole plan."""
    try:
        with control_plane("read", configured_url(project_path)) as client:
            if show_plan:
                click.echo(client.plan_text(run_id, "markdown" if markdown else "text"))
                return
            run = client.run(run_id)
    except TofuflowError as err:
        raise fail(err) from err
    click.echo(json.dumps(run, indent=2, sort_keys=True))


@runs.command("cancel")
@click.argument("run_id", metavar="RUN", cls=RunArgument)
@click.option("--reason", default="cancelled from the CLI", show_default=True)
@PROJECT_OPTION
def runs_cancel(run_id: str, reason: str, project_path: Path | None) -> None:
    """Cancel a run that has not started applying (needs the applier role).

    \b
    A run stuck `applying` because its runner was killed is ended by an admin
    (TOFUFLOW_TOKEN with the admin role): it is recorded failed and its apply session
    stops working. Free the state lock it left with `tofuflow unlock WORKSPACE`.
    """
    try:
        url = configured_url(project_path)
        with control_plane("apply", url) as client:  # the applier's token reads it too
            # A stuck apply is ended by an admin; anything else by an applier.
            if client.run(run_id)["status"] != "applying":
                run = client.cancel(run_id, reason)
            else:
                with control_plane("admin", url) as admin:
                    run = admin.cancel(run_id, reason)
    except TofuflowError as err:
        raise fail(err) from err
    click.echo(f"run {run_id}: {run['status']}")


@click.command("unlock")
@click.argument("workspace")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@PROJECT_OPTION
def unlock(workspace: str, yes: bool, project_path: Path | None) -> None:
    """Release WORKSPACE's state lock, whoever holds it (admin role; audited).

    \b
    Shows the holder first. Use it when the process holding the lock is gone — a CI
    agent killed the step, a laptop closed mid-apply — never while it still runs: its
    next state write would then be refused. If that apply's run is stuck `applying`,
    end it with `tofuflow runs cancel RUN`. Token: TOFUFLOW_TOKEN (admin).
    """
    try:
        with control_plane("admin", configured_url(project_path)) as client:
            listed = {w["name"]: w for w in client.workspaces()}
            found = listed.get(workspace)
            if found is None:
                raise click.ClickException(
                    f"no workspace {workspace!r} on this control plane (it has "
                    f"{', '.join(sorted(listed)) or 'none'}); check the name"
                )
            if not found.get("locked"):
                click.echo(f"{workspace} is not locked")
                return
            lock = found.get("lock") or {}
            click.echo(f"{workspace} is locked by {lock.get('held_by') or 'unknown'}")
            for key in ("since", "who", "operation", "id"):
                if lock.get(key):
                    click.echo(f"  {key + ':':<10} {lock[key]}")
            if not yes and not click.confirm("Release it?", default=False, err=True):
                raise click.ClickException("left locked")
            client.force_unlock(workspace)
    except TofuflowError as err:
        raise fail(err) from err
    click.echo(f"{workspace}: unlocked (recorded as state.force_unlock in the audit log)")


@click.group("audit")
def audit() -> None:
    """The tamper-evident audit log: show, verify, export."""


@audit.command("show")
@click.option("--run", "run_id", help="Events of one run.")
@click.option("--commit", help="Events of one commit (prefix).")
@click.option("--workspace", help="Events of one workspace.")
@click.option("--actor", help="Events of one identity (e.g. token:tfw_..., sc://...).")
@PROJECT_OPTION
def audit_show(
    run_id: str | None,
    commit: str | None,
    workspace: str | None,
    actor: str | None,
    project_path: Path | None,
) -> None:
    """The audit log's events, oldest first, one per line; the filters combine.

    Each line: id, time, action, outcome, workspace, run (or -), actor, and for a state
    change how it was allowed (via apply_session, simple_applier, break_glass). A run's
    apply session locks, reads and unlocks state as run:<id>: --actor run:<id> lists those.

    \b
    Exit codes: 0 (also when no event matches: it says so), 1 an unknown --run or an error.
    """
    try:
        with control_plane("read", configured_url(project_path)) as client:
            events = client.audit(run=run_id, commit=commit, workspace=workspace, actor=actor)
            if not events and run_id:
                client.run(run_id)  # an unknown run is an error, as for `runs show`
    except TofuflowError as err:
        raise fail(err) from err
    if not events:
        click.echo("no events match")
        return
    for e in events:
        where = e.get("workspace") or "-"
        # State changes say how they were allowed: apply_session, simple_applier, break_glass.
        via = (e.get("detail") or {}).get("via")
        # The run it belongs to, so a workspace's several runs can be told apart.
        run = e.get("run_id") or "-"
        click.echo(f"{e['id']:>6} {e['ts']} {e['action']:<22} {e['outcome']:<8} {where:<20} "
                   f"{run:<16} {_who(e)}{f'  via {via}' if via else ''}")  # fmt: skip


# The claims that name an actor for a person, in order: an OIDC identity's name or e-mail,
# else what an API token is for (the runs list's REQUESTER reads them alike).
_NAMING_CLAIMS = ("name", "preferred_username", "email", "description")


def _who(event: dict[str, Any]) -> str:
    """The event's actor, and the name a person knows it by when its claims give one:
    ``token:tfw_… (tofuflow plan app/dev (alice))``."""
    claims = event.get("actor_claims") or {}
    for key in _NAMING_CLAIMS:
        value = claims.get(key) if isinstance(claims, dict) else None
        if isinstance(value, str) and value.strip():
            shown = "".join(c if c.isprintable() else "?" for c in value.strip()[:120])
            return f"{event['actor']} ({shown})"
    return str(event["actor"])


@audit.command("verify")
@click.option(
    "--export",
    "export_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Verify this `audit export` file offline (no server), with --public-key.",
)
@click.option(
    "--public-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The server's checkpoint key (PEM, from `tofuflow server audit public-key`).",
)
@PROJECT_OPTION
def audit_verify(
    export_file: Path | None, public_key: Path | None, project_path: Path | None
) -> None:
    """Exit 1 and name the first bad event if any event was altered, removed or reordered.

    With --export and --public-key: check an export offline against the server's signed
    checkpoints, which also catches a consistent rewrite of the whole chain.
    """
    if export_file is not None or public_key is not None:
        _verify_export_offline(export_file, public_key)
        return
    try:
        with control_plane("read", configured_url(project_path)) as client:
            result = client.audit_verify()
    except TofuflowError as err:
        raise fail(err) from err
    print_verify(result)
    if not result["ok"]:
        sys.exit(1)


def _verify_export_offline(export_file: Path | None, public_key: Path | None) -> None:
    from tofuflow.server.checkpoints import load_public_key, verify_export

    if export_file is None or public_key is None:
        raise click.UsageError("--export and --public-key go together: pass both")
    try:
        doc = json.loads(export_file.read_text())
        key = load_public_key(public_key.read_bytes())
    except ValueError as err:
        raise click.ClickException(
            f"{export_file} is not an audit export (JSON from `tofuflow audit export`): {err}"
        ) from err
    except TofuflowError as err:
        raise fail(err) from err
    if not isinstance(doc, dict):
        raise click.ClickException(f"{export_file} is not an audit export")
    check = verify_export(doc, key)
    if check.ok:
        click.echo(f"audit export intact: {check.events} events, covered by {check.checkpoints} "
                   "checkpoint(s) signed by this key")  # fmt: skip
        return
    click.secho(f"audit export BROKEN: {check.problem}", fg="red")
    sys.exit(1)


@audit.command("credentials")
@click.option("--workspace", help="Only runs of this workspace.")
@PROJECT_OPTION
def audit_credentials(workspace: str | None, project_path: Path | None) -> None:
    """Per run, the cloud credentials each stage was issued (role, expiry, fingerprint,
    token source, and whether the control plane verified the issuance with the cloud or
    recorded it as reported).

    Exits 1 if any credential fingerprint appears in more than one run: every run must get
    fresh credentials.
    """
    try:
        with control_plane("read", configured_url(project_path)) as client:
            events = client.audit(action="credentials.issued", workspace=workspace)
    except TofuflowError as err:
        raise fail(err) from err
    runs_by_fingerprint: dict[str, set[str]] = {}
    for e in events:
        d = e.get("detail") or {}
        runs_by_fingerprint.setdefault(str(d.get("fingerprint")), set()).add(str(e["run_id"]))
        click.echo(f"{e['run_id']}  {d.get('stage', '-'):<6} {d.get('cloud', '-'):<6} "
                   f"{d.get('role', '-'):<48} until {d.get('expires_at') or '-':<26} "
                   f"fp {d.get('fingerprint')}  ({d.get('source', '-')}, "
                   f"{d.get('verification') or 'reported'})")  # fmt: skip
    reused = {fp: runs for fp, runs in runs_by_fingerprint.items() if len(runs) > 1}
    for fingerprint, run_ids in reused.items():
        click.secho(f"REUSED: fingerprint {fingerprint} in runs {', '.join(sorted(run_ids))}",
                    fg="red")  # fmt: skip
    if reused:
        sys.exit(1)
    click.echo(f"{len(events)} issuances, all fresh (no credential shared between runs)")


@audit.command("export")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Default: stdout.")
@PROJECT_OPTION
def audit_export(output: Path | None, project_path: Path | None) -> None:
    """Every event and the server's signed checkpoints, as one JSON file.

    The server checks the chain and signs its head first; `tofuflow audit verify --export
    FILE --public-key KEY` then checks the file offline. If the chain contradicts the last
    checkpoint, the file is still written (with that checkpoint) and the command exits 1.
    """
    from tofuflow.errors import ConflictError, NotFoundError
    from tofuflow.server.checkpoints import EXPORT_FORMAT, covers

    refused: ConflictError | None = None
    checkpoints: list[dict[str, Any]] = []
    try:
        with control_plane("read", configured_url(project_path)) as client:
            try:
                checkpoints.append(client.audit_checkpoint())
            except ConflictError as err:
                refused = err
                with contextlib.suppress(NotFoundError):
                    checkpoints.append(client.audit_latest_checkpoint())
            # Each chain's signed head ends it in the export: later events are not covered yet.
            signed = checkpoints[0] if checkpoints and not refused else None
            events = [e for e in client.audit() if signed is None or covers(signed, e)]
    except TofuflowError as err:
        raise fail(err) from err
    doc = {"format": EXPORT_FORMAT, "events": events, "checkpoints": checkpoints}
    text = json.dumps(doc, sort_keys=True, indent=1) + "\n"
    if output:
        output.write_text(text)
        click.echo(f"{len(events)} events written to {output}", err=True)
    else:
        click.echo(text, nl=False)
    if refused is not None:
        raise fail(refused)
