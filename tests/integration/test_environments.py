"""Ephemeral environments: TTL, the reaper (in the server and one-shot), resume, orphans.

Everything is real: the binary creates and removes files, the control plane runs as its own
process (with its reaper thread) or in a thread, and a reaper is SIGKILLed mid-destroy.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from _services.cli import interrupted
from _services.fixtures import make_token
from _services.postgres import free_port
from _services.server import RunningServer, cli_token, process_server, threaded_server
from tofuflow.envs import create_environment, deploy_environment, reap_once
from tofuflow.errors import ConfigError, ConflictError
from tofuflow.project import WorkspaceConfig
from tofuflow.runs import ControlPlane
from tofuflow.tofu import Binary

FIXTURES = Path(__file__).parent.parent / "fixtures"
CLI = [sys.executable, "-c", "from tofuflow.cli import main; main()"]


@pytest.fixture
def source(tmp_path: Path, binary: Binary) -> WorkspaceConfig:
    del binary  # fails clearly when no binary is installed
    directory = tmp_path / "repo" / "ephemeral"
    shutil.copytree(FIXTURES / "configs" / "ephemeral", directory)
    return WorkspaceConfig(name="app/dev", directory=directory)


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _state(server: RunningServer, workspace: str, token: str) -> dict[str, Any]:
    response = httpx.get(server.state_url(workspace), headers={"Authorization": f"Bearer {token}"})
    return json.loads(response.content) if response.status_code == 200 else {}


def _files(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.glob("*.txt"))


def _actions(client: ControlPlane, workspace: str) -> list[str]:
    return [event["action"] for event in client.audit(workspace=workspace, limit=1000)]


def test_an_environment_with_a_2s_ttl_is_destroyed_by_the_servers_reaper(
    tmp_path: Path, source: WorkspaceConfig
) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\n\n[environments]\nreap_interval = "1s"\n'
    )
    files = tmp_path / "pr-7-files"
    files.mkdir()
    with process_server(config, free_port(), tmp_path / "server.log") as server:
        token = cli_token(config)
        with ControlPlane(server.url, token) as client:
            created = create_environment(
                source, "pr-7", client, ttl_seconds=2, owner="ana@example.com",
                variables={"dir": str(files)}, context={"commit": "ab" * 20},
            )  # fmt: skip
            assert created["status"] == "active" and created["ttl_left_seconds"] <= 2
            deployed = deploy_environment("pr-7", client)
            assert deployed["status"] == "applied"
            assert _files(files) == ["app.txt", "db.txt"]

            gone = _wait(
                lambda: client.environment("pr-7")["status"] == "destroyed", 90,
                "the server's reaper to destroy pr-7",
            )  # fmt: skip
            assert gone
            assert _files(files) == [], "the environment's files outlived it"
            assert _state(server, "pr-7", token).get("resources") == []
            actions = _actions(client, "pr-7")
            for expected in ("environment.created", "environment.claimed", "run.applied",
                             "environment.destroyed"):  # fmt: skip
                assert expected in actions, (expected, actions)
            destroy = next(r for r in client.runs(workspace="pr-7")
                           if (r["context"] or {}).get("operation") == "destroy")  # fmt: skip
            assert destroy["status"] == "applied"
            assert destroy["context"]["trigger"] == "reaper"
            assert destroy["decision"]["outcome"] == "auto_approved"  # routine for environments
            assert destroy["commit"] == "ab" * 20  # the environment's commit follows it
            # The reaper destroyed it with an applier token for pr-7 alone, never `*`.
            minted = [e["detail"] for e in client.audit(action="token.create", limit=1000)]
            [reapers] = [d for d in minted if destroy["requester"].endswith(d["token_id"])]
            assert (reapers["role"], reapers["workspaces"]) == ("applier", "pr-7")
            assert not any(d["workspaces"] == "*" and d["role"] == "applier" for d in minted)
            listed = client.environments(include_destroyed=True)
            assert [e["name"] for e in listed] == ["pr-7"]
            assert client.environments() == []  # destroyed ones are hidden by default


@pytest.fixture
def plane(server_config: Any) -> Iterator[tuple[RunningServer, ControlPlane]]:
    config = replace(server_config, retry_backoff="1s", orphan_after=2)
    with (
        threaded_server(config) as server,
        ControlPlane(server.url, make_token(server, "admin")) as client,
    ):
        yield server, client


def test_a_reaper_killed_mid_destroy_is_taken_over_on_the_next_pass(
    tmp_path: Path, source: WorkspaceConfig, plane: tuple[RunningServer, ControlPlane]
) -> None:
    server, client = plane
    files = tmp_path / "files"
    files.mkdir()
    create_environment(source, "slow", client, ttl_seconds=1, owner="ci",
                       variables={"dir": str(files), "destroy_sleep": 6})  # fmt: skip
    deploy_environment("slow", client)
    assert _files(files) == ["app.txt", "db.txt"]
    time.sleep(1.2)  # expired

    env = {**os.environ, "TOFUFLOW_SERVER_URL": server.url, "TOFUFLOW_TOKEN": client.token}
    reaper = subprocess.Popen(
        [*CLI, "env", "reap", "--lease", "5s"], env=env, cwd=tmp_path, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        run_id = _wait(lambda: client.environment("slow")["last_run_id"], 60, "a destroy run")
        _wait(lambda: client.run(run_id)["status"] == "applying", 60, "the destroy to start")
        _wait(
            lambda: [e for e in client.audit(workspace="slow", action="state.lock")
                     if e["actor"] == f"run:{run_id}"], 30, "the destroy to take the state lock",
        )  # fmt: skip
        time.sleep(1)  # into the destroy provisioner's 6 s sleep
    finally:
        os.killpg(reaper.pid, signal.SIGKILL)  # the reaper and its binary, mid-destroy
        reaper.wait()
    assert _files(files) == ["app.txt", "db.txt"]  # killed in the destroy provisioner's sleep

    locked = [w for w in httpx.get(f"{server.url}/v1/workspaces",
                                   headers={"Authorization": f"Bearer {client.token}"}).json()
              if w["name"] == "slow"]  # fmt: skip
    assert locked and locked[0]["locked"], "the killed destroy should have left its lock"

    with pytest.raises(ConflictError, match="is being destroyed by"):
        client.claim_environment("slow", "someone-else")  # the dead claim still runs
    time.sleep(5.5)  # the killed reaper's 5 s lease runs out

    # The next pass (with a short destroy this time) takes over: ends the dead run,
    # releases its lock, destroys.
    report = reap_once(client, holder="reaper-2")
    assert report.destroyed == ["slow"], report.to_json()
    assert client.run(run_id)["status"] == "failed"
    assert "abandoned" in client.run(run_id)["result"]["reason"]
    assert _files(files) == []
    assert _state(server, "slow", client.token).get("resources") == []
    actions = _actions(client, "slow")
    # The orphaned binary (its own session, its output in files) may have finished its
    # destroy and unlocked by itself before the takeover; otherwise the takeover freed it.
    assert {"state.force_unlock", "state.unlock"} & set(actions), actions
    assert "environment.destroyed" in actions


def test_an_environment_that_cannot_be_destroyed_is_retried_and_reported_orphaned(
    tmp_path: Path, source: WorkspaceConfig, plane: tuple[RunningServer, ControlPlane]
) -> None:
    server, client = plane
    files, marker = tmp_path / "files", tmp_path / "block"
    files.mkdir()
    marker.write_text("x")
    variables = {"dir": str(files), "block_destroy_marker": str(marker)}
    create_environment(source, "stuck", client, ttl_seconds=1, owner="bob", variables=variables)
    deploy_environment("stuck", client)
    time.sleep(1.2)

    first = reap_once(client, holder="r")
    assert list(first.failed) == ["stuck"] and "destroy blocked" in first.failed["stuck"]
    assert client.environment("stuck")["status"] == "destroying"
    assert reap_once(client, holder="r").failed == {}  # backing off: not due yet
    time.sleep(1.2)
    second = reap_once(client, holder="r")
    assert list(second.failed) == ["stuck"]
    assert [o["name"] for o in second.orphans] == ["stuck"]  # reported, never forgotten

    env = {**os.environ, "TOFUFLOW_SERVER_URL": server.url, "TOFUFLOW_TOKEN": client.token}
    listed = subprocess.run([*CLI, "env", "list"], env=env, capture_output=True, text=True,
                            check=False, cwd=tmp_path)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert "stuck" in listed.stdout and "orphaned" in listed.stdout
    assert "destroy blocked" in listed.stdout
    assert "environment.orphaned" in _actions(client, "stuck")

    marker.unlink()  # someone fixes the cause; the reaper's retries continue
    time.sleep(2.2)  # back-off after two failures: 2 s
    reaped = subprocess.run([*CLI, "env", "reap"], env=env, capture_output=True, text=True,
                            check=False, cwd=tmp_path)  # fmt: skip
    assert reaped.returncode == 0, reaped.stdout + reaped.stderr
    assert "destroyed  stuck" in reaped.stdout
    assert client.environment("stuck")["status"] == "destroyed"
    assert _files(files) == []


def test_env_cli_create_list_extend_destroy_with_the_embedded_control_plane(
    tmp_path: Path, source: WorkspaceConfig
) -> None:
    repo = source.directory.parent
    (repo / "tofuflow.toml").write_text('[workspaces."app/dev"]\ndirectory = "ephemeral"\n')
    files = tmp_path / "files"
    files.mkdir()
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    for name in ("TOFUFLOW_SERVER_URL", "TOFUFLOW_TOKEN", "TOFUFLOW_SERVER_CONFIG"):
        env.pop(name, None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, "env", *args], cwd=repo, env=env, capture_output=True,
                              text=True, check=False, timeout=300)  # fmt: skip

    created = cli("create", "pr-9", "--from", "app/dev", "--ttl", "2h", "--owner", "ana",
                  "--var", f"dir={files}")  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "environment pr-9: registered from app/dev" in created.stdout
    # When it ends, as a person reads it: minutes, UTC, and how long that is from now.
    assert re.search(r"expires 20\d\d-\d\d-\d\d \d\d:\d\d UTC \(in 2h; owner ana\)", created.stdout)
    assert "applied" in created.stdout
    assert _files(files) == ["app.txt", "db.txt"]

    listed = cli("list", "--json")
    row = json.loads(listed.stdout)[0]
    summary = (row["name"], row["owner"], row["status"], row["resources"])
    assert summary == ("pr-9", "ana", "active", 2)
    assert 7000 < row["ttl_left_seconds"] <= 7200
    # A 2h TTL a few seconds old has 1h59m left, not "1h".
    assert re.search(r"^pr-9 .* 1h59m +2  app/dev$", cli("list").stdout, re.M)
    extended = cli("extend", "pr-9", "--by", "1h")
    assert extended.returncode == 0, extended.stderr
    assert 10700 < json.loads(cli("list", "--json").stdout)[0]["ttl_left_seconds"] <= 10800
    assert re.search(r"expires 20\d\d-\d\d-\d\d \d\d:\d\d UTC \(in 2h59m\)", extended.stdout)

    again = cli("create", "pr-9", "--from", "app/dev", "--var", f"dir={files}")
    assert again.returncode == 1 and "already exists" in again.stderr

    destroyed = cli("destroy", "pr-9")
    assert destroyed.returncode == 0, destroyed.stderr
    assert "environment pr-9: destroyed" in destroyed.stdout
    assert _files(files) == []
    assert cli("list").stdout.strip() == "no environments"

    # Registered only, then expired: listed as such until a reaper pass destroys it.
    lazy = cli("create", "pr-10", "--from", "app/dev", "--ttl", "1s", "--no-apply",
               "--var", f"dir={files}")  # fmt: skip
    assert lazy.returncode == 0 and "registered" in lazy.stdout and "run " not in lazy.stdout
    time.sleep(1.2)
    assert "pr-10                        expired" in cli("list").stdout
    reaped = cli("reap")
    assert reaped.returncode == 0, reaped.stdout + reaped.stderr
    assert "destroyed  pr-10" in reaped.stdout
    assert cli("list").stdout.strip() == "no environments"

    # From a production workspace the deploy waits for a person; the error says how to go
    # on, and what it says works: `tofuflow approve RUN`, then `tofuflow apply RUN`.
    (repo / "tofuflow.toml").write_text(
        '[workspaces."app/dev"]\ndirectory = "ephemeral"\n\n'
        '[workspaces."app/prod"]\ndirectory = "ephemeral"\ntags = ["production"]\n'
    )
    gated = cli("create", "pr-11", "--from", "app/prod", "--var", f"dir={files}")
    assert gated.returncode == 1
    assert "the deploy of environment pr-11 waits for an approver" in gated.stderr, gated.stderr
    run = re.findall(r"`tofuflow approve (\w+)`", gated.stderr)[0]
    assert f"and apply it with `tofuflow apply {run}`" in gated.stderr
    top = [*CLI]
    approved = subprocess.run([*top, "approve", run], cwd=repo, env=env, capture_output=True,
                              text=True, check=False, timeout=300)  # fmt: skip
    assert approved.returncode == 0, approved.stderr
    applied = subprocess.run([*top, "apply", run], cwd=repo, env=env, capture_output=True,
                             text=True, check=False, timeout=300)  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    assert f"run {run}: applied" in applied.stdout
    assert _files(files) == ["app.txt", "db.txt"]
    assert json.loads(cli("list", "--json").stdout)[0]["resources"] == 2
    assert cli("destroy", "pr-11").returncode == 0
    assert _files(files) == []

    bad = cli("create", "x", "--from", "app/dev", "--ttl", "soon")
    assert bad.returncode == 1 and "invalid duration 'soon'" in bad.stderr
    unknown = cli("create", "x", "--from", "nope")
    assert unknown.returncode == 1 and "nope" in unknown.stderr


def _slow_repo(tmp_path: Path, slow: str) -> tuple[Path, dict[str, str]]:
    """A repository whose app/dev has a quick resource and ``slow`` (a ``terraform_data``
    body), and an environment with an embedded control plane of the test's own."""
    repo = tmp_path / "repo"
    (repo / "app").mkdir(parents=True)
    (repo / "app" / "main.tf").write_text(
        f'resource "terraform_data" "fast" {{}}\nresource "terraform_data" "slow" {{\n{slow}}}\n'
    )
    (repo / "tofuflow.toml").write_text('[workspaces."app/dev"]\ndirectory = "app"\n')
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    for name in ("TOFUFLOW_SERVER_URL", "TOFUFLOW_TOKEN", "TOFUFLOW_SERVER_CONFIG"):
        env.pop(name, None)
    return repo, env


def _ctrl_c_once(started: Path, args: list[str], repo: Path, env: dict[str, str]) -> str:
    """Run `tofuflow ARGS`, send SIGINT once ``started`` exists (SIGINT is not ignored in
    it, tests/conftest.py, as in a terminal); its stderr, after it exited 1 without a
    bare `Aborted.`."""
    done = interrupted(repo, env, *args, once=started)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Aborted." not in done.stderr
    return done.stderr


def test_ctrl_c_during_env_create_says_what_exists_and_how_to_remove_it(
    tmp_path: Path, binary: object
) -> None:
    """The environment is registered before its apply: stopped half-way, it exists with
    what was applied, and the user is told so, and how to remove it now."""
    del binary
    started = tmp_path / "slow.started"
    repo, env = _slow_repo(tmp_path, (
        "  depends_on = [terraform_data.fast]\n"
        f'  provisioner "local-exec" {{ command = "touch {started} && sleep 60" }}\n'
    ))  # fmt: skip
    err = _ctrl_c_once(started, ["env", "create", "pr-5", "--from", "app/dev", "--ttl", "1h"],
                       repo, env)  # fmt: skip
    assert re.search(
        r"interrupted: 1 of 2 changes applied, saved as state version \d+; 1 stopped while "
        r"being created, so tainted: the next plan replaces it; environment "
        r"pr-5 stays until 20\d\d-\d\d-\d\d \d\d:\d\d UTC, when the reaper destroys it; "
        r"`tofuflow env destroy pr-5` removes it now \(run \w+ is cancelled\)",
        err,
    ), err

    listed = subprocess.run([*CLI, "env", "list", "--json"], cwd=repo, env=env,
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert [(e["name"], e["status"]) for e in json.loads(listed.stdout)] == [("pr-5", "active")]
    destroyed = subprocess.run(
        [*CLI, "env", "destroy", "pr-5"], cwd=repo, env=env, capture_output=True, text=True,
        check=False, timeout=300,
    )  # fmt: skip
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr


def test_ctrl_c_during_env_destroy_says_what_is_left_and_a_second_destroy_finishes(
    tmp_path: Path, binary: object
) -> None:
    del binary
    started = tmp_path / "slow.started"
    repo, env = _slow_repo(tmp_path, (
        '  provisioner "local-exec" {\n    when    = destroy\n'
        f'    command = "test -e {started}.done || (touch {started} && sleep 60)"\n  }}\n'
    ))  # fmt: skip

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, "env", *args], cwd=repo, env=env, capture_output=True,
                              text=True, check=False, timeout=300)  # fmt: skip

    assert cli("create", "pr-6", "--from", "app/dev").returncode == 0
    err = _ctrl_c_once(started, ["env", "destroy", "pr-6"], repo, env)
    assert re.search(
        r"interrupted: 1 of 2 changes applied, saved as state version \d+; environment "
        r"pr-6 is left destroying: run `tofuflow env destroy pr-6` again, or the reaper "
        r"retries it \(run \w+ is cancelled\)",
        err,
    ), err
    listed = cli("list")
    assert "last error (attempt 1): destroy interrupted" in listed.stdout, listed.stdout

    Path(f"{started}.done").touch()  # the second destroy runs the provisioner quickly
    again = cli("destroy", "pr-6")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "environment pr-6: destroyed" in again.stdout


def test_a_second_env_destroy_while_one_runs_is_refused_and_the_first_finishes(
    tmp_path: Path, binary: object
) -> None:
    """Two jobs destroying the same environment (a PR closed, and someone by hand): the
    claim was keyed on the user, so the second took it over, failed as stale and released
    it, and the first, which destroyed everything, exited 1 and left it `destroying`."""
    del binary
    started = tmp_path / "slow.started"
    release = tmp_path / "slow.release"
    repo, env = _slow_repo(tmp_path, (
        '  provisioner "local-exec" {\n    when    = destroy\n'
        f'    command = "touch {started} && while [ ! -e {release} ]; do sleep 0.1; done"\n'
        "  }\n"
    ))  # fmt: skip

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, "env", *args], cwd=repo, env=env, capture_output=True,
                              text=True, check=False, timeout=300)  # fmt: skip

    assert cli("create", "pr-7", "--from", "app/dev").returncode == 0
    first = subprocess.Popen([*CLI, "env", "destroy", "pr-7"], cwd=repo, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not started.exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.1)
        second = cli("destroy", "pr-7")
        assert second.returncode == 1, second.stdout
        assert "environment pr-7 is being destroyed by " in second.stderr, second.stderr
        assert "try again after that" in second.stderr
        # A lease of a minute, renewed: a destroyer killed with -9 blocks others for at
        # most that long, not the 5 minutes a claim used to run.
        until = re.search(r"its claim runs until (\S+)\)", second.stderr)
        assert until, second.stderr
        left = dt.datetime.fromisoformat(until.group(1)) - dt.datetime.now(dt.UTC)
        assert left <= dt.timedelta(seconds=61), (left, second.stderr)
    finally:
        release.touch()
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, out + err
    assert "environment pr-7: destroyed" in out
    assert "no environments" in cli("list").stdout


def test_a_failed_env_create_says_the_environment_exists_and_how_to_remove_it(
    tmp_path: Path, binary: object
) -> None:
    """A deploy that fails leaves the environment registered: it was not said, and the
    retry's advice (`env extend` it) kept the broken one."""
    del binary
    repo, env = _slow_repo(tmp_path, "  input = var.replicas\n")
    (repo / "app" / "variables.tf").write_text('variable "replicas" {\n  type = number\n}\n')

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, "env", *args], cwd=repo, env=env, capture_output=True,
                              text=True, check=False, timeout=300)  # fmt: skip

    failed = cli("create", "pr-8", "--from", "app/dev", "--var", "replicas=abc")
    assert failed.returncode == 1, failed.stdout
    assert "environment pr-8: registered from app/dev" in failed.stdout
    last = failed.stderr.strip().splitlines()[-1]
    assert last == (
        "environment pr-8 is registered but not deployed: `tofuflow env destroy pr-8` "
        "removes it (then create it again)"
    ), failed.stderr
    again = cli("create", "pr-8", "--from", "app/dev", "--var", "replicas=2")
    assert again.returncode == 1
    assert "`tofuflow env destroy pr-8` removes it" in again.stderr, again.stderr
    assert cli("destroy", "pr-8").returncode == 0
    # --no-apply registers it; `env deploy` deploys it later, from the stored snapshot.
    registered = cli("create", "pr-8", "--from", "app/dev", "--var", "replicas=2", "--no-apply")
    assert registered.returncode == 0, registered.stderr
    assert "`tofuflow env deploy pr-8` deploys it" in registered.stdout
    deployed = cli("deploy", "pr-8")
    assert deployed.returncode == 0, deployed.stderr
    assert re.search(r"environment pr-8: run \w{16} applied", deployed.stdout), deployed.stdout
    (row,) = [line for line in cli("list").stdout.splitlines() if line.startswith("pr-8 ")]
    assert row.split()[-2] == "2", row  # RES: both resources


def test_an_env_var_the_configuration_does_not_declare_is_warned_about(
    tmp_path: Path, binary: object
) -> None:
    """`--var replica=3` for `variable "replicas"`: the binary ignores a TF_VAR_ nothing
    declares, so the environment came up with the default and nobody was told."""
    del binary
    repo, env = _slow_repo(tmp_path, "  input = var.replicas\n")
    (repo / "app" / "variables.tf").write_text(
        'variable "replicas" {\n  type    = number\n  default = 1\n}\n'
    )
    created = subprocess.run(
        [*CLI, "env", "create", "pr-9", "--from", "app/dev", "--var", "replica=3"],
        cwd=repo, env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert (
        "Warning: --var replica of environment pr-9: the configuration declares no variable "
        '"replica", so the binary ignored it; did you mean "replicas"?'
    ) in created.stderr, created.stderr


def test_a_run_time_var_file_stays_out_of_the_environments_snapshot(
    tmp_path: Path, source: WorkspaceConfig, plane: tuple[RunningServer, ControlPlane]
) -> None:
    """A var file the pipeline writes at run time (an absolute path in tofuflow.toml, e.g.
    a fetched secret) is recorded by its path and read afresh, as plan artifacts do: its
    text never reaches the control plane's snapshot."""
    import io
    import zipfile

    _server, client = plane
    files = tmp_path / "files"
    files.mkdir()
    secret = tmp_path / "agent-temp" / "secrets.tfvars"
    secret.parent.mkdir()
    secret.write_text(f'# token s3cret-fetched-at-run-time\ndir = "{files}"\n')
    beside = source.directory / "dev.tfvars"
    beside.write_text('files = ["app"]\n')
    workspace = replace(source, var_files=(beside, secret), run_time_var_files=frozenset({secret}))
    create_environment(workspace, "pr-secret", client, ttl_seconds=3600, owner="ci")

    with zipfile.ZipFile(io.BytesIO(client.environment_snapshot("pr-secret"))) as archive:
        stored = b"".join(archive.read(member) for member in archive.namelist())
    assert b"s3cret-fetched-at-run-time" not in stored
    assert b'files = ["app"]' in stored  # a var file of the checkout is kept, as before

    deploy_environment("pr-secret", client)
    assert _files(files) == ["app.txt"]

    # Read where the pipeline writes it, when it is there; a clear error when it is not.
    secret.unlink()
    with pytest.raises(ConfigError, match=r"secrets\.tfvars.*written at run time"):
        deploy_environment("pr-secret", client)
