"""Plan parsing speed: a 10,000-resource ``show -json`` document in at most 0.5 s.

The document is synthetic but shaped like the recorded fixture (tests/fixtures/plans/
mixed.json): its resource changes are cloned from the recorded ones (sensitive values
and unknowns included) over several modules with a realistic mix of actions, and
``planned_values``/``prior_state`` repeat every resource as the binary does. Timings are
the best of ``--repeat`` runs; the target covers ``Plan.from_json`` on bytes, decoding
included.

    python benchmarks/bench_plan_parse.py [--resources 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import report

from tofuflow.tofu import Plan, render_plan_text

TARGET_SECONDS = 0.5
FIXTURE = Path(__file__).parents[1] / "tests" / "fixtures" / "plans" / "mixed.json"
MODULES = [
    None,
    'module.app["blue"]',
    'module.app["green"]',
    "module.network",
    "module.db.module.replica[0]",
    "module.db.module.replica[1]",
    'module.edge["eu-west-1"]',
    'module.edge["us-east-1"]',
]
# Most resources in a big plan are untouched; destroys and replaces are the rare ones.
MIX = [
    (("no-op",), 55),
    (("update",), 18),
    (("create",), 14),
    (("delete",), 6),
    (("delete", "create"), 3),
    (("create", "delete"), 2),
    (("read",), 2),
]


def build_document(resources: int, seed: int = 7) -> dict[str, Any]:
    """A ``show -json`` document with ``resources`` resource changes, deterministic per seed."""
    fixture = json.loads(FIXTURE.read_bytes())
    templates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for rc in fixture["resource_changes"]:
        templates.setdefault(tuple(rc["change"]["actions"]), []).append(rc)
    rng = random.Random(seed)
    kinds, weights = zip(*MIX, strict=True)
    changes, values = [], []
    for i in range(resources):
        choices = templates[rng.choices(kinds, weights)[0]]
        rc = _clone(choices[i % len(choices)], i, MODULES[i % len(MODULES)])
        changes.append(rc)
        values.append(_values_entry(rc))
    doc = {key: fixture[key] for key in ("format_version", "terraform_version", "variables")}
    doc["resource_changes"] = changes
    doc["planned_values"] = {"root_module": {"resources": values}}
    doc["prior_state"] = {"format_version": "1.0", "values": {"root_module": {"resources": values}}}
    doc["output_changes"] = fixture["output_changes"]
    doc["configuration"] = fixture["configuration"]
    doc.update(applyable=True, complete=True, errored=False)
    return doc


def _clone(template: dict[str, Any], i: int, module: str | None) -> dict[str, Any]:
    rc = copy.deepcopy(template)
    name = f"r{i}"
    data = "data." if rc["mode"] == "data" else ""
    rc["address"] = f"{module + '.' if module else ''}{data}{rc['type']}.{name}"
    rc["name"] = name
    rc.pop("index", None)
    if module:
        rc["module_address"] = module
    else:
        rc.pop("module_address", None)
    for side in ("before", "after"):
        value = rc["change"].get(side)
        if isinstance(value, dict) and isinstance(value.get("id"), str):
            value["id"] = f"{value['id'][:-6]}{i:06d}"
    return rc


def _values_entry(rc: dict[str, Any]) -> dict[str, Any]:
    change = rc["change"]
    return {
        "address": rc["address"],
        "mode": rc["mode"],
        "type": rc["type"],
        "name": rc["name"],
        "provider_name": rc["provider_name"],
        "schema_version": 0,
        "values": change.get("after") or change.get("before") or {},
        "sensitive_values": change.get("after_sensitive") or {},
    }


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Fastest wall time of ``repeat`` calls: the least disturbed measurement."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="tofuflow-bench-") as tmp:
        path = Path(tmp) / "plan.json"
        # Compact, like the binary's own output.
        path.write_text(json.dumps(build_document(args.resources), separators=(",", ":")))
        data = path.read_bytes()

    plan = Plan.from_json(data)
    assert len(plan.resource_changes) == args.resources
    decode = best_of(lambda: json.loads(data), args.repeat)
    parse = best_of(lambda: Plan.from_json(data), args.repeat)
    render = best_of(lambda: render_plan_text(plan), args.repeat)

    orjson = "orjson" if importlib.util.find_spec("orjson") else "stdlib json"
    print(f"document: {args.resources} resources, {len(data) / 1e6:.1f} MB; decoder: {orjson}")
    print(f"json.loads alone                   {decode:.3f} s")
    print(f"render_plan_text                   {render:.3f} s")
    ok = report(
        f"Plan.from_json({args.resources} resources)",
        parse,
        TARGET_SECONDS,
        f"{parse:.3f} s = {parse / TARGET_SECONDS:.2f} x target",
        f"{TARGET_SECONDS:g} s",
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
