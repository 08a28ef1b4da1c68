"""The control plane's import boundaries, read from the source (function-level imports too)."""

from __future__ import annotations

import ast
from pathlib import Path

import tofuflow.server

SRC = Path(tofuflow.server.__file__).parent.parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(package: str) -> dict[str, set[str]]:
    root = SRC / package
    return {str(p.relative_to(SRC)): _imports(p) for p in root.rglob("*.py")}


def test_the_server_imports_none_of_the_runner_side_packages() -> None:
    runner_side = ("envs", "runs", "drift", "stacks", "airflow", "cli")
    offending = {
        module: sorted(
            n for n in names if n.startswith("tofuflow.") and n.split(".")[1] in runner_side
        )
        for module, names in _modules("server").items()
    }
    assert {m: n for m, n in offending.items() if n} == {}


def test_environments_import_nothing_from_the_server() -> None:
    offending = {
        module: sorted(n for n in names if n.startswith("tofuflow.server"))
        for module, names in _modules("envs").items()
    }
    assert {m: n for m, n in offending.items() if n} == {}


def test_other_packages_use_only_public_server_modules() -> None:
    private = {}
    for package in sorted(p.name for p in SRC.iterdir() if p.is_dir() and p.name != "server"):
        for module, names in _modules(package).items():
            bad = sorted(
                n for n in names
                if n.startswith("tofuflow.server")
                and any(part.startswith("_") for part in n.split(".")[2:])
            )  # fmt: skip
            if bad:
                private[module] = bad
    assert private == {}


def test_the_server_package_exports_its_public_entries() -> None:
    assert tofuflow.server.__all__ == [
        "create_app",
        "state_aad",
        "state_identity",
        "validate_workspace_name",
    ]
    for name in tofuflow.server.__all__:
        assert callable(getattr(tofuflow.server, name))
    assert tofuflow.server.validate_workspace_name("app/prod") == "app/prod"
