"""Rendering plans and states for people: readable at any size, secrets never shown."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tofuflow.tofu import (
    Plan,
    State,
    render_plan_markdown,
    render_plan_text,
    render_state_outputs_text,
)
from tofuflow.tofu._plan import Action
from tofuflow.tofu._plan_view import (
    ActionSection,
    AttributeLine,
    Folded,
    ModuleSection,
    Note,
    OutputLine,
    PlanView,
    ResourceLine,
    plan_view,
)
from tofuflow.tofu._render import _write_markdown, _write_text, render_output_changes_text
from tofuflow.tofu._values import _Masker

FIXTURES = Path(__file__).parents[1] / "fixtures"
CANARY = "canary-s3cr3t-value"


def recorded_plan(name: str = "mixed") -> Plan:
    return Plan.from_json((FIXTURES / "plans" / f"{name}.json").read_bytes())


def recorded_state(name: str) -> State:
    return State.from_json((FIXTURES / "states" / name).read_bytes())


def change(
    address: str, actions: list[str], module: str | None = None, **values: Any
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "address": address,
        "mode": "managed",
        "type": "terraform_data",
        "name": "r",
        "change": {"actions": actions, **values},
    }
    if module:
        entry["module_address"] = module
    return entry


def plan_of(*changes: dict[str, Any], **top: Any) -> Plan:
    return Plan.from_json({"format_version": "1.2", "resource_changes": list(changes), **top})


def synthetic_plan(resources: int, modules: int) -> Plan:
    """Many resources spread over modules, with every action present."""
    cycle = [["create"], ["update"], ["delete"], ["delete", "create"], ["no-op"], ["read"]]
    changes = []
    for i in range(resources):
        module = f'module.svc["m{i % modules}"]' if i % modules else None
        prefix = f"{module}." if module else ""
        before = {"id": f"id-{i}", "input": f"old-{i}"}
        after = {"id": f"id-{i}", "input": f"new-{i}"}
        changes.append(
            change(f"{prefix}terraform_data.r[{i}]", cycle[i % len(cycle)], module,
                   before=before, after=after, before_sensitive={}, after_sensitive={})
        )  # fmt: skip
    return plan_of(*changes)


@pytest.fixture(scope="module")
def mixed() -> Plan:
    return recorded_plan()


# ------------------------------------------------------------------ secrets


def test_the_sensitive_canary_never_appears_in_any_rendering(mixed: Plan) -> None:
    assert CANARY in json.dumps(mixed.raw)  # the document itself does hold it
    for rendered in (
        render_plan_text(mixed),
        render_plan_markdown(mixed),
        render_output_changes_text(mixed),
        render_plan_text(mixed, max_items=1),
        render_plan_markdown(mixed, max_items=1),
        render_state_outputs_text(recorded_state("v1.tfstate.json")),
        render_state_outputs_text(recorded_state("v2.tfstate.json")),
        render_plan_text(recorded_plan("no_changes")),
    ):
        assert CANARY not in rendered
        assert CANARY.replace("-", "\\u002d") not in rendered


def test_a_sensitive_attribute_is_masked_while_its_neighbours_show(mixed: Plan) -> None:
    text = render_plan_text(mixed)
    assert "input.version: 1 -> 2" in text
    # `output` copies the secret without the binary marking it: it is masked anyway.
    assert 'output: { name = "db", password = (sensitive value), version = 1 }' in text


def test_a_wholly_sensitive_value_is_masked_even_when_it_changes() -> None:
    plan = plan_of(
        change("terraform_data.s", ["update"],
               before={"token": "old-token-123"}, after={"token": "new-token-456"},
               before_sensitive={"token": True}, after_sensitive=True)
    )  # fmt: skip
    for rendered in (render_plan_text(plan), render_plan_markdown(plan)):
        assert "token-" not in rendered
        assert "(sensitive value)" in rendered


def test_sensitive_list_elements_are_masked_one_by_one() -> None:
    plan = plan_of(
        change("terraform_data.s", ["update"],
               before={"keys": ["public-1", "private-key-1"]},
               after={"keys": ["public-2", "private-key-2"]},
               before_sensitive={"keys": [False, True]}, after_sensitive={"keys": [False, True]})
    )  # fmt: skip
    text = render_plan_text(plan)
    assert 'keys[0]: "public-1" -> "public-2"' in text
    assert "keys[1]: (sensitive value) -> (sensitive value)" in text
    assert "private-key" not in text


def test_a_sensitive_output_is_masked_in_plan_and_state() -> None:
    plan = plan_of(
        output_changes={
            "db_password": {"actions": ["update"], "before": "hunter2-old", "after": "hunter2-new",
                            "before_sensitive": True, "after_sensitive": True}
        }
    )  # fmt: skip
    assert "db_password = (sensitive value) -> (sensitive value)" in render_output_changes_text(
        plan
    )
    assert "hunter2" not in render_plan_markdown(plan)
    state = recorded_state("v1.tfstate.json")
    assert "  password = (sensitive value)" in render_state_outputs_text(state)


def test_a_sensitive_variable_value_is_scrubbed_wherever_it_is_copied() -> None:
    # No marker on the resource, but the variable is declared sensitive.
    plan = plan_of(
        change("terraform_data.s", ["update"], before={"x": "a"}, after={"x": "pw-from-var-42"},
               before_sensitive={}, after_sensitive={}),
        variables={"pw": {"value": "pw-from-var-42"}},
        configuration={"root_module": {"variables": {"pw": {"sensitive": True}}}},
    )  # fmt: skip
    assert "pw-from-var-42" not in render_plan_text(plan)
    assert "pw-from-var-42" not in render_plan_markdown(plan)


# ------------------------------------------------------------------ what a reviewer sees


def test_text_starts_with_the_binarys_summary_line(mixed: Plan) -> None:
    first, second, third = render_plan_text(mixed).splitlines()[:3]
    assert first == (FIXTURES / "plans" / "mixed.summary.txt").read_text().strip()
    assert second == "By action: 2 create, 2 update, 2 replace, 5 delete, 1 read, 3 no-op."
    assert third == "Each replace counts once in add and once in destroy."


def test_text_groups_by_module_then_action_with_counts(mixed: Plan) -> None:
    text = render_plan_text(mixed)
    assert "Root module: 1 create, 2 update, 2 replace, 1 delete, 1 read, 1 unchanged" in text
    assert 'module.app["green"]: 3 delete\n  delete (3)\n' in text
    assert (
        text.index("Root module")
        < text.index('module.app["blue"]')
        < text.index('module.app["green"]')
    )
    assert "terraform_data.keep" not in text  # no-ops are counted, not listed


def test_both_replace_orders_are_shown_with_their_own_symbol(mixed: Plan) -> None:
    text = render_plan_text(mixed)
    assert "-/+ terraform_data.replaced  (an argument forces replacement)" in text
    assert "+/- terraform_data.replaced_cbd  (an argument forces replacement)" in text
    assert 'triggers_replace: "v1" -> "v2"  # forces replacement' in text


def test_updates_show_changed_attributes_and_unknowns(mixed: Plan) -> None:
    text = render_plan_text(mixed)
    assert 'input: "old" -> "new"' in text
    assert 'output: "old" -> (known after apply)' in text


def test_reads_and_deletes_say_why(mixed: Plan) -> None:
    text = render_plan_text(mixed)
    assert "<= data.terraform_remote_state.other  (configuration known only after apply)" in text
    assert '- module.app["blue"].terraform_data.item["b"]  (key no longer in for_each)' in text


def test_output_changes_show_old_and_new_values(mixed: Plan) -> None:
    text = render_output_changes_text(mixed)
    assert '~ greeting = "hello" -> "hello world"' in text
    assert "+ new_output = (known after apply)" in text
    assert '- old_output = "bye"' in text
    assert "password" not in text  # unchanged outputs are not listed
    assert "c = (known after apply)" in text  # a partly unknown map


def test_a_plan_without_changes_says_so() -> None:
    text = render_plan_text(recorded_plan("no_changes"))
    assert text.startswith("No changes. Your infrastructure matches the configuration.\n")
    assert render_plan_markdown(recorded_plan("no_changes")).startswith("## No changes\n")
    assert render_output_changes_text(recorded_plan("no_changes")) == "No changes to outputs.\n"


def test_an_errored_plan_is_flagged_first() -> None:
    plan = plan_of(change("terraform_data.a", ["create"]), errored=True)
    assert render_plan_text(plan).startswith("WARNING: the plan operation failed")
    assert "> **Warning:** the plan operation failed" in render_plan_markdown(plan)


def test_drift_is_listed_apart_from_planned_changes() -> None:
    plan = plan_of(resource_drift=[change("terraform_data.d", ["update"])])
    assert "Changed outside OpenTofu since the last apply (1):\n  ~ terraform_data.d" in (
        render_plan_text(plan)
    )


def test_long_values_are_cut() -> None:
    plan = plan_of(
        change("terraform_data.a", ["update"], before={"x": "a"}, after={"x": "b" * 5000})
    )
    line = next(x for x in render_plan_text(plan).splitlines() if x.strip().startswith("x:"))
    assert len(line) < 260
    assert line.endswith("…")


# ------------------------------------------------------------------ large plans


def test_a_2000_resource_plan_is_truncated_per_group_and_stays_small() -> None:
    plan = synthetic_plan(2000, modules=5)
    text = render_plan_text(plan)
    assert text.startswith("Plan: 667 to add, 334 to change, 666 to destroy.\n")
    assert re.search(r"… and \d+ more\n", text)
    assert "create (67)" in text  # the group still says how many it holds
    assert len(text.splitlines()) < 600
    assert len(text) < 50_000
    assert "->" not in text  # too many changes for attribute details


def test_a_2000_resource_markdown_plan_is_truncated_and_stays_small() -> None:
    md = render_plan_markdown(synthetic_plan(2000, modules=5))
    assert md.count("<details>") == md.count("</details>") == 5
    assert "- … and 47 more" in md
    assert len(md) < 60_000


def test_modules_beyond_max_items_are_summarised_not_dropped() -> None:
    plan = synthetic_plan(2000, modules=100)
    text = render_plan_text(plan, max_items=10)
    assert text.count("\nmodule.svc[") == 9  # root plus nine modules
    assert re.search(
        r"\n… and 90 more modules \(\d+ to add, \d+ to change, \d+ to destroy\)\n", text
    )


def test_max_items_bounds_every_list() -> None:
    plan = synthetic_plan(60, modules=1)
    text = render_plan_text(plan, max_items=3)
    assert "  create (10)\n" in text
    assert "    … and 7 more\n" in text


def test_max_items_none_shows_every_resource_with_its_attributes_and_no_secret() -> None:
    resources = 200
    changes = [
        change(f"terraform_data.r[{i}]", ["update"],
               before={"size": i, "password": f"{CANARY}-{i}"},
               after={"size": i + 1, "password": f"{CANARY}-{i}-new"},
               before_sensitive={"password": True}, after_sensitive={"password": True})
        for i in range(resources)
    ]  # fmt: skip
    plan = plan_of(*changes)
    text = render_plan_text(plan, max_items=None)
    md = render_plan_markdown(plan, max_items=None)
    for i in range(resources):
        assert f"    ~ terraform_data.r[{i}]\n        size: {i} -> {i + 1}\n" in text
        assert f"- `terraform_data.r[{i}]`\n  - `size`: `{i}` → `{i + 1}`\n" in md
    for rendered in (text, md):
        assert "more" not in rendered  # nothing folded
        assert CANARY not in rendered
        assert rendered.count("(sensitive value)") == 2 * resources
    # The default still folds the summary at 20 per group, without attribute details.
    summary = render_plan_text(plan)
    assert "    … and 180 more\n" in summary
    assert "size:" not in summary


def test_max_items_none_lists_every_module_output_and_drifted_resource() -> None:
    listed = synthetic_plan(300, modules=40).raw["resource_changes"]
    plan = plan_of(
        *listed,
        resource_drift=[change(f"terraform_data.d[{i}]", ["update"]) for i in range(50)],
        output_changes={f"o{i}": {"actions": ["create"], "after": i} for i in range(50)},
    )
    text = render_plan_text(plan, max_items=None)
    for rc in [*plan.resource_changes, *plan.resource_drift]:
        if rc.action is not Action.NO_OP:
            assert f" {rc.address}\n" in text
    assert all(f"  + o{i} = {i}\n" in text for i in range(50))
    assert "more" not in text


# ------------------------------------------------------------------ one model, two writers


@pytest.mark.parametrize(
    ("name", "max_items", "golden"),
    [
        ("mixed", 20, "mixed.rendered"),
        ("mixed", 1, "mixed.max1.rendered"),
        ("no_changes", 20, "no_changes.rendered"),
    ],
)
def test_renderings_of_the_recorded_plans_are_unchanged(
    name: str, max_items: int, golden: str
) -> None:
    # The golden files were written by the renderers before they shared one model.
    plan = recorded_plan(name)
    expected = FIXTURES / "plans" / golden
    assert render_plan_text(plan, max_items=max_items) == Path(f"{expected}.txt").read_text()
    assert render_plan_markdown(plan, max_items=max_items) == Path(f"{expected}.md").read_text()


def test_output_changes_of_the_recorded_plan_are_unchanged(mixed: Plan) -> None:
    expected = (FIXTURES / "plans" / "mixed.outputs.rendered.txt").read_text()
    assert render_output_changes_text(mixed) == expected


def test_both_writers_render_the_one_plan_model(mixed: Plan) -> None:
    view = plan_view(mixed, max_items=20)
    assert _write_text(view) == render_plan_text(mixed)
    assert _write_markdown(view) == render_plan_markdown(mixed)


def test_the_writers_read_nothing_but_the_model() -> None:
    # A model made by hand, with no plan behind it: whatever it says is what both show.
    attrs = Folded((AttributeLine("tags.env", '"dev"', '"prod"', forces_replacement=True),), 2)
    line = ResourceLine(
        "aws_s3_bucket.logs", Action.REPLACE, "-/+",
        (Note("moved from ", "aws_s3_bucket.old", code=True), Note("", "tainted")), attrs,
    )  # fmt: skip
    view = PlanView(
        errored=False,
        has_changes=True,
        summary="Plan: 1 to add, 0 to change, 1 to destroy.",
        by_action=(("create", 0), ("update", 0), ("replace", 1), ("delete", 0),
                   ("forget", 0), ("read", 0), ("no-op", 0)),
        detailed=True,
        modules=Folded((ModuleSection(None, "1 replace",
                                      (ActionSection(Action.REPLACE, 4, Folded((line,), 3)),)),)),
        more_modules_summary="",
        outputs=Folded((OutputLine("url", Action.UPDATE, "~", '"a"', '"b"'),)),
        drift=Folded(()),
        masker=_Masker([]),
    )  # fmt: skip
    text = _write_text(view)
    assert (
        "  replace (4)\n"
        "    -/+ aws_s3_bucket.logs  (moved from aws_s3_bucket.old; tainted)\n"
        '        tags.env: "dev" -> "prod"  # forces replacement\n'
        "        … and 2 more attributes\n"
        "    … and 3 more\n"
    ) in text
    assert '  ~ url = "a" -> "b"\n' in text
    md = _write_markdown(view)
    assert (
        "- `aws_s3_bucket.logs` — moved from `aws_s3_bucket.old`; tainted\n"
        '  - `tags.env`: `"dev"` → `"prod"` *(forces replacement)*\n'
        "  - … and 2 more attributes\n"
        "- … and 3 more\n"
    ) in md
    assert '- update: `url` = `"a" → "b"`' in md


# ------------------------------------------------------------------ markdown safety


def test_markdown_has_a_counts_table_and_a_section_per_module(mixed: Plan) -> None:
    md = render_plan_markdown(mixed)
    assert md.startswith("## Plan: 4 to add, 2 to change, 7 to destroy\n")
    assert "| create | 2 |\n| update | 2 |\n| replace | 2 |\n| delete | 5 |\n| read | 1 |" in md
    assert md.count("<details open>") == 3
    assert "- `terraform_data.added`" in md


def test_markdown_keeps_hostile_addresses_inside_code_spans(mixed: Plan) -> None:
    md = render_plan_markdown(mixed)
    for line in md.splitlines():
        outside_code = re.sub(r"(`+).*?\1", "", line)
        assert "<script>" not in outside_code, line
    assert '- `module.app["green"].terraform_data.item["<script>x</script>|*y*"]`' in md


def test_markdown_escapes_module_addresses_in_html_summaries() -> None:
    plan = plan_of(change('module.m["<b>&"].terraform_data.a', ["create"], 'module.m["<b>&"]'))
    md = render_plan_markdown(plan)
    assert "<summary><code>module.m[&quot;&lt;b&gt;&amp;&quot;]</code>: 1 create</summary>" in md


def test_markdown_code_spans_survive_backticks() -> None:
    plan = plan_of(change('terraform_data.a["x`y"]', ["create"]))
    assert '- ``terraform_data.a["x`y"]``' in render_plan_markdown(plan)


def test_markdown_escapes_unknown_reasons() -> None:
    plan = plan_of({**change("terraform_data.a", ["delete"]), "action_reason": "new_*reason*_<i>"})
    assert "new\\_\\*reason\\*\\_&lt;i&gt;" in render_plan_markdown(plan)


# ------------------------------------------------------------------ state outputs


def test_state_outputs_render_like_tofu_output() -> None:
    text = render_state_outputs_text(recorded_state("v1.tfstate.json"))
    assert text.splitlines()[0] == "Outputs:"
    assert '  greeting = "hello"' in text
    assert '  old_output = "bye"' in text


def test_an_encrypted_state_says_its_outputs_are_unreadable() -> None:
    text = render_state_outputs_text(recorded_state("encrypted_envelope.json"))
    assert "State serial 7" in text
    assert "encrypted" in text
    assert "without the key" in text


def test_a_state_without_outputs_says_so() -> None:
    state = State.from_json({"version": 4, "serial": 1, "lineage": "l"})
    assert render_state_outputs_text(state) == "No outputs.\n"
