"""What plain git says about a working copy: commit, branch, origin URL, dirty flag."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tofuflow.ci._context import Fields
from tofuflow.ci._normalize import strip_url_credentials

__all__ = ["GIT_FIELDS", "GitInfo", "default_branch", "fill_from_git", "read_git"]

GIT_FIELDS = ("commit_sha", "branch", "repository", "dirty")

# A hung git (network filesystem, huge repository) must not hang the run it describes.
_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class GitInfo:
    """Facts about a working copy; all None outside a git repository."""

    commit_sha: str | None = None
    branch: str | None = None
    repository: str | None = None
    dirty: bool | None = None


def read_git(cwd: Path, *, remote: bool = True) -> GitInfo:
    """Read ``cwd``'s working copy with at most two git calls; never raises.

        read_git(Path("."))  # GitInfo(commit_sha='3f2a…', branch='main', ...)

    ``remote=False`` skips the second call when the origin URL is already known.
    """
    # One call gives HEAD, the branch and the dirty flag. --no-optional-locks: a status
    # read must not take index.lock and break a concurrent git command in the pipeline.
    status = _git(cwd, "--no-optional-locks", "status", "--porcelain=v2", "--branch")
    if status is None:
        return GitInfo()  # not a repository, git missing, or refused (safe.directory)
    sha, branch, dirty = _parse_status(status)
    url = _git(cwd, "remote", "get-url", "origin") if remote else None
    repository = strip_url_credentials(url) if url and url.strip() else None
    return GitInfo(commit_sha=sha, branch=branch, repository=repository, dirty=dirty)


def fill_from_git(fields: Fields, cwd: Path) -> Fields:
    """Fill only the git fields that are still None; skip git when none is missing.

    fill_from_git({"commit_sha": "abc"}, Path("."))  # commit_sha stays "abc"
    """
    missing = [name for name in GIT_FIELDS if fields.get(name) is None]
    if not missing:
        return fields
    info = read_git(cwd, remote="repository" in missing)
    return {**fields, **{name: getattr(info, name) for name in missing}}


def default_branch(cwd: Path) -> str | None:
    """The repository's default branch: origin's ``HEAD``, else the branch checked out;
    None outside a repository or on a detached ``HEAD``."""
    remote = _git(cwd, "symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD")
    if remote and remote.strip().startswith("origin/"):
        return remote.strip().removeprefix("origin/")
    current = _git(cwd, "symbolic-ref", "--quiet", "--short", "HEAD")
    return current.strip() if current and current.strip() else None


def _parse_status(output: str) -> tuple[str | None, str | None, bool]:
    """Parse ``status --porcelain=v2 --branch``: ``# branch.*`` headers, then one line
    per changed or untracked path."""
    sha = branch = None
    dirty = False
    for line in output.splitlines():
        if line.startswith("# branch.oid "):
            value = line.removeprefix("# branch.oid ").strip()
            sha = None if value == "(initial)" else value  # no commit yet
        elif line.startswith("# branch.head "):
            value = line.removeprefix("# branch.head ").strip()
            branch = None if value == "(detached)" else value
        elif line and not line.startswith("#"):
            dirty = True
    return sha, branch, dirty


def _git(cwd: Path, *args: str) -> str | None:
    """git's stdout, or None for any failure: context detection must never fail a run."""
    try:
        done = subprocess.run(
            ["git", "-C", str(cwd), *args],
            capture_output=True,
            text=True,
            errors="replace",
            stdin=subprocess.DEVNULL,
            timeout=_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None
