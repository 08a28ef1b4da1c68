"""Stacks: workspaces that depend on each other, run in dependency order.

    from tofuflow.stacks import stack_graph
    graph = stack_graph(load_project())      # {"app": frozenset({"network"}), "network": ...}

A workspace of ``tofuflow.toml`` declares ``depends_on = ["network"]`` and may read its
dependencies' outputs as variables (``inputs = { vpc_id = "network.vpc_id" }``).
``stack_graph`` is the dependency graph (the Airflow provider builds its tasks from it);
``tofuflow.runs.resolve_inputs`` reads a stack's ``inputs`` from its dependencies' state;
``run_graph`` runs any callable over the graph (dependencies first, bounded parallelism, the
dependants of a failure skipped); ``run_stacks`` runs the stacks through the normal run
lifecycle, which is what ``tofuflow run-all plan|apply|destroy`` does (docs/cli.md).
"""

from typing import TYPE_CHECKING

from tofuflow._lazy import lazy_exports

if TYPE_CHECKING:
    from tofuflow.stacks._cache import (
        init_lock,
        locking_binary,
        plugin_cache_dir,
    )
    from tofuflow.stacks._execute import Mode, StackTask, run_stacks
    from tofuflow.stacks._graph import (
        Closure,
        CycleError,
        Graph,
        dependants,
        find_cycle,
        stack_graph,
        transitive_dependants,
        transitive_dependencies,
    )
    from tofuflow.stacks._scheduler import (
        Outcome,
        Report,
        Status,
        run_graph,
    )

_EXPORTS = {
    "Closure": "tofuflow.stacks._graph",
    "CycleError": "tofuflow.stacks._graph",
    "Graph": "tofuflow.stacks._graph",
    "Mode": "tofuflow.stacks._execute",
    "Outcome": "tofuflow.stacks._scheduler",
    "Report": "tofuflow.stacks._scheduler",
    "StackTask": "tofuflow.stacks._execute",
    "Status": "tofuflow.stacks._scheduler",
    "dependants": "tofuflow.stacks._graph",
    "find_cycle": "tofuflow.stacks._graph",
    "init_lock": "tofuflow.stacks._cache",
    "locking_binary": "tofuflow.stacks._cache",
    "plugin_cache_dir": "tofuflow.stacks._cache",
    "run_graph": "tofuflow.stacks._scheduler",
    "run_stacks": "tofuflow.stacks._execute",
    "stack_graph": "tofuflow.stacks._graph",
    "transitive_dependants": "tofuflow.stacks._graph",
    "transitive_dependencies": "tofuflow.stacks._graph",
}
__all__ = [
    "Closure",
    "CycleError",
    "Graph",
    "Mode",
    "Outcome",
    "Report",
    "StackTask",
    "Status",
    "dependants",
    "find_cycle",
    "init_lock",
    "locking_binary",
    "plugin_cache_dir",
    "run_graph",
    "run_stacks",
    "stack_graph",
    "transitive_dependants",
    "transitive_dependencies",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
