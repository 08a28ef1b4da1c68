"""A workspace's ``inputs``: variables read from its dependencies' current state.

    found = resolve_inputs(ws, project, clients, redactor, strict=False)
    ws = with_inputs(ws, found)          # inputs over tofuflow.toml's variables

One resolution for every entry point — ``tofuflow plan``, ``drift``, ``run-all`` and the
Airflow operators — so that a workspace planned alone sees the same wiring as in a stack.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tofuflow.errors import (
    AuthError,
    ConfigError,
    ForbiddenError,
)
from tofuflow.project import Project, WorkspaceConfig
from tofuflow.runs._client import ControlPlane
from tofuflow.runs._staged import Runner, staged
from tofuflow.tofu import Binary, Redactor, State, StateOutput

__all__ = [
    "Clients",
    "Inputs",
    "input_reference",
    "read_outputs",
    "resolve_inputs",
    "with_inputs",
]

# (stage, workspace) -> a client with that stage's identity: "plan" (planner; also reads
# the dependencies' state) or "apply" (applier). Called from several threads.
Clients = Callable[[str, WorkspaceConfig], ControlPlane]


def input_reference(reference: str) -> tuple[str, str]:
    """``"network/eu.vpc_id"`` → ``("network/eu", "vpc_id")`` (outputs have no ``.``)."""
    workspace, _, output = reference.rpartition(".")
    return workspace, output


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
    # Left out although their dependency has state: it has no such output (a typo, or an
    # output the dependency's pending change adds). The policies are told (a person checks).
    unknown: tuple[str, ...] = ()


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
    unknown: list[str] = []
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
            unknown.append(variable)
        if strict:
            raise ConfigError(
                f"workspaces.{workspace.name}.inputs.{variable} = {reference!r}: {why}; "
                f"fix the reference in tofuflow.toml, or add the output to {source}"
            )
        notes.append(f"input {variable} unknown: {why}; planned without it")
    return Inputs(values, tuple(notes), frozenset(sensitive), tuple(unknown))


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
            redactor.add_value(value.value)
    return dict(state.outputs)


def with_inputs(workspace: WorkspaceConfig, found: Inputs) -> WorkspaceConfig:
    """``workspace`` with the resolved inputs over its ``tofuflow.toml`` variables."""
    if not found.values and not found.unknown:
        return workspace
    return dataclasses.replace(
        workspace, variables={**workspace.variables, **found.values}, unknown_inputs=found.unknown
    )


def _get_state(client: ControlPlane, name: str) -> bytes | None:
    try:
        return client.state(name)
    except (AuthError, ForbiddenError) as exc:
        raise type(exc)(
            f"cannot read the outputs of {name} ({exc}); the plan stage's identity needs "
            "read access to the workspaces it depends on"
        ) from exc


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
