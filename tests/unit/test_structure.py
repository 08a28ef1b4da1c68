"""The layers of docs/architecture.md, held by the code: who may import whom.

    driver (tofu) < identity, ci, policy, project < runs (+ embedded) < drift, envs, stacks
    < cli, airflow; the server sits beside runs and is imported only by tofuflow.embedded
    and the cli.

And underscore means private: no module imports another package's ``_module`` or
``_name`` (the distribution's own ``tofuflow._version`` and ``tofuflow._lazy`` aside).
Lazy (function-level) imports count as much as top-level ones.
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
