"""The stack graph: which workspace of ``tofuflow.toml`` must run before which.

    graph = stack_graph(project)                  # {"app": frozenset({"network"}), ...}
    graph = stack_graph(project, ["app"])         # "app" and everything it depends on
    graph = stack_graph(project, ["network"], closure="dependants")   # for a destroy

Each key is a workspace; its value is the set of workspaces it depends on directly
(``depends_on``), restricted to the selection. An edge ``app → network`` means "run
network first" (for plan and apply; a destroy walks the same graph backwards).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from tofuflow.errors import ConfigError, CycleError
from tofuflow.project import Project

__all__ = [
    "Closure",
    "CycleError",
    "Graph",
    "dependants",
    "find_cycle",
    "stack_graph",
    "transitive_dependants",
    "transitive_dependencies",
]

Graph = Mapping[str, frozenset[str]]
Closure = Literal["dependencies", "dependants"]


def stack_graph(
    project: Project,
    workspaces: Iterable[str] | None = None,
    *,
    closure: Closure = "dependencies",
) -> dict[str, frozenset[str]]:
    """Workspace → the workspaces it depends on directly, for the selected workspaces.

    ``workspaces=None`` selects every workspace of the project. A selection is widened
    with everything it depends on (``closure="dependencies"``, what plan and apply need:
    a stack reads its dependencies' outputs) or with everything that depends on it
    (``closure="dependants"``, what a destroy needs: nothing may be left pointing at a
    destroyed stack). Raises ``ConfigError`` for an unknown workspace or dependency and
    ``CycleError`` (a ``ConfigError``) naming the cycle.
    """
    full = _full_graph(project)
    if workspaces is None:
        chosen = set(full)
    else:
        chosen = set()
        for name in workspaces:
            project.workspace(name)  # ConfigError listing the defined ones
            chosen.add(name)
        if closure == "dependencies":
            chosen |= transitive_dependencies(full, chosen)
        elif closure == "dependants":
            chosen |= transitive_dependants(full, chosen)
        else:
            raise ValueError(f"closure must be 'dependencies' or 'dependants', not {closure!r}")
    graph = {name: frozenset(full[name] & chosen) for name in sorted(chosen)}
    cycle = find_cycle(graph)
    if cycle:
        raise CycleError(
            f"{project.path}: depends_on forms a cycle: {' → '.join(cycle)} (each depends on "
            "the next), so no order can run them; remove one of these depends_on entries",
            cycle,
        )
    return graph


def dependants(graph: Graph) -> dict[str, frozenset[str]]:
    """The reverse graph: workspace → the workspaces that depend on it directly."""
    reverse: dict[str, set[str]] = {name: set() for name in graph}
    for name, needs in graph.items():
        for dependency in needs:
            reverse.setdefault(dependency, set()).add(name)
    return {name: frozenset(found) for name, found in reverse.items()}


def transitive_dependencies(graph: Graph, names: Iterable[str]) -> set[str]:
    """Everything ``names`` depend on, directly or not (``names`` themselves excluded)."""
    return _reach(graph, names)


def transitive_dependants(graph: Graph, names: Iterable[str]) -> set[str]:
    """Everything that depends on ``names``, directly or not (``names`` excluded)."""
    return _reach(dependants(graph), names)


def find_cycle(graph: Graph) -> list[str] | None:
    """One cycle as ``[a, b, c, a]`` (a depends on b, b on c, c on a), or None.

    Deterministic: the search starts from the names in sorted order.
    """
    finished: set[str] = set()
    for root in sorted(graph):
        if root in finished:
            continue
        # Iterative depth-first search: a long chain must not hit the recursion limit.
        path = [root]
        on_path = {root}
        pending = [iter(sorted(graph.get(root, ())))]
        while pending:
            dependency = next(pending[-1], None)
            if dependency is None:
                done = path.pop()
                on_path.discard(done)
                finished.add(done)
                pending.pop()
            elif dependency in on_path:
                return [*path[path.index(dependency) :], dependency]
            elif dependency not in finished:
                path.append(dependency)
                on_path.add(dependency)
                pending.append(iter(sorted(graph.get(dependency, ()))))
    return None


def _full_graph(project: Project) -> dict[str, frozenset[str]]:
    graph = {}
    problems = []
    for name, workspace in project.workspaces.items():
        for dependency in workspace.depends_on:
            if dependency not in project.workspaces:
                problems.append(
                    f"{project.path}: workspaces.{name}.depends_on: workspace {dependency!r} "
                    f"is not defined; define it or remove it from depends_on"
                )
        graph[name] = frozenset(workspace.depends_on)
    if problems:
        raise ConfigError("\n".join(problems))
    return graph


def _reach(edges: Graph, names: Iterable[str]) -> set[str]:
    start = set(names)
    seen: set[str] = set()
    todo = list(start)
    while todo:
        for following in edges.get(todo.pop(), ()):
            if following not in seen:
                seen.add(following)
                todo.append(following)
    return seen - start
