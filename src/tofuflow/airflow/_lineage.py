"""Traceability: the workspace as an Airflow Asset, and OpenLineage facets of its changes.

Asset URI: ``tofuflow://<control-plane host[:port] or "embedded">/<workspace>``, so a data
DAG can be scheduled on an infrastructure change (``schedule=[Asset(uri)]``). The
OpenLineage facet lists the addresses of the resources a task created, changed, replaced
or destroyed, never their values.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from tofuflow._version import __version__

__all__ = [
    "FACET_NAME",
    "SCHEMA_FILE",
    "SCHEMA_URL",
    "asset_authority",
    "asset_uri",
    "changes_from_events",
    "changes_from_plan",
    "lineage_facet",
    "operator_lineage",
]

FACET_NAME = "tofuflow"
PRODUCER = f"https://github.com/tofuflow/tofuflow/tree/v{__version__}"
# The facet's JSON schema ships beside this module (run-facet.schema.json).
SCHEMA_FILE = "run-facet.schema.json"
SCHEMA_URL = f"{PRODUCER}/src/tofuflow/airflow/{SCHEMA_FILE}#/$defs/TofuflowRunFacet"
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
    console: str | None = None,
) -> dict[str, Any]:
    """The content of the ``tofuflow`` run facet: which workspace, which tofuflow run (its
    status, the state version and serial it wrote or was planned against, its console
    page), and which resources it created, changed, replaced or destroyed (addresses
    only). The fields are described by ``run-facet.schema.json`` beside this module."""
    run = run or {}
    result = run.get("result") if isinstance(run.get("result"), Mapping) else {}
    return {
        "_producer": PRODUCER,
        "_schemaURL": SCHEMA_URL,
        "operation": operation,
        "workspace": workspace,
        "asset": uri,
        "runId": run.get("id"),
        "status": run.get("status"),
        "stateVersion": run.get("state_version"),
        "stateSerial": (result or {}).get("serial"),
        "baseSerial": run.get("base_serial"),
        "commit": run.get("commit"),
        "consoleUrl": console,
        **{kind: list(changes.get(kind, [])) for kind in _KINDS},
        "counts": {kind: len(changes.get(kind, [])) for kind in _KINDS},
    }


def operator_lineage(facet: Mapping[str, Any] | None) -> Any:
    """An ``OperatorLineage`` with the workspace as a dataset (an output when the task
    changed it, an input when it only planned) and the facet above; an empty one when the
    task has no facet (it made no run); None when the OpenLineage provider is not
    installed."""
    try:
        # Not a dependency of the airflow extra: the openlineage extra installs it.
        from airflow.providers.openlineage.extractors import (  # type: ignore[import-not-found,unused-ignore]
            OperatorLineage,
        )
        from openlineage.client.event_v2 import Dataset  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    if facet is None:
        return OperatorLineage()
    fields = {k: v for k, v in facet.items() if not k.startswith("_")}
    authority, _, name = str(facet["asset"]).removeprefix("tofuflow://").partition("/")
    dataset = Dataset(namespace=f"tofuflow://{authority}", name=name)
    reads = facet["operation"] == "plan"  # a plan only reads the workspace
    return OperatorLineage(
        inputs=[dataset] if reads else [],
        outputs=[] if reads else [dataset],
        run_facets={FACET_NAME: _facet_class()(producer=PRODUCER, **fields)},
    )


@functools.cache
def _facet_class() -> type[Any]:
    """The ``RunFacet`` subclass (attrs) for the facet, made once the provider is there."""
    import attrs
    from openlineage.client.facet_v2 import RunFacet  # type: ignore[import-not-found,unused-ignore]

    @attrs.define
    class TofuflowRunFacet(RunFacet):  # type: ignore[misc,unused-ignore]
        operation: str
        workspace: str
        asset: str
        runId: str | None
        status: str | None
        stateVersion: int | None
        stateSerial: int | None
        baseSerial: int | None
        commit: str | None
        consoleUrl: str | None
        created: list[str]
        changed: list[str]
        replaced: list[str]
        destroyed: list[str]
        counts: dict[str, int]

        @staticmethod
        def _get_schema() -> str:
            return SCHEMA_URL

    return TofuflowRunFacet
