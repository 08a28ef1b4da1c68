"""The command sequences of the examples' READMEs, run as written.

Each line of a ``sh`` block runs in bash in a copy of the repository, one after the
other, with ``tofuflow`` on PATH and a fresh embedded control plane. ``<run id>`` and
``RUN`` stand for the run id the last command printed. A comment saying ``exit N`` is
the exit code expected; ``refused`` means any failure; otherwise 0.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.binary

ROOT = Path(__file__).resolve().parents[2]


def _sh_blocks(readme: Path) -> list[list[str]]:
    blocks, current = [], None
    for line in readme.read_text().splitlines():
        if line.strip() == "```sh":
            current = []
        elif line.strip() == "```" and current is not None:
            blocks.append(current)
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def _expected(comment: str) -> int | None:
    """The exit code a line's comment promises (None: any failure)."""
    found = re.search(r"\bexit (\d)\b", comment)
    if found:
        return int(found.group(1))
    return None if "refused" in comment else 0


def test_the_project_examples_sequence_runs_as_written(tmp_path: Path, binary: object) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "examples" / "project", repo / "examples" / "project")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "TOFUFLOW_DATA_DIR": str(tmp_path / "data"),
    }
    env.pop("TOFUFLOW_SERVER_URL", None)
    (block,) = _sh_blocks(ROOT / "examples" / "project" / "README.md")
    ran, _ = _run_block(block, repo, env)
    assert ran >= 10
    assert sorted(p.name for p in (repo / "examples" / "project" / "infra").iterdir()) == [
        "main.tf"
    ]


def _run_block(
    block: list[str], repo: Path, env: dict[str, str], run_id: str = ""
) -> tuple[int, str]:
    """Run a block's lines one by one, in ``repo`` (``cd X`` moves to ``repo/X``), as the
    module docstring says; a comment's quoted text must be in the output. Returns (lines
    run, the last run id printed)."""
    cwd, ran = repo, 0
    for raw in block:
        command, _, comment = raw.partition("#")
        command = command.strip()
        if not command:
            continue
        if command.startswith("cd "):
            cwd = repo / command[3:].strip()
            continue
        command = command.replace("<run id>", run_id).replace("RUN", run_id)
        done = subprocess.run(
            ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
            timeout=300, check=False,
        )  # fmt: skip
        output = done.stdout + done.stderr
        expected = _expected(comment)
        if expected is None:
            assert done.returncode != 0, f"{command!r} should be refused:\n{output}"
        else:
            assert done.returncode == expected, f"{command!r} exit {done.returncode}:\n{output}"
        quoted = re.search(r'"([^"]+)"', comment)
        if quoted and "<id>" not in quoted.group(1):
            assert quoted.group(1) in output, f"{command!r}: no {quoted.group(1)!r}:\n{output}"
        ids = re.findall(r"\brun ([0-9a-f]{16})\b", done.stdout)
        run_id = ids[-1] if ids else run_id
        ran += 1
    return ran, run_id


def _project_copy(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of examples/project and an environment with `tofuflow` on PATH and an
    embedded control plane of the test's own."""
    repo = tmp_path / "project"
    shutil.copytree(ROOT / "examples" / "project", repo)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "TOFUFLOW_DATA_DIR": str(tmp_path / "data"),
    }
    env.pop("TOFUFLOW_SERVER_URL", None)
    return repo, env


def test_the_readmes_next_steps_run_as_written_in_the_project_example(
    tmp_path: Path, binary: object
) -> None:
    """README.md's command blocks after "Two commands" (those are `make demo`, tested by
    test_cli, and `make test`, the suite itself), one after the other in a copy of
    examples/project, which has the workspaces they name, with the embedded plane."""
    repo, env = _project_copy(tmp_path)
    first, *blocks = _sh_blocks(ROOT / "README.md")
    assert [line.split("#")[0].strip() for line in first] == ["make demo", "make test"]
    assert len(blocks) >= 2
    run_id, ran = "", 0
    for block in blocks:
        lines, run_id = _run_block(block, repo, env, run_id)
        ran += lines
    assert ran >= 8
    assert sorted(p.name for p in (repo / "infra").iterdir()) == ["main.tf"]


def test_the_drift_guides_commands_run_as_written(tmp_path: Path, binary: object) -> None:
    """docs/drift.md's block, in a copy of examples/project with both workspaces applied
    (so each command finds no drift and exits 0; the exit codes on drift are tested in
    test_drift)."""
    repo, env = _project_copy(tmp_path)
    applied = [
        "tofuflow plan app/dev  # exit 2", "tofuflow apply RUN",
        "tofuflow plan app/prod  # exit 2", "tofuflow approve RUN", "tofuflow apply RUN",
    ]  # fmt: skip
    _run_block(applied, repo, env)
    (block,) = _sh_blocks(ROOT / "docs" / "drift.md")
    ran, _ = _run_block(block, repo, env)
    assert ran == 4
    report = (repo / "drift.md").read_text()
    assert "0 drifted, 2 without drift" in report
    # Who applied, as a person reads it (the embedded plane's token says which command).
    assert "requested by tofuflow plan app/prod" in report, report


def test_the_server_examples_sequence_runs_as_written(tmp_path: Path, binary: object) -> None:
    """examples/server/README.md "Trying it locally": its TOML, then its shell block.

    Two substitutions keep parallel test runs apart: ``/tmp/`` becomes this test's own
    directory, and port 8470 a free one (written as ``port`` into the TOML's
    ``[server]`` table, where the server reads it). Everything else runs as written, in one shell
    environment (``export`` and ``X=$(...)`` carry over), the server in the background.
    """
    import socket
    import time

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    readme = (ROOT / "examples" / "server" / "README.md").read_text()

    def local(text: str) -> str:
        return text.replace("/tmp/", f"{tmp_path}/").replace("8470", str(port))

    toml = local(readme.split("```toml\n", 1)[1].split("```", 1)[0])
    (tmp_path / "tofuflow-server.toml").write_text(
        toml.replace("[server]\n", f"[server]\nport = {port}\n", 1)
    )
    (tmp_path / "tofuflow-policies").mkdir()  # "must exist; your *.rego files"
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "examples" / "project", repo / "examples" / "project")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TOFUFLOW_")},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "TOFUFLOW_CACHE_DIR": str(tmp_path / "cache"),
    }
    blocks = _sh_blocks(ROOT / "examples" / "server" / "README.md")
    block = next(b for b in blocks if any("tofuflow server &" in line for line in b))
    cwd, run_id, server = repo, "", None
    try:
        for raw in block:
            command, _, comment = raw.partition("#")
            command = local(command.strip())
            if not command:
                continue
            if command.startswith("cd "):
                cwd = repo / command[3:].strip()
            elif command.startswith("export "):
                name, _, value = command[len("export ") :].partition("=")
                env[name] = value
            elif command.endswith("&"):
                server = subprocess.Popen(
                    ["bash", "-c", command.rstrip("&").strip()], cwd=cwd, env=env,
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                )  # fmt: skip
                deadline = time.monotonic() + 60
                while True:
                    assert server.poll() is None, server.stderr.read() if server.stderr else ""
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    assert time.monotonic() < deadline, "the server did not start"
                    time.sleep(0.2)
            elif re.fullmatch(r"[A-Z_]+=\$\(.*\)", command):
                name, _, inner = command.partition("=")
                done = subprocess.run(
                    ["bash", "-c", inner[2:-1]], cwd=cwd, env=env, capture_output=True,
                    text=True, timeout=120, check=False,
                )  # fmt: skip
                assert done.returncode == 0, f"{inner}: {done.stderr}"
                env[name] = done.stdout.strip()
            else:
                command = command.replace("RUN", run_id)
                done = subprocess.run(
                    ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                    timeout=300, check=False,
                )  # fmt: skip
                expected = _expected(comment)
                assert done.returncode == expected, f"{command}: {done.stdout}{done.stderr}"
                if "needs_approval" in comment:
                    assert "needs_approval" in done.stdout
                ids = re.findall(r"\brun ([0-9a-f]{16})\b", done.stdout)
                run_id = ids[-1] if ids else run_id
        assert run_id
        assert "audit log intact" in done.stdout
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
