"""Every TOML block of README.md and docs/ is what the loaders accept: a server
configuration loads as `tofuflow server` loads it, a tofuflow.toml as the CLI loads it.

A tofuflow.toml block is loaded in a scratch repository that has what it names (each
workspace's directory with a .tf file, its relative var files); a block that shows only
a table to add to a workspace (its identity, say) gets ``directory = "."``. Nothing else
is filled in: a key or value the loaders refuse fails here, with the file and line.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tofuflow.project import load_project
from tofuflow.server.config import ServerConfig

ROOT = Path(__file__).resolve().parents[2]
_BLOCK = re.compile(r"^```toml\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[str, str]]:
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        for match in _BLOCK.finditer(text):
            line = text[: match.start()].count("\n") + 1
            found.append((f"{path.relative_to(ROOT)}:{line}", match.group(1)))
    return found


BLOCKS = _blocks()


def test_the_docs_have_toml_blocks_of_both_kinds() -> None:
    kinds = {"workspaces" in tomllib.loads(text) for _, text in BLOCKS}
    assert kinds == {True, False}, [where for where, _ in BLOCKS]


@pytest.mark.parametrize(("where", "text"), BLOCKS, ids=[where for where, _ in BLOCKS])
def test_a_docs_toml_block_loads(where: str, text: str, tmp_path: Path) -> None:
    data = tomllib.loads(text)
    if "workspaces" not in data:
        ServerConfig.from_mapping(data)
        return
    _scaffold(tmp_path, data["workspaces"])
    for name, ws in data["workspaces"].items():
        if "directory" in ws:
            continue
        header = f'[workspaces."{name}"]\n'
        if header in text:  # the block opens the workspace's table: add the key to it
            text = text.replace(header, f'{header}directory = "."\n', 1)
        else:  # only a sub-table (its identity, say): open the workspace's table first
            text = f'{header}directory = "."\n\n{text}'
    (tmp_path / "tofuflow.toml").write_text(text)
    project = load_project(tmp_path / "tofuflow.toml")
    assert set(project.workspaces) == set(data["workspaces"]), where


def _scaffold(root: Path, workspaces: dict[str, Any]) -> None:
    for ws in workspaces.values():
        directory = root / ws.get("directory", ".")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "main.tf").write_text("")
        for var_file in ws.get("var_files", []):
            if not Path(var_file).is_absolute():
                (root / var_file).parent.mkdir(parents=True, exist_ok=True)
                (root / var_file).write_text("")
