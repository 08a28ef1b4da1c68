"""The layers of docs/architecture.md, held by the code: who may import whom.

    driver (tofu) < identity, ci, policy, project < runs (+ embedded) < drift, envs, stacks
    < cli, airflow; the server sits beside runs and is imported only by tofuflow.embedded
    and the cli.

And underscore means private: no module imports another package's ``_module`` or
``_name`` (the distribution's own ``tofuflow._version`` and ``tofuflow._lazy`` aside).
No modules import each other in a circle. Lazy (function-level) imports count as much as
top-level ones.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "tofuflow"

# Level of each top-level package or module of tofuflow; lower may not import higher.
LAYERS: dict[str, float] = {
    "errors": 0, "_version": 0, "_lazy": 0, "_time": 0, "tomlfile": 0,
    "tofu": 1, "": 1.5,  # "" is tofuflow/__init__.py: errors and the driver
    "ci": 2, "identity": 2, "policy": 2, "project": 2,
    "runs": 3, "embedded": 3, "server": 3,
    "drift": 4, "envs": 4, "stacks": 4,
    "cli": 5, "airflow": 5,
    "__main__": 6,  # `python -m tofuflow`: calls the cli, imported by nothing
}  # fmt: skip
# Imports between packages of one level, each with its reason.
SAME_LEVEL = {
    ("identity", "ci"): "credentials are announced to the Azure DevOps agent as secrets",
    ("project", "identity"): "tofuflow.toml's identity tables are checked with identity's keys",
    ("runs", "embedded"): "connect() starts the embedded control plane",
    ("embedded", "server"): "the embedded control plane is the server, in-process",
}
SERVER_CLIENTS = {"embedded", "cli", "server"}
SHARED_PRIVATE = {"tofuflow._version", "tofuflow._lazy", "tofuflow._time"}


def _package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports() -> Iterator[tuple[str, int, str, str | None]]:
    """(file, line, imported module, imported name) for every tofuflow import."""
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(SRC).with_suffix("")
        module = ".".join(relative.parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                continue  # relative imports stay inside their package
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tofuflow"):
                for alias in node.names:
                    yield module, node.lineno, str(node.module), alias.name
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("tofuflow"):
                        yield module, node.lineno, alias.name, None


def _where(module: str, line: int) -> str:
    return f"{module.replace('.', '/')}.py:{line}"


def test_every_package_has_a_layer() -> None:
    top = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()}
    top = {name for name in top if not name.startswith("__") and name != "py"}
    unknown = sorted(top - set(LAYERS) - {"_quickstart"})
    assert not unknown, f"add these to LAYERS (and docs/architecture.md): {unknown}"


def test_no_import_runs_up_the_layers() -> None:
    bad = []
    for module, line, target, _name in _imports():
        mine, theirs = _package_of(module), _package_of(target)
        if mine == theirs:
            continue
        if LAYERS[theirs] > LAYERS[mine]:
            bad.append(f"{_where(module, line)}: {mine} (layer {LAYERS[mine]}) imports {target}")
        elif LAYERS[theirs] == LAYERS[mine] and (mine, theirs) not in SAME_LEVEL:
            bad.append(f"{_where(module, line)}: {mine} imports its peer {target}")
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_only_the_embedded_module_and_the_cli_import_the_server() -> None:
    bad = [
        f"{_where(module, line)}: imports {target}"
        for module, line, target, _ in _imports()
        if _package_of(target) == "server" and _package_of(module) not in SERVER_CLIENTS
    ]
    assert not bad, "only tofuflow.embedded and the cli may import the server:\n" + "\n".join(bad)


def test_no_package_imports_another_packages_private_modules_or_names() -> None:
    bad = []
    for module, line, target, name in _imports():
        if _package_of(module) == _package_of(target) or target in SHARED_PRIVATE:
            continue
        private_module = any(part.startswith("_") for part in target.split(".")[1:])
        private_name = name is not None and name.startswith("_") and not name.startswith("__")
        if private_module or private_name:
            what = f"{target}.{name}" if name else target
            bad.append(f"{_where(module, line)}: {what}")
    assert not bad, (
        "underscore means private: import the public name from the package instead "
        "(make it public there if others need it):\n" + "\n".join(bad)
    )


def test_the_structure_check_sees_lazy_imports(tmp_path: Path) -> None:
    """The walk must find an import inside a function body (most cross-layer ones are)."""
    source = "def f():\n    from tofuflow.server._admin import create_token\n"
    found = [
        (n.module, a.name)
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.ImportFrom)
        for a in n.names
    ]
    assert found == [("tofuflow.server._admin", "create_token")]


def test_no_modules_import_each_other_in_a_circle() -> None:
    """Within a layer too, imports run one way: a circle (even one held together by a
    lazy or a type-checking import) means two modules that cannot be read, tested or
    moved apart. A package's name resolves to the module that defines it."""
    modules = {
        ".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): p
        for p in PACKAGE.rglob("*.py")
    }
    packages = {m for m, p in modules.items() if p.name == "__init__.py"}
    defined_in = {package: _reexports(modules[package]) for package in packages}

    def resolve(target: str, name: str | None) -> str | None:
        if name is not None and f"{target}.{name}" in modules:
            return f"{target}.{name}"
        if target in packages and name is not None:
            return resolve(defined_in[target][name], name) if name in defined_in[target] else None
        return target if target in modules and target not in packages else None

    edges: dict[str, set[str]] = {m: set() for m in modules if m not in packages}
    for module, _, target, name in _imports():
        resolved = resolve(target, name)
        if module in edges and resolved is not None and resolved != module:
            edges[module].add(resolved)

    circles = _circles(edges)
    assert not circles, "modules that import each other (break the circle):\n" + "\n".join(
        " -> ".join([*circle, circle[0]]) for circle in circles
    )


def _reexports(init: Path) -> dict[str, str]:
    """Where a package's ``__init__`` takes each name from: its imports (type-checking
    ones included) and the lazy ``_EXPORTS`` table."""
    found: dict[str, str] = {}
    for node in ast.walk(ast.parse(init.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tofuflow"):
            found.update({alias.name: str(node.module) for alias in node.names})
        exports = (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Dict)
            and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets)
        )
        if exports:
            table = node.value
            for key, value in zip(table.keys, table.values, strict=True):
                if isinstance(key, ast.Constant) and isinstance(value, ast.Constant):
                    found[str(key.value)] = str(value.value)
    return found


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected parts of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            part = []
            while (member := stack.pop()) != node:
                part.append(member)
            if part:
                found.append(sorted([*part, node]))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_circle_check_finds_a_circle() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []
