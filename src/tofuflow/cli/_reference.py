"""docs/cli.md's `--help` blocks, generated from the commands themselves.

    python -m tofuflow.cli._reference docs/cli.md          # rewrite the blocks
    python -m tofuflow.cli._reference --check docs/cli.md  # exit 1 when one is stale

A help block is a fenced block whose first line is ``$ tofuflow ... --help``; its body
is replaced with what that command prints (100 columns). Every command and subcommand
must have one: the check names those that do not.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import click
from click.testing import CliRunner

__all__ = ["command_paths", "help_text", "missing_blocks", "update_reference"]

_BLOCK = re.compile(r"^```\n\$ (tofuflow(?: [a-z][\w-]*)*) --help\n(.*?)^```$", re.M | re.S)


def _root() -> click.Group:
    from tofuflow.cli import cli

    return cli


def command_paths() -> list[str]:
    """``tofuflow``, ``tofuflow plan``, ``tofuflow runs list``, ... every command."""

    def walk(command: click.Command, path: str) -> Iterator[str]:
        yield path
        if isinstance(command, click.Group):
            for name in sorted(command.commands):
                yield from walk(command.commands[name], f"{path} {name}")

    return list(walk(_root(), "tofuflow"))


def help_text(path: str) -> str:
    """What ``<path> --help`` prints, at 100 columns."""
    runner = CliRunner(env={"COLUMNS": "100"})
    words = path.split()[1:]
    _forget_help_options(_root())
    result = runner.invoke(_root(), [*words, "--help"], prog_name="tofuflow", color=False)
    if result.exit_code != 0:
        raise RuntimeError(f"`{path} --help` failed: {result.output}")
    return "\n".join(line.rstrip() for line in result.output.rstrip().splitlines()) + "\n"


def _forget_help_options(command: click.Command) -> None:
    """click caches each command's help option the first time it is asked for, with the
    context of that call: a command invoked on its own (in a test) would then show
    ``--help`` where ``tofuflow ...`` shows ``-h, --help``. Start every render afresh."""
    command._help_option = None
    if isinstance(command, click.Group):
        for child in command.commands.values():
            _forget_help_options(child)


def update_reference(text: str) -> str:
    """``text`` with every help block's body regenerated."""
    return _BLOCK.sub(lambda m: f"```\n$ {m.group(1)} --help\n{help_text(m.group(1))}```", text)


def missing_blocks(text: str) -> list[str]:
    """The commands that have no help block in ``text``."""
    present = {m.group(1) for m in _BLOCK.finditer(text)}
    return [path for path in command_paths() if path not in present]


def main(argv: list[str]) -> int:
    check = "--check" in argv
    paths = [Path(a) for a in argv if a != "--check"] or [Path("docs/cli.md")]
    status = 0
    for path in paths:
        text = path.read_text(encoding="utf-8")
        updated = update_reference(text)
        missing = missing_blocks(updated)
        for command in missing:
            print(f"{path}: no help block for `{command}`", file=sys.stderr)
            status = 1
        if updated != text:
            if check:
                print(f"{path}: help blocks are stale: run `make docs`", file=sys.stderr)
                status = 1
            else:
                path.write_text(updated, encoding="utf-8")
                print(f"{path}: help blocks regenerated")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
