"""One stack through the normal run lifecycle, and a whole graph of them.

    report = run_stacks(project, "apply", clients=clients, parallelism=4)

For each stack, in dependency order: its dependencies' outputs become its ``inputs``
variables, then ``plan_workspace`` (planner identity, policy check on the control plane)
and, for apply and destroy, ``apply_run`` when the policy approved the run. Nothing here
bypasses the control plane: a run that needs a person is left waiting for one.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from tofuflow.errors import AuthError, ConfigError, ForbiddenError, StorageError, TofuflowError
from tofuflow.project import Project, WorkspaceConfig
from tofuflow.runs import ControlPlane, Runner, apply_run, plan_workspace, staged
from tofuflow.stacks._cache import locking_binary
from tofuflow.stacks._graph import Closure, input_reference, stack_graph
from tofuflow.stacks._scheduler import Outcome, Report, Status, run_graph
from tofuflow.tofu import Action, Binary, Plan, Redactor, State, StateOutput, find_binary

__all__ = [
    "Clients",
    "Inputs",
    "Mode",
    "StackTask",
    "read_outputs",
    "resolve_inputs",
    "run_stacks",
]

Mode = Literal["plan", "apply", "destroy"]
# (stage, workspace) -> a client with that stage's identity: "plan" (planner; also reads
# the dependencies' state) or "apply" (applier). Called from several threads.
Clients = Callable[[str, WorkspaceConfig], ControlPlane]


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
        run_id: str | None = None
        notes: tuple[str, ...] = ()
        try:
            values, notes = self.inputs(workspace)
            workspace = dataclasses.replace(workspace, variables={**workspace.variables, **values})
            runner = self.runner(workspace)
            planned = plan_workspace(
                workspace, self.clients("plan", workspace), self.context(workspace), runner,
                destroy=self.mode == "destroy",
            )  # fmt: skip
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
        except TofuflowError as err:
            return self.outcome("failed", str(err), run_id, notes)

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
            from tofuflow.tofu._events import parse_event

            del stream
            event = parse_event(line)
            relay(name, mask(event.message if event is not None and event.message else line))

        return Runner(on_output=on_output, cancel_event=self.cancel, binary=self.binary)

    def inputs(self, workspace: WorkspaceConfig) -> tuple[dict[str, Any], tuple[str, ...]]:
        """The ``inputs`` variables from the dependencies' current state, and the notes
        about those left out (``resolve_inputs``; strict for apply)."""
        found = resolve_inputs(
            workspace, self.project, self.clients, self.redactor, self.binary,
            strict=self.mode == "apply",
        )  # fmt: skip
        return dict(found.values), found.notes


@dataclass(frozen=True)
class Inputs:
    """A stack's ``inputs`` as read from its dependencies' current state.

    ``values``: variable → value; ``notes``: why a variable was left out (lenient mode);
    ``sensitive``: the variables whose source output is sensitive (their values are
    already registered with the redactor).
    """

    values: Mapping[str, Any]
    notes: tuple[str, ...] = ()
    sensitive: frozenset[str] = frozenset()


def resolve_inputs(
    workspace: WorkspaceConfig,
    project: Project,
    clients: Clients,
    redactor: Redactor,
    binary: Binary | str | None = None,
    *,
    strict: bool,
) -> Inputs:
    """``workspace.inputs`` (variable → ``"<workspace>.<output>"``) from the dependencies'
    current state (``read_outputs``, each dependency read once).

    A missing value is a ``ConfigError`` when ``strict`` (an apply: the dependency was
    just applied, so the reference is wrong); otherwise it is a note, and the variable is
    left out so that the binary decides (its default, or an error for that stack).
    """
    values: dict[str, Any] = {}
    notes: list[str] = []
    sensitive: set[str] = set()
    outputs: dict[str, Mapping[str, StateOutput] | None] = {}
    for variable, reference in workspace.inputs.items():
        source, output = input_reference(reference)
        if source not in outputs:
            outputs[source] = read_outputs(project.workspace(source), clients, redactor, binary)
        found = outputs[source]
        if found is not None and output in found:
            values[variable] = found[output].value
            if found[output].sensitive:
                sensitive.add(variable)
            continue
        if found is None:
            why = f"{source} has no state yet"
        else:
            known = ", ".join(sorted(found)) or "none"
            why = f"{source} has no output {output!r} (its outputs: {known})"
        if strict:
            raise ConfigError(
                f"workspaces.{workspace.name}.inputs.{variable} = {reference!r}: {why}; "
                f"fix the reference in tofuflow.toml, or add the output to {source}"
            )
        notes.append(f"input {variable} unknown: {why}; planned without it")
    return Inputs(values, tuple(notes), frozenset(sensitive))


def read_outputs(
    workspace: WorkspaceConfig,
    clients: Clients,
    redactor: Redactor,
    binary: Binary | str | None = None,
) -> dict[str, StateOutput] | None:
    """A workspace's root outputs from its current state; None when it has no state.

    With the tofuflow backend the state comes from the state service (with the plan
    stage's identity: planners may read state); an encrypted state, or ``backend =
    "own"``, is read by the binary (``output -json``) in the workspace's directory.
    Sensitive values are registered with ``redactor``.
    """
    client = clients("plan", workspace)
    if workspace.backend == "own":
        return _outputs_by_binary(workspace, client, redactor, binary)
    body = _get_state(client, workspace.name)
    if body is None:
        return None
    state = State.from_json(body)
    if state.encrypted:
        return _outputs_by_binary(workspace, client, redactor, binary)
    for value in state.outputs.values():
        if value.sensitive:
            _register(redactor, value.value)
    return dict(state.outputs)


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


def _get_state(client: ControlPlane, name: str) -> bytes | None:
    try:
        response = httpx.get(
            client.state_url(name), headers={"Authorization": f"Bearer {client.token}"},
            timeout=120,
        )  # fmt: skip
    except httpx.HTTPError as exc:
        raise StorageError(
            f"cannot read the state of {name} from the control plane at {client.url}: {exc}"
        ) from exc
    if response.status_code == 204:
        return None
    if response.is_success:
        return response.content
    try:
        message = str(response.json().get("error") or response.text[:300])
    except ValueError:
        message = response.text[:300]
    cls = {401: AuthError, 403: ForbiddenError}.get(response.status_code, StorageError)
    raise cls(
        f"cannot read the outputs of {name} (state service said {response.status_code}: "
        f"{message}); the plan stage's identity needs read access to the workspaces it "
        "depends on"
    )


def _outputs_by_binary(
    workspace: WorkspaceConfig,
    client: ControlPlane,
    redactor: Redactor,
    binary: Binary | str | None,
) -> dict[str, StateOutput] | None:
    runner = Runner(binary=binary)
    with staged(workspace, "read", client, runner=runner, redactor=redactor) as st:
        st.tofu.init(reconfigure=True)
        found = st.tofu.output()  # registers sensitive values with the redactor
    return found or None


def _register(redactor: Redactor, value: Any) -> None:
    redactor.add_value(value)
