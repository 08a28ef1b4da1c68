"""`tofuflow run-all plan|apply|destroy`: every stack of tofuflow.toml, in dependency order.

One control plane for the whole run (the embedded one is started once and shared by the
worker threads), one client per stage and identity, one plugin cache.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from tofuflow.errors import TofuflowError

if TYPE_CHECKING:
    from tofuflow.project import Project, WorkspaceConfig
    from tofuflow.runs import ControlPlane, Stage
    from tofuflow.stacks import Closure, Mode, Outcome, Report

__all__ = ["run_all"]

_ACTIONS = ("plan", "apply", "destroy")
_MARKS = {
    "succeeded": "ok",
    "failed": "FAILED",
    "awaiting_approval": "waiting",
    "skipped": "skipped",
    "cancelled": "cancelled",
}


@click.command("run-all")
@click.argument("action", type=click.Choice(_ACTIONS), metavar="plan|apply|destroy")
@click.argument("workspaces", nargs=-1, metavar="[WORKSPACE]...")
@click.option(
    "--parallelism",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="How many stacks may run at the same time.",
)
@click.option(
    "--project",
    "project_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The tofuflow.toml to use (default: searched upward from the current directory).",
)
@click.option(
    "-v", "--verbose", is_flag=True, help="Relay the binary's output, each line prefixed [STACK]."
)
def run_all(
    action: str,
    workspaces: tuple[str, ...],
    parallelism: int,
    project_path: Path | None,
    verbose: bool,
) -> None:
    """Plan, apply or destroy stacks in dependency order (depends_on in tofuflow.toml).

    \b
    Without WORKSPACE: every workspace. plan and apply also run what the named
    workspaces depend on; destroy also destroys what depends on them, dependants first.
    Independent stacks run in parallel. When a stack fails or waits for an approval,
    the stacks that depend on it are skipped; all others still run.

    \b
    Exit codes: 0 everything succeeded (plan: and nothing to change),
                2 apply/destroy: some stacks wait for an approver (none failed);
                  plan: some stacks have changes (none failed),
                1 a stack failed, or an error.
    """
    from tofuflow.cli import CANCEL, CANCELLABLE
    from tofuflow.project import load_project
    from tofuflow.stacks import run_stacks, stack_graph

    CANCELLABLE.set()
    printer = _Printer()
    try:
        project = load_project(project_path)
        mode = cast("Mode", action)
        closure: Closure = "dependants" if mode == "destroy" else "dependencies"
        graph = stack_graph(project, workspaces or None, closure=closure)
        if not graph:
            raise click.ClickException(
                f"{project.path} defines no workspaces: add a [workspaces.NAME] table"
            )
        stages = ("plan",) if action == "plan" else ("plan", "apply")
        with ExitStack() as stack:
            clients = _Clients(stack, project, stages, graph, printer)
            printer.line(
                f"run-all {action}: {len(graph)} stacks, parallelism {parallelism}"
                + ("" if not workspaces else f" (selected: {', '.join(workspaces)})")
            )
            progress = _Progress(printer, len(graph))
            report = run_stacks(
                project, mode, workspaces or None,
                clients=clients, parallelism=parallelism, cancel=CANCEL,
                on_start=progress.started, on_finish=progress.finished,
                on_output=printer.relay if verbose else None, redactor=printer.redactor,
            )  # fmt: skip
    except TofuflowError as err:
        raise click.ClickException(printer.clean(str(err))) from err
    _print_table(printer, report, action)
    if report.with_status("cancelled"):
        why = "interrupted (Ctrl-C)" if report.interrupted else "cancelled"
        # A run-all never applies a run that needs a person, and a resource left tainted
        # is replaced by the next plan: not routine under the built-in policies.
        approve = (
            ". A stack waiting for an approver (as the replacement of a tainted resource "
            "does, under the built-in policies) goes on only once its run is approved and "
            "applied: `tofuflow approve RUN`, then `tofuflow apply RUN`"
            if action != "plan"
            else ""
        )
        printer.line(
            f"run-all {action} was {why}: the rows above say what each stack got done; "
            f"run `tofuflow run-all {action}` again to continue{approve}",
            fg="yellow",
        )
    sys.exit(_exit_code(report, action))


class _Printer:
    """Every line goes through here: one at a time, masked, neutralised on an agent."""

    def __init__(self) -> None:
        from tofuflow.ci import on_agent
        from tofuflow.tofu import Redactor

        self.redactor = Redactor()
        self._lock = threading.Lock()
        self._agent = on_agent()

    def clean(self, text: str) -> str:
        text = self.redactor.redact(text)
        if not self._agent:
            return text
        from tofuflow.ci import neutralise

        return "\n".join(neutralise(line) for line in text.split("\n"))

    def line(self, text: str, **style: Any) -> None:
        with self._lock:
            click.secho(self.clean(text), **style)

    def relay(self, workspace: str, line: str) -> None:
        self.line(f"[{workspace}] {line}")


class _Progress:
    def __init__(self, printer: _Printer, total: int) -> None:
        self.printer = printer
        self.total = total
        self.done = 0
        self.width = len(str(total))

    def started(self, name: str) -> None:
        self.printer.line(f"{'':>{2 * self.width + 3}} start    {name}")

    def finished(self, outcome: Outcome) -> None:
        self.done += 1
        counter = f"[{self.done:>{self.width}}/{self.total}]"
        lines = outcome.detail.split("\n") if outcome.detail else [""]
        facts = [f"{outcome.duration:.1f}s"] if outcome.duration is not None else []
        facts += [f"run {outcome.run_id}"] if outcome.run_id else []
        about = f" ({', '.join(facts)})" if facts else ""
        color = {"failed": "red", "awaiting_approval": "yellow", "skipped": "yellow"}
        self.printer.line(
            f"{counter} {_MARKS[outcome.status]:<8} {outcome.name}{about}: {lines[0]}",
            fg=color.get(outcome.status),
        )
        for more in lines[1:]:
            self.printer.line(f"{'':>{2 * self.width + 3}}   {more}")
        for note in outcome.notes:
            self.printer.line(f"{'':>{2 * self.width + 3}}   note: {note}", fg="yellow")


def _print_table(printer: _Printer, report: Report, action: str) -> None:
    rows = sorted(report.outcomes.values(), key=lambda o: o.name)
    if not rows:
        return
    name_width = max(5, *(len(o.name) for o in rows))
    printer.line("")
    printer.line(f"{'STACK':<{name_width}}  {'RESULT':<23}  {'TIME':>7}  {'RUN':<16}  DETAIL")
    for o in rows:
        took = f"{o.duration:.1f}s" if o.duration is not None else "-"
        detail = o.detail.split("\n")[0]
        if len(detail) > 100:
            detail = detail[:99] + "…"
        if o.notes:
            detail += f" [{len(o.notes)} input(s) unknown: see above]"
        printer.line(
            f"{o.name:<{name_width}}  {o.label:<23}  {took:>7}  {o.run_id or '-':<16}  {detail}"
        )
    counts: dict[str, int] = {str(k): v for k, v in report.counts().items()}
    order = ("succeeded", "failed", "awaiting_approval", "skipped", "cancelled")
    parts = [f"{counts[s]} {s.replace('_', ' ')}" for s in order if counts.get(s)]
    printer.line("")
    printer.line(
        f"run-all {action}: {len(rows)} stacks in {report.wall_time:.1f}s "
        f"(at most {report.max_running} at once): {', '.join(parts)}"
    )


def _exit_code(report: Report, action: str) -> int:
    counts = report.counts()
    if counts.get("failed") or counts.get("cancelled"):
        return 1
    if action == "plan":
        return 2 if any(o.changed for o in report.outcomes.values()) else 0
    return 2 if counts.get("awaiting_approval") else 0


class _Clients:
    """One ControlPlane client per stage and identity, shared by every stack's thread.

    Created up front (so a missing token fails once, before anything runs) for every
    stack of the run and, for the plan stage, for the dependencies whose outputs they
    read (a destroy's selection leaves those out).
    """

    def __init__(
        self,
        stack: ExitStack,
        project: Project,
        stages: Iterable[str],
        workspaces: Iterable[str],
        printer: _Printer,
    ) -> None:
        from tofuflow.runs import check_no_stray_token, server_url

        self._stack = stack
        self._printer = printer
        self._lock = threading.Lock()
        self._by_key: dict[tuple[str, str], ControlPlane] = {}
        self._url = server_url(project.server_url)
        check_no_stray_token(self._url)
        if not self._url:
            # One in-process control plane for the whole run: the threads share it.
            for stage in stages:
                self._by_key[(stage, "")] = self._connect(stage, None)
            from tofuflow.embedded import data_dir

            url = self._by_key[(stage, "")].url
            printer.line(f"control plane: embedded at {url} ({data_dir()})")
            return
        printer.line(f"control plane: {self._url}")
        names = list(workspaces)
        readers = {d for n in names for d in project.workspace(n).depends_on}
        for stage in stages:
            for name in sorted(set(names) | (readers if stage == "plan" else set())):
                self(stage, project.workspace(name))

    def __call__(self, stage: str, workspace: WorkspaceConfig) -> ControlPlane:
        if not self._url:
            return self._by_key[(stage, "")]
        identity = workspace.identity.get(stage)
        key = (stage, _identity_key(identity))
        with self._lock:
            if key not in self._by_key:
                client = self._connect(stage, identity, workspace.name)
                self._printer.redactor.add(client.token)
                self._by_key[key] = client
            return self._by_key[key]

    def _connect(
        self, stage: str, identity: Mapping[str, Any] | None, workspace: str | None = None
    ) -> ControlPlane:
        """A client as ``identity``, the table of ``workspace`` (the first that has it),
        which its errors name."""
        from tofuflow.cli._common import command_line, identity_table
        from tofuflow.runs import connect

        # The requester runs show: `tofuflow run-all apply net (alice)`, as for `plan`.
        return self._stack.enter_context(connect(
            cast("Stage", stage), url=self._url, identity=identity, description=command_line(),
            where=identity_table(workspace, stage) if workspace else None,
        ))  # fmt: skip


def _identity_key(identity: Mapping[str, Any] | None) -> str:
    return json.dumps(identity or {}, sort_keys=True, default=str)
