"""What changed between two state versions: addresses and attribute names, never values."""

from __future__ import annotations

from typing import Any

from tofuflow.tofu import State

__all__ = ["diff_states"]


def diff_states(before: bytes, after: bytes) -> dict[str, Any]:
    """``{"added": [...], "removed": [...], "changed": [{"address", "attributes"}], ...}``."""
    old, new = State.from_json(before), State.from_json(after)
    old_instances, new_instances = _instances(old), _instances(new)
    changed = []
    for address in sorted(old_instances.keys() & new_instances.keys()):
        attrs = _changed_keys(old_instances[address], new_instances[address])
        if attrs:
            changed.append({"address": address, "attributes": attrs})
    old_outputs = {k: (v.value, v.sensitive) for k, v in old.outputs.items()}
    new_outputs = {k: (v.value, v.sensitive) for k, v in new.outputs.items()}
    return {
        "serial": {"from": old.serial, "to": new.serial},
        "added": sorted(new_instances.keys() - old_instances.keys()),
        "removed": sorted(old_instances.keys() - new_instances.keys()),
        "changed": changed,
        "outputs_changed": sorted(
            name
            for name in old_outputs.keys() | new_outputs.keys()
            if old_outputs.get(name) != new_outputs.get(name)
        ),
    }


def _instances(state: State) -> dict[str, dict[str, Any]]:
    return {
        instance.address: dict(instance.attributes)
        for resource in state.resources
        for instance in resource.instances
    }


def _changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
