"""`tofuflow run-all` on generated stacks: the real binary, the embedded control plane.

Every stack is a ``terraform_data`` whose local-exec provisioners append
``start NAME TIME_NS`` / ``end NAME TIME_NS`` lines to one shared log (and ``dstart`` /
``dend`` on destroy), so the tests read what really ran, when, from the binary's side.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from _services.cli import cli_in, fresh_user, interrupted
from _services.fixtures import make_token
from _services.server import threaded_server
from tofuflow.stacks import locking_binary, plugin_cache_dir
from tofuflow.stacks._cache import LOCK_NAME, init_lock
from tofuflow.tofu import Binary

CLI = [sys.executable, "-c", "from tofuflow.cli import main; main()"]
SECRET = "tok-3f9a1c-very-secret"  # a sensitive output; must never be printed
ROUTINE = "package test.routine\n\nimport rego.v1\n\nauto_approve if { true }\n"


@dataclass
class Stacks:
    root: Path
    env: dict[str, str]
    graph: dict[str, list[str]]
    log: Path
    fail: set[str] = field(default_factory=set)

    def write(self) -> None:
        lines = []
        for name, deps in self.graph.items():
            directory = self.root / "stacks" / name
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "main.tf").write_text(_stack_tf(name, deps, self.log, name in self.fail))
            lines.append(f'[workspaces."{name}"]\ndirectory = "stacks/{name}"\n')
            if deps:
                lines.append(f"depends_on = {json.dumps(deps)}\n")
                inputs = {"upstream": f"{deps[0]}.name"}
                if deps[0] == "s00":
                    inputs["token"] = "s00.token"
                body = ", ".join(f'{k} = "{v}"' for k, v in inputs.items())
                lines.append(f"inputs = {{ {body} }}\n")
        (self.root / "tofuflow.toml").write_text("".join(lines))

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*CLI, "run-all", *args], cwd=self.root, env=self.env, capture_output=True,
            text=True, timeout=600, check=False,
        )  # fmt: skip
        return done

    def events(self) -> list[tuple[str, str, int]]:
        if not self.log.exists():
            return []
        found = []
        for line in self.log.read_text().splitlines():
            kind, name, ns = line.split()
            found.append((kind, name, int(ns)))
        return found


def _stack_tf(name: str, deps: list[str], log: Path, fail: bool) -> str:
    stamp = "$(date +%s%N)"
    # The first layer sleeps longer, so that 4 of them overlap even on a busy machine.
    work = f'echo "start {name} {stamp}" >> {log}; sleep {1 if deps else 2}; '
    work += "exit 1" if fail else f'echo "end {name} {stamp}" >> {log}'
    gone = f'echo "dstart {name} {stamp}" >> {log}; sleep 0.3; echo "dend {name} {stamp}" >> {log}'
    text = f"""
resource "terraform_data" "work" {{
  input = "{name}"
  provisioner "local-exec" {{
    command = <<-EOT
      {work}
    EOT
  }}
  provisioner "local-exec" {{
    when    = destroy
    command = <<-EOT
      {gone}
    EOT
  }}
}}

output "name" {{
  value = terraform_data.work.output
}}
"""
    if name == "s00":
        text += f'output "token" {{\n  value     = "{SECRET}"\n  sensitive = true\n}}\n'
    if deps:
        # Not marked sensitive on purpose: the binary prints it, run-all must mask it.
        text += """
variable "upstream" {
  type    = string
  default = "unknown"
}

variable "token" {
  type    = string
  default = "none"
}

resource "terraform_data" "received" {
  input = var.upstream
  provisioner "local-exec" {
    command = <<-EOT
      echo '${var.upstream}' > 'OUT/upstream.txt'
      echo '${var.token}' > 'OUT/token.txt'
    EOT
  }
}
"""
    # The binary runs in a private working copy: write next to the checked-out stack.
    return text.replace("OUT/", f"{log.parent / 'repo' / 'stacks' / name}/")


def _layered_dag(seed: int, sizes: tuple[int, ...]) -> dict[str, list[str]]:
    """A random but seeded layered DAG; every stack past the first layer has 1-3 deps."""
    rng = random.Random(seed)  # noqa: S311 (a test graph, not a secret)
    graph: dict[str, list[str]] = {}
    layers: list[list[str]] = []
    count = 0
    for size in sizes:
        layer = [f"s{count + i:02d}" for i in range(size)]
        count += size
        for name in layer:
            deps: list[str] = []
            if layers:
                deps = rng.sample(layers[-1], rng.randint(1, min(2, len(layers[-1]))))
                earlier = [n for lay in layers[:-1] for n in lay]
                if earlier and rng.random() < 0.3:
                    deps.append(rng.choice(earlier))
            graph[name] = sorted(set(deps), key=deps.index)
        layers.append(layer)
    # s00 feeds a sensitive token to the first stack that reads it.
    first_reader = next(n for n, d in graph.items() if d)
    graph[first_reader] = ["s00", *[d for d in graph[first_reader] if d != "s00"]]
    return graph


def _dependants(graph: Mapping[str, list[str]], name: str) -> set[str]:
    found: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        for other, deps in graph.items():
            if current in deps and other not in found:
                found.add(other)
                todo.append(other)
    return found


def _intervals(events: list[tuple[str, str, int]], begin: str, end: str) -> dict[str, list[int]]:
    spans: dict[str, list[int]] = {}
    for kind, name, ns in events:
        if kind == begin:
            spans.setdefault(name, [ns, -1])[0] = ns
        elif kind == end:
            spans.setdefault(name, [-1, ns])[1] = ns
    return spans


def _max_overlap(spans: Mapping[str, list[int]]) -> int:
    points = sorted([(s, 1) for s, _ in spans.values()] + [(e, -1) for _, e in spans.values()])
    running = peak = 0
    for _, delta in points:  # an end sorts before a start at the same instant
        running += delta
        peak = max(peak, running)
    return peak


@pytest.fixture
def environment(tmp_path: Path, binary: Binary) -> dict[str, str]:
    del binary  # fails clearly when no binary is installed
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "routine.rego").write_text(ROUTINE)
    server = tmp_path / "server.toml"
    server.write_text(
        f'[server]\ndata_dir = "{tmp_path / "cp"}"\n[policies]\ndirectory = "{policies}"\n'
    )
    env = {**os.environ, "TOFUFLOW_SERVER_CONFIG": str(server),
           "XDG_DATA_HOME": str(tmp_path / "data")}  # fmt: skip
    for name in ("TOFUFLOW_SERVER_URL", "TOFUFLOW_TOKEN", "TF_CLI_CONFIG_FILE", "TF_BUILD"):
        env.pop(name, None)
    return env


def test_a_30_stack_dag_runs_in_order_in_parallel_and_contains_a_failure(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    graph = _layered_dag(seed=8, sizes=(8, 7, 6, 5, 4))
    assert len(graph) == 30
    # A stack of the second layer that has dependants, but not everything depends on it.
    failing = next(n for n in list(graph)[8:15] if 2 <= len(_dependants(graph, n)) <= 12)
    doomed = _dependants(graph, failing)
    stacks = Stacks(tmp_path / "repo", environment, graph, tmp_path / "log.txt", {failing})
    stacks.write()

    # Plan first: nothing is applied, so the dependants plan with their inputs unknown.
    planned = stacks.run("plan", "--parallelism", "4")
    assert planned.returncode == 2, planned.stdout + planned.stderr
    assert "note: input upstream unknown: s0" in planned.stdout
    assert "has no state yet; planned without it" in planned.stdout
    assert "30 succeeded" in planned.stdout and stacks.events() == []

    done = stacks.run("apply", "--parallelism", "4", "-v")
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    events = stacks.events()
    spans = _intervals(events, "start", "end")

    # A failure stops exactly its transitive dependants; every other stack completes.
    started = {name for kind, name, _ in events if kind == "start"}
    assert started == set(graph) - doomed, f"failing {failing}, doomed {sorted(doomed)}"
    ended = {name for kind, name, _ in events if kind == "end"}
    assert ended == set(graph) - doomed - {failing}
    table = {line.split()[0]: line for line in out.splitlines() if line[:1] == "s" and "  " in line}
    for name in doomed:
        assert " skipped " in table[name], table[name]
    assert " failed " in table[failing]
    assert all(" succeeded " in table[n] for n in set(graph) - doomed - {failing})
    assert "30 stacks" in out and f"1 failed, {len(doomed)} skipped" in out

    # Order: every stack started after all of its dependencies ended.
    for name in started:
        for dep in graph[name]:
            assert spans[name][0] > spans[dep][1], f"{name} started before {dep} ended"

    # Parallelism: never more than 4 at once, and 4 were reached (the first layer has 8).
    completed = {n: s for n, s in spans.items() if s[1] > 0}
    assert _max_overlap(completed) == 4

    # Outputs reached the dependants, and the sensitive one was never printed.
    for name in set(graph) - doomed - {failing}:
        if graph[name]:
            received = (stacks.root / "stacks" / name / "upstream.txt").read_text().strip()
            assert received == graph[name][0]
    reader = next(n for n, d in graph.items() if d and d[0] == "s00")
    assert (stacks.root / "stacks" / reader / "token.txt").read_text().strip() == SECRET
    assert SECRET not in out and "***" in out

    # Fixed, the same command finishes the job: the skipped stacks run, the rest is done.
    stacks.fail.clear()
    stacks.write()
    stacks.log.unlink()
    again = stacks.run("apply", "--parallelism", "4")
    assert again.returncode == 0, again.stdout + again.stderr
    rerun = {name for kind, name, _ in stacks.events() if kind == "end"}
    assert rerun == doomed | {failing}  # the others had no changes
    spans = _intervals(stacks.events(), "start", "end")
    for name in rerun:
        for dep in graph[name]:
            if dep in rerun:
                assert spans[name][0] > spans[dep][1]

    # Destroy runs in reverse: a stack goes only after everything depending on it is gone.
    stacks.log.unlink()
    destroyed = stacks.run("destroy", "--parallelism", "4")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    gone = _intervals(stacks.events(), "dstart", "dend")
    assert set(gone) == set(graph)
    for name, deps in graph.items():
        for dep in deps:
            assert gone[dep][0] > gone[name][1], f"{dep} destroyed before its dependant {name}"
    assert _max_overlap(gone) <= 4


def test_a_stack_waiting_for_approval_holds_back_its_dependants_until_approved(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    environment = {k: v for k, v in environment.items() if k != "TOFUFLOW_SERVER_CONFIG"}
    graph = {"net": [], "db": ["net"], "app": ["db"], "logs": []}
    stacks = Stacks(tmp_path / "repo", environment, graph, tmp_path / "log.txt")
    stacks.write()
    assert stacks.run("apply").returncode == 0  # creations are routine: auto-approved

    # Only the selected stack and what depends on it; dependants first.
    waiting = stacks.run("destroy", "db")
    assert waiting.returncode == 2, waiting.stdout + waiting.stderr
    lines = {line.split()[0]: line for line in waiting.stdout.splitlines() if "  " in line}
    assert "awaiting approval" in lines["app"] and "skipped" in lines["db"]
    assert "net" not in lines and "logs" not in lines
    assert lines["db"].endswith("app awaiting approval")
    run_id = lines["app"].split()[4]
    assert len(run_id) == 16
    # The approver sees who asked, as for `tofuflow plan`: the command and the local user.
    shown = subprocess.run([*CLI, "runs", "show", run_id], cwd=stacks.root, env=environment,
                           capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    requester = json.loads(shown.stdout)["requester_name"]
    assert requester == f"tofuflow run-all destroy db ({getpass.getuser()})", requester

    cli = [*CLI]
    for step in (["approve", run_id], ["apply", run_id]):
        done = subprocess.run([*cli, *step], cwd=stacks.root, env=environment,
                              capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    assert "dend app" in stacks.log.read_text()

    # Run again: app is already gone (no changes), db now waits for its own approval.
    again = stacks.run("destroy", "db")
    assert again.returncode == 2, again.stdout + again.stderr
    lines = {line.split()[0]: line for line in again.stdout.splitlines() if "  " in line}
    assert "no changes" in lines["app"] and "awaiting approval" in lines["db"]


def test_a_remote_control_plane_with_a_token_per_stage(
    tmp_path: Path, environment: dict[str, str], server_config: Any
) -> None:
    graph = {"net": [], "app": ["net"]}
    stacks = Stacks(tmp_path / "repo", environment, graph, tmp_path / "log.txt")
    stacks.write()
    with threaded_server(server_config) as server:
        planner, applier = make_token(server, "planner"), make_token(server, "applier")
        base = {k: v for k, v in environment.items() if k != "TOFUFLOW_SERVER_CONFIG"}
        stacks.env = {**base, "TOFUFLOW_SERVER_URL": server.url, "TOFUFLOW_PLAN_TOKEN": planner}

        # No applier token: refused before any stack runs, saying which variable to set.
        refused = stacks.run("apply")
        assert refused.returncode == 1
        assert "TOFUFLOW_APPLY_TOKEN" in refused.stderr and stacks.events() == []

        stacks.env["TOFUFLOW_APPLY_TOKEN"] = applier
        done = stacks.run("apply", "-v")
        out = done.stdout + done.stderr
        assert done.returncode == 0, out
        assert f"control plane: {server.url}" in out
        assert planner not in out and applier not in out
        assert (stacks.root / "stacks" / "app" / "upstream.txt").read_text().strip() == "net"
        unchanged = stacks.run("plan")  # everything applied: exit 0, no changes anywhere
        assert unchanged.returncode == 0, unchanged.stdout + unchanged.stderr
        assert unchanged.stdout.count(": no changes") == 2


def test_a_stack_whose_plan_fails_names_its_run_in_the_summary(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    """A plan the binary refuses (an undeclared variable) has a run, recorded failed with
    the reason: the table's RUN column names it, as for every other stack, instead of "-"
    (the person had to search `runs list` for it)."""
    repo = tmp_path / "repo"
    for name, body in (("ok", ""), ("broken", "  input = var.missing\n")):
        (repo / name).mkdir(parents=True)
        (repo / name / "main.tf").write_text(f'resource "terraform_data" "x" {{\n{body}}}\n')
    (repo / "tofuflow.toml").write_text(
        '[workspaces.ok]\ndirectory = "ok"\n[workspaces.broken]\ndirectory = "broken"\n'
    )
    done = subprocess.run([*CLI, "run-all", "plan"], cwd=repo, env=environment,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()
            if line.startswith(("ok ", "broken "))}  # fmt: skip
    assert rows["broken"][1] == "failed", rows
    run_id = rows["broken"][3]
    assert re.fullmatch(r"[0-9a-f]{16}", run_id), rows["broken"]
    shown = subprocess.run([*CLI, "runs", "show", run_id], cwd=repo, env=environment,
                           capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    run = json.loads(shown.stdout)
    assert run["workspace"] == "broken" and run["status"] == "failed", run


def test_mistakes_are_reported_before_anything_runs(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    graph = {"a": ["c"], "b": ["a"], "c": ["b"], "d": []}
    stacks = Stacks(tmp_path / "repo", environment, graph, tmp_path / "log.txt")
    stacks.write()
    cycle = stacks.run("apply")
    assert cycle.returncode == 1
    assert "depends_on forms a cycle: a → c → b → a" in cycle.stderr
    outside = stacks.run("plan", "d")  # d is outside the cycle: it plans
    assert outside.returncode == 2, outside.stdout + outside.stderr
    unknown = stacks.run("plan", "nope")
    assert unknown.returncode == 1 and "workspace 'nope' is not defined" in unknown.stderr
    usage = stacks.run("apply", "--parallelism", "0")
    assert usage.returncode == 1 and "--parallelism" in usage.stderr
    assert stacks.events() == []


def test_init_waits_for_the_plugin_cache_lock_and_other_commands_do_not(
    tmp_path: Path, binary: Binary, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "plugins"
    monkeypatch.setenv("TF_PLUGIN_CACHE_DIR", str(cache))
    assert plugin_cache_dir() == cache
    work = tmp_path / "work"
    work.mkdir()
    (work / "main.tf").write_text('resource "terraform_data" "x" {}\n')
    env = {"PATH": os.environ["PATH"], "TF_PLUGIN_CACHE_DIR": str(cache),
           "CHECKPOINT_DISABLE": "1", "HOME": str(tmp_path)}  # fmt: skip
    with locking_binary(binary) as wrapped:
        assert wrapped.version == binary.version and wrapped.flavor == binary.flavor
        with init_lock(cache):
            init = subprocess.Popen([str(wrapped.path), "init", "-input=false", "-no-color"],
                                    cwd=work, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)  # fmt: skip
            version = subprocess.run([str(wrapped.path), "version"], cwd=work, env=env,
                                     capture_output=True, timeout=30, check=False)  # fmt: skip
            assert version.returncode == 0  # not held back by the lock
            time.sleep(1.5)
            assert init.poll() is None, "init ran while another process held the cache lock"
        assert init.wait(timeout=60) == 0
        assert b"initialized" in (init.stdout.read() if init.stdout else b"")
        # The lock is free again once the binary exited: a non-blocking lock succeeds.
        with (cache / LOCK_NAME).open("w") as handle:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stopped_run_all_says_what_each_stack_got_done(
    tmp_path: Path, environment: dict[str, str], signum: int
) -> None:
    """Ctrl-C (or a CI agent's SIGTERM) while a stack applies: the running apply stops
    gracefully, nothing else starts, and the table says per stack how far it got and what
    to run next; never a bare `Aborted.`."""
    started = tmp_path / "slow.started"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "main.tf").write_text(
        'resource "terraform_data" "fast" {}\n'
        'resource "terraform_data" "slow" {\n'
        "  depends_on = [terraform_data.fast]\n"
        f'  provisioner "local-exec" {{ command = "touch {started} && sleep 60" }}\n'
        "}\n"
    )
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "main.tf").write_text('resource "terraform_data" "b" {}\n')
    (tmp_path / "tofuflow.toml").write_text(
        '[workspaces.a]\ndirectory = "a"\n\n[workspaces.b]\ndirectory = "b"\ndepends_on = ["a"]\n'
    )
    done = interrupted(tmp_path, environment, "run-all", "apply", once=started, signum=signum)
    out, err = done.stdout, done.stderr
    assert done.returncode == 1, out + err
    assert "Aborted." not in out + err
    rows = {line.split()[0]: line for line in out.splitlines() if line[:2] in ("a ", "b ")}
    assert "stopped (cancelled)" in rows["a"], out
    assert "interrupted: 1 of 2 changes applied, saved as state version" in rows["a"], out
    assert "not started (cancelled)" in rows["b"], out
    assert "run `tofuflow run-all apply` again to continue" in out, out
    listed = subprocess.run([*CLI, "runs", "list", "--json"], cwd=tmp_path, env=environment,
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert [(r["workspace"], r["status"]) for r in json.loads(listed.stdout)] == [
        ("a", "cancelled")
    ]


def test_a_stopped_run_all_apply_says_a_replacement_it_left_waits_for_an_approver(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    """Ctrl-C while a resource is being created taints it; under the built-in policies the
    next plan's replacement waits for a person, so "run it again" alone is not the way on:
    the advice says to approve and apply such runs, and the next run-all shows why."""
    environment = {k: v for k, v in environment.items() if k != "TOFUFLOW_SERVER_CONFIG"}
    started = tmp_path / "slow.started"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "main.tf").write_text(
        'resource "terraform_data" "slow" {\n'
        f'  provisioner "local-exec" {{ command = "touch {started} && sleep 60" }}\n'
        "}\n"
    )
    (tmp_path / "tofuflow.toml").write_text('[workspaces.a]\ndirectory = "a"\n')
    done = interrupted(tmp_path, environment, "run-all", "apply", once=started)
    out, err = done.stdout, done.stderr
    assert done.returncode == 1, out + err
    assert "tainted: the next plan replaces it" in out, out
    advice = out[out.index("run-all apply was interrupted (Ctrl-C)") :]
    assert "run `tofuflow run-all apply` again to continue" in advice, out
    assert "`tofuflow approve RUN`" in advice and "`tofuflow apply RUN`" in advice, out

    again = subprocess.run([*CLI, "run-all", "apply"], cwd=tmp_path, env=environment,
                           capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert again.returncode == 2, again.stdout + again.stderr
    assert "awaiting approval" in again.stdout, again.stdout


def test_an_input_naming_an_output_its_dependency_lacks_waits_for_a_person(
    tmp_path: Path, binary: Binary
) -> None:
    """A typo in an input's output while the dependency has state: planned with the
    variable's default, an update, auto-approved; `tofuflow apply` then reset the value."""
    del binary
    repo = tmp_path / "repo"
    (repo / "net").mkdir(parents=True)
    (repo / "net" / "main.tf").write_text('output "db_password" {\n  value = "p1"\n}\n')
    (repo / "db").mkdir()
    (repo / "db" / "main.tf").write_text(
        'variable "password" {\n  type    = string\n  default = "unset"\n}\n'
        'resource "terraform_data" "db" {\n  input = var.password\n}\n'
    )
    toml = repo / "tofuflow.toml"
    toml.write_text(
        '[workspaces.net]\ndirectory = "net"\n'
        '[workspaces.db]\ndirectory = "db"\ndepends_on = ["net"]\n'
        'inputs = { password = "net.db_password" }\n'
    )
    cli = cli_in(repo, fresh_user(tmp_path))

    applied = cli("run-all", "apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    toml.write_text(
        toml.read_text().replace("net.db_password", "net.db_pasword")
        + "variables = { pasword = 3 }\n"  # run-all said nothing of a variable nothing reads
    )
    planned = cli("run-all", "plan")
    assert "input password unknown: net has no output 'db_pasword'" in planned.stdout
    assert (
        "note: variables.pasword in tofuflow.toml: the configuration declares no variable "
        '"pasword", so the binary ignored it; did you mean "password"?'
    ) in planned.stdout, planned.stdout
    (row,) = [line for line in planned.stdout.splitlines() if " db (" in line]
    assert row.endswith("+0 ~1 -0 (needs approval)"), planned.stdout
