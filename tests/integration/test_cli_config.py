"""Configuration files as a user meets them through the real `tofuflow` command: a typo
stops it with the file, the line and the fix; `tofuflow init` writes a tofuflow.toml."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tofuflow.project import load_project
from tofuflow.tofu import Binary

TOFUFLOW = [sys.executable, "-c", "from tofuflow.cli import main; main()"]
EXAMPLES = Path(__file__).parents[2] / "examples"


def _tofuflow(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TOFUFLOW, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300,
        check=False,
    )  # fmt: skip


def _local_env(tmp_path: Path) -> dict[str, str]:
    """This environment with no TOFUFLOW_ variable (no server, no token): commands use an
    embedded control plane under ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOFUFLOW_")}
    return {**env, "XDG_DATA_HOME": str(tmp_path / "data")}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- a typo in the server configuration -----------------------------------------------


def test_server_with_a_typo_in_its_config_exits_naming_every_mistake_before_binding(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    config = tmp_path / "server.toml"
    port = _free_port()
    config.write_text(
        f'[server]\ndata_dir = "{data_dir}"\nprot = {port}\n\n'
        '[polices]\ndirectory = "policies"\n\n[runs]\naproval_ttl = "1h"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOFUFLOW_")}
    done = _tofuflow("server", "--config", str(config), "--port", str(port), env=env)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f'Error: {config}:3: server.prot: unknown key; did you mean "port"?',
        f'{config}:5: polices: unknown key; did you mean "policies"?',
        f'{config}:9: runs.aproval_ttl: unknown key; did you mean "approval_ttl"?',
    ]
    # It stopped before creating anything or listening: no data directory, port free.
    assert not data_dir.exists()
    assert "control plane on" not in done.stderr
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_a_typo_in_tofuflow_toml_stops_plan_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "infra").mkdir()
    (tmp_path / "tofuflow.toml").write_text(
        '[workspaces.app]\ndirectory = "infra"\nvarables = { x = 1 }\n'
    )
    done = _tofuflow("plan", "app", cwd=tmp_path)
    assert done.returncode == 1
    assert (
        'tofuflow.toml:3: workspaces.app.varables: unknown key; did you mean "variables"?'
        in done.stderr
    )


def test_a_misspelt_workspace_is_refused_in_sentences_with_the_nearest_and_the_defined_ones(
    tmp_path: Path,
) -> None:
    (tmp_path / "infra").mkdir()
    (tmp_path / "tofuflow.toml").write_text(
        '[workspaces.dev]\ndirectory = "infra"\n[workspaces.prod]\ndirectory = "infra"\n'
    )
    done = _tofuflow("plan", "prdo", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "Error: tofuflow.toml: workspace 'prdo' is not defined; did you mean \"prod\"? "
        "Defined: dev, prod"
    ]
    # Nothing close: no question, the list follows the statement.
    far = _tofuflow("plan", "staging", cwd=tmp_path)
    assert far.stderr.splitlines() == [
        "Error: tofuflow.toml: workspace 'staging' is not defined; defined: dev, prod"
    ]


# -- tofuflow init ----------------------------------------------------------------------


def _tf(directory: Path, text: str = 'resource "terraform_data" "x" {}\n') -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "main.tf").write_text(text)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """Two root modules, a local module both use, and directories init must skip."""
    root = tmp_path / "repo"
    _tf(root / "modules" / "vpc")
    _tf(root / "modules" / "vpc" / "subnets")
    (root / "modules" / "vpc" / "main.tf").write_text(
        'module "subnets" {\n  source = "./subnets"\n}\n'
    )
    _tf(
        root / "infra" / "network",
        'module "vpc" {\n  source = "../../modules/vpc"\n}\n'
        '# module "old" { source = "../legacy" }\n',
    )
    _tf(root / "infra" / "legacy")  # only named in a comment: still a root
    _tf(
        root / "infra" / "app",
        'variable "region" {\n  type = string\n}\n'
        'variable "size" {\n  type    = number\n  default = 1\n}\n'
        'terraform {\n  backend "s3" {\n    bucket = "state"\n  }\n}\n',
    )
    _tf(root / "infra" / "app" / ".terraform" / "modules" / "vpc")
    _tf(root / ".github" / "ci")
    (root / "docs").mkdir()
    (root / "docs" / "README.md").write_text("no configuration here\n")
    return root


def test_init_proposes_a_workspace_per_root_module_and_the_file_loads(repo: Path) -> None:
    done = _tofuflow("init", cwd=repo)
    assert done.returncode == 0, done.stderr
    project = load_project(repo / "tofuflow.toml")
    assert {name: ws.directory for name, ws in project.workspaces.items()} == {
        "infra/app": repo / "infra" / "app",
        "infra/legacy": repo / "infra" / "legacy",
        "infra/network": repo / "infra" / "network",
    }
    # A configuration with its own backend keeps it: its state is there, not in tofuflow.
    assert project.workspace("infra/app").backend == "own"
    assert project.workspace("infra/network").backend == "tofuflow"
    assert f"wrote {repo / 'tofuflow.toml'} with 3 workspaces" in done.stdout
    assert "next: tofuflow plan infra/legacy" in done.stdout  # the first that needs nothing
    assert "infra/app needs values for: region" in done.stdout


def test_every_key_init_writes_says_what_it_does(repo: Path) -> None:
    assert _tofuflow("init", cwd=repo).returncode == 0
    lines = (repo / "tofuflow.toml").read_text().splitlines()
    for number, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            comment = lines[number - 1]
            assert comment.startswith("#") or "#" in line, f"uncommented key: {line!r}"
    text = "\n".join(lines)
    for key in ("directory", "variables", "var_files", "tags", "backend", "depends_on"):
        assert f"{key} =" in text, key
    assert "# [server]" in text and "docs/configuration.md" in text
    assert 'variables = { region = "..." }' in text  # the required variable, commented out


def test_init_refuses_to_overwrite_unless_forced(repo: Path) -> None:
    (repo / "tofuflow.toml").write_text("# mine\n")
    refused = _tofuflow("init", cwd=repo)
    assert refused.returncode == 1
    assert f"{repo / 'tofuflow.toml'} already exists" in refused.stderr
    assert "--force" in refused.stderr
    assert (repo / "tofuflow.toml").read_text() == "# mine\n"

    forced = _tofuflow("init", "--force", cwd=repo)
    assert forced.returncode == 0, forced.stderr
    assert len(load_project(repo / "tofuflow.toml").workspaces) == 3
    # What it replaced is kept, and the output says where: hand edits are not lost.
    assert (repo / "tofuflow.toml.bak").read_text() == "# mine\n"
    assert f"the file it replaced is kept as {repo / 'tofuflow.toml.bak'}" in forced.stdout


def test_init_takes_the_repository_as_an_argument(repo: Path, tmp_path: Path) -> None:
    done = _tofuflow("init", str(repo), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (repo / "tofuflow.toml").is_file() and not (tmp_path / "tofuflow.toml").exists()


def test_init_without_any_configuration_says_what_it_looked_for(tmp_path: Path) -> None:
    done = _tofuflow("init", cwd=tmp_path)
    assert done.returncode == 1
    assert "no directory with *.tf files" in done.stderr
    assert not (tmp_path / "tofuflow.toml").exists()


def test_init_on_the_example_project(tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(EXAMPLES / "project", project)
    (project / "tofuflow.toml").unlink()
    done = _tofuflow("init", cwd=project)
    assert done.returncode == 0, done.stderr
    loaded = load_project(project / "tofuflow.toml")
    assert list(loaded.workspaces) == ["infra"]
    assert loaded.workspace("infra").directory == project / "infra"
    assert "infra needs values for: environment" in done.stdout


@pytest.mark.binary
def test_the_next_step_init_prints_plans_the_workspace(binary: Binary, tmp_path: Path) -> None:
    del binary  # the fixture fails clearly when no binary is installed
    repo = tmp_path / "repo"
    _tf(repo / "infra" / "web", 'resource "terraform_data" "web" {\n  input = "hello"\n}\n')
    env = _local_env(tmp_path)
    done = _tofuflow("init", cwd=repo, env=env)
    assert done.returncode == 0, done.stderr
    assert "next: tofuflow plan infra/web" in done.stdout
    planned = _tofuflow("plan", "infra/web", cwd=repo, env=env)
    assert planned.returncode == 2, planned.stderr  # changes: one resource to add
    assert "1 to add" in planned.stdout


def test_init_proposes_a_workspace_per_var_file_when_one_configuration_serves_several(
    tmp_path: Path,
) -> None:
    """The most common layout: one configuration, a var file per environment beside it
    (its module in ``../``). Each var file becomes a workspace sharing the directory, and
    each plans with its own values into its own state."""
    repo = tmp_path / "repo"
    _tf(repo / "infra" / "modules" / "svc", 'variable "name" {}\n'
        'resource "terraform_data" "svc" {\n  input = var.name\n}\n')  # fmt: skip
    _tf(
        repo / "infra" / "app",
        'variable "environment" {\n  type = string\n}\n'
        'variable "region" {\n  type = string\n}\n'
        'module "svc" {\n  source = "../modules/svc"\n  name = var.environment\n}\n'
        'output "where" {\n  value = "${var.environment}@${var.region}"\n}\n',
    )
    (repo / "infra" / "app" / "dev.tfvars").write_text('environment = "dev"\nregion = "eu"\n')
    (repo / "infra" / "app" / "prod.tfvars").write_text('environment = "prod"\n')
    (repo / "infra" / "app" / "terraform.tfvars").write_text('region = "us"\n')  # loaded anyway

    done = _tofuflow("init", cwd=repo)
    assert done.returncode == 0, done.stderr
    project = load_project(repo / "tofuflow.toml")
    dev, prod = project.workspace("infra/app/dev"), project.workspace("infra/app/prod")
    assert set(project.workspaces) == {"infra/app/dev", "infra/app/prod"}
    assert dev.directory == prod.directory == repo / "infra" / "app"
    assert dev.var_files == (repo / "infra" / "app" / "dev.tfvars",)
    assert prod.var_files == (repo / "infra" / "app" / "prod.tfvars",)
    # A workspace named prod waits for a person on every change, unless the file says not.
    assert (dev.tags, prod.tags) == ((), ("production",))
    assert "infra/app/prod is tagged production" in done.stdout
    # Every required variable is set by a var file: nothing to ask for.
    assert "needs values" not in done.stdout, done.stdout
    assert "next: tofuflow plan infra/app/dev" in done.stdout

    env = _local_env(tmp_path)
    for workspace, expected in (("infra/app/dev", "dev@eu"), ("infra/app/prod", "prod@us")):
        planned = _tofuflow("plan", workspace, cwd=repo, env=env)
        assert planned.returncode == 2, planned.stdout + planned.stderr
        run = planned.stdout.split("run ")[-1].split(":")[0]
        shown = _tofuflow("runs", "show", run, "--plan", cwd=repo, env=env)
        assert f'+ where = "{expected}"' in shown.stdout, shown.stdout


def test_init_finds_var_files_in_an_envs_directory_beside_the_configuration(
    tmp_path: Path,
) -> None:
    """The other common layout: the var files one directory down (``envs/``,
    ``environments/``), beside nothing but each other. init proposed one workspace with
    no var file, which planned neither environment."""
    repo = tmp_path / "repo"
    _tf(repo / "app", 'variable "environment" {\n  type = string\n}\n'
        'output "where" {\n  value = var.environment\n}\n')  # fmt: skip
    (repo / "app" / "envs").mkdir()
    (repo / "app" / "envs" / "dev.tfvars").write_text('environment = "dev"\n')
    (repo / "app" / "envs" / "prod.tfvars").write_text('environment = "prod"\n')

    done = _tofuflow("init", cwd=repo)
    assert done.returncode == 0, done.stderr
    project = load_project(repo / "tofuflow.toml")
    assert set(project.workspaces) == {"app/dev", "app/prod"}, done.stdout
    assert project.workspace("app/prod").var_files == (repo / "app" / "envs" / "prod.tfvars",)
    assert project.workspace("app/prod").tags == ("production",)
    assert "needs values" not in done.stdout, done.stdout

    env = _local_env(tmp_path)
    for workspace, expected in (("app/dev", "dev"), ("app/prod", "prod")):
        planned = _tofuflow("plan", workspace, cwd=repo, env=env)
        assert planned.returncode == 2, planned.stdout + planned.stderr
        assert f'+ where = "{expected}"' in planned.stdout, planned.stdout


def test_a_variable_the_configuration_does_not_declare_is_named_not_silently_dropped(
    tmp_path: Path,
) -> None:
    """tofuflow passes `variables` as TF_VAR_* (never on argv), and the binary ignores an
    undeclared TF_VAR_ without a word (as `-var` it would have refused it): a typo such as
    `replica = 3` planned with the default, unnoticed."""
    repo = tmp_path / "repo"
    _tf(repo / "infra", 'variable "replicas" {\n  type = number\n  default = 1\n}\n'
        'output "n" {\n  value = var.replicas\n}\n')  # fmt: skip
    (repo / "tofuflow.toml").write_text(
        '[workspaces.dev]\ndirectory = "infra"\nvariables = { replica = 3, replicas = 2 }\n'
    )
    planned = _tofuflow("plan", "dev", cwd=repo, env=_local_env(tmp_path))
    assert planned.returncode == 2, planned.stdout + planned.stderr
    assert "+ n = 2" in planned.stdout, planned.stdout
    assert (
        "Warning: variables.replica in tofuflow.toml: the configuration declares no variable "
        '"replica", so the binary ignored it; did you mean "replicas"?'
    ) in planned.stderr, planned.stderr
    assert "replicas in tofuflow.toml" not in planned.stderr


def test_init_below_another_tofuflow_toml_is_refused_unless_forced(tmp_path: Path) -> None:
    """`cd infra && tofuflow init` wrote a second file that shadows the repository's for
    everyone working there: the same configurations under new names, with empty state, so
    the next plan created everything again."""
    repo = tmp_path / "repo"
    _tf(repo / "infra" / "app", 'resource "terraform_data" "x" {}\n')
    assert _tofuflow("init", cwd=repo).returncode == 0
    below = _tofuflow("init", cwd=repo / "infra")
    assert below.returncode == 1, below.stdout
    assert f"{repo / 'tofuflow.toml'} already covers {repo / 'infra'}" in below.stderr
    assert "--force" in below.stderr
    assert not (repo / "infra" / "tofuflow.toml").exists()
    forced = _tofuflow("init", "--force", cwd=repo / "infra")
    assert forced.returncode == 0, forced.stderr
    assert (repo / "infra" / "tofuflow.toml").exists()


# -- a server URL that answers, but not as a tofuflow control plane --------------------


@pytest.fixture
def other_web_server(tmp_path: Path) -> Iterator[str]:
    """Another web server where the control plane should be (a wrong port, a proxy's
    path that is not routed): it answers with its own HTML error pages."""
    root = tmp_path / "www"
    root.mkdir()
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_server_url_that_is_not_a_control_plane_is_named_not_dumped(
    other_web_server: str, tmp_path: Path
) -> None:
    root = tmp_path / "repo"
    (root / "infra").mkdir(parents=True)
    (root / "infra" / "main.tf").write_text("")
    (root / "tofuflow.toml").write_text('[workspaces.dev]\ndirectory = "infra"\n')
    env = {**os.environ, "TOFUFLOW_SERVER_URL": other_web_server, "TOFUFLOW_TOKEN": "tfw_x_y"}
    for args in (["plan", "dev"], ["runs", "list"]):  # a POST (501 there) and a GET (404)
        done = _tofuflow(*args, cwd=root, env=env)
        assert done.returncode == 1, done.stdout
        assert "<html" not in done.stderr.lower(), done.stderr  # not the page's source
        (line,) = done.stderr.splitlines()
        assert line.startswith(f"Error: {other_web_server} answered ")
        assert "not as a tofuflow control plane" in line
        assert "TOFUFLOW_SERVER_URL" in line, line


def test_a_server_address_that_drops_connections_fails_in_seconds_not_minutes(
    tmp_path: Path,
) -> None:
    # A firewall that drops packets, or a host that is down: the connection never
    # completes. The client waited its whole 120 s request timeout, silently, per request.
    import socket
    import time

    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)  # never accepted: once its queue is full, new connections get no answer
    port = full.getsockname()[1]
    queued = []
    for _ in range(3):
        client = socket.socket()
        client.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            client.connect(("127.0.0.1", port))
        queued.append(client)
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TOFUFLOW_SERVER_URL": url, "TOFUFLOW_TOKEN": "tfw_x_y"}
    try:
        started = time.monotonic()
        done = _tofuflow("runs", "list", cwd=tmp_path, env=env)
        elapsed = time.monotonic() - started
    finally:
        for client in (*queued, full):
            client.close()
    assert done.returncode == 1, done.stdout
    assert elapsed < 60, elapsed
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"Error: cannot reach the control plane at {url}: "), line
    assert "no answer to the connection within 15 s" in line, line
    assert "TOFUFLOW_SERVER_URL" in line, line


# -- a token without a server URL ------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "args"),
    [
        ("TOFUFLOW_TOKEN", ["plan", "dev"]),
        ("TOFUFLOW_PLAN_TOKEN", ["run-all", "plan"]),
        ("TOFUFLOW_APPLY_TOKEN", ["runs", "list"]),
    ],
)
def test_a_token_without_a_server_url_is_refused_not_ignored(
    tmp_path: Path, variable: str, args: list[str]
) -> None:
    # A pipeline that sets its token but forgot TOFUFLOW_SERVER_URL ran against the
    # embedded plane on the agent's disk: the state and the run vanished with the agent.
    root = tmp_path / "repo"
    (root / "infra").mkdir(parents=True)
    (root / "infra" / "main.tf").write_text('output "x" { value = 1 }\n')
    (root / "tofuflow.toml").write_text('[workspaces.dev]\ndirectory = "infra"\n')
    env = _local_env(tmp_path)
    secret = "tfw_abcdefghijkl_" + "s3cr3t" * 6
    done = _tofuflow(*args, cwd=root, env={**env, variable: secret})
    assert done.returncode == 1, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"Error: {variable} is set but no control plane URL is"), line
    assert "TOFUFLOW_SERVER_URL" in line and "[server] url" in line, line
    assert f"unset {variable}" in line, line
    assert secret not in done.stdout + done.stderr
    # Nothing ran on the embedded plane: no run was recorded there.
    listed = _tofuflow("runs", "list", cwd=root, env=env)
    assert listed.returncode == 0, listed.stderr
    assert "dev" not in listed.stdout, listed.stdout


def test_init_moves_a_local_backend_into_the_control_plane_and_says_to_push_its_state(
    tmp_path: Path,
) -> None:
    """A `backend "local"` block got backend = "own", which keeps the state file in the
    stage's private copy (lost at the next stage): the control plane keeps it instead,
    once the existing state is pushed."""
    root = tmp_path / "repo"
    _tf(root / "infra" / "legacy",
        'terraform {\n  backend "local" {\n    path = "legacy.tfstate"\n  }\n}\n'
        'resource "terraform_data" "x" {}\n')  # fmt: skip
    done = _tofuflow("init", cwd=root)
    assert done.returncode == 0, done.stderr
    assert load_project(root / "tofuflow.toml").workspace("infra/legacy").backend == "tofuflow"
    state = Path("infra") / "legacy" / "legacy.tfstate"
    assert (
        f'infra/legacy  infra/legacy  (backend "local": push its state before the first '
        f"plan: tofuflow state push infra/legacy {state})"
    ) in done.stdout, done.stdout
