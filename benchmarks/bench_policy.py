"""Policy check speed: the built-in library on a 10,000-resource plan in at most 1 s.

The plan is synthetic: 10,000 resource changes, every one of them a real change (create,
update, delete, replace; no no-ops, which ``build_input`` would leave out and so make
the run cheaper), over eight modules and six resource types. The workspace turns every
built-in rule on: protected globs that match a few hundred of the changes, grants for
the requester, a deletion limit, the production tag. What is timed is what the control
plane does per uploaded plan: ``build_input`` on the parsed plan plus ``evaluate``.
Parsing the plan (bench_plan_parse.py) and loading the policies (once per server) are
reported beside it, untimed against the target. Best of ``--repeat`` runs.

    python benchmarks/bench_policy.py [--resources 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import report

from tofuflow.policy import Decision, PolicySet, build_input, evaluate
from tofuflow.tofu import Plan

TARGET_SECONDS = 1.0
MODULES = [
    None,
    'module.app["blue"]',
    'module.app["green"]',
    "module.network",
    "module.db",
    "module.db.module.replica[0]",
    'module.edge["eu-west-1"]',
    'module.edge["us-east-1"]',
]
TYPES = [
    "aws_instance",
    "aws_s3_bucket",
    "aws_iam_role",
    "aws_kms_key",
    "aws_db_instance",
    "random_id",
]
# Weighted like a big refactoring: mostly creates and updates, some destroys.
ACTIONS = [["create"]] * 4 + [["update"]] * 4 + [["delete"]] + [["delete", "create"]]
RUN = {
    "requester": {"subject": "repo:acme/infra:ref:refs/heads/main", "claims": {"actor": "ci"}},
    "commit": "0123456789abcdef0123456789abcdef01234567",
    "branch": "main",
    "ci": {"system": "github-actions", "run_id": "4242"},
}
WORKSPACE = {
    "name": "prod-eu",
    "tags": ["production", "eu"],
    "settings": {
        "protected": ["module.db.*aws_db_instance.*", "aws_s3_bucket.r1*", "*aws_kms_key.r2*"],
        "allowed": [
            {"subject": "repo:acme/infra:*", "types": ["aws_*", "random_*"], "modules": ["*"]},
            {"subject": "repo:acme/network:*", "modules": ["module.network*"]},
        ],
        "max_deletions": 5000,
    },
}


def build_document(resources: int) -> dict[str, Any]:
    """A ``show -json`` plan document with ``resources`` changes, deterministic."""
    return {
        "format_version": "1.2",
        "resource_changes": [_change(i) for i in range(resources)],
        "output_changes": {"endpoint": {"actions": ["update"], "before": "a", "after": "b"}},
    }


def _change(i: int) -> dict[str, Any]:
    module, type_ = MODULES[i % len(MODULES)], TYPES[i % len(TYPES)]
    address = f"{module + '.' if module else ''}{type_}.r{i}"
    change = {
        "actions": ACTIONS[i % len(ACTIONS)],
        "before": {"id": f"id-{i}"},
        "after": {"id": f"id-{i}"},
    }
    rc = {
        "address": address,
        "mode": "managed",
        "type": type_,
        "name": f"r{i}",
        "provider_name": "registry.opentofu.org/hashicorp/aws",
        "change": change,
    }
    if module:
        rc["module_address"] = module
    return rc


def best_of(fn: Callable[[], object], repeat: int) -> tuple[float, float, object]:
    """Fastest wall and CPU times of ``repeat`` calls (the least disturbed), last result.

    CPU time is printed beside wall time because benchmark machines are often shared:
    when other processes compete for the cores, wall time grows and CPU time does not.
    """
    wall, cpu, result = float("inf"), float("inf"), None
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall = min(wall, time.perf_counter() - started)
        cpu = min(cpu, time.process_time() - started_cpu)
    return wall, cpu, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    document = build_document(args.resources)
    parse_s, _, plan = best_of(lambda: Plan.from_json(document), 1)
    load_s, _, policies = best_of(lambda: PolicySet.load(None), args.repeat)
    assert isinstance(plan, Plan) and isinstance(policies, PolicySet)
    input_s, input_cpu, doc = best_of(lambda: build_input(plan, RUN, WORKSPACE), args.repeat)
    assert isinstance(doc, dict)
    eval_s, eval_cpu, _ = best_of(lambda: evaluate(policies, doc), args.repeat)
    total_s, total_cpu, decision = best_of(
        lambda: evaluate(policies, build_input(plan, RUN, WORKSPACE)), args.repeat
    )
    assert isinstance(decision, Decision)

    print(f"{'Plan.from_json (decoded document)':<34} {parse_s:.3f} s  [not in the target]")
    print(f"{'PolicySet.load (built-ins, once)':<34} {load_s:.3f} s  [not in the target]")
    print(f"{'build_input':<34} {input_s:.3f} s  (cpu {input_cpu:.3f} s)")
    print(f"{'evaluate':<34} {eval_s:.3f} s  (cpu {eval_cpu:.3f} s)")
    protected = sum(f.policy == "tofuflow.library.protected" for f in decision.approval_reasons)
    print(
        f"decision: {decision.outcome}; {len(doc['plan']['resource_changes'])} changes in the "
        f"input, {protected} protected resources destroyed, {len(decision.denies)} denies"
    )
    ok = report(
        f"build_input + evaluate ({args.resources})",
        total_s,
        TARGET_SECONDS,
        f"{total_s:.3f} s (cpu {total_cpu:.3f} s)",
        f"{TARGET_SECONDS:g} s",
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
