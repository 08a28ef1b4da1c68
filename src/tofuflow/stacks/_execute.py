"""One stack through the normal run lifecycle, and a whole graph of them.

    report = run_stacks(project, "apply", clients=clients, parallelism=4)

For each stack, in dependency order: its dependencies' outputs become its ``inputs``
variables, then ``plan_workspace`` (planner identity, policy check on the control plane)
and, for apply and destroy, ``apply_run`` when the policy approved the run. Nothing here
bypasses the control plane: a run that needs a person is left waiting for one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tofuflow.errors import TofuCancelledError, TofuflowError
from tofuflow.project import Project, WorkspaceConfig
from tofuflow.runs import (
    Clients,
    Runner,
    apply_run,
    interrupted_summary,
    plan_workspace,
    resolve_inputs,
    with_inputs,
)
from tofuflow.stacks._cache import locking_binary
from tofuflow.stacks._graph import Closure, stack_graph
from tofuflow.stacks._scheduler import Outcome, Report, Status, run_graph
from tofuflow.tofu import Action, Binary, Plan, Redactor, find_binary

__all__ = ["Mode", "StackTask", "run_stacks"]

Mode = Literal["plan", "apply", "destroy"]


@dataclass
class StackTask:
    """``task(name) -> Outcome`` for ``run_graph``: plan, and apply what policy approved."""

    project: Project
    mode: Mode
    clients: Clients
    context: Callable[[WorkspaceConfig], Mapping[str, Any]]
    binary: Binary | None = None
    cancel: threading.Event | None = None
    on_output: Callable[[str, str], None] | None = None  # (workspace, line), masked
    redactor: Redactor = field(default_factory=Redactor)

    def __call__(self, name: str) -> Outcome:
        workspace = self.project.workspace(name)
        made: list[str] = []  # the run's id once it exists, also when its plan fails
        notes: tuple[str, ...] = ()
        try:
            found = resolve_inputs(
                workspace, self.project, self.clients, self.redactor, self.binary,
                strict=self.mode == "apply",
            )  # fmt: skip
            notes = found.notes
            workspace = with_inputs(workspace, found)
            runner = self.runner(workspace)
            planned = plan_workspace(
                workspace, self.clients("plan", workspace), self.context(workspace), runner,
                destroy=self.mode == "destroy", on_run=made.append,
            )  # fmt: skip
            notes = (*notes, *planned.warnings())
            run = planned.run
            run_id = str(run["id"])
            status = str(run["status"])
            decision = run.get("decision") or {}
            changes = _changes(planned.plan)
            changed = status in ("approved", "needs_approval")
            if status == "denied":
                denies = "; ".join(decision.get("denies") or []) or "no reason given"
                return self.outcome("failed", f"denied by policy: {denies}", run_id, notes)
            if status not in ("no_changes", "approved", "needs_approval"):
                return self.outcome("failed", f"run {run_id} is {status}", run_id, notes)
            if status == "no_changes":
                return self.outcome("succeeded", "no changes", run_id, notes)
            if self.mode == "plan":
                waiting = "approved by policy" if status == "approved" else "needs approval"
                return self.outcome("succeeded", f"{changes} ({waiting})", run_id, notes, changed)
            if status == "needs_approval":
                reasons = "; ".join(decision.get("approval_reasons") or [])
                return self.outcome(
                    "awaiting_approval",
                    f"{changes}: {reasons or 'a person must approve'}. Approve and apply it "
                    f"(tofuflow approve {run_id}; tofuflow apply {run_id}), then run "
                    "run-all again for the stacks that were skipped",
                    run_id, notes, changed,
                )  # fmt: skip
            done = apply_run(run_id, workspace, self.clients("apply", workspace), runner)
            serial = (done.get("result") or {}).get("serial")
            applied = "destroyed" if self.mode == "destroy" else "applied"
            return self.outcome(
                "succeeded", f"{applied}: {changes}; state serial {serial}", run_id, notes, changed
            )
        except TofuCancelledError:
            made_id = made[0] if made else None
            return self.outcome("cancelled", self._stopped(name, made_id), made_id, notes)
        except TofuflowError as err:
            return self.outcome("failed", str(err), made[0] if made else None, notes)

    def _stopped(self, name: str, run_id: str | None) -> str:
        """What a stack stopped by the run's cancellation got done, from its run."""
        if run_id is None:
            return "stopped while planning"
        try:
            run = self.clients("plan", self.project.workspace(name)).run(run_id)
        except TofuflowError:
            return f"stopped (run {run_id})"
        if run.get("state_version") is None and not (run.get("result") or {}):
            return f"stopped before applying (run {run_id} is {run.get('status')})"
        return interrupted_summary(run, f"run `tofuflow run-all {self.mode}` to continue")

    def outcome(
        self,
        status: Status,
        detail: str,
        run_id: str | None,
        notes: tuple[str, ...],
        changed: bool = False,
    ) -> Outcome:
        masked = tuple(self.redactor.redact(note) for note in notes)
        return Outcome(status, self.redactor.redact(detail), run_id, masked, changed)

    def runner(self, workspace: WorkspaceConfig) -> Runner:
        relay = self.on_output
        if relay is None:
            return Runner(cancel_event=self.cancel, binary=self.binary)
        name, mask = workspace.name, self.redactor.redact

        def on_output(stream: str, line: str) -> None:
            from tofuflow.tofu import parse_event

            del stream
            event = parse_event(line)
            relay(name, mask(event.message if event is not None and event.message else line))

        return Runner(on_output=on_output, cancel_event=self.cancel, binary=self.binary)


def run_stacks(
    project: Project,
    mode: Mode,
    workspaces: Iterable[str] | None = None,
    *,
    clients: Clients,
    parallelism: int = 4,
    context: Callable[[WorkspaceConfig], Mapping[str, Any]] | None = None,
    binary: Binary | None = None,
    cancel: threading.Event | None = None,
    on_start: Callable[[str], None] | None = None,
    on_finish: Callable[[Outcome], None] | None = None,
    on_output: Callable[[str, str], None] | None = None,
    redactor: Redactor | None = None,
) -> Report:
    """Plan, apply or destroy ``workspaces`` (default: all) and what they need, as a DAG.

    Plan and apply add the selected workspaces' dependencies; destroy adds their
    dependants and runs backwards. Every stack's binary shares one plugin cache, with
    ``init`` serialised under its lock (``tofuflow.stacks._cache``).
    """
    closure: Closure = "dependants" if mode == "destroy" else "dependencies"
    graph = stack_graph(project, workspaces, closure=closure)
    with locking_binary(binary or find_binary()) as wrapped:
        task = StackTask(
            project, mode, clients, context or _detected_context, binary=wrapped,
            cancel=cancel, on_output=on_output, redactor=redactor or Redactor(),
        )  # fmt: skip
        return run_graph(
            graph, task, parallelism=parallelism, reverse=mode == "destroy", cancel=cancel,
            on_start=on_start, on_finish=on_finish,
        )  # fmt: skip


def _detected_context(workspace: WorkspaceConfig) -> Mapping[str, Any]:
    from tofuflow.ci import detect_run_context

    return detect_run_context(cwd=workspace.directory).to_json()


def _changes(plan: Plan) -> str:
    counts = plan.counts
    text = f"+{counts.to_add} ~{counts.change} -{counts.to_destroy}"
    outputs = sum(1 for oc in plan.output_changes.values() if oc.action is not Action.NO_OP)
    return text + (f", {outputs} output(s) changed" if outputs else "")
