"""The local run context from a real git repository: commit, branch, origin, dirty flag."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tofuflow.ci import RunContext, detect_run_context

TOKEN = "ghp_s3cretT0ken"


@pytest.fixture(autouse=True)
def _git_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Reproducible commits, and neither the user's git config nor an enclosing
    # repository can change what these tests see.
    for name, value in {
        "GIT_AUTHOR_NAME": "Ada",
        "GIT_AUTHOR_EMAIL": "ada@example.com",
        "GIT_COMMITTER_NAME": "Ada",
        "GIT_COMMITTER_EMAIL": "ada@example.com",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CEILING_DIRECTORIES": str(tmp_path),
    }.items():
        monkeypatch.setenv(name, value)


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository on ``main`` with one commit and an origin whose URL holds a token."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "--quiet", "--initial-branch=main")
    (root / "main.tf").write_text('output "x" { value = 1 }\n')
    git(root, "add", "main.tf")
    git(root, "commit", "--quiet", "-m", "first")
    git(root, "remote", "add", "origin", f"https://ci-bot:{TOKEN}@git.example.com/org/infra.git")
    return root


def test_a_clean_checkout_gives_commit_branch_origin_and_not_dirty(repo: Path) -> None:
    ctx = detect_run_context({}, cwd=repo)
    assert ctx == RunContext(
        ci_system="local",
        commit_sha=git(repo, "rev-parse", "HEAD"),
        branch="main",
        repository="https://git.example.com/org/infra.git",
        dirty=False,
    )
    assert TOKEN not in str(ctx.to_json())


def test_a_feature_branch_is_reported(repo: Path) -> None:
    git(repo, "checkout", "--quiet", "-b", "feature/vpc")
    assert detect_run_context({}, cwd=repo).branch == "feature/vpc"


def test_a_modified_tracked_file_makes_it_dirty(repo: Path) -> None:
    (repo / "main.tf").write_text('output "x" { value = 2 }\n')
    assert detect_run_context({}, cwd=repo).dirty is True


def test_an_untracked_file_makes_it_dirty(repo: Path) -> None:
    # An untracked .tf file changes the plan as much as a modified one.
    (repo / "extra.tf").write_text("")
    assert detect_run_context({}, cwd=repo).dirty is True


def test_an_ignored_file_does_not_make_it_dirty(repo: Path) -> None:
    (repo / ".gitignore").write_text(".terraform/\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "--quiet", "-m", "ignore")
    (repo / ".terraform").mkdir()
    (repo / ".terraform" / "x").write_text("")
    assert detect_run_context({}, cwd=repo).dirty is False


def test_a_subdirectory_of_the_repository_works(repo: Path) -> None:
    (repo / "infra").mkdir()
    (repo / "infra" / "a.tf").write_text("")
    git(repo, "add", "infra")
    git(repo, "commit", "--quiet", "-m", "infra")
    ctx = detect_run_context({}, cwd=repo / "infra")
    assert (ctx.commit_sha, ctx.branch, ctx.dirty) == (
        git(repo, "rev-parse", "HEAD"),
        "main",
        False,
    )


def test_a_detached_head_has_a_commit_but_no_branch(repo: Path) -> None:
    sha = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "--quiet", "--detach")
    ctx = detect_run_context({}, cwd=repo)
    assert (ctx.commit_sha, ctx.branch) == (sha, None)


def test_a_repository_without_origin_has_no_repository_url(tmp_path: Path) -> None:
    root = tmp_path / "solo"
    root.mkdir()
    git(root, "init", "--quiet", "--initial-branch=trunk")
    ctx = detect_run_context({}, cwd=root)
    # No commit yet: the branch is known, the commit is not.
    assert ctx == RunContext(branch="trunk", dirty=False)


def test_a_directory_outside_any_repository_gives_empty_fields(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    assert detect_run_context({}, cwd=tmp_path / "plain") == RunContext()


def test_ci_variables_win_and_git_fills_only_what_they_lack(repo: Path) -> None:
    env = {
        "TF_BUILD": "True",
        "BUILD_SOURCEVERSION": "0" * 40,
        "BUILD_SOURCEBRANCH": "refs/heads/release",
        "BUILD_BUILDID": "7",
    }
    (repo / "main.tf").write_text("# edited on the agent\n")
    ctx = detect_run_context(env, cwd=repo)
    assert (ctx.ci_system, ctx.commit_sha, ctx.branch) == ("azure-devops", "0" * 40, "release")
    assert ctx.repository == "https://git.example.com/org/infra.git"
    assert ctx.dirty is True


def test_overrides_win_over_git(repo: Path) -> None:
    ctx = detect_run_context({}, cwd=repo, overrides={"branch": "main-override", "dirty": True})
    assert (ctx.branch, ctx.dirty) == ("main-override", True)


@pytest.fixture
def git_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A shim on PATH logs every git call to the returned file, then runs the real git."""
    real_git = shutil.which("git")
    assert real_git is not None
    shims = tmp_path / "shims"
    shims.mkdir()
    log = tmp_path / "git-calls.log"
    shim = shims / "git"
    shim.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\nexec "{real_git}" "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{shims}{os.pathsep}{os.environ['PATH']}")
    log.touch()
    return log


def test_detection_runs_git_at_most_twice(repo: Path, git_calls: Path) -> None:
    ctx = detect_run_context({}, cwd=repo)
    assert ctx.commit_sha is not None and ctx.repository is not None
    assert len(git_calls.read_text().splitlines()) <= 2


def test_git_is_not_run_when_nothing_is_missing(repo: Path, git_calls: Path) -> None:
    known = {"commit_sha": "abc", "branch": "main", "repository": "https://h/r", "dirty": False}
    assert detect_run_context({}, cwd=repo, overrides=known).commit_sha == "abc"
    assert git_calls.read_text() == ""
