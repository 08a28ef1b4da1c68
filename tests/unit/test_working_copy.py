"""The private working copy every stage runs in, and what a configuration is made of."""

from __future__ import annotations

import logging
import stat
import threading
import time
from pathlib import Path

import pytest

from tofuflow.runs import config_digest, configuration, working_copy


def _config(tmp_path: Path) -> Path:
    source = tmp_path / "infra"
    (source / ".terraform" / "providers").mkdir(parents=True)
    (source / "modules" / "m").mkdir(parents=True)
    (source / "scripts").mkdir()
    for name in ("main.tf", "vars.tfvars", ".terraform.lock.hcl", "modules/m/main.tf",
                 "scripts/deploy.sh", "data.json", "terraform.tfstate",
                 "terraform.tfstate.backup", "old.tfplan", "tofuflow_backend_override.tf",
                 ".terraform/providers/x"):  # fmt: skip
        (source / name).write_text(name)
    return source


def _files(directory: Path) -> list[str]:
    return sorted(
        str(p.relative_to(directory))
        for p in directory.rglob("*")
        if p.is_file() and ".terraform/" not in f"{p.relative_to(directory)}/"[:11]
    )


def test_a_copy_holds_every_file_the_configuration_reads_and_nothing_generated(
    tmp_path: Path,
) -> None:
    source = _config(tmp_path)
    with working_copy(source, "app/dev", base=tmp_path / "work") as copy:
        assert _files(copy.directory) == [
            ".terraform.lock.hcl", "data.json", "main.tf", "modules/m/main.tf",
            "scripts/deploy.sh", "vars.tfvars",
        ]  # fmt: skip
        assert stat.S_IMODE(copy.directory.parent.parent.stat().st_mode) == 0o700
        (copy.directory / "tofuflow.tfplan").write_text("plan with secrets")
    assert not (copy.directory / "tofuflow.tfplan").exists()  # plan files never stay
    assert (source / "terraform.tfstate").exists()  # the source is left alone
    assert not (source / "tofuflow.tfplan").exists()


def test_the_copy_of_a_workspace_is_at_the_same_place_every_time_and_starts_afresh(
    tmp_path: Path,
) -> None:
    source = _config(tmp_path)
    with working_copy(source, "app/dev", base=tmp_path / "work") as first:
        (first.directory / ".terraform" / "kept").mkdir(parents=True)
        (first.directory / "stray.tf").write_text("left by a stage")
    (source / "data.json").unlink()
    with working_copy(source, "app/dev", base=tmp_path / "work") as second:
        assert second.directory == first.directory  # path.root is stable per workspace
        assert (second.directory / ".terraform" / "kept").is_dir()  # init is reused
        assert not (second.directory / "stray.tf").exists()
        assert not (second.directory / "data.json").exists()
    with working_copy(source, "app/prod", base=tmp_path / "work") as other:
        assert other.directory != first.directory  # workspaces sharing infra/ do not share


def test_two_stages_of_one_workspace_wait_for_each_other(tmp_path: Path) -> None:
    source = _config(tmp_path)
    inside: list[str] = []

    def stage(name: str) -> None:
        with working_copy(source, "app/dev", base=tmp_path / "work"):
            inside.append(f"{name} in")
            time.sleep(0.3)
            inside.append(f"{name} out")

    threads = [threading.Thread(target=stage, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert inside[1] == inside[0].replace(" in", " out")


def test_errored_state_is_kept_and_never_overwritten(tmp_path: Path) -> None:
    source = _config(tmp_path)
    with working_copy(source, "app/dev", base=tmp_path / "work") as copy:
        (copy.directory / "errored.tfstate").write_text("{}")  # the only record of what exists
    kept = list(copy.root.glob("errored-*.tfstate"))
    assert len(kept) == 1 and kept[0].read_text() == "{}"
    with working_copy(source, "app/dev", base=tmp_path / "work"):
        assert kept[0].exists()


def test_modules_outside_the_directory_are_part_of_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "repo" / "modules" / "net").mkdir(parents=True)
    (tmp_path / "repo" / "modules" / "net" / "main.tf").write_text("# net\n")
    (tmp_path / "repo" / "modules" / "net" / "setup.py").write_text("print(1)\n")
    (tmp_path / "repo" / "live" / "dev").mkdir(parents=True)
    live = tmp_path / "repo" / "live" / "dev"
    (live / "main.tf").write_text('module "net" {\n  source = "../../modules/net"\n}\n')
    tree = configuration(live)
    assert tree.root == (tmp_path / "repo").resolve()
    assert [str(f) for f in tree.files] == [
        "live/dev/main.tf", "modules/net/main.tf", "modules/net/setup.py",
    ]  # fmt: skip
    before = config_digest(live)
    (tmp_path / "repo" / "modules" / "net" / "setup.py").write_text("print(2)\n")
    assert config_digest(live) != before  # a script the module runs is covered
    with working_copy(live, "app/dev", base=tmp_path / "work") as copy:
        assert (copy.directory / "../../modules/net/setup.py").read_text() == "print(2)\n"
        assert copy.directory.name == "dev"


def test_errored_state_an_orphaned_binary_left_is_warned_about_by_the_next_stage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A binary that outlived its killed task wrote errored.tfstate after the task was
    gone: the next stage renamed it without a word."""
    source = _config(tmp_path)
    with working_copy(source, "app/dev", base=tmp_path / "work") as copy:
        pass
    (copy.directory / "errored.tfstate").write_text("{}")  # after the stage had ended
    with (
        caplog.at_level(logging.WARNING, logger="tofuflow.runs"),
        working_copy(source, "app/dev", base=tmp_path / "work"),
    ):
        pass
    (kept,) = copy.root.glob("errored-*.tfstate")
    (warning,) = [r.getMessage() for r in caplog.records if "errored.tfstate" in r.getMessage()]
    assert warning.startswith("app/dev: an earlier stage on this machine could not save")
    assert str(kept) in warning
