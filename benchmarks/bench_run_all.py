"""run-all on a 50-stack DAG with parallelism 8: wall time vs the ideal schedule.

Every stack is a `terraform_data` whose local-exec sleeps a seeded 1-3 s (the "work"),
applied through the whole run lifecycle (plan → policy → apply session → apply) on one
embedded control plane, as `tofuflow run-all apply --parallelism 8` does. From each
stack's measured duration (plan + apply, as the scheduler timed it) it computes:

- the lower bound: max(critical path, total work / parallelism);
- the ideal schedule: a list-scheduling simulation with `parallelism` workers and zero
  overhead, using the measured durations (the better of two priorities: longest
  remaining path in seconds, and the scheduler's own longest chain of stacks);

and prints wall / ideal (target <= 1.25x, issue 8) and wall / lower bound. It also
prints the CPU time used during the run against what the machine's cores could give,
to show when the run is CPU-bound. `--baseline` first runs the same DAG one stack at a
time to measure each stack's duration without contention, and prints the ideal schedule
computed from those too.

    python benchmarks/bench_run_all.py [--stacks 50] [--parallelism 8] [--seed 7] [--baseline]
    python benchmarks/bench_run_all.py --sleep-stages [--stacks 500] [--parallelism 16]

`--sleep-stages` measures the scheduler alone at a scale the real binary cannot reach on a
small machine (500 stacks, parallelism 16 by default): the same `run_graph` that
`run-all` uses, through its public API, with a stage that sleeps a seeded 0.1-0.5 s
instead of running the lifecycle. Besides wall / ideal schedule it prints the scheduler's
own overhead per stack, measured two ways: the reaction time (from the event that let a
stack start, the run's start or the finish of the stack before it, to the stack's start)
and the process's CPU time per stack (the stages only sleep, so the CPU is the
scheduler's and its thread pool's). Target: <= 5 ms per stack (issue 18).
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import report

from tofuflow.embedded import EmbeddedControlPlane
from tofuflow.project import Project, WorkspaceConfig, load_project
from tofuflow.runs import ControlPlane
from tofuflow.server.config import ServerConfig
from tofuflow.stacks import Report, dependants, run_stacks, stack_graph

STACK = """
variable "upstream" {{
  type    = string
  default = ""
}}

resource "terraform_data" "work" {{
  input = "{name}"
  provisioner "local-exec" {{
    command = "sleep {sleep:.2f}"
  }}
}}

output "name" {{
  value = terraform_data.work.output
}}
"""


def layered_dag(stacks: int, seed: int) -> tuple[dict[str, list[str]], dict[str, float]]:
    """A seeded layered DAG: 1-3 dependencies on the previous layer, some on earlier ones."""
    rng = random.Random(seed)
    sizes = [12, 10, 9, 8, 6, 5]
    while sum(sizes) < stacks:
        sizes.append(4)
    graph: dict[str, list[str]] = {}
    sleeps: dict[str, float] = {}
    layers: list[list[str]] = []
    for size in sizes:
        size = min(size, stacks - len(graph))
        if size <= 0:
            break
        layer = [f"s{len(graph) + i:02d}" for i in range(size)]
        for name in layer:
            graph[name] = sorted(_dependencies(rng, layers))
            sleeps[name] = round(rng.uniform(1.0, 3.0), 2)
        layers.append(layer)
    return graph, sleeps


def _dependencies(rng: random.Random, layers: list[list[str]]) -> set[str]:
    """A stack's dependencies: 1-3 of the layer above, and 30 % of the time one older."""
    deps: set[str] = set()
    if layers:
        deps.update(rng.sample(layers[-1], rng.randint(1, min(3, len(layers[-1])))))
        earlier = [n for lay in layers[:-1] for n in lay]
        if earlier and rng.random() < 0.3:
            deps.add(rng.choice(earlier))
    return deps


def write_project(root: Path, graph: Mapping[str, list[str]], sleeps: Mapping[str, float]) -> None:
    lines = []
    for name, deps in graph.items():
        directory = root / name
        directory.mkdir(parents=True)
        (directory / "main.tf").write_text(STACK.format(name=name, sleep=sleeps[name]))
        lines.append(f'[workspaces."{name}"]\ndirectory = "{name}"\n')
        if deps:
            lines.append(f"depends_on = {deps!r}\n".replace("'", '"'))
            lines.append(f'inputs = {{ upstream = "{deps[0]}.name" }}\n')
    (root / "tofuflow.toml").write_text("".join(lines))


def critical_path(graph: Mapping[str, frozenset[str]], seconds: Mapping[str, float]) -> float:
    finish: dict[str, float] = {}
    for name in _topological(graph):
        finish[name] = seconds[name] + max((finish[d] for d in graph[name]), default=0.0)
    return max(finish.values(), default=0.0)


def simulate(
    graph: Mapping[str, frozenset[str]],
    seconds: Mapping[str, float],
    workers: int,
    priority: Mapping[str, float],
) -> float:
    """Makespan of list scheduling: a free worker takes the ready stack of highest priority."""
    waiting = {name: set(deps) for name, deps in graph.items()}
    behind = dependants(graph)
    ready = [(-priority[n], n) for n, deps in waiting.items() if not deps]
    heapq.heapify(ready)
    running: list[tuple[float, str]] = []
    now = 0.0
    while ready or running:
        while ready and len(running) < workers:
            _, name = heapq.heappop(ready)
            heapq.heappush(running, (now + seconds[name], name))
        now, name = heapq.heappop(running)
        for other in behind.get(name, ()):
            waiting[other].discard(name)
            if not waiting[other]:
                heapq.heappush(ready, (-priority[other], other))
    return now


def ideal(
    graph: Mapping[str, frozenset[str]], seconds: Mapping[str, float], workers: int
) -> tuple[float, float, float, float]:
    """(critical path, total work / workers, lower bound, simulated ideal schedule)."""
    path = critical_path(graph, seconds)
    spread = sum(seconds.values()) / workers
    behind = dependants(graph)
    remaining: dict[str, float] = {}
    chain: dict[str, float] = {}
    for name in reversed(_topological(graph)):
        after = behind.get(name, ())
        remaining[name] = seconds[name] + max((remaining[b] for b in after), default=0.0)
        chain[name] = 1 + max((chain[b] for b in after), default=0)
    simulated = min(simulate(graph, seconds, workers, p) for p in (remaining, chain))
    return path, spread, max(path, spread), simulated


def _topological(graph: Mapping[str, frozenset[str]]) -> list[str]:
    from graphlib import TopologicalSorter

    return list(TopologicalSorter(graph).static_order())


def run_once(
    root: Path, graph: Mapping[str, list[str]], sleeps: Mapping[str, float], parallelism: int
) -> tuple[Report, float, float]:
    """Apply the DAG from scratch; returns the report, wall time and CPU seconds used."""
    write_project(root / "repo", graph, sleeps)
    project = load_project(root / "repo" / "tofuflow.toml")
    config = ServerConfig.from_mapping({"server": {"data_dir": str(root / "cp")}})
    with EmbeddedControlPlane(config) as plane:
        planner = ControlPlane(plane.url, plane.token("planner"))
        applier = ControlPlane(plane.url, plane.token("applier"))
        by_stage = {"plan": planner, "apply": applier}

        def clients(stage: str, workspace: WorkspaceConfig) -> ControlPlane:
            del workspace
            return by_stage[stage]

        cpu_before = _cpu()
        started = time.perf_counter()
        result = run_stacks(project, "apply", clients=clients, parallelism=parallelism)
        wall = time.perf_counter() - started
        cpu = _cpu() - cpu_before
        planner.close()
        applier.close()
    failed = {n: o.detail for n, o in result.outcomes.items() if o.status != "succeeded"}
    if failed:
        raise SystemExit(f"stacks did not succeed: {failed}")
    return result, wall, cpu


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _durations(result: Report) -> dict[str, float]:
    return {n: o.duration or 0.0 for n, o in result.outcomes.items()}


def wide_dag(stacks: int, seed: int) -> tuple[dict[str, frozenset[str]], dict[str, float]]:
    """A seeded layered DAG of layers 20-60 wide (enough to keep 16 workers busy), each
    stack on 1-3 of the layer before and sometimes an earlier one; a 0.1-0.5 s sleep each."""
    rng = random.Random(seed)
    graph: dict[str, frozenset[str]] = {}
    sleeps: dict[str, float] = {}
    layers: list[list[str]] = []
    while len(graph) < stacks:
        layer = [
            f"s{len(graph) + i:03d}" for i in range(min(rng.randint(20, 60), stacks - len(graph)))
        ]
        for name in layer:
            graph[name] = frozenset(_dependencies(rng, layers))
            sleeps[name] = round(rng.uniform(0.1, 0.5), 3)
        layers.append(layer)
    return graph, sleeps


def reaction_times(result: Report, graph: Mapping[str, frozenset[str]]) -> list[float]:
    """For each stack: its start minus the event that let it start. The scheduler starts a
    stack only at the run's start or when a stack finishes, so the event is the latest of
    those at or before the start (and not before the stack's own dependencies finished)."""
    finishes = sorted(o.finished for o in result.outcomes.values() if o.finished is not None)
    lags = []
    for name, outcome in result.outcomes.items():
        assert outcome.started is not None
        trigger = max([result.started] + [f for f in finishes if f <= outcome.started])
        ready = max((result.outcomes[d].finished or 0.0 for d in graph[name]), default=0.0)
        lags.append(outcome.started - max(trigger, ready))
    return lags


def sleep_stages(stacks: int, parallelism: int, seed: int) -> int:
    """The scheduler at scale: ``run_graph`` over ``stacks`` sleeping stages."""
    from tofuflow.stacks import Outcome, run_graph

    graph, sleeps = wide_dag(stacks, seed)
    print(
        f"DAG: {len(graph)} stacks, {sum(len(d) for d in graph.values())} edges, widest layer "
        f"{max(_layer_sizes(graph))}, sleep {min(sleeps.values()):.2f}-"
        f"{max(sleeps.values()):.2f}s (sum {sum(sleeps.values()):.1f}s); parallelism "
        f"{parallelism}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}"
    )

    def stage(name: str) -> Outcome:
        time.sleep(sleeps[name])
        return Outcome("succeeded")

    cpu_before = time.process_time()
    started = time.perf_counter()
    result = run_graph(graph, stage, parallelism=parallelism)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    assert result.ok, result.counts()
    seconds = _durations(result)
    path, spread, _, simulated = ideal(graph, seconds, parallelism)
    lags = sorted(reaction_times(result, graph))
    mean_lag = sum(lags) / len(lags)
    print(
        f"run_graph: wall {wall:.2f}s, at most {result.max_running} at once; ideal from the "
        f"measured times: critical path {path:.2f}s, work/{parallelism} {spread:.2f}s, list "
        f"schedule {simulated:.2f}s (load average {os.getloadavg()[0]:.2f})"
    )
    print(
        f"reaction time per stack: mean {mean_lag * 1000:.2f} ms, p50 "
        f"{lags[len(lags) // 2] * 1000:.2f} ms, max {lags[-1] * 1000:.2f} ms; CPU "
        f"{cpu * 1000 / len(graph):.2f} ms per stack ({cpu:.2f}s in all)"
    )
    ok = report(
        f"run_graph vs ideal schedule ({parallelism})",
        wall / simulated,
        1.25,
        f"wall {wall:.2f}s / list schedule {simulated:.2f}s = {wall / simulated:.3f}x",
        "1.25x",
    )
    ok &= report("scheduler reaction per stack", mean_lag, 0.005,
                 f"mean {mean_lag * 1000:.2f} ms", "5 ms")  # fmt: skip
    ok &= report("scheduler CPU per stack", cpu / len(graph), 0.005,
                 f"{cpu * 1000 / len(graph):.2f} ms", "5 ms")  # fmt: skip
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", type=int, default=None, help="50 (500 with --sleep-stages)")
    parser.add_argument("--parallelism", type=int, default=None, help="8 (16 with --sleep-stages)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--baseline", action="store_true", help="also run one stack at a time first"
    )
    parser.add_argument(
        "--sleep-stages", action="store_true", help="the scheduler alone, stages that sleep"
    )
    args = parser.parse_args()
    if args.sleep_stages:
        return sleep_stages(args.stacks or 500, args.parallelism or 16, args.seed)
    args.stacks, args.parallelism = args.stacks or 50, args.parallelism or 8
    graph_lists, sleeps = layered_dag(args.stacks, args.seed)
    with tempfile.TemporaryDirectory(prefix="tofuflow-bench-run-all-") as tmp:
        root = Path(tmp)
        os.environ["TF_PLUGIN_CACHE_DIR"] = str(root / "plugins")
        graph = stack_graph(load_project_for(root / "probe", graph_lists, sleeps))
        width = max(_layer_sizes(graph))
        print(
            f"DAG: {len(graph)} stacks, {sum(len(d) for d in graph.values())} edges, "
            f"widest layer {width}, sleep {min(sleeps.values()):.2f}-{max(sleeps.values()):.2f}s "
            f"(sum {sum(sleeps.values()):.1f}s); cores {os.cpu_count()}"
        )
        alone: dict[str, float] = {}
        if args.baseline:
            serial, serial_wall, _ = run_once(root / "serial", graph_lists, sleeps, 1)
            alone = _durations(serial)
            print(
                f"baseline, one at a time: wall {serial_wall:.1f}s, per stack "
                f"{min(alone.values()):.2f}-{max(alone.values()):.2f}s, overhead over the "
                f"sleep {_mean_overhead(alone, sleeps):.2f}s/stack"
            )
        result, wall, cpu = run_once(root / "parallel", graph_lists, sleeps, args.parallelism)
    seconds = _durations(result)
    path, spread, bound, simulated = ideal(graph, seconds, args.parallelism)
    cores = os.cpu_count() or 1
    print(
        f"run-all apply, parallelism {args.parallelism}: wall {wall:.2f}s (scheduler "
        f"{result.wall_time:.2f}s), at most {result.max_running} at once; per stack "
        f"{min(seconds.values()):.2f}-{max(seconds.values()):.2f}s, overhead over the sleep "
        f"{_mean_overhead(seconds, sleeps):.2f}s/stack"
    )
    print(
        f"ideal from measured times: critical path {path:.2f}s, work/{args.parallelism} "
        f"{spread:.2f}s, lower bound {bound:.2f}s, list schedule ({args.parallelism} "
        f"workers) {simulated:.2f}s"
    )
    print(
        f"CPU: {cpu:.1f}s used in {wall:.1f}s on {cores} cores = "
        f"{100 * cpu / (wall * cores):.0f}% of the machine"
    )
    if alone:
        _, _, a_bound, a_sim = ideal(graph, alone, args.parallelism)
        print(
            f"ideal from uncontended times: lower bound {a_bound:.2f}s, list schedule "
            f"{a_sim:.2f}s; wall/that {wall / a_sim:.3f}x (contention's share)"
        )
    report(
        f"run-all vs lower bound ({args.parallelism})",
        wall / bound,
        1.25,
        f"wall {wall:.2f}s / max(critical path, work/{args.parallelism}) {bound:.2f}s = "
        f"{wall / bound:.3f}x",
        "1.25x",
    )
    ok = report(
        f"run-all vs ideal schedule ({args.parallelism})",
        wall / simulated,
        1.25,
        f"wall {wall:.2f}s / list schedule {simulated:.2f}s = {wall / simulated:.3f}x",
        "1.25x",
    )
    return 0 if ok else 1


def load_project_for(
    root: Path, graph: Mapping[str, list[str]], sleeps: Mapping[str, float]
) -> Project:
    write_project(root, graph, sleeps)
    return load_project(root / "tofuflow.toml")


def _layer_sizes(graph: Mapping[str, frozenset[str]]) -> list[int]:
    depth: dict[str, int] = {}
    for name in _topological(graph):
        depth[name] = 1 + max((depth[d] for d in graph[name]), default=0)
    sizes: dict[int, int] = {}
    for level in depth.values():
        sizes[level] = sizes.get(level, 0) + 1
    return list(sizes.values())


def _mean_overhead(seconds: Mapping[str, float], sleeps: Mapping[str, float]) -> float:
    return sum(seconds[n] - sleeps[n] for n in seconds) / len(seconds)


if __name__ == "__main__":
    raise SystemExit(main())
