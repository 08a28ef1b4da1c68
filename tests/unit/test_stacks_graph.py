"""Stacks in tofuflow.toml: depends_on and inputs, the graph, and every mistake's message."""

from __future__ import annotations

from pathlib import Path

import pytest

from tofuflow.errors import ConfigError
from tofuflow.project import Project, WorkspaceConfig, load_project
from tofuflow.runs import input_reference
from tofuflow.stacks import (
    CycleError,
    dependants,
    find_cycle,
    stack_graph,
    transitive_dependants,
    transitive_dependencies,
)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "repo"
    (root / "infra").mkdir(parents=True)
    monkeypatch.chdir(root)
    return root.resolve()


def _load(repo: Path, text: str) -> Project:
    (repo / "tofuflow.toml").write_text(text)
    return load_project()


def _error(repo: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        _load(repo, text)
    return str(info.value).splitlines()


def _ws(name: str, *deps: str) -> str:
    listed = ", ".join(f'"{d}"' for d in deps)
    return f'[workspaces."{name}"]\ndirectory = "infra"\ndepends_on = [{listed}]\n'


# -- tofuflow.toml ----------------------------------------------------------------------


def test_depends_on_and_inputs_are_read_into_the_workspace(repo: Path) -> None:
    project = _load(
        repo,
        _ws("net/eu.west")
        + _ws("app", "net/eu.west")
        + 'inputs = { vpc_id = "net/eu.west.vpc_id", "sub-nets" = "net/eu.west.subnets" }\n',
    )
    app = project.workspace("app")
    assert app.depends_on == ("net/eu.west",)
    assert app.inputs == {"vpc_id": "net/eu.west.vpc_id", "sub-nets": "net/eu.west.subnets"}
    # A workspace name may hold dots; an output name never does.
    assert input_reference(app.inputs["vpc_id"]) == ("net/eu.west", "vpc_id")
    # Both default to empty, and the new fields come last (positional use keeps working).
    assert project.workspace("net/eu.west").inputs == {}
    assert WorkspaceConfig("x", repo).depends_on == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[workspaces.app]\ndirectory = "infra"\ndepends_on = "net"\n',
            'workspaces.app.depends_on: expected an array of workspace names, e.g. ["network"], '
            'got "net"',
        ),
        (
            _ws("net") + '[workspaces.app]\ndirectory = "infra"\ndepends_on = ["net", 3]\n',
            "workspaces.app.depends_on[1]: expected a workspace name, got 3",
        ),
        (
            _ws("app", "app"),
            "workspaces.app.depends_on[0]: a workspace cannot depend on itself; remove 'app'",
        ),
        (
            _ws("net") + _ws("app", "net", "net"),
            'workspaces.app.depends_on[1]: "net" is listed twice; remove one',
        ),
        (
            _ws("network") + _ws("app", "netwrk"),
            'workspaces.app.depends_on[0]: workspace "netwrk" is not defined; did you mean '
            '"network"? Depend on a [workspaces.NAME] of this file (defined: network)',
        ),
        (
            _ws("net") + _ws("app", "net") + 'inputs = { vpc = "net" }\n',
            'workspaces.app.inputs.vpc: expected "<workspace>.<output>", e.g. '
            '"network.vpc_id", got "net"',
        ),
        (
            _ws("net") + _ws("app", "net") + "inputs = { vpc = 1 }\n",
            'workspaces.app.inputs.vpc: expected "<workspace>.<output>", e.g. '
            '"network.vpc_id", got 1',
        ),
        (
            _ws("net") + _ws("app", "net") + 'inputs = { "1vpc" = "net.vpc" }\n',
            "workspaces.app.inputs.1vpc: not a valid variable name",
        ),
        (
            _ws("net") + _ws("db") + _ws("app", "net") + 'inputs = { vpc = "db.vpc" }\n',
            'workspaces.app.inputs.vpc: reads workspace "db", which is not in depends_on; '
            "add it to depends_on so it runs first",
        ),
        (
            _ws("network") + _ws("app", "network") + 'inputs = { vpc = "netwrk.vpc" }\n',
            'workspaces.app.inputs.vpc: reads workspace "netwrk", which is not in depends_on; '
            'did you mean "network"? If not, add "netwrk" to depends_on so it runs first',
        ),
        (
            _ws("net")
            + _ws("app", "net")
            + 'inputs = { vpc = "net.vpc" }\nvariables = { vpc = "x" }\n',
            "workspaces.app.inputs.vpc: is also set in variables; keep it in one of the two",
        ),
        (
            _ws("net") + _ws("app", "net") + 'input = { vpc = "net.vpc" }\n',
            'workspaces.app.input: unknown key; did you mean "inputs"?',
        ),
        (
            _ws("net") + '[workspaces.app]\ndirectory = "infra"\ndepend_on = ["net"]\n',
            'workspaces.app.depend_on: unknown key; did you mean "depends_on"?',
        ),
    ],
)
def test_every_stack_mistake_names_the_file_the_key_and_the_fix(
    repo: Path, text: str, expected: str
) -> None:
    problems = _error(repo, text)
    assert any(line.startswith("tofuflow.toml:") and f": {expected}" in line for line in problems)


def test_a_bad_dependency_is_reported_once_not_again_by_the_inputs_reading_it(repo: Path) -> None:
    problems = _error(repo, _ws("app", "nope") + 'inputs = { x = "nope.x" }\n')
    assert len(problems) == 1 and "depends_on[0]" in problems[0]


# -- the graph --------------------------------------------------------------------------

# network ← app ← web;  network ← db ← app;  monitoring alone
DIAMOND = (
    _ws("network") + _ws("db", "network") + _ws("app", "network", "db") + _ws("web", "app")
    + _ws("monitoring")
)  # fmt: skip


def test_the_graph_maps_each_workspace_to_its_direct_dependencies(repo: Path) -> None:
    project = _load(repo, DIAMOND)
    assert stack_graph(project) == {
        "app": frozenset({"network", "db"}),
        "db": frozenset({"network"}),
        "monitoring": frozenset(),
        "network": frozenset(),
        "web": frozenset({"app"}),
    }
    assert dependants(stack_graph(project))["network"] == {"db", "app"}


def test_a_selection_brings_its_dependencies_or_for_a_destroy_its_dependants(
    repo: Path,
) -> None:
    project = _load(repo, DIAMOND)
    assert stack_graph(project, ["app"]) == {
        "app": frozenset({"network", "db"}),
        "db": frozenset({"network"}),
        "network": frozenset(),
    }
    assert stack_graph(project, ["db"], closure="dependants") == {
        "app": frozenset({"db"}),  # network is not selected: the edge to it is dropped
        "db": frozenset(),
        "web": frozenset({"app"}),
    }
    assert stack_graph(project, ["monitoring", "web"], closure="dependants") == {
        "monitoring": frozenset(),
        "web": frozenset(),
    }


def test_an_unknown_selected_workspace_lists_the_defined_ones(repo: Path) -> None:
    project = _load(repo, DIAMOND)
    with pytest.raises(ConfigError, match=r"workspace 'ap' is not defined; did you mean \"app\""):
        stack_graph(project, ["ap"])


def test_a_cycle_is_an_error_that_names_it_in_dependency_order(repo: Path) -> None:
    project = _load(repo, _ws("a", "b") + _ws("b", "c") + _ws("c", "a") + _ws("d", "a"))
    with pytest.raises(CycleError) as info:
        stack_graph(project)
    assert info.value.cycle == ["a", "b", "c", "a"]
    assert str(info.value) == (
        f"{repo / 'tofuflow.toml'}: depends_on forms a cycle: a → b → c → a (each depends on "
        "the next), so no order can run them; remove one of these depends_on entries"
    )
    assert isinstance(info.value, ConfigError)
    # A selection outside the cycle is fine; one that reaches it is not.
    assert find_cycle({"x": frozenset({"y"}), "y": frozenset()}) is None
    with pytest.raises(CycleError):
        stack_graph(project, ["d"])


def test_a_long_chain_does_not_hit_the_recursion_limit() -> None:
    chain = {f"s{i}": frozenset({f"s{i + 1}"}) for i in range(5000)} | {"s5000": frozenset()}
    assert find_cycle(chain) is None
    chain["s5000"] = frozenset({"s0"})
    cycle = find_cycle(chain)
    assert cycle is not None and cycle[0] == cycle[-1] and len(cycle) == 5002


def test_a_project_built_in_code_with_an_unknown_dependency_is_refused(tmp_path: Path) -> None:
    project = Project(
        path=tmp_path / "tofuflow.toml",
        workspaces={"app": WorkspaceConfig("app", tmp_path, depends_on=("net",))},
    )
    with pytest.raises(ConfigError, match=r"workspaces.app.depends_on: workspace 'net' is not"):
        stack_graph(project)


def test_transitive_closures() -> None:
    graph = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset(), "d": frozenset()}
    assert transitive_dependencies(graph, ["a"]) == {"b", "c"}
    assert transitive_dependants(graph, ["c"]) == {"a", "b"}
    assert transitive_dependants(graph, ["d"]) == set()
