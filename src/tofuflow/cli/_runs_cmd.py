"""`tofuflow plan | apply | approve | runs | audit`: runs through the control plane.

Where the control plane is: TOFUFLOW_SERVER_URL, else tofuflow.toml's [server] url, else
the embedded one (started in-process under your data directory). Which identity: a token
per stage (TOFUFLOW_PLAN_TOKEN, TOFUFLOW_APPLY_TOKEN, TOFUFLOW_APPROVE_TOKEN) or
TOFUFLOW_TOKEN; the embedded plane mints its own.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tofuflow.errors import ConfigError, TofuflowError

if TYPE_CHECKING:
    from tofuflow.ci import AgentReport
    from tofuflow.runs import Runner

__all__ = ["apply", "approve", "audit", "plan", "rollback", "runs"]

_PROJECT = click.option(
    "--project",
    "project_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The tofuflow.toml to use (default: searched upward from the current directory).",
)
# Stage → (role the embedded plane mints, the stage's token variable).
_STAGES = {
    "plan": ("planner", "TOFUFLOW_PLAN_TOKEN"),
    "apply": ("applier", "TOFUFLOW_APPLY_TOKEN"),
    "approve": ("approver", "TOFUFLOW_APPROVE_TOKEN"),
    "read": ("admin", "TOFUFLOW_TOKEN"),
}


@contextmanager
def control_plane(
    stage: str, server_url: str | None, identity: Mapping[str, Any] | None = None
) -> Iterator[Any]:
    """A ControlPlane client for ``stage``: remote when configured, else embedded.

    Without a token variable, a stage whose identity names a token source presents that
    OIDC token: one pipeline identity gets both its cloud role and its state role.
    """
    from tofuflow.runs import ControlPlane, EmbeddedControlPlane

    role, token_var = _STAGES[stage]
    url = os.environ.get("TOFUFLOW_SERVER_URL") or server_url
    if url:
        token = os.environ.get(token_var) or os.environ.get("TOFUFLOW_TOKEN")
        if not token and identity and identity.get("source"):
            from tofuflow.identity import StageIdentity

            stage_identity = StageIdentity.from_config(identity, os.environ, stage=stage)
            if stage_identity.source is not None:
                token = stage_identity.source.token(stage_identity.audience)
        if not token:
            names = token_var if stage == "read" else f"{token_var} (or TOFUFLOW_TOKEN)"
            raise ConfigError(
                f"no token for the {stage} stage: set {names} to a token with at least the "
                f"{'reader' if stage == 'read' else role} role on the workspace"
            )
        with ControlPlane(url, token) as client:
            yield client
        return
    with (
        EmbeddedControlPlane() as embedded,
        ControlPlane(embedded.url, embedded.token(role)) as client,
    ):
        yield client


def _fail(err: TofuflowError, report: AgentReport | None = None) -> click.ClickException:
    return click.ClickException(_clean(report, str(err)))


# On an Azure Pipelines agent (TF_BUILD=True): logging commands around plan and apply.


def _agent_report() -> AgentReport | None:
    from tofuflow.ci import AgentReport, AzureDevOpsLog, on_agent

    return AgentReport(AzureDevOpsLog()) if on_agent() else None


@contextmanager
def _reporting(report: AgentReport | None, title: str) -> Iterator[None]:
    """The binary's output in a group; an error becomes issues and ``task.complete Failed``."""
    if report is None:
        yield
        return
    with report.stage(title):
        yield


def _announce(report: AgentReport | None, token: str, directory: Path) -> None:
    if report is not None:
        report.directory = directory
        report.log.set_secret(token)  # the control plane token: masked before anything runs


def _runner(report: AgentReport | None) -> Runner:
    from tofuflow.cli import CANCEL
    from tofuflow.runs import Runner

    if report is None:
        return Runner(cancel_event=CANCEL)
    return Runner(on_output=report.on_output, on_event=report.on_event, cancel_event=CANCEL)


def _clean(report: AgentReport | None, text: str) -> str:
    """On an agent, user-controlled text must not carry a logging command."""
    if report is None:
        return text
    from tofuflow.ci import neutralise

    return "\n".join(neutralise(line) for line in text.split("\n"))


def _project(path: Path | None) -> Any:
    from tofuflow.project import load_project

    return load_project(path)


@click.command("plan")
@click.argument("workspace")
@_PROJECT
@click.option("--destroy", is_flag=True, help="Plan to destroy everything in the workspace.")
def plan(workspace: str, project_path: Path | None, destroy: bool) -> None:
    """Plan WORKSPACE read-only and submit it for the policy check.

    \b
    Exit codes: 0 no changes, 2 changes (approved, or waiting for an approver),
                3 denied by policy, 1 error.
    Prints the run id; apply it with `tofuflow apply RUN`, here or on another machine.
    """
    from tofuflow.ci import detect_run_context
    from tofuflow.cli import CANCELLABLE
    from tofuflow.runs import plan_workspace
    from tofuflow.tofu import render_plan_text

    CANCELLABLE.set()
    report = _agent_report()
    try:
        with _reporting(report, f"tofuflow plan {workspace}"):
            project = _project(project_path)
            ws = project.workspace(workspace)
            context = detect_run_context(cwd=ws.directory).to_json()
            with control_plane("plan", project.server_url, ws.identity.get("plan")) as client:
                _announce(report, client.token, ws.directory)
                outcome = plan_workspace(ws, client, context, _runner(report), destroy=destroy)
    except TofuflowError as err:
        raise _fail(err, report) from err
    click.echo(_clean(report, render_plan_text(outcome.plan)))
    _print_decision(outcome.run, report)
    if report is not None:
        report.planned(ws.name, outcome.run, outcome.plan)
    sys.exit(outcome.exit_code)


@click.command("apply")
@click.argument("run_id", metavar="RUN")
@_PROJECT
def apply(run_id: str, project_path: Path | None) -> None:
    """Apply approved run RUN from this checkout (which must match the planned config)."""
    from tofuflow.cli import CANCELLABLE
    from tofuflow.runs import apply_from_artifact, apply_run
    from tofuflow.runs._rollback import CONFIG_FROM_ARTIFACT

    CANCELLABLE.set()
    report = _agent_report()
    try:
        with _reporting(report, f"tofuflow apply {run_id}"):
            project = _project(project_path)
            identity = _apply_identity(project)
            with control_plane("apply", project.server_url, identity) as client:
                run = client.run(run_id)
                ws = project.workspace(run["workspace"])
                _announce(report, client.token, ws.directory)
                from_artifact = (run.get("context") or {}).get("config_source")
                # A rollback's configuration is the snapshot in its artifact, not this checkout.
                apply = apply_from_artifact if from_artifact == CONFIG_FROM_ARTIFACT else apply_run
                done = apply(run_id, ws, client, _runner(report))
    except TofuflowError as err:
        raise _fail(err, report) from err
    result = done.get("result") or {}
    click.echo(_clean(report, (
        f"run {run_id}: {done['status']}; state serial {result.get('serial')}, "
        f"version {done.get('state_version')}"
    )))  # fmt: skip
    if report is not None:
        report.applied(ws.name, done)


@click.command("rollback")
@click.argument("workspace")
@click.option("--to", "to_run", required=True, metavar="RUN",
              help="The applied run whose configuration to go back to.")  # fmt: skip
@click.option("--apply", "apply_now", is_flag=True,
              help="Apply at once if the policy approves (needs the applier role).")  # fmt: skip
@_PROJECT
def rollback(workspace: str, to_run: str, apply_now: bool, project_path: Path | None) -> None:
    """Plan WORKSPACE back to the configuration that run --to applied.

    \b
    The configuration snapshot stored with that run's artifact is planned against the
    current state and goes through the normal policy check and approval: what it would
    re-create or remove is shown, and deletions need a person as usual. Apply the new
    run with `tofuflow apply RUN` (from any checkout: its configuration travels in the
    artifact), or pass --apply. Variables come from today's tofuflow.toml.
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
        project = _project(project_path)
        ws = project.workspace(workspace)
        context = detect_run_context(cwd=ws.directory).to_json()
        # Reading the earlier run's artifact (it may hold sensitive values) needs an applier.
        with control_plane("apply", project.server_url, ws.identity.get("apply")) as client:
            outcome = rollback_workspace(ws, to_run, client, context, _runner(None))
            click.echo(render_plan_text(outcome.plan))
            _print_decision(outcome.run)
            if apply_now and outcome.run["status"] == "approved":
                done = apply_from_artifact(outcome.run["id"], ws, client, _runner(None))
                click.echo(f"run {done['id']}: {done['status']}; rolled back to run {to_run}")
                sys.exit(0)
    except TofuflowError as err:
        raise _fail(err) from err
    sys.exit(outcome.exit_code)


@click.command("approve")
@click.argument("run_id", metavar="RUN")
@click.option("--comment", default="", help="Why (goes to the audit log).")
@_PROJECT
def approve(run_id: str, comment: str, project_path: Path | None) -> None:
    """Approve run RUN (approver role; not your own run unless the workspace allows it)."""
    try:
        with control_plane("approve", _server_url(project_path)) as client:
            run = client.approve(run_id, comment)
    except TofuflowError as err:
        raise _fail(err) from err
    click.echo(f"run {run_id}: {run['status']}")


@click.group("runs")
def runs() -> None:
    """List and inspect runs."""


@runs.command("list")
@click.option("--workspace", help="Only this workspace.")
@click.option("--commit", help="Only runs of this commit (a prefix is enough).")
@click.option("--limit", default=20, show_default=True)
@_PROJECT
def runs_list(
    workspace: str | None, commit: str | None, limit: int, project_path: Path | None
) -> None:
    try:
        with control_plane("read", _server_url(project_path)) as client:
            rows = client.runs(workspace=workspace, commit=commit, limit=limit)
    except TofuflowError as err:
        raise _fail(err) from err
    for run in rows:
        summary = (run.get("summary") or {}).get("text", "")
        commit_ = (run.get("commit") or "-")[:10]
        click.echo(f"{run['id']}  {run['status']:<15} {run['workspace']:<24} {commit_}  {summary}")


@runs.command("show")
@click.argument("run_id", metavar="RUN")
@_PROJECT
def runs_show(run_id: str, project_path: Path | None) -> None:
    try:
        with control_plane("read", _server_url(project_path)) as client:
            run = client.run(run_id)
    except TofuflowError as err:
        raise _fail(err) from err
    click.echo(json.dumps(run, indent=2, sort_keys=True))


@runs.command("cancel")
@click.argument("run_id", metavar="RUN")
@click.option("--reason", default="cancelled from the CLI", show_default=True)
@_PROJECT
def runs_cancel(run_id: str, reason: str, project_path: Path | None) -> None:
    """Cancel a run that has not started applying (needs the applier role)."""
    try:
        with control_plane("apply", _server_url(project_path)) as client:
            run = client.cancel(run_id, reason)
    except TofuflowError as err:
        raise _fail(err) from err
    click.echo(f"run {run_id}: {run['status']}")


@click.group("audit")
def audit() -> None:
    """The tamper-evident audit log: show, verify, export."""


@audit.command("show")
@click.option("--run", "run_id", help="Events of one run.")
@click.option("--commit", help="Events of one commit (prefix).")
@click.option("--workspace")
@click.option("--actor", help="Events of one identity (e.g. token:tfw_..., sc://...).")
@_PROJECT
def audit_show(
    run_id: str | None,
    commit: str | None,
    workspace: str | None,
    actor: str | None,
    project_path: Path | None,
) -> None:
    try:
        with control_plane("read", _server_url(project_path)) as client:
            events = client.audit(run=run_id, commit=commit, workspace=workspace, actor=actor)
    except TofuflowError as err:
        raise _fail(err) from err
    for e in events:
        where = e.get("workspace") or "-"
        click.echo(f"{e['id']:>6} {e['ts']} {e['action']:<22} {e['outcome']:<8} {where:<20} "
                   f"{e['actor']}")  # fmt: skip


@audit.command("verify")
@_PROJECT
def audit_verify(project_path: Path | None) -> None:
    """Exit 1 and name the first bad event if any event was altered, removed or reordered."""
    try:
        with control_plane("read", _server_url(project_path)) as client:
            result = client.audit_verify()
    except TofuflowError as err:
        raise _fail(err) from err
    _print_verify(result)
    if not result["ok"]:
        sys.exit(1)


@audit.command("credentials")
@click.option("--workspace", help="Only runs of this workspace.")
@_PROJECT
def audit_credentials(workspace: str | None, project_path: Path | None) -> None:
    """Per run, the cloud credentials each stage was issued (role, expiry, fingerprint).

    Exits 1 if any credential fingerprint appears in more than one run: every run must get
    fresh credentials.
    """
    try:
        with control_plane("read", _server_url(project_path)) as client:
            events = client.audit(action="credentials.issued", workspace=workspace, limit=10000)
    except TofuflowError as err:
        raise _fail(err) from err
    runs_by_fingerprint: dict[str, set[str]] = {}
    for e in events:
        d = e.get("detail") or {}
        runs_by_fingerprint.setdefault(str(d.get("fingerprint")), set()).add(str(e["run_id"]))
        click.echo(f"{e['run_id']}  {d.get('stage', '-'):<6} {d.get('cloud', '-'):<6} "
                   f"{d.get('role', '-'):<48} until {d.get('expires_at') or '-':<26} "
                   f"fp {d.get('fingerprint')}  ({d.get('source', '-')})")  # fmt: skip
    reused = {fp: runs for fp, runs in runs_by_fingerprint.items() if len(runs) > 1}
    for fingerprint, run_ids in reused.items():
        click.secho(f"REUSED: fingerprint {fingerprint} in runs {', '.join(sorted(run_ids))}",
                    fg="red")  # fmt: skip
    if reused:
        sys.exit(1)
    click.echo(f"{len(events)} issuances, all fresh (no credential shared between runs)")


@audit.command("export")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Default: stdout.")
@_PROJECT
def audit_export(output: Path | None, project_path: Path | None) -> None:
    """Every event as JSON lines, oldest first (with hashes, so the export verifies too)."""
    try:
        with control_plane("read", _server_url(project_path)) as client:
            lines, after = [], 0
            while batch := client.audit(after=after, limit=5000):
                lines += [json.dumps(e, sort_keys=True) for e in batch]
                after = batch[-1]["id"]
    except TofuflowError as err:
        raise _fail(err) from err
    text = "".join(line + "\n" for line in lines)
    if output:
        output.write_text(text)
        click.echo(f"{len(lines)} events written to {output}", err=True)
    else:
        click.echo(text, nl=False)


def _apply_identity(project: Any) -> Mapping[str, Any] | None:
    """The apply identity to present to the control plane, when exactly one workspace has
    one: the run's workspace is only known after asking the control plane."""
    tables = [ws.identity.get("apply") for ws in project.workspaces.values()]
    tables = [t for t in tables if t and t.get("source")]
    return tables[0] if len(tables) == 1 else None


def _server_url(project_path: Path | None) -> str | None:
    if os.environ.get("TOFUFLOW_SERVER_URL"):
        return None  # control_plane() reads it
    try:
        return str(_project(project_path).server_url or "") or None
    except ConfigError:
        if project_path is not None:
            raise
        return None  # no tofuflow.toml: the embedded control plane


def _print_decision(run: Mapping[str, Any], report: AgentReport | None = None) -> None:
    decision = run.get("decision") or {}
    click.echo("")
    for message in decision.get("denies", []):
        click.secho(_clean(report, f"denied: {message}"), fg="red")
    for message in decision.get("warnings", []):
        click.secho(_clean(report, f"warning: {message}"), fg="yellow")
    for message in decision.get("approval_reasons", []):
        click.echo(_clean(report, f"needs approval: {message}"))
    click.echo(f"run {run['id']}: {run['status']} (policy: {decision.get('outcome', '-')})")


def _print_verify(result: Mapping[str, Any]) -> None:
    if result["ok"]:
        click.echo(f"audit log intact: {result['checked']} events verified")
    else:
        where = result.get("first_bad_id") or "the end of the log"
        click.secho(
            f"audit log BROKEN at event {where}: {result['reason']} "
            f"({result['checked']} events verified before it)",
            fg="red",
        )
