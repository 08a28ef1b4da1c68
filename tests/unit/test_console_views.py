"""What a run's page shows of a plan: every changed resource, attribute by attribute,
never a sensitive value."""

from __future__ import annotations

import json
from pathlib import Path

from tofuflow.server.console._views import plan_sections, story_steps
from tofuflow.tofu import Plan

PLANS = Path(__file__).parents[1] / "fixtures" / "plans"
CANARY = "canary-s3cr3t-value"  # the fixture's sensitive variable (plans/README.md)


def _plan() -> Plan:
    return Plan.from_json((PLANS / "mixed.json").read_bytes())


def test_every_changed_resource_is_listed_and_no_op_ones_are_not() -> None:
    resources, _ = plan_sections(_plan())
    document = json.loads((PLANS / "mixed.json").read_text())
    changed = [
        rc["address"] for rc in document["resource_changes"]
        if rc["change"]["actions"] != ["no-op"]
    ]  # fmt: skip
    assert [r.address for r in resources] == changed
    assert len({r.anchor for r in resources}) == len(resources)  # each reachable by its link


def test_creates_and_deletes_show_each_attribute_and_updates_their_changes() -> None:
    resources = {r.address: r for r in plan_sections(_plan())[0]}
    added = resources["terraform_data.added"]
    assert added.action == "create" and {"input", "id", "output"} <= {
        a.path for a in added.attributes
    }
    removed = resources["terraform_data.removed"]
    assert removed.action == "delete" and all(a.new == "null" for a in removed.attributes)
    changed = resources["terraform_data.changed"]
    assert changed.attributes and all(a.old != a.new for a in changed.attributes)


def test_no_sensitive_value_reaches_the_page() -> None:
    resources, outputs = plan_sections(_plan())
    shown = [(a.old, a.new) for r in resources for a in r.attributes]
    shown += [(o.old, o.new) for o in outputs]
    assert shown and not any(CANARY in text for pair in shown for text in pair)
    secret = next(r for r in resources if r.address == "terraform_data.secret")
    assert any("(sensitive" in a.old or "(sensitive" in a.new for a in secret.attributes)


def test_the_story_names_each_step_and_its_facts() -> None:
    events = [
        {"id": 1, "ts": "2026-12-05T01:00:00Z", "action": "run.created", "actor": "ci",
         "outcome": "ok", "detail": {"context": {"commit_sha": "abc123", "branch": "main"}}},
        {"id": 2, "ts": "2026-12-05T01:00:01Z", "action": "run.approved", "actor": "alice",
         "outcome": "ok", "detail": {"comment": "go"}},
        {"id": 3, "ts": "2026-12-05T01:00:02Z", "action": "something.new", "actor": "x",
         "outcome": "refused", "detail": None},
    ]  # fmt: skip
    steps = story_steps(events)
    assert [s.label for s in steps] == ["Run requested", "Approved", "something.new"]
    assert ("commit sha", "abc123") in steps[0].details
    assert ("comment", "go") in steps[1].details
    assert steps[2].outcome == "refused"


def test_an_output_known_only_after_apply_says_so_as_the_cli_does() -> None:
    """Not `[null, null]`: a person approving reads null as "set to nothing"."""
    document = {
        "format_version": "1.2",
        "resource_changes": [],
        "output_changes": {
            "replicas": {"actions": ["create"], "before": None, "after": [None, None],
                         "after_unknown": [True, True], "before_sensitive": False,
                         "after_sensitive": False},
            "names": {"actions": ["update"], "before": ["prod-0", "prod-1"],
                      "after": ["prod-0", "prod-1", None, None],
                      "after_unknown": [False, False, True, True],
                      "before_sensitive": False, "after_sensitive": False},
            "id": {"actions": ["create"], "before": None, "after": None,
                   "after_unknown": True, "before_sensitive": False, "after_sensitive": False},
        },
    }  # fmt: skip
    _, outputs = plan_sections(Plan.from_json(json.dumps(document).encode()))
    shown = {o.name: (o.old, o.new) for o in outputs}
    assert shown["replicas"] == ("(none)", "[(known after apply), (known after apply)]")
    assert shown["names"] == (
        '["prod-0", "prod-1"]',
        '["prod-0", "prod-1", (known after apply), (known after apply)]',
    )
    assert shown["id"] == ("(none)", "(known after apply)")
