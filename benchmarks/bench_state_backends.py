"""State backends side by side: local, tofuflow's state service (http), pg and s3.

Times ``apply -auto-approve`` of a configuration of ``--resources`` ``terraform_data``
resources from empty state, then (separately) a no-change ``plan``, with the state in:

* ``local``    the local backend (a file in the working directory);
* ``tofuflow`` the state service (``http`` backend; SQLite, encrypted, versioned, audited)
               served by uvicorn in a thread of this process;
* ``pg``       the built-in ``pg`` backend on a real PostgreSQL (fsync on);
* ``s3``       the built-in ``s3`` backend on moto's S3 server, locking with a lock file.

Every timed apply starts from empty state in a fresh working directory (``init`` untimed);
the backends are interleaved in every round, in a rotating order, so drift on the machine
hits them alike. One untimed warm-up round comes first. Medians are reported, with the
per-round (paired) ratios. Also timed, for information: ``state pull`` and ``state push``
of the resulting state as the next serial, the commands where the backend's own cost is
the largest share.

Targets (issue): tofuflow <= 1.15 x local for apply and plan, and faster than pg and s3.

    python benchmarks/bench_state_backends.py [--resources 500] [--repeat 10]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from _common import report

HERE = Path(__file__).parent

CONFIG = """
terraform {{
  backend "{kind}" {{{backend}
  }}
}}

resource "terraform_data" "r" {{
  count = {count}
  input = {{ index = count.index, name = "resource-${{count.index}}" }}
}}
"""


@dataclass
class Backend:
    name: str
    kind: str  # the backend block's type
    # (round) -> (backend block body, extra env); every round gets a state of its own
    setup: Callable[[int], tuple[str, dict[str, str]]]
    times: dict[str, list[float]] = field(default_factory=dict)  # "apply" -> per round

    def median(self, what: str) -> float:
        return statistics.median(self.times[what])


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    cli_config = env.get("TF_CLI_CONFIG_FILE")
    if cli_config and not Path(cli_config).is_file():
        del env["TF_CLI_CONFIG_FILE"]  # a missing file only makes every command warn
    for key in [k for k in env if k.startswith(("TF_HTTP_", "AWS_", "PG_CONN_STR"))]:
        del env[key]  # each backend sets exactly what it needs
    env.update({"TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"})
    return env


def run(argv: list[str], cwd: Path, env: dict[str, str], expect: int = 0) -> float:
    """Run one command, output to a log file; its wall time (raises with the log tail)."""
    log = cwd / "bench.log"
    with log.open("ab") as sink:
        started = time.perf_counter()
        done = subprocess.run(argv, cwd=cwd, env=env, stdout=sink, stderr=sink, check=False)
        elapsed = time.perf_counter() - started
    if done.returncode != expect:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(argv)} in {cwd} exited {done.returncode}:\n{tail}")
    return elapsed


# -- the backends -----------------------------------------------------------------------


@contextmanager
def tofuflow_backend(root: Path) -> Iterator[Backend]:
    from _services.server import threaded_server
    from tofuflow.server.admin import create_token
    from tofuflow.server.config import ServerConfig

    data_dir = root / "tofuflow-data"
    # The binary's own http backend with an applier token (the simple applier mode),
    # unthrottled: this compares backends, not the rate limit.
    config = ServerConfig.from_mapping({
        "server": {"data_dir": str(data_dir), "rate_limit": 0},
        "workspace_settings": [{"match": "*", "require_apply_session": False}],
    })  # fmt: skip
    if config.effective_database_url != f"sqlite:///{data_dir / 'tofuflow.db'}":
        raise RuntimeError(f"the server would not use a fresh database in {data_dir}: "
                           f"{config.effective_database_url}")  # fmt: skip
    run_id = uuid.uuid4().hex[:8]  # workspaces of their own even on a shared database
    with threaded_server(config) as server:
        token = create_token(
            server.app.state.engine, role="applier", workspaces="*", ttl="2h"
        ).token

        def setup(round_: int) -> tuple[str, dict[str, str]]:
            return "", server.backend_env(f"bench-{run_id}/round-{round_}", token)

        yield Backend("tofuflow", "http", setup)


@contextmanager
def pg_backend() -> Iterator[Backend]:
    from _services.postgres import postgres

    with postgres() as (url, _):
        # postgresql+psycopg://postgres@127.0.0.1:PORT/postgres -> lib/pq's form
        conn_str = "postgres://" + url.split("://", 1)[1] + "?sslmode=disable"

        def setup(round_: int) -> tuple[str, dict[str, str]]:
            return f'\n    schema_name = "bench_round_{round_}"', {"PG_CONN_STR": conn_str}

        yield Backend("pg", "pg", setup)


@contextmanager
def s3_backend() -> Iterator[Backend]:
    import boto3

    from _services.moto import AWS_TEST_ENV, moto_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per S3 request
    with moto_server() as endpoint:
        boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id=AWS_TEST_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_TEST_ENV["AWS_SECRET_ACCESS_KEY"],
        ).create_bucket(Bucket="tofuflow-bench")  # fmt: skip
        body = (
            '\n    bucket = "tofuflow-bench"'
            '\n    key = "round-{round}/terraform.tfstate"'
            '\n    region = "us-east-1"'
            f'\n    endpoints = {{ s3 = "{endpoint}" }}'
            "\n    use_path_style = true"
            "\n    use_lockfile = true"
            "\n    skip_credentials_validation = true"
            "\n    skip_requesting_account_id = true"
            "\n    skip_metadata_api_check = true"
            "\n    skip_region_validation = true"
        )

        def setup(round_: int) -> tuple[str, dict[str, str]]:
            return body.replace("{round}", str(round_)), dict(AWS_TEST_ENV)

        yield Backend("s3", "s3", setup)


def local_backend() -> Backend:
    return Backend("local", "local", lambda round_: ("", {}))


# -- the measurement --------------------------------------------------------------------


def one_round(
    backend: Backend, binary: str, root: Path, resources: int, round_: int, env: dict[str, str]
) -> dict[str, float]:
    """init (untimed), then timed: apply, plan, state pull, state push (serial + 1)."""
    workdir = root / f"{backend.name}-{round_}"
    workdir.mkdir()
    block, extra = backend.setup(round_)
    (workdir / "main.tf").write_text(
        CONFIG.format(kind=backend.kind, backend=block, count=resources)
    )
    child_env = {**env, **extra}
    common = ["-input=false", "-no-color"]
    run([binary, "init", *common], workdir, child_env)
    times = {"apply": run([binary, "apply", "-auto-approve", *common], workdir, child_env)}
    summary = f"Resources: {resources} added, 0 changed, 0 destroyed."
    if summary not in (workdir / "bench.log").read_text():  # i.e. it began from empty state
        raise RuntimeError(f"{backend.name}: apply did not report {summary!r}; see {workdir}")
    times["plan"] = run([binary, "plan", "-detailed-exitcode", *common], workdir, child_env)
    # The backend's own paths, with as little else as the binary allows: read the state,
    # then write it back as the next serial (lock, read, write, unlock).
    with (workdir / "pulled.tfstate").open("wb") as sink:
        started = time.perf_counter()
        subprocess.run([binary, "state", "pull"], cwd=workdir, env=child_env, stdout=sink,
                       stderr=subprocess.DEVNULL, check=True)  # fmt: skip
        times["pull"] = time.perf_counter() - started
    doc = json.loads((workdir / "pulled.tfstate").read_bytes())
    doc["serial"] += 1
    (workdir / "next.tfstate").write_text(json.dumps(doc, indent=2) + "\n")
    times["push"] = run([binary, "state", "push", "next.tfstate"], workdir, child_env)
    shutil.rmtree(workdir, ignore_errors=True)  # keep the temp dir small
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=10, help="timed rounds (after 1 warm-up)")
    parser.add_argument(
        "--backends", default="local,tofuflow,pg,s3",
        help="comma-separated subset of local,tofuflow,pg,s3 (local is always included)",
    )  # fmt: skip
    args = parser.parse_args()
    binary = os.environ.get("TOFUFLOW_BINARY") or shutil.which("tofu") or shutil.which("terraform")
    if binary is None:
        print("no tofu or terraform binary on PATH (or set TOFUFLOW_BINARY)")
        return 1
    wanted = {"local", *args.backends.split(",")}
    version = subprocess.run([binary, "version"], capture_output=True, text=True, env=base_env())
    print(f"binary: {version.stdout.splitlines()[0]}; {args.resources} terraform_data "
          f"resources; {args.repeat} timed rounds + 1 warm-up; {os.cpu_count()} CPUs, load "
          f"average {os.getloadavg()[0]:.2f}")  # fmt: skip

    env = base_env()
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tofuflow-bench-")))
        backends = [local_backend()]
        if "tofuflow" in wanted:
            backends.append(stack.enter_context(tofuflow_backend(root)))
        if "pg" in wanted:
            backends.append(stack.enter_context(pg_backend()))
        if "s3" in wanted:
            backends.append(stack.enter_context(s3_backend()))
        for round_ in range(args.repeat + 1):
            # Interleaved, and in a rotating order: drift hits every backend alike and
            # none always runs right after the same neighbour.
            shift = round_ % len(backends)
            for backend in backends[shift:] + backends[:shift]:
                times = one_round(backend, binary, root, args.resources, round_, env)
                if round_ > 0:
                    for what, seconds in times.items():
                        backend.times.setdefault(what, []).append(seconds)
            label = "warm-up" if round_ == 0 else f"round {round_}/{args.repeat}"
            print(f"  {label} done (load average {os.getloadavg()[0]:.2f})", flush=True)
    return 0 if summarise(backends) else 1


WHAT = ("apply", "plan", "pull", "push")


def summarise(backends: list[Backend]) -> bool:
    local = backends[0]
    print()
    print(f"{'':<10}" + "".join(f"{what:>31}" for what in WHAT))
    print(f"{'backend':<10}" + f"{'median':>10} {'(min-max)':>11} {'x local':>8}" * len(WHAT))
    for b in backends:
        cells = ""
        for what in WHAT:
            med = b.median(what)
            cells += f"{med:>9.3f}s {_span(b.times[what]):>11} {med / local.median(what):>7.3f}x"
        print(f"{b.name:<10}{cells}")
    print("per round, apply / plan seconds:")
    for b in backends:
        pairs = "  ".join(
            f"{a:.2f}/{p:.2f}" for a, p in zip(b.times["apply"], b.times["plan"], strict=True)
        )
        print(f"  {b.name:<9} {pairs}")
    print()
    ok = True
    by_name = {b.name: b for b in backends}
    flow = by_name.get("tofuflow")
    if flow is None:
        return ok
    for what in ("apply", "plan"):
        t, t_local = flow.median(what), local.median(what)
        ok &= report(
            f"{what}: tofuflow vs 1.15 x local", t, 1.15 * t_local,
            f"tofuflow {t:.3f}s  local {t_local:.3f}s  ratio {t / t_local:.3f}x"
            f"{_paired(flow, local, what)}", f"{1.15 * t_local:.3f}s (1.15x local)",
        )  # fmt: skip
    for other in ("pg", "s3"):
        if other not in by_name:
            continue
        for what in ("apply", "plan"):
            t, t_other = flow.median(what), by_name[other].median(what)
            ok &= report(
                f"{what}: tofuflow faster than {other}", t, t_other,
                f"tofuflow {t:.3f}s  {other} {t_other:.3f}s  ratio {t / t_other:.3f}x"
                f"{_paired(flow, by_name[other], what)}", f"{t_other:.3f}s ({other})",
            )  # fmt: skip
    return ok


def _paired(a: Backend, b: Backend, what: str) -> str:
    """Per-round ratios a/b (both ran in the same round): their median and spread."""
    ratios = sorted(x / y for x, y in zip(a.times[what], b.times[what], strict=True))
    noise = "  (within noise)" if ratios[0] < 1 < ratios[-1] else ""
    return (f"; per-round ratios median {statistics.median(ratios):.3f}x, "
            f"range {ratios[0]:.2f}-{ratios[-1]:.2f}{noise}")  # fmt: skip


def _span(values: list[float]) -> str:
    return f"({min(values):.2f}-{max(values):.2f})"


if __name__ == "__main__":
    raise SystemExit(main())
