"""docs/cli.md's `--help` blocks are what the commands print: a stale one fails here."""

from __future__ import annotations

from pathlib import Path

from tofuflow.cli._reference import command_paths, missing_blocks, update_reference

CLI_MD = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_every_command_has_a_help_block_in_the_reference() -> None:
    missing = missing_blocks(CLI_MD.read_text())
    assert not missing, (
        f"docs/cli.md has no `--help` block for {missing}: add one, then `make docs`"
    )


def test_every_help_block_is_what_the_command_prints() -> None:
    text = CLI_MD.read_text()
    assert update_reference(text) == text, "docs/cli.md is stale: run `make docs`"


def test_the_reference_knows_every_command() -> None:
    paths = command_paths()
    assert {"tofuflow", "tofuflow plan", "tofuflow env reap", "tofuflow run-all"} <= set(paths)
    assert "tofuflow server tokens create" in paths


def test_a_stale_block_is_regenerated() -> None:
    stale = "```\n$ tofuflow approve --help\nUsage: tofuflow approve RUN (old)\n```\n"
    fresh = update_reference(stale)
    assert "(old)" not in fresh and "--comment" in fresh
