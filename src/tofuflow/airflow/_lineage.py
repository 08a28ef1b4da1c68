"""Traceability: the workspace as an Airflow Asset, and OpenLineage facets of its changes.

Asset URI: ``tofuflow://<control-plane host[:port] or "embedded">/<workspace>``, so a data
DAG can be scheduled on an infrastructure change (``schedule=[Asset(uri)]``). The
OpenLineage facet lists the addresses of the resources a task created, changed, replaced
or destroyed, never their values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from tofuflow._version import __version__

__all__ = [
    "FACET_NAME",
    "asset_authority",
    "asset_uri",
    "changes_from_events",
    "changes_from_plan",
    "lineage_facet",
    "operator_lineage",
]

FACET_NAME = "tofuflow"
PRODUCER = f"https://github.com/tofuflow/tofuflow/tree/v{__version__}"
_KINDS = ("created", "changed", "replaced", "destroyed")
# The binary's action names (plan actions and apply hook actions) → our kinds.
_BY_ACTION = {
    "create": "created",
    "update": "changed",
    "replace": "replaced",
    "delete": "destroyed",
}


def asset_authority(url: str | None) -> str:
    """``https://cp.example.com:8443/x`` → ``cp.example.com:8443``; no URL → ``embedded``."""
    if not url:
        return "embedded"
    parts = urlsplit(url if "://" in url else f"https://{url}")
    return parts.netloc.rpartition("@")[2] or "embedded"


def asset_uri(authority: str, workspace: str) -> str:
    """``asset_uri("embedded", "app/dev")`` → ``tofuflow://embedded/app/dev``."""
    return f"tofuflow://{authority}/{workspace.strip('/')}"


def changes_from_plan(resource_changes: Iterable[Any]) -> dict[str, list[str]]:
    """Addresses by kind from a plan's ``resource_changes`` (``ResourceChange`` objects)."""
    return _group((rc.address, str(rc.action)) for rc in resource_changes)


def changes_from_events(events: Iterable[Any]) -> dict[str, list[str]]:
    """Addresses by kind from an apply's ``apply_complete`` events (the ``-json`` stream)."""
    found = []
    for event in events:
        if event.type != "apply_complete":
            continue
        hook = event.data.get("hook") if isinstance(event.data, Mapping) else None
        if isinstance(hook, Mapping) and event.resource_address:
            found.append((event.resource_address, str(hook.get("action", ""))))
    return _group(found)


def _group(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {kind: [] for kind in _KINDS}
    for address, action in pairs:
        kind = _BY_ACTION.get(action)
        if kind is not None and address not in grouped[kind]:
            grouped[kind].append(address)
    return {kind: sorted(addresses) for kind, addresses in grouped.items()}


def lineage_facet(
    *,
    uri: str,
    workspace: str,
    run: Mapping[str, Any] | None,
    changes: Mapping[str, list[str]],
    operation: str,
) -> dict[str, Any]:
    """The content of the ``tofuflow`` run facet: which workspace, which tofuflow run, and
    which resources it created, changed, replaced or destroyed (addresses only)."""
    run = run or {}
    return {
        "_producer": PRODUCER,
        "_schemaURL": f"{PRODUCER}/docs/airflow.md#openlineage",
        "operation": operation,
        "workspace": workspace,
        "asset": uri,
        "runId": run.get("id"),
        "status": run.get("status"),
        "stateVersion": run.get("state_version"),
        "commit": run.get("commit"),
        **{kind: list(changes.get(kind, [])) for kind in _KINDS},
        "counts": {kind: len(changes.get(kind, [])) for kind in _KINDS},
    }


def operator_lineage(facet: Mapping[str, Any]) -> Any:
    """An ``OperatorLineage`` with the workspace as output dataset and the facet above, or
    None when the OpenLineage provider is not installed."""
    try:
        # Not a dependency: present only when the OpenLineage provider is installed.
        import attrs
        from airflow.providers.openlineage.extractors import (  # type: ignore[import-not-found,unused-ignore]
            OperatorLineage,
        )
        from openlineage.client.event_v2 import Dataset  # type: ignore[import-not-found,unused-ignore]
        from openlineage.client.facet_v2 import RunFacet  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None

    @attrs.define
    class TofuflowRunFacet(RunFacet):  # type: ignore[misc]
        operation: str
        workspace: str
        asset: str
        runId: str | None
        status: str | None
        created: list[str]
        changed: list[str]
        replaced: list[str]
        destroyed: list[str]

    fields = {k: facet[k] for k in ("operation", "workspace", "asset", "runId", "status", *_KINDS)}
    authority, _, name = str(facet["asset"]).removeprefix("tofuflow://").partition("/")
    dataset = Dataset(namespace=f"tofuflow://{authority}", name=name)
    return OperatorLineage(
        inputs=[], outputs=[dataset], run_facets={FACET_NAME: TofuflowRunFacet(**fields)}
    )
