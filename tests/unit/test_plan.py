"""Plan documents: parsed from `show -json PLANFILE`, counted like the binary counts them."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from tofuflow.errors import DocumentError
from tofuflow.tofu import Action, Plan

PLANS = Path(__file__).parents[1] / "fixtures" / "plans"
CANARY = "canary-s3cr3t-value"


def recorded(name: str = "mixed") -> bytes:
    return (PLANS / f"{name}.json").read_bytes()


def change(address: str, actions: list[str], **extra: Any) -> dict[str, Any]:
    """A minimal resource_changes entry."""
    return {
        "address": address,
        "mode": "managed",
        "type": "terraform_data",
        "name": address.rsplit(".", 1)[-1],
        "provider_name": "terraform.io/builtin/terraform",
        "change": {"actions": actions, "before": None, "after": None, **extra},
    }


def doc(*changes: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"format_version": "1.2", "resource_changes": list(changes), **top}


@pytest.fixture(scope="module")
def plan() -> Plan:
    return Plan.from_json(recorded())


def by_address(plan: Plan, address: str) -> Any:
    return next(rc for rc in plan.resource_changes if rc.address == address)


# ------------------------------------------------------------------ recorded plan


def test_summary_matches_what_the_binary_printed_for_the_same_plan(plan: Plan) -> None:
    printed = (PLANS / "mixed.summary.txt").read_text().strip()
    assert plan.counts.summary == printed == "Plan: 4 to add, 2 to change, 7 to destroy."


def test_counts_each_change_once_by_action(plan: Plan) -> None:
    counts = plan.counts
    assert (counts.add, counts.change, counts.destroy, counts.replace) == (2, 2, 5, 2)
    assert (counts.read, counts.no_op) == (1, 3)
    assert (counts.to_add, counts.to_change, counts.to_destroy) == (4, 2, 7)


def test_replace_is_detected_in_both_action_orders(plan: Plan) -> None:
    delete_first = by_address(plan, "terraform_data.replaced")
    create_first = by_address(plan, "terraform_data.replaced_cbd")
    assert delete_first.actions == ("delete", "create")
    assert create_first.actions == ("create", "delete")
    assert delete_first.action is create_first.action is Action.REPLACE


def test_replace_records_the_paths_that_forced_it(plan: Plan) -> None:
    replaced = by_address(plan, "terraform_data.replaced")
    assert replaced.replace_paths == (("triggers_replace",),)
    assert replaced.action_reason == "replace_because_cannot_update"


def test_resources_in_modules_carry_their_module_address(plan: Plan) -> None:
    item = by_address(plan, 'module.app["blue"].terraform_data.item["c"]')
    assert item.module_address == 'module.app["blue"]'
    assert (item.mode, item.type, item.name, item.index) == (
        "managed",
        "terraform_data",
        "item",
        "c",
    )
    assert item.provider_name == "terraform.io/builtin/terraform"
    assert item.action is Action.CREATE


def test_root_resources_have_no_module_address(plan: Plan) -> None:
    assert by_address(plan, "terraform_data.changed").module_address is None


def test_a_data_source_read_during_apply_is_a_read(plan: Plan) -> None:
    read = by_address(plan, "data.terraform_remote_state.other")
    assert (read.mode, read.action) == ("data", Action.READ)
    assert read.after_unknown == {"config": {"path": True}, "outputs": True}


def test_deletes_say_why(plan: Plan) -> None:
    reasons = {
        rc.address: rc.action_reason for rc in plan.resource_changes if rc.action == "delete"
    }
    assert reasons["terraform_data.removed"] == "delete_because_no_resource_config"
    assert reasons['module.app["blue"].terraform_data.item["b"]'] == "delete_because_each_key"
    assert reasons['module.app["green"].terraform_data.item["a"]'] == "delete_because_no_module"


def test_sensitivity_markers_mirror_the_value(plan: Plan) -> None:
    secret = by_address(plan, "terraform_data.secret")
    assert secret.before_sensitive["input"] == {"password": True}
    assert secret.after["input"]["password"] == CANARY


def test_output_changes_are_keyed_by_name_with_their_action(plan: Plan) -> None:
    outputs = plan.output_changes
    assert outputs["greeting"].action is Action.UPDATE
    assert outputs["new_output"].action is Action.CREATE
    assert outputs["new_output"].after_unknown is True
    assert outputs["old_output"].action is Action.DELETE
    assert outputs["password"].action is Action.NO_OP
    assert outputs["password"].sensitive
    assert not outputs["greeting"].sensitive


def test_a_plan_right_after_apply_has_no_changes() -> None:
    plan = Plan.from_json(recorded("no_changes"))
    assert not plan.has_changes
    assert plan.counts.no_op == 9
    assert plan.counts.summary == "Plan: 0 to add, 0 to change, 0 to destroy."


def test_the_recorded_plan_has_changes_and_is_not_errored(plan: Plan) -> None:
    assert plan.has_changes
    assert plan.errored is False
    assert plan.applyable is True
    assert plan.format_version == "1.2"
    assert plan.terraform_version == "1.11.4"


def test_raw_keeps_the_whole_document_for_upload(plan: Plan) -> None:
    assert plan.raw == json.loads(recorded())


def test_sensitive_values_names_the_secrets_for_log_masking(plan: Plan) -> None:
    assert CANARY in plan.sensitive_values()
    assert "hello" not in plan.sensitive_values()


def test_repr_never_shows_values(plan: Plan) -> None:
    assert CANARY not in repr(by_address(plan, "terraform_data.secret"))
    assert CANARY not in repr(plan.output_changes["password"])
    assert CANARY not in repr(plan)


def test_parsed_documents_are_immutable(plan: Plan) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.errored = True  # type: ignore[misc]
    with pytest.raises(TypeError):
        plan.output_changes["x"] = plan.output_changes["greeting"]  # type: ignore[index]


# ------------------------------------------------------------------ semantics


@pytest.mark.parametrize(
    ("actions", "expected"),
    [
        (["no-op"], Action.NO_OP),
        (["create"], Action.CREATE),
        (["read"], Action.READ),
        (["update"], Action.UPDATE),
        (["delete"], Action.DELETE),
        (["delete", "create"], Action.REPLACE),
        (["create", "delete"], Action.REPLACE),
        (["forget"], Action.FORGET),
        (["create", "forget"], Action.REPLACE),
    ],
)
def test_every_action_list_the_binary_writes_has_an_action(
    actions: list[str], expected: Action
) -> None:
    assert Action.from_actions(actions) is expected
    assert (
        Plan.from_json(doc(change("terraform_data.x", actions))).resource_changes[0].action
        is expected
    )


def test_an_unknown_action_list_is_refused_rather_than_guessed() -> None:
    with pytest.raises(DocumentError, match=r"unknown change actions \['explode'\].*upgrade"):
        Plan.from_json(doc(change("terraform_data.x", ["explode"])))


def test_replace_counts_once_in_add_and_once_in_destroy() -> None:
    plan = Plan.from_json(
        doc(
            change("terraform_data.a", ["delete", "create"]),
            change("terraform_data.b", ["create", "delete"]),
            change("terraform_data.c", ["create"]),
            change("terraform_data.d", ["delete"]),
            change("terraform_data.e", ["update"]),
        )
    )
    assert plan.counts.replace == 2
    assert (plan.counts.add, plan.counts.destroy) == (1, 1)
    assert plan.counts.summary == "Plan: 3 to add, 1 to change, 3 to destroy."


def test_forget_and_import_appear_in_the_summary_like_the_binarys() -> None:
    plan = Plan.from_json(
        doc(
            change("terraform_data.a", ["forget"]),
            change("terraform_data.b", ["create", "forget"]),
            change("terraform_data.c", ["no-op"], importing={"id": "x"}),
        )
    )
    assert (
        plan.counts.summary
        == "Plan: 1 to import, 1 to add, 0 to change, 0 to destroy, 2 to forget."
    )
    assert plan.resource_changes[2].importing


def test_reads_alone_are_not_changes() -> None:
    assert not Plan.from_json(doc(change("data.x.y", ["read"]))).has_changes


def test_an_output_change_alone_is_a_change() -> None:
    outputs = {"o": {"actions": ["create"], "after": 1, "before_sensitive": False}}
    plan = Plan.from_json(doc(output_changes=outputs))
    assert plan.has_changes
    assert plan.counts.summary == "Plan: 0 to add, 0 to change, 0 to destroy."


def test_errored_comes_from_the_document() -> None:
    assert Plan.from_json(doc(errored=True)).errored is True
    assert Plan.from_json(doc()).errored is False


def test_bytes_text_and_mappings_parse_alike() -> None:
    data = recorded()
    parsed = [Plan.from_json(data), Plan.from_json(data.decode()), Plan.from_json(json.loads(data))]
    assert parsed[0] == parsed[1] == parsed[2]


def test_unknown_fields_are_ignored() -> None:
    data = json.loads(recorded())
    noisy = copy.deepcopy(data)
    noisy["future_top_level"] = {"x": 1}
    for rc in noisy["resource_changes"]:
        rc["future_field"] = [1, 2]
        rc["change"]["future_change_field"] = "y"
    for oc in noisy["output_changes"].values():
        oc["future_output_field"] = True
    assert Plan.from_json(noisy).resource_changes == Plan.from_json(data).resource_changes
    assert Plan.from_json(noisy).counts == Plan.from_json(data).counts


def test_missing_optional_sections_mean_empty() -> None:
    plan = Plan.from_json({"format_version": "1.0"})
    assert plan.resource_changes == plan.resource_drift == ()
    assert dict(plan.output_changes) == {}
    assert plan.applyable is None


# ------------------------------------------------------------------ malformed input


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", r"not a plan document: invalid JSON .*tofu show -json PLANFILE"),
        (b"[]", r"expected a JSON object, got list"),
        (b"{}", r"missing format_version — pass the output of `tofu show -json PLANFILE`"),
        (b'{"version": 4, "serial": 1, "lineage": "x"}', r"looks like a state file"),
        (b'{"type": "version", "ui": "1.2"}', r"one line of `-json` streaming output"),
        (b'{"format_version": "1.0", "values": {}}', r"`show -json` of a state"),
        (b'{"format_version": "0.1"}', r"unsupported plan format_version '0.1'"),
        (b'{"format_version": 1}', r"format_version is not a string"),
        (b'{"format_version": "1.2", "resource_changes": {}}', r"resource_changes is not a list"),
        (b'{"format_version": "1.2", "output_changes": []}', r"output_changes is not an object"),
    ],
)
def test_malformed_documents_say_what_was_expected(data: bytes, message: str) -> None:
    with pytest.raises(DocumentError, match=message):
        Plan.from_json(data)


def test_a_resource_change_without_an_address_is_named_by_position() -> None:
    entry = change("terraform_data.x", ["create"])
    del entry["address"]
    with pytest.raises(DocumentError, match=r"resource_changes\[1\] has no 'address'"):
        Plan.from_json(doc(change("terraform_data.ok", ["create"]), entry))


@pytest.mark.parametrize(
    "entry",
    [
        "terraform_data.x",
        {"address": 3, "mode": "managed", "type": "t", "name": "n", "change": {"actions": []}},
        {"address": "a", "mode": "managed", "type": "t", "name": "n", "change": {"actions": 5}},
        {"address": "a", "mode": "managed", "type": "t", "name": "n", "change": None},
    ],
)
def test_a_resource_change_of_the_wrong_shape_is_a_document_error(entry: Any) -> None:
    with pytest.raises(DocumentError, match=r"resource_changes\[0\] is not an object"):
        Plan.from_json(doc(entry))


def test_an_output_change_without_actions_is_a_document_error() -> None:
    with pytest.raises(DocumentError, match=r"output_changes\['o'\] has no 'actions'"):
        Plan.from_json(doc(output_changes={"o": {"after": 1}}))


def test_the_wrong_input_type_is_a_document_error() -> None:
    with pytest.raises(DocumentError, match="expected bytes, str or a mapping, got int"):
        Plan.from_json(42)  # type: ignore[arg-type]
