"""Assets and OpenLineage facets: which resources a task created, changed, destroyed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from tofuflow.airflow import _lineage
from tofuflow.airflow._lineage import (
    FACET_NAME,
    SCHEMA_FILE,
    SCHEMA_URL,
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
    """The airflow extra does not need the provider: without it (blocked here, as if not
    installed) the operators' OpenLineage method answers None and imports nothing."""
    code = (
        "import sys; sys.modules['airflow.providers.openlineage'] = None\n"
        "from tofuflow.airflow._lineage import lineage_facet, operator_lineage\n"
        "facet = lineage_facet(uri='tofuflow://embedded/a', workspace='a', run=None, "
        "changes={}, operation='plan')\n"
        "print(operator_lineage(facet), operator_lineage(None))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["None", "None"]
    assert FACET_NAME == "tofuflow"


def _provider() -> None:
    if importlib.util.find_spec("airflow.providers.openlineage") is None:
        pytest.fail(
            "apache-airflow-providers-openlineage is not installed: install the dev extra, "
            "`.venv/bin/pip install -e '.[dev]'` (it includes the openlineage extra)",
            pytrace=False,
        )


def test_the_lineage_object_carries_every_field_of_the_facet_and_its_schema() -> None:
    _provider()
    from openlineage.client.serde import Serde

    run = {"id": "abc123", "status": "applied", "state_version": 4, "base_serial": 2,
           "commit": "f" * 40, "result": {"serial": 3}}  # fmt: skip
    facet = lineage_facet(
        uri="tofuflow://cp:8470/app/dev", workspace="app/dev", run=run,
        changes={"created": ["terraform_data.a"]}, operation="apply",
        console="https://ui.example/console/runs/abc123",
    )  # fmt: skip
    lineage = operator_lineage(facet)
    emitted = json.loads(Serde.to_json(lineage.run_facets[FACET_NAME]))
    assert emitted == facet  # what reaches the event is the whole facet, as documented
    assert (emitted["stateVersion"], emitted["stateSerial"], emitted["baseSerial"]) == (4, 3, 2)
    assert emitted["_schemaURL"] == SCHEMA_URL
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("tofuflow://cp:8470", "app/dev")]
    assert lineage.inputs == []
    schema = json.loads((Path(_lineage.__file__).parent / SCHEMA_FILE).read_text())
    fragment = SCHEMA_URL.partition("#")[2]
    assert fragment == "/$defs/TofuflowRunFacet" and "TofuflowRunFacet" in schema["$defs"]
    ours = schema["$defs"]["TofuflowRunFacet"]["allOf"][1]
    jsonschema.validate(emitted, ours)
    assert set(ours["properties"]) == {k for k in facet if not k.startswith("_")}


def test_a_plan_reads_the_workspace_and_a_task_without_a_run_reports_nothing() -> None:
    _provider()
    facet = lineage_facet(uri="tofuflow://embedded/a", workspace="a", run=None,
                          changes={}, operation="plan")  # fmt: skip
    lineage = operator_lineage(facet)
    assert [d.name for d in lineage.inputs] == ["a"] and lineage.outputs == []
    empty = operator_lineage(None)  # e.g. the outputs operator: no warning about None
    assert (empty.inputs, empty.outputs, empty.run_facets) == ([], [], {})
