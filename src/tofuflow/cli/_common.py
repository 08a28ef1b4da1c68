"""What the `tofuflow` commands share: the --project option, errors, the runner, the
control plane's URL, agent reporting and the decision and audit summaries."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tofuflow.errors import ConfigError, TofuflowError

if TYPE_CHECKING:
    from tofuflow.ci import AgentReport
    from tofuflow.runs import ControlPlane, Runner, Stage

PROJECT_OPTION = click.option(
    "--project",
    "project_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The tofuflow.toml to use (default: searched upward from the current directory).",
)


class WorkspaceArgument(click.Argument):
    """A WORKSPACE argument of tofuflow.toml: when it is missing, the error names the
    workspaces the file defines (``@click.argument("workspace", cls=WorkspaceArgument)``)."""

    def process_value(self, ctx: click.Context, value: Any) -> Any:
        try:
            return super().process_value(ctx, value)
        except click.MissingParameter as err:
            try:
                project = load_project_file(ctx.params.get("project_path"))
            except ConfigError:
                raise err from None  # no usable file: click's message is all there is
            names = ", ".join(project.workspaces) or "none"
            raise click.MissingParameter(
                f"{project.path.name} defines: {names}", ctx=ctx, param=self
            ) from None


class RunArgument(click.Argument):
    """A RUN argument: when it is missing, the error says where run ids come from
    (``@click.argument("run_id", metavar="RUN", cls=RunArgument)``)."""

    def process_value(self, ctx: click.Context, value: Any) -> Any:
        try:
            return super().process_value(ctx, value)
        except click.MissingParameter:
            raise click.MissingParameter(
                "The id `tofuflow plan` printed (run <id>: …); `tofuflow runs list` shows "
                "the recent ones",
                ctx=ctx,
                param=self,
            ) from None


@contextmanager
def control_plane(
    stage: Stage,
    url: str | None,
    identity: Mapping[str, Any] | None = None,
    *,
    description: str = "",
    workspace: str = "*",
    where: str | None = None,
) -> Iterator[ControlPlane]:
    """``tofuflow.runs.connect`` for a command: ``url`` as ``configured_url`` resolved it
    (None: the embedded plane, whose token says which command minted it, covers only
    ``workspace`` and is revoked when the command ends); ``where`` names the identity
    table in its errors."""
    from tofuflow.ci import AzureDevOpsLog, on_agent
    from tofuflow.runs import check_no_stray_token, connect

    check_no_stray_token(url)
    with connect(
        stage, url=url, identity=identity, description=description or command_line(),
        workspace=workspace, where=where,
    ) as client:  # fmt: skip
        if on_agent() and client.renewable:
            # A pipeline OIDC token, and each renewal, is masked in the job's log before
            # it is used (also one fetched only to find the run's workspace).
            log = AzureDevOpsLog()
            log.set_secret(client.token)
            client.on_token.append(log.set_secret)
        yield client


def command_line() -> str:
    """What the embedded plane's token is for: the command and the local user, e.g.
    ``tofuflow plan app/dev (alice)`` — the requester the runs list shows."""
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = f"uid {os.getuid()}"
    return f"{' '.join(['tofuflow', *sys.argv[1:4]])} ({user})"[:200]


def wired(workspace: Any, project: Any, client: ControlPlane) -> Any:
    """``workspace`` with its ``inputs`` read from its dependencies' state, as run-all and
    Airflow read them (``tofuflow.runs.resolve_inputs``); an input that cannot be read yet
    is left to the binary (its default, or its error), with a warning."""
    if not workspace.inputs:
        return workspace
    from tofuflow.runs import resolve_inputs, with_inputs
    from tofuflow.tofu import Redactor

    found = resolve_inputs(workspace, project, lambda _s, _w: client, Redactor(), strict=False)
    for note in found.notes:
        click.secho(f"warning: {workspace.name}: {note}", fg="yellow", err=True)
    return with_inputs(workspace, found)


def fail(err: TofuflowError, report: AgentReport | None = None) -> click.ClickException:
    return click.ClickException(clean(report, str(err)))


# On an Azure Pipelines agent (TF_BUILD=True): logging commands around plan and apply.


def agent_report() -> AgentReport | None:
    from tofuflow.ci import AgentReport, AzureDevOpsLog, on_agent

    return AgentReport(AzureDevOpsLog()) if on_agent() else None


@contextmanager
def reporting(report: AgentReport | None, title: str) -> Iterator[None]:
    """The binary's output in a group; an error becomes issues and ``task.complete Failed``."""
    if report is None:
        yield
        return
    with report.stage(title):
        yield


def announce(report: AgentReport | None, token: str, directory: Path) -> None:
    if report is not None:
        report.directory = directory
        report.log.set_secret(token)  # the control plane token: masked before anything runs


def cli_runner(report: AgentReport | None, *, progress_of: int | None = None) -> Runner:
    """The runner for a command. ``progress_of``: the number of planned changes of an
    apply, whose per-resource lines are then shown as they happen, counted."""
    from tofuflow.cli import CANCEL
    from tofuflow.runs import Runner

    if report is not None:
        return Runner(on_output=report.on_output, on_event=report.on_event, cancel_event=CANCEL)
    if progress_of is None:
        return Runner(cancel_event=CANCEL)
    return Runner(on_event=ApplyProgress(progress_of), cancel_event=CANCEL)


# The progress lines worth showing a person; the rest of the -json stream is detail.
SHOWN_EVENTS = frozenset({"apply_start", "apply_complete", "apply_errored", "diagnostic"})


class ApplyProgress:
    """Per-resource lines of an apply, as they happen: ``[ 12/200  3s] address: message``."""

    def __init__(self, total: int) -> None:
        import time

        self.total = total
        self.done = 0
        self._clock = time.monotonic
        self._started = time.monotonic()
        self._width = len(str(total))

    def __call__(self, event: Any) -> None:
        if event.type not in SHOWN_EVENTS or not event.message:
            return
        if event.type == "apply_complete":
            self.done += 1
        elapsed = int(self._clock() - self._started)
        prefix = f"[{self.done:>{self._width}}/{self.total} {elapsed:>3}s]"
        click.echo(f"{prefix} {event.message}")
        sys.stdout.flush()  # live in a CI log too, not when the buffer fills


@contextmanager
def saying_how_far(
    last_run: Callable[[], Mapping[str, Any] | None],
    next_step: str | None = None,
    report: AgentReport | None = None,
) -> Iterator[None]:
    """Ctrl-C or a cancellation inside (the binary stopped gracefully): an error that says
    how far ``last_run()`` got, where the state is and ``next_step``, never a bare
    ``Aborted.``."""
    from tofuflow.errors import TofuCancelledError
    from tofuflow.runs import interrupted_summary

    try:
        yield
    except (TofuCancelledError, KeyboardInterrupt) as err:
        run = last_run()
        line = (
            interrupted_summary(run, next_step)
            if run is not None
            else f"interrupted before a run started; {next_step}"
        )
        raise click.ClickException(clean(report, line)) from err


@contextmanager
def saying_the_plan_stopped(
    workspace: str, next_step: str | None = None, report: AgentReport | None = None
) -> Iterator[None]:
    """Ctrl-C or a cancellation while planning: one line saying that nothing was applied
    and what next, not ``Aborted.`` nor the binary's complaint that a read-only plan
    could not save state on its way out."""
    from tofuflow.errors import TofuCancelledError

    try:
        yield
    except (TofuCancelledError, KeyboardInterrupt) as err:
        raise click.ClickException(clean(report, plan_stopped(workspace, next_step))) from err


@contextmanager
def saying_what_stands(
    line: Callable[[], str | None], report: AgentReport | None = None
) -> Iterator[None]:
    """Ctrl-C outside the steps that say how far they got (starting the embedded control
    plane, waiting for its first answer, closing it): ``line()``, what stands then, as
    the one-line error; None lets click say ``Aborted.``."""
    try:
        yield
    except KeyboardInterrupt as err:
        said = line()
        if said is None:
            raise
        raise click.ClickException(clean(report, said)) from err


@contextmanager
def saying_the_run_stands(
    run: Mapping[str, Any], report: AgentReport | None = None
) -> Iterator[None]:
    """Ctrl-C after the plan was submitted and decided (printing it, say): the run stands;
    one line names it, its status and what to do, where click would say ``Aborted.``
    before the run id was printed."""
    try:
        yield
    except KeyboardInterrupt as err:
        raise click.ClickException(clean(report, run_stands(run))) from err


def run_stands(run: Mapping[str, Any]) -> str:
    """The line for a Ctrl-C once the plan of ``run`` had finished: the run stands."""
    run_id, status = run["id"], run["status"]
    drop = f"`tofuflow runs cancel {run_id}` drops it"
    if status == "approved":
        then = f"`tofuflow apply {run_id}` applies it, {drop}"
    elif status == "needs_approval":
        approve = f"`tofuflow approve {run_id}` (an approver)"
        then = f"{approve}, then `tofuflow apply {run_id}`; {drop}"
    else:
        then = "nothing to apply"
    workspace = run["workspace"]
    return f"interrupted: the plan of {workspace} had finished: run {run_id} is {status}; {then}"


def plan_stopped(workspace: str, next_step: str | None = None) -> str:
    """What an interrupted plan left: nothing applied, its run cancelled (plan_workspace
    records that), and ``next_step`` (default: plan again)."""
    next_step = next_step or f"run `tofuflow plan {workspace}` again"
    return (
        f"interrupted: the plan of {workspace} stopped before it finished, so nothing was "
        f"applied (a run it had made is recorded cancelled); {next_step}"
    )


def aligned(table: Sequence[Sequence[str]]) -> str:
    """Rows (a header first) as columns two spaces apart, each as wide as its widest cell."""
    widths = [max(len(row[column]) for row in table) for column in range(len(table[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in table
    )


def clean(report: AgentReport | None, text: str) -> str:
    """On an agent, user-controlled text must not carry a logging command."""
    if report is None:
        return text
    from tofuflow.ci import neutralise

    return "\n".join(neutralise(line) for line in text.split("\n"))


def load_project_file(path: Path | None) -> Any:
    from tofuflow.project import load_project

    return load_project(path)


@contextmanager
def apply_control_plane(project: Any, run_id: str) -> Iterator[tuple[ControlPlane, Any]]:
    """The control plane as the apply identity of the run's own workspace, and the run.

    The run's workspace is only known by asking the control plane, so with several
    workspaces' ``identity.apply`` tables each is tried (in file order) until one may
    read the run; then the run's workspace's table is used, whichever that is.
    """
    from tofuflow.errors import AuthError, ForbiddenError, NotFoundError
    from tofuflow.runs import STAGE_TOKEN_VARIABLES

    url = project_url(project)
    tables = {name: ws.identity.get("apply") for name, ws in project.workspaces.items()}
    distinct = distinct_identities(project.workspaces.values(), "apply")
    chosen = next(iter(distinct), "")  # whose table: its errors name that workspace
    workspace = "*"
    if url is None:  # embedded: an applier token on the run's workspace only
        with control_plane("read", None) as reader:
            workspace = reader.run(run_id)["workspace"]
    tokens_set = any(os.environ.get(v) for v in (STAGE_TOKEN_VARIABLES["apply"], "TOFUFLOW_TOKEN"))
    if url is not None and not tokens_set and len(distinct) > 1:
        for name, table in distinct.items():
            try:
                where = identity_table(name, "apply")
                with control_plane("apply", url, table, where=where) as probe:
                    workspace = probe.run(run_id)["workspace"]
            except (AuthError, ForbiddenError, NotFoundError):
                continue  # this identity may not read the run (or has no token here)
            chosen = workspace
            break
    with control_plane(
        "apply", url, tables.get(chosen), workspace=workspace, where=identity_table(chosen, "apply")
    ) as client:
        yield client, client.run(run_id)


def distinct_identities(workspaces: Iterable[Any], stage: str) -> dict[str, Mapping[str, Any]]:
    """Each ``stage`` identity table with a token source once, under the first of
    ``workspaces`` that has it (its errors name that workspace): ``{name: table}``."""
    distinct: dict[str, Mapping[str, Any]] = {}
    for ws in workspaces:
        table = ws.identity.get(stage)
        if table and table.get("source") and table not in distinct.values():
            distinct[ws.name] = table
    return distinct


def identity_table(workspace: str, stage: str) -> str:
    """Where ``workspace``'s identity table for ``stage`` is, for the errors about it."""
    return f"workspaces.{workspace}.identity.{stage}"


def project_url(project: Any) -> str | None:
    """TOFUFLOW_SERVER_URL, else the loaded project's ``[server] url``, else None."""
    from tofuflow.runs import server_url

    return server_url(project.server_url)


def configured_url(project_path: Path | None, configured: str | None = None) -> str | None:
    """Where the control plane is: TOFUFLOW_SERVER_URL, else tofuflow.toml's ``[server]
    url`` (``configured``, or read from the project file), else None (embedded)."""
    from tofuflow.runs import server_url

    if os.environ.get("TOFUFLOW_SERVER_URL") or configured:
        return server_url(configured)
    try:
        return server_url(str(load_project_file(project_path).server_url or "") or None)
    except ConfigError:
        if project_path is not None:
            raise
        return None  # no tofuflow.toml: the embedded control plane


def console_link(server: str | None, run_id: str) -> str | None:
    """The run's page in the web console of a remote control plane (None: embedded)."""
    from tofuflow.ci import console_link as link

    return link(server, run_id=run_id) if server else None


def print_decision(run: Mapping[str, Any], report: AgentReport | None = None) -> None:
    decision = run.get("decision") or {}
    click.echo("")
    for message in decision.get("denies", []):
        click.secho(clean(report, f"denied: {message}"), fg="red")
    for message in decision.get("warnings", []):
        click.secho(clean(report, f"warning: {message}"), fg="yellow")
    for message in decision.get("approval_reasons", []):
        click.echo(clean(report, f"needs approval: {message}"))
    from tofuflow.runs import lock_warning

    if warning := lock_warning(run):
        if report is not None:
            report.warn(warning)  # logissue: escaped, shown in the build summary
        else:
            click.secho(f"warning: {warning}", fg="yellow")
    click.echo(f"run {run['id']}: {run['status']} (policy: {decision.get('outcome', '-')})")


def print_verify(result: Mapping[str, Any]) -> None:
    if result["ok"]:
        click.echo(f"audit log intact: {result['checked']} events verified")
    else:
        where = result.get("first_bad_id") or "the end of the log"
        click.secho(
            f"audit log BROKEN at event {where}: {result['reason']} "
            f"({result['checked']} events verified before it)",
            fg="red",
        )
