"""Stacks: workspaces that depend on each other, run in dependency order.

    from tofuflow.stacks import stack_graph
    graph = stack_graph(load_project())      # {"app": frozenset({"network"}), "network": ...}

A workspace of ``tofuflow.toml`` declares ``depends_on = ["network"]`` and may read its
dependencies' outputs as variables (``inputs = { vpc_id = "network.vpc_id" }``).
``stack_graph`` is the dependency graph (the Airflow provider builds its tasks from it);
``tofuflow run-all plan|apply|destroy`` runs it (see docs/cli.md).
"""

from typing import TYPE_CHECKING

from tofuflow._lazy import lazy_exports

if TYPE_CHECKING:
    from tofuflow.stacks._graph import (
        Closure,
        CycleError,
        Graph,
        dependants,
        find_cycle,
        input_reference,
        stack_graph,
        transitive_dependants,
        transitive_dependencies,
    )

_EXPORTS = {
    "Closure": "tofuflow.stacks._graph",
    "CycleError": "tofuflow.stacks._graph",
    "Graph": "tofuflow.stacks._graph",
    "dependants": "tofuflow.stacks._graph",
    "find_cycle": "tofuflow.stacks._graph",
    "input_reference": "tofuflow.stacks._graph",
    "stack_graph": "tofuflow.stacks._graph",
    "transitive_dependants": "tofuflow.stacks._graph",
    "transitive_dependencies": "tofuflow.stacks._graph",
}
__all__ = [
    "Closure",
    "CycleError",
    "Graph",
    "dependants",
    "find_cycle",
    "input_reference",
    "stack_graph",
    "transitive_dependants",
    "transitive_dependencies",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
