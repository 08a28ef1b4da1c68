"""Assets and OpenLineage facets: which resources a task created, changed, destroyed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tofuflow.airflow._lineage import (
    FACET_NAME,
    asset_authority,
    asset_uri,
    changes_from_events,
    changes_from_plan,
    lineage_facet,
    operator_lineage,
)
from tofuflow.tofu import Plan
from tofuflow.tofu._events import parse_event

FIXTURES = Path(__file__).parent.parent / "fixtures"


@pytest.mark.parametrize(
    ("url", "authority"),
    [
        (None, "embedded"),
        ("", "embedded"),
        ("https://cp.example.com", "cp.example.com"),
        ("https://cp.example.com:8443/base/", "cp.example.com:8443"),
        ("http://user:pw@10.0.0.1:8470", "10.0.0.1:8470"),  # never credentials in a URI
    ],
)
def test_asset_authority(url: str | None, authority: str) -> None:
    assert asset_authority(url) == authority


def test_asset_uri() -> None:
    assert asset_uri("embedded", "app/dev") == "tofuflow://embedded/app/dev"
    assert asset_uri("cp:8470", "/app/prod/") == "tofuflow://cp:8470/app/prod"


def test_changes_from_a_plan_group_addresses_by_kind_and_skip_reads_and_no_ops() -> None:
    plan = Plan.from_json((FIXTURES / "plans" / "mixed.json").read_bytes())
    changes = changes_from_plan(plan.resource_changes)
    assert changes == {
        "created": ['module.app["blue"].terraform_data.item["c"]', "terraform_data.added"],
        "changed": ["terraform_data.changed", "terraform_data.secret"],
        "replaced": ["terraform_data.replaced", "terraform_data.replaced_cbd"],
        "destroyed": [
            'module.app["blue"].terraform_data.item["b"]',
            'module.app["green"].terraform_data.item["<script>x</script>|*y*"]',
            'module.app["green"].terraform_data.item["a"]',
            'module.app["green"].terraform_data.item["b"]',
            "terraform_data.removed",
        ],
    }


def test_changes_from_an_apply_stream_count_completed_resources_only() -> None:
    lines = (FIXTURES / "streams" / "apply.jsonl").read_text().splitlines()
    events = [e for e in map(parse_event, lines) if e is not None]
    changes = changes_from_events(events)
    assert changes["created"] == sorted(
        e.resource_address for e in events if e.type == "apply_complete"
    )
    assert changes["created"] and changes["destroyed"] == changes["changed"] == []


def test_the_facet_carries_addresses_and_counts_never_values() -> None:
    plan = Plan.from_json((FIXTURES / "plans" / "mixed.json").read_bytes())
    run = {"id": "abc123", "status": "applied", "state_version": 4, "commit": "f" * 40,
           "summary": {"text": "secret-looking summary"}}  # fmt: skip
    facet = lineage_facet(
        uri="tofuflow://embedded/app/dev", workspace="app/dev", run=run,
        changes=changes_from_plan(plan.resource_changes), operation="apply",
    )  # fmt: skip
    assert facet["_producer"].startswith("https://") and facet["_schemaURL"].startswith(
        facet["_producer"]
    )
    assert (facet["runId"], facet["status"], facet["stateVersion"]) == ("abc123", "applied", 4)
    assert facet["counts"] == {"created": 2, "changed": 2, "replaced": 2, "destroyed": 5}
    assert facet["operation"] == "apply" and facet["asset"] == "tofuflow://embedded/app/dev"
    # The plan's sensitive values (terraform_data.secret) never reach the facet.
    text = repr(facet)
    for rc in plan.resource_changes:
        for value in (rc.before, rc.after):
            if isinstance(value, dict) and isinstance(value.get("input"), str):
                assert value["input"] not in text


def test_without_the_openlineage_provider_there_is_no_lineage_object() -> None:
    assert importlib.util.find_spec("openlineage") is None  # not a dependency
    facet = lineage_facet(uri="tofuflow://embedded/a", workspace="a", run=None,
                          changes={}, operation="plan")  # fmt: skip
    assert operator_lineage(facet) is None
    assert FACET_NAME == "tofuflow"
