"""The policy input document: a compact, value-free view of a plan, its run and workspace.

    doc = build_input(plan, run={"requester": {"subject": "repo:acme/infra:ref:refs/heads/main"}},
                      workspace={"name": "prod", "tags": ["production"], "settings": {}})

Resource and output *values* never enter it: they may hold secrets, and a policy log or a
``print`` in a policy must not be able to leak one. Policies see addresses, types, modules,
providers and actions only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from tofuflow.errors import ConfigError
from tofuflow.tofu import Action, Plan

__all__ = ["build_input"]

# Neither changes anything on apply; their numbers stay in counts.
_QUIET = (Action.NO_OP, Action.READ)


def build_input(plan: Plan, run: Mapping[str, Any], workspace: Mapping[str, Any]) -> dict[str, Any]:
    """The ``input`` every policy sees: ``{"plan": ..., "run": ..., "workspace": ...}``.

    ``run`` is kept as given (requester subject and claims, commit, branch, CI system,
    pipeline id...), except that ``context`` keys the runner did not know (null) are left
    out, so a rule reading one is undefined, as for a key never reported;
    ``workspace`` gives ``name``, ``tags``, ``settings`` and ``environment``. Raises
    ConfigError when either holds something that is not JSON.
    """
    context = run.get("context")
    if isinstance(context, Mapping):
        run = {**run, "context": {k: v for k, v in context.items() if v is not None}}
    return {
        "plan": _plan_section(plan),
        "run": _json_value(run, "run"),
        "workspace": _workspace_section(workspace),
    }


def _plan_section(plan: Plan) -> dict[str, Any]:
    counts = plan.counts
    return {
        "resource_changes": [
            {
                "address": rc.address,
                "module": rc.module_address or "",
                "type": rc.type,
                "name": rc.name,
                "provider": rc.provider_name,
                "action": rc.action.value,
            }
            for rc in plan.resource_changes
            if rc.action not in _QUIET
        ],
        "counts": asdict(counts),
        "summary": counts.summary,
        "has_changes": plan.has_changes,
        "output_changes": [
            {"name": oc.name, "action": oc.action.value, "sensitive": oc.sensitive}
            for oc in plan.output_changes.values()
            if oc.action is not Action.NO_OP
        ],
    }


def _workspace_section(workspace: Mapping[str, Any]) -> dict[str, Any]:
    tags = workspace.get("tags") or []
    if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
        raise ConfigError(
            f'workspace tags must be a list of strings, e.g. ["production"], not {tags!r}'
        )
    return {
        "name": str(workspace.get("name") or ""),
        "tags": list(tags),
        "settings": _json_value(workspace.get("settings") or {}, "workspace.settings"),
        # An ephemeral environment (`tofuflow env`): see routine.rego.
        "environment": bool(workspace.get("environment", False)),
    }


def _json_value(value: Any, where: str) -> Any:
    """A plain-JSON copy of ``value``, so nothing else (and no shared mutable state) leaks in."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {_key(k, where): _json_value(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ConfigError(
        f"{where} is a {type(value).__name__}, which a policy input cannot hold: pass JSON "
        "values (strings, numbers, booleans, null, lists, mappings)"
    )


def _key(key: Any, where: str) -> str:
    if not isinstance(key, str):
        raise ConfigError(f"{where} has the non-string key {key!r}: JSON object keys are strings")
    return key
