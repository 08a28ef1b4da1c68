"""The command sequences of README.md, the examples' READMEs and docs/, run as written.

Each line of a ``sh`` block runs in bash in a copy of the repository, one after the
other, with ``tofuflow`` on PATH and a fresh embedded control plane. ``<run id>`` and
``RUN`` stand for the run id the last command printed. A comment saying ``exit N`` is
the exit code expected; ``refused`` means any failure; otherwise 0.

Their sample outputs (the blocks showing what a command prints) are compared with what
the command prints, made to print it as the doc says: ``_assert_printed`` (line by line,
``...`` for lines a sample leaves out; only ids, times, ports and paths may differ) and
``_json_differences`` for JSON samples. Other test files use them too (test_install,
test_identity_e2e, test_notifications).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from _services.pyvider import pyvider  # noqa: F401 - the session fixture

pytestmark = pytest.mark.binary

ROOT = Path(__file__).resolve().parents[2]


def _sh_blocks(readme: Path) -> list[list[str]]:
    return _sh_blocks_in(readme.read_text())


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
        command = command.replace("<run id>", run_id).replace("<id>", run_id)
        command = command.replace("RUN", run_id)
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
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "examples" / "project", repo / "examples" / "project")
    shutil.copytree(ROOT / "examples" / "server", repo / "examples" / "server")
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


def _commands(block: list[str]) -> list[str]:
    """A block's commands: continuation lines (``\\`` at the end) joined, comments and
    blank lines dropped."""
    commands, pending = [], ""
    for raw in block:
        line = raw.split("  #")[0].rstrip()
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        command = (pending + line.strip()).strip()
        pending = ""
        if command:
            commands.append(command)
    return commands


def _policy_example(directory: Path, env: dict[str, str]) -> None:
    """What docs/policies.md's block starts from: a saved plan that adds 4, changes 2 and
    destroys 7 (its sample output's plan), a policies/ directory and prod-settings.json."""

    def resources(names: list[str], value: str) -> str:
        return "".join(
            f'resource "terraform_data" "{n}" {{\n  input = "{value}"\n}}\n' for n in names
        )

    kept = ["c1", "c2"]
    gone = [f"d{i}" for i in range(1, 8)]
    (directory / "main.tf").write_text(resources(kept, "a") + resources(gone, "a"))
    for command in (["init", "-input=false"], ["apply", "-auto-approve", "-input=false"]):
        done = subprocess.run(["tofu", *command], cwd=directory, env=env, capture_output=True,
                              text=True, timeout=300, check=False)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    (directory / "main.tf").write_text(
        resources(kept, "b") + resources([f"a{i}" for i in range(1, 5)], "a")
    )
    planned = subprocess.run(
        ["tofu", "plan", "-input=false", "-no-color", "-out", "plan.tfplan"], cwd=directory,
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert "Plan: 4 to add, 2 to change, 7 to destroy." in planned.stdout, planned.stdout
    (directory / "policies").mkdir()
    (directory / "policies" / "users.rego").write_text(
        "package acme.rules\n\nimport rego.v1\n\n"
        "deny contains msg if {\n  some rc in input.plan.resource_changes\n"
        '  rc.type == "aws_iam_user"\n  msg := sprintf("no IAM users: %s", [rc.address])\n}\n'
    )
    (directory / "prod-settings.json").write_text('{"max_deletions": 3}\n')


def test_the_policy_guides_commands_run_as_written(tmp_path: Path, binary: Any) -> None:
    """docs/policies.md's `tofuflow policy test` block, each command as written (the doc's
    `tofu` is the binary found here), on its sample output's plan: the exit codes are the
    ones the guide lists, and the production test prints what its sample shows."""
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "tofu").symlink_to(binary.path)
    env = {
        **os.environ,
        "PATH": f"{shims}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "TF_DATA_DIR": str(tmp_path / "tf-data"),
    }
    work = tmp_path / "infra"
    work.mkdir()
    _policy_example(work, env)
    text = (ROOT / "docs" / "policies.md").read_text()
    section = text.split("## `tofuflow policy test`", 1)[1]
    (block,) = _sh_blocks_in(section)
    commands = _commands(block)
    assert len(commands) == 4, commands
    outputs = []
    for command in commands:
        done = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True,
                              text=True, timeout=300, check=False)  # fmt: skip
        outputs.append((done.returncode, done.stdout, done.stderr))
    codes = [code for code, _, _ in outputs]
    # show; built-ins only (deletions need a person); production + max_deletions (denied);
    # the policies/ directory alone: it denies nothing and says nothing is routine, so a
    # person decides (no rule approves by default), as JSON.
    assert codes == [0, 2, 3, 2], outputs
    _, sample = _sample("docs/policies.md", "## `tofuflow policy test`")
    _assert_printed(sample, outputs[2][1], "docs/policies.md's `policy test` sample")
    assert json.loads(outputs[3][1])["outcome"] == "needs_approval", outputs[3][1]

    # docs/cli.md's `policy test` block: the same production check, denied.
    (reference,) = [b for b in _sh_blocks(ROOT / "docs" / "cli.md") if "plan.json" in b[0]]
    codes = []
    for command in _commands(reference):
        done = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True,
                              text=True, timeout=300, check=False)  # fmt: skip
        codes.append(done.returncode)
    assert codes == [0, 3], done.stdout + done.stderr
    assert "outcome: denied" in done.stdout


def _sh_blocks_in(text: str) -> list[list[str]]:
    """``_sh_blocks`` of a part of a file."""
    blocks, current = [], None
    for line in text.splitlines():
        if line.strip() == "```sh":
            current = []
        elif line.strip() == "```" and current is not None:
            blocks.append(current)
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def _section(block: list[str], heading: str) -> list[str]:
    """The lines of a block from the comment line ``# heading`` to the next comment line
    that starts a section (a ``#`` line after a blank one)."""
    start = block.index(f"# {heading}")
    lines = []
    for index, line in enumerate(block[start + 1 :], start + 1):
        if line.startswith("# ") and not block[index - 1].strip():
            break
        lines.append(line)
    return lines


def test_the_cli_references_examples_run_as_written(tmp_path: Path, binary: object) -> None:
    """docs/cli.md's "Examples" block: the main job, the project's plan → approve → apply,
    and `tofuflow version`, as written, on the embedded plane (a fresh data directory).

    Not run here: the lines that name a shared server at example.com, /etc paths and a
    download mirror (`tofuflow server` and its tokens run as written in
    test_the_server_examples_sequence_runs_as_written; `install` against a mirror in
    test_install), and `policy test plan.json` (needs a saved plan: the policy guide's
    block, which makes one, runs in test_the_policy_guides_commands_run_as_written)."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "examples" / "project", repo / "examples" / "project")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TOFUFLOW_")},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "XDG_DATA_HOME": str(tmp_path / "data"),  # the demo's directory and the plane's
    }
    blocks = _sh_blocks(ROOT / "docs" / "cli.md")
    (block,) = [b for b in blocks if "# The main job, on the embedded control plane." in b]
    main_job = _section(block, "The main job, on the embedded control plane.")
    project = _section(block, "A project: plan here, apply (possibly elsewhere) once approved.")
    binaries = [line for line in _section(block, "Binaries.") if line == "tofuflow version"]
    ran, _ = _run_block([*main_job, *project, *binaries], repo, env)
    assert ran == 11
    applied = repo / "examples" / "project" / "infra"
    assert sorted(p.name for p in applied.iterdir()) == ["main.tf"]  # state is remote
    quickstart = tmp_path / "data" / "tofuflow" / "demo" / "quickstart"
    assert quickstart.is_dir() and not list(quickstart.glob("*.txt"))  # --destroy ran


def test_the_init_lines_of_the_configuration_guide_run_as_written(
    tmp_path: Path, binary: object
) -> None:
    """docs/configuration.md's `tofuflow init` block, in a repository with a configuration
    at its root and one under path/to/repo (the names the block uses)."""
    repo = tmp_path / "repo"
    for where in (repo / "infra", repo / "path" / "to" / "repo" / "app"):
        where.mkdir(parents=True)
        (where / "main.tf").write_text('output "ok" {\n  value = true\n}\n')
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TOFUFLOW_")},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    (block,) = _sh_blocks(ROOT / "docs" / "configuration.md")
    (repo / "path" / "to" / "repo" / "tofuflow.toml").unlink(missing_ok=True)
    # path/to/repo is another repository (init refuses a file below another one within
    # a repository: it would shadow it).
    subprocess.run(["git", "init", "-q", str(repo / "path" / "to" / "repo")], check=True)
    ran, _ = _run_block(block, repo, env)
    assert ran == 3
    assert "[workspaces." in (repo / "tofuflow.toml").read_text()
    assert '"app"' in (repo / "path" / "to" / "repo" / "tofuflow.toml").read_text()


def test_the_azure_devops_guides_pipeline_init_runs_as_written(tmp_path: Path) -> None:
    """docs/azure-devops.md's `tofuflow pipeline init azure-devops` block, in a copy of
    examples/project (which defines the app/dev and app/prod it names)."""
    import yaml

    repo = tmp_path / "project"
    shutil.copytree(ROOT / "examples" / "project", repo)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TOFUFLOW_")},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    (block,) = _sh_blocks(ROOT / "docs" / "azure-devops.md")
    commands = _commands(block)
    assert len(commands) == 1 and commands[0].startswith("tofuflow pipeline init azure-devops")
    done = subprocess.run(["bash", "-c", commands[0]], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    main = repo / "azure-pipelines.yml"
    assert main.is_file(), done.stdout
    pipeline = yaml.safe_load(main.read_text())
    text = main.read_text()
    for name in ("app/dev", "app/prod", "tofu-plan", "tofu-apply", "ubuntu-latest"):
        assert name in text, name
    assert pipeline.get("stages") or pipeline.get("jobs"), pipeline


def test_the_server_examples_configuration_loads_as_its_readme_says() -> None:
    """examples/server/README.md's first block, as written, from the repository's root
    (where `make` puts .venv): the production example's server.toml loads."""
    first = _sh_blocks(ROOT / "examples" / "server" / "README.md")[0]
    (command,) = _commands(first)
    assert command.startswith(".venv/bin/python ")
    assert (ROOT / ".venv" / "bin" / "python").exists(), "run `make test`: it creates .venv"
    done = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_readmes_demo_output_is_what_a_first_run_prints(tmp_path: Path, binary: object) -> None:
    """README.md's sample of `make demo`'s output against a first `tofuflow demo` in a
    fresh data directory (see _assert_printed)."""
    readme = (ROOT / "README.md").read_text()
    sample = readme.split("prints the run,", 1)[1].split("```\n", 2)[1]
    data = tmp_path / "data"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TOFUFLOW_")},
        "XDG_DATA_HOME": str(data),
    }
    done = subprocess.run(
        [sys.executable, "-c", "from tofuflow.cli import main; main()", "demo"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    _assert_printed(sample, done.stdout, "README.md's demo sample", {"/home/me/.local/share": data})


# What may differ between a doc's sample output and a real run, and nothing else: resource
# ids (UUIDs), times, ports, run ids and other hex digests (commits, fingerprints), token
# ids, durations. Each is matched by its shape; a time by its own (the separator, a
# fraction of a second, an offset or "UTC" as the sample shows them), a hex digest by its
# number of digits; every other character must be printed as it is.
_UUID = r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}"
_VARYING = (
    (_UUID, lambda _: _UUID),
    (r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:\.\d+)?(?:[+-]\d\d:\d\d)?",
     lambda time: "".join(
         r"\.\d+" if part.startswith(".") else r"\d" if part.isdigit() else re.escape(part)
         for part in re.findall(r"\.\d+|.", time))),
    (r"(?<=127\.0\.0\.1:)\d+", lambda _: r"\d+"),
    (r"\b(?=[0-9a-f]*\d)[0-9a-f]{8,64}\b", lambda digest: f"[0-9a-f]{{{len(digest)}}}"),
    (r"\btfw_[A-Za-z0-9]{12}\b", lambda _: r"tfw_[A-Za-z0-9_-]{12}"),
    (r"\b\d+(?:\.\d+)?s\b", lambda _: r"\d+(?:\.\d+)?s"),
)  # fmt: skip


def _line_pattern(line: str, paths: dict[str, str]) -> str:
    """A regular expression for a sample line: the paths in ``paths`` (the doc's → the
    real ones) and the _VARYING parts by their shape, the rest literally. A line ending
    in " ..." stands for any line that starts with what is before it."""
    rest = ""
    if line.endswith(" ...") and line.strip() != "...":
        line, rest = line[: -len(" ...")], ".*"
    kinds = [re.escape(doc) for doc in sorted(paths, key=len, reverse=True)]
    kinds += [shape for shape, _ in _VARYING]
    pattern, at = "", 0
    for found in re.finditer("|".join(f"({kind})" for kind in kinds), line):
        pattern += re.escape(line[at : found.start()])
        index = found.lastindex - 1  # type: ignore[operator]
        if index < len(paths):
            pattern += re.escape(paths[found.group()])
        else:
            pattern += _VARYING[index - len(paths)][1](found.group())
        at = found.end()
    return pattern + re.escape(line[at:]) + rest


def _assert_printed(
    sample: str, printed: str, what: str, paths: dict[str, Path | str] | None = None
) -> None:
    """Assert that ``printed`` is what ``sample`` (a doc's sample output, ``what``) shows:
    line by line, in order, every word and number the same; only _VARYING parts and
    ``paths`` (the doc's → the real ones) may differ. A line ``...`` stands for any lines
    (none too), a line ending in `` ...`` for the rest of that line; otherwise no printed
    line may be left out, and nothing may follow the sample's last line."""
    real = {doc: str(path) for doc, path in (paths or {}).items()}
    lines = [line.rstrip() for line in sample.strip("\n").splitlines()]
    patterns = [None if line.strip() == "..." else _line_pattern(line, real) for line in lines]
    out = [line.rstrip() for line in printed.rstrip().splitlines()]
    deepest = [0, 0]  # the furthest sample line reached, and where in ``out``

    def matches(i: int, j: int) -> bool:
        if i > deepest[0]:
            deepest[:] = [i, j]
        if i == len(patterns):
            return j == len(out)
        if patterns[i] is None:
            return any(matches(i + 1, k) for k in range(j, len(out) + 1))
        return (
            j < len(out) and re.fullmatch(patterns[i], out[j]) is not None and matches(i + 1, j + 1)
        )

    if not matches(0, 0):
        i, j = deepest
        said = repr(lines[i]) if i < len(lines) else "nothing more"
        raise AssertionError(
            f"{what} says {said} here; the command printed, from there on:\n" + "\n".join(out[j:])
        )


def _sample(doc: str, after: str) -> tuple[str, str]:
    """The first sample output block (a bare or ``text`` fence) after the text ``after``
    in ``doc`` (a path from the repository's root): the command of its ``$ `` line ("" if
    it has none) and the output it shows."""
    lines = (ROOT / doc).read_text().split(after, 1)[1].splitlines()
    fences = [i for i, line in enumerate(lines) if line.lstrip().startswith("```")]
    for start, end in zip(fences[::2], fences[1::2], strict=False):  # opening, closing
        if lines[start].strip() in ("```", "```text"):
            indent = len(lines[start]) - len(lines[start].lstrip())
            shown = [line[indent:] for line in lines[start + 1 : end]]
            if shown and shown[0].startswith("$ "):
                return shown[0][2:], "\n".join(shown[1:])
            return "", "\n".join(shown)
    raise AssertionError(f"{doc}: no sample output after {after!r}")


def _terminal_env(tmp_path: Path) -> dict[str, str]:
    """`tofuflow` on PATH, no TOFUFLOW_ settings but the test's cache, an embedded control
    plane of the test's own (under XDG_DATA_HOME), output unbuffered (so that stdout and
    stderr interleave as a terminal shows them)."""
    return {
        **{k: v for k, v in os.environ.items()
           if not k.startswith("TOFUFLOW_") or k == "TOFUFLOW_CACHE_DIR"},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "PYTHONUNBUFFERED": "1",
    }  # fmt: skip


def _terminal(command: str, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run ``command`` in bash; its exit code and what a terminal shows (stdout and stderr
    in one stream)."""
    done = subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=300, check=False,
    )  # fmt: skip
    return done.returncode, done.stdout


def test_the_cli_references_version_sample_is_what_version_prints(
    tmp_path: Path, binary: Any
) -> None:
    """docs/cli.md's `tofuflow version` sample; its binary is the one found here."""
    command, sample = _sample("docs/cli.md", "Prints two lines:")
    code, printed = _terminal(command, tmp_path, _terminal_env(tmp_path))
    assert code == 0, printed
    here = {"terraform 1.11.4 (/usr/local/bin/terraform)": str(binary)}
    _assert_printed(sample, printed, "docs/cli.md's `tofuflow version` sample", here)


def test_the_cli_references_run_all_sample_is_what_run_all_prints(
    tmp_path: Path, binary: object
) -> None:
    """docs/cli.md's `tofuflow run-all apply` sample, with the stacks it describes: `db`
    reads `net`'s output `id` and its provisioner fails; `app` depends on `db` and `logs`.
    `net` takes a second longer than `logs` (a sleeping provisioner), so that `logs` ends
    first, as in the sample."""
    repo = tmp_path / "repo"
    stacks = {
        "net": 'resource "terraform_data" "net" {\n  provisioner "local-exec" {\n'
               '    command = "sleep 1"\n  }\n}\n\n'
               'output "id" {\n  value = terraform_data.net.id\n}\n',
        "logs": 'resource "terraform_data" "logs" {}\n\n'
                'output "id" {\n  value = terraform_data.logs.id\n}\n',
        "db": 'variable "net_id" { type = string }\nresource "terraform_data" "db" {\n'
              '  input = var.net_id\n  provisioner "local-exec" { command = "exit 1" }\n}\n',
        "app": 'resource "terraform_data" "app" {}\n',
    }  # fmt: skip
    for name, config in stacks.items():
        (repo / name).mkdir(parents=True)
        (repo / name / "main.tf").write_text(config)
    (repo / "tofuflow.toml").write_text(
        '[workspaces.net]\ndirectory = "net"\n\n[workspaces.logs]\ndirectory = "logs"\n\n'
        '[workspaces.db]\ndirectory = "db"\ndepends_on = ["net"]\n'
        'inputs = { net_id = "net.id" }\n\n'
        '[workspaces.app]\ndirectory = "app"\ndepends_on = ["db", "logs"]\n'
    )
    command, sample = _sample("docs/cli.md", "and its provisioner fails;")
    code, printed = _terminal(command, repo, _terminal_env(tmp_path))
    assert code == 1, printed  # a stack failed
    here = {"/home/me/.local/share": tmp_path / "data"}
    _assert_printed(sample, printed, "docs/cli.md's `run-all apply` sample", here)


def test_the_configuration_guides_tofuflow_toml_errors_are_what_plan_prints(
    tmp_path: Path,
) -> None:
    """docs/configuration.md's sample of a tofuflow.toml with typos (at the lines it
    names), as `tofuflow plan` prints it."""
    (tmp_path / "infra").mkdir()
    (tmp_path / "tofuflow.toml").write_text(
        '[workspaces.app]\ndirectory = "infra"\nvarables = { region = "eu-west-1" }\n\n'
        "[workspaces.app.identity.plan]\n"
        'source = "azure-devops"\nservice_connection_id = "6f1c2a4e"\n'
        'role_arn = "arn:aws:iam::123456789012:role/tofu-plan"\nclod = "aws"\n'
    )
    _, sample = _sample("docs/configuration.md", "so a typo never silently drops a setting:")
    code, printed = _terminal("tofuflow plan app", tmp_path, _terminal_env(tmp_path))
    assert code == 1, printed
    _assert_printed(sample, printed, "docs/configuration.md's tofuflow.toml errors")


def test_the_configuration_guides_server_toml_errors_are_what_the_server_prints(
    tmp_path: Path,
) -> None:
    """docs/configuration.md's sample of a server TOML with typos (at the lines it names),
    as `tofuflow server --config FILE` prints it, before it creates or binds anything."""
    config = tmp_path / "etc" / "server.toml"
    config.parent.mkdir()
    work = tmp_path / "work"  # not a directory above the file: its path is printed whole
    work.mkdir()
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "server"}"\nprot = 8471\n\n'
        '[polices]\ndirectory = "policies"\n\n[runs]\naproval_ttl = "24h"\n'
    )
    _, sample = _sample("docs/configuration.md", "an unknown key with the nearest valid one:")
    command = "tofuflow server --config /etc/tofuflow/server.toml"
    code, printed = _terminal(command.replace("/etc/tofuflow/server.toml", str(config)),
                              work, _terminal_env(tmp_path))  # fmt: skip
    assert code == 1, printed
    here = {"/etc/tofuflow/server.toml": config}
    _assert_printed(sample, printed, "docs/configuration.md's server TOML errors", here)
    assert not (tmp_path / "server").exists()


def test_the_configuration_guides_init_sample_is_what_init_prints(tmp_path: Path) -> None:
    """docs/configuration.md's `tofuflow init` sample, in a repository with what it lists:
    three root modules (infra/app with its own s3 backend and a variable without a
    default), and modules/vpc (used by infra/network) with modules/vpc/subnets (used by
    modules/vpc)."""
    repo = tmp_path / "src" / "acme"
    configs = {
        "infra/app": 'terraform {\n  backend "s3" {}\n}\n\n'
                     'variable "region" {\n  type = string\n}\n',
        "infra/legacy": 'resource "terraform_data" "legacy" {}\n',
        "infra/network": 'module "vpc" {\n  source = "../../modules/vpc"\n}\n',
        "modules/vpc": 'module "subnets" {\n  source = "./subnets"\n}\n',
        "modules/vpc/subnets": 'resource "terraform_data" "subnet" {}\n',
    }  # fmt: skip
    for directory, config in configs.items():
        (repo / directory).mkdir(parents=True)
        (repo / directory / "main.tf").write_text(config)
    _, sample = _sample("docs/configuration.md", "the variables still to set, and the")
    code, printed = _terminal("tofuflow init", repo, _terminal_env(tmp_path))
    assert code == 0, printed
    _assert_printed(sample, printed, "docs/configuration.md's init sample", {"/src/acme": repo})


def test_the_cli_references_interrupted_apply_line_is_what_apply_prints(
    tmp_path: Path, binary: object
) -> None:
    """docs/cli.md's line of an interrupted `apply` (2 of 6 changes applied, 4 stopped
    while being created): the same apply, Ctrl-C'd once two resources are created and four
    provisioners are sleeping. How many state versions the binary saves on its way out (a
    version now and then while resources complete, and on its way out) depends on timing:
    the line must name the version the control plane holds, one per state write its audit
    log records."""
    import signal

    repo = tmp_path / "repo"
    (repo / "infra").mkdir(parents=True)
    (repo / "infra" / "main.tf").write_text(
        'resource "terraform_data" "quick" {\n  count = 2\n}\n\n'
        'resource "terraform_data" "slow" {\n  count = 4\n'
        '  provisioner "local-exec" {\n    command = "sleep 60"\n  }\n}\n'
    )
    (repo / "tofuflow.toml").write_text('[workspaces."app/dev"]\ndirectory = "infra"\n')
    env = _terminal_env(tmp_path)
    code, planned = _terminal("tofuflow plan app/dev", repo, env)
    assert code == 2, planned
    run_id = re.findall(r"\brun ([0-9a-f]{16})\b", planned)[-1]
    apply = subprocess.Popen(
        ["tofuflow", "apply", run_id], cwd=repo, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert apply.stdout is not None
    for line in apply.stdout:  # per-resource progress, as it happens
        if re.match(r"\[\s*2/6\s+\d+s\] ", line):
            break
    apply.send_signal(signal.SIGINT)
    _, printed = apply.communicate(timeout=120)
    assert apply.returncode == 1, printed
    _, sample = _sample("docs/cli.md", "with how many resources it applied) and prints one line:")
    saved = re.search(r"saved as state version (\d+);", printed)
    _, audited = _terminal("tofuflow audit show --workspace app/dev", repo, env)
    writes = re.findall(r" state\.write +ok +app/dev ", audited)
    assert saved and int(saved.group(1)) == len(writes) >= 1, (printed, audited)
    here = {"saved as state version 4;": saved.group()}
    _assert_printed(sample, printed, "docs/cli.md's interrupted apply line", here)


def _json_differences(
    sample: Any, real: Any, here: dict[str, str], ids: frozenset[str], where: str = "$"
) -> list[str]:
    """How ``real`` differs from a doc's JSON sample. In a sample, "…" stands for any
    value, a string ending in "…" for any string that starts so, a list ending in "…" for
    more items, and a key "…" for more keys; otherwise an object has exactly the sample's
    keys, and a string is compared as a sample line is (_line_pattern, with ``here``).
    The keys in ``ids`` hold database ids: any integer."""
    if sample == "…" or (where.rpartition(".")[2] in ids and isinstance(real, int)):
        return []
    if isinstance(sample, dict):
        if not isinstance(real, dict):
            return [f"{where}: {real!r} where the sample has an object"]
        problems = [f"{where}: no {key!r}" for key in sample if key != "…" and key not in real]
        if "…" not in sample:
            problems += [f"{where}: {key!r} is not in the sample" for key in real
                         if key not in sample]  # fmt: skip
        for key in sample.keys() & real.keys():
            problems += _json_differences(sample[key], real[key], here, ids, f"{where}.{key}")
        return problems
    if isinstance(sample, list):
        more = bool(sample) and sample[-1] == "…"
        items = sample[:-1] if more else sample
        if not isinstance(real, list):
            return [f"{where}: {real!r} where the sample has a list"]
        problems = []
        if len(real) < len(items) or (not more and len(real) > len(items)):
            problems.append(f"{where}: {len(real)} items where the sample has {len(items)}")
        for index, (item, value) in enumerate(zip(items, real, strict=False)):
            problems += _json_differences(item, value, here, ids, f"{where}[{index}]")
        return problems
    if isinstance(sample, str) and isinstance(real, str):
        pattern = _line_pattern(sample.removesuffix("…"), here)
        pattern += ".*" if sample.endswith("…") else ""
        return [] if re.fullmatch(pattern, real) else [f"{where}: {real!r}, not {sample!r}"]
    if type(sample) is not type(real) or sample != real:
        return [f"{where}: {real!r}, not {sample!r}"]
    return []


@pytest.fixture(scope="module")
def drifted(
    tmp_path_factory: pytest.TempPathFactory,
    binary: object,
    pyvider: Any,  # noqa: F811
) -> Iterator[SimpleNamespace]:
    """The situation of docs/drift.md's samples: a checkout (a git repository, branch
    main) with app/files (pyvider_file_content objects, which refresh for real), app/plain
    and app/prod (terraform_data), each applied by pipeline infra-ci #4711 through a
    control plane with a token per role; then app/files' note.txt deleted and its
    secret.txt edited outside tofuflow. ``env``: `tofuflow drift`'s, with a planner token."""
    from _services.fixtures import make_token
    from _services.server import threaded_server
    from tofuflow.project import load_project
    from tofuflow.runs import ControlPlane, apply_run, plan_workspace
    from tofuflow.server.config import ServerConfig

    base = tmp_path_factory.mktemp("drift")
    repo = base / "repo"
    configs = {"app/files": "drift", "app/plain": "drift_plain", "app/prod": "drift_plain"}
    toml = []
    for name, config in configs.items():
        directory = repo / "infra" / name.replace("/", "-")
        shutil.copytree(ROOT / "tests" / "fixtures" / "configs" / config, directory)
        toml.append(f'[workspaces."{name}"]\ndirectory = "{directory.relative_to(repo)}"\n'
                    f'variables = {{ out_dir = "{directory / "out"}" }}\n')  # fmt: skip
    (repo / "tofuflow.toml").write_text("\n".join(toml))
    (repo / ".gitignore").write_text(".terraform/\n.terraform.lock.hcl\n*_override.tf\nout/\n")
    git = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e", "PATH": os.environ["PATH"]}  # fmt: skip
    for command in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "infra"]):
        subprocess.run(["git", *command], cwd=repo, env=git, check=True, capture_output=True)
    config = ServerConfig.from_mapping({
        "server": {"data_dir": str(base / "server")},
        # app/prod's lock is taken by hand in a test, as an applier's binary would.
        "workspace_settings": [{"match": "app/prod", "require_apply_session": False}],
    })  # fmt: skip
    context = {"commit_sha": "d1f7e2a0" * 5, "branch": "main", "pipeline_name": "infra-ci",
               "run_id": "4711"}  # fmt: skip
    with pytest.MonkeyPatch.context() as patch, threaded_server(config) as server:
        patch.setenv(*pyvider.cli_config_env)
        planner, applier = (ControlPlane(server.url, make_token(server, role))
                            for role in ("planner", "applier"))  # fmt: skip
        project = load_project(repo / "tofuflow.toml")
        for name in configs:
            planned = plan_workspace(project.workspace(name), planner, context)
            apply_run(planned.run["id"], project.workspace(name), applier)
        out = repo / "infra" / "app-files" / "out"
        (out / "note.txt").unlink()
        (out / "secret.txt").write_text("changed outside tofuflow")
        env = {**_terminal_env(base), "TOFUFLOW_SERVER_URL": server.url,
               "TOFUFLOW_PLAN_TOKEN": planner.token}  # fmt: skip
        yield SimpleNamespace(repo=repo, env=env, server=server, applier=applier)
        planner.close()
        applier.close()


def test_the_drift_guides_text_sample_is_what_drift_prints(drifted: SimpleNamespace) -> None:
    """docs/drift.md's text report: app/files drifted (a file deleted, one edited),
    app/plain without drift."""
    _, sample = _sample("docs/drift.md", "### Text (default)")
    code, printed = _terminal("tofuflow drift app/files app/plain", drifted.repo, drifted.env)
    assert code == 2, printed
    _assert_printed(sample, printed, "docs/drift.md's text report")


def test_the_drift_guides_json_sample_is_what_drift_prints(
    drifted: SimpleNamespace, binary: Any
) -> None:
    """docs/drift.md's JSON report of the same check (see _json_differences)."""
    text = (ROOT / "docs" / "drift.md").read_text().split("### JSON", 1)[1]
    sample = json.loads(text.split("```json\n", 1)[1].split("```", 1)[0])
    command = "tofuflow drift app/files app/plain --format json"
    done = subprocess.run(["bash", "-c", command], cwd=drifted.repo, env=drifted.env,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    here = {"terraform 1.11.4 (/usr/local/bin/terraform)": str(binary)}
    differences = _json_differences(sample, json.loads(done.stdout), here, frozenset({"report_id"}))
    assert not differences, "docs/drift.md's JSON sample differs from what drift printed:\n" + (
        "\n".join(differences)
    )


def _drift_of_locked_prod(drifted: SimpleNamespace) -> str:
    """What `tofuflow drift app/prod` prints about app/prod (its section of the report)
    while its state is locked as an applier's binary locks it (`Who` ci@agent-7, a UUID
    lock ID)."""
    import datetime as dt
    import uuid

    import httpx

    lock = {"ID": str(uuid.uuid4()), "Operation": "OperationTypeApply", "Info": "",
            "Who": "ci@agent-7", "Version": "1.11.4", "Path": "",
            "Created": dt.datetime.now(dt.UTC).isoformat()}  # fmt: skip
    url = drifted.server.state_url("app/prod") + "/lock"
    taken = httpx.request("LOCK", url, json=lock, auth=("terraform", drifted.applier.token))
    assert taken.status_code == 200, taken.text
    try:
        done = subprocess.run(["bash", "-c", "tofuflow drift app/prod"], cwd=drifted.repo,
                              env=drifted.env, capture_output=True, text=True, timeout=300,
                              check=False)  # fmt: skip
    finally:
        httpx.request("UNLOCK", url, json={"ID": lock["ID"]},
                      auth=("terraform", drifted.applier.token))  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    return "app/prod: " + done.stdout.split("\napp/prod: ", 1)[1].split("\n\n", 1)[0]


def test_the_drift_guides_locked_workspace_sample_is_what_drift_prints(
    drifted: SimpleNamespace,
) -> None:
    """docs/drift.md's report of a locked workspace, the lock's time shown as the report's
    other times are (it was printed raw: ISO, no zone, microseconds)."""
    _, sample = _sample("docs/drift.md", "since when, and the lock ID:")
    section = _drift_of_locked_prod(drifted)
    _assert_printed(sample, section, "docs/drift.md's locked workspace sample")


def test_the_configuration_guides_connections_warning_is_what_the_server_prints(
    tmp_path: Path, pg_cluster: tuple[str, Path]
) -> None:
    """docs/configuration.md's warning of a server whose workers could open more
    connections than PostgreSQL has room for: `tofuflow server --workers 4` with the
    default pool on a new database of a cluster with PostgreSQL's default max_connections
    (100, 3 reserved for superusers). The cluster is the test session's: other tests may
    hold connections to it, so the sample's "0 in use by others" (a cluster the server
    has to itself) may be another number n, with room for 97 - n."""
    from _services.fixtures import fresh_pg_database
    from _services.postgres import free_port
    from _services.server import process_server

    config = tmp_path / "server.toml"
    config.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n'
                      f'[database]\nurl = "{fresh_pg_database(pg_cluster[0])}"\n')  # fmt: skip
    log = tmp_path / "server.log"
    with process_server(config, free_port(), log, "--workers", "4"):
        pass
    warnings = [line for line in log.read_text().splitlines() if line.startswith("warning:")]
    others = re.search(r"room for (\d+) \(max_connections 100, 3 reserved for superusers, "
                       r"(\d+) in use by others\)", "\n".join(warnings))  # fmt: skip
    assert others and int(others.group(1)) == 97 - int(others.group(2)), warnings
    here = {"room for 97 (max_connections 100, 3 reserved for superusers, 0 in use by others)":
            others.group()}  # fmt: skip
    _, sample = _sample("docs/configuration.md", "warns on stderr when it could run out:")
    _assert_printed(sample, "\n".join(warnings), "docs/configuration.md's connections warning",
                    here)  # fmt: skip


def test_the_environments_guides_lifecycle_runs_as_written(tmp_path: Path, binary: object) -> None:
    """docs/environments.md's first block (create from app/dev, list, extend, destroy, a
    reaper pass), as written, in a copy of examples/project on the embedded plane."""
    repo, env = _project_copy(tmp_path)
    (block, *_) = _sh_blocks(ROOT / "docs" / "environments.md")
    assert block[0].startswith("tofuflow env create pr-42 --from app/dev")
    ran, _ = _run_block(block, repo, env)
    assert ran == 5
    listed = subprocess.run(
        [sys.executable, "-c", "from tofuflow.cli import main; main()", "env", "list", "--all"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"pr-42\s.*destroyed", listed.stdout), listed.stdout
