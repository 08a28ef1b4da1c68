"""Policies: the input document, the built-in library, user policies, decisions, the CLI."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import tofuflow.policy
from tofuflow.cli._policy_cmd import policy as policy_cli
from tofuflow.errors import ConfigError, DocumentError
from tofuflow.policy import Decision, PolicySet, build_input, check_settings, evaluate
from tofuflow.tofu import Plan

FIXTURES = Path(__file__).parents[1] / "fixtures"
PLANS = FIXTURES / "plans"
POLICIES = FIXTURES / "policies"
CANARY = "canary-s3cr3t-value"
REQUESTER = "repo:acme/infra:ref:refs/heads/main"


def change(
    address: str, action: str | list[str], type_: str | None = None, **extra: Any
) -> dict[str, Any]:
    """A resource_changes entry of a show -json document; the module comes from the address."""
    actions = [action] if isinstance(action, str) else action
    module, local = _split(address)
    rc = {
        "address": address,
        "mode": "managed",
        "type": type_ or local.split(".")[0],
        "name": local.split(".")[1].split("[")[0],
        "provider_name": "registry.opentofu.org/hashicorp/aws",
        "change": {"actions": actions, "before": None, "after": None, **extra},
    }
    if module:
        rc["module_address"] = module
    return rc


def _split(address: str) -> tuple[str, str]:
    # "module.a.module.b.aws_x.y" -> ("module.a.module.b", "aws_x.y")
    parts = address.split(".")
    cut = 0
    while cut + 1 < len(parts) and parts[cut] == "module":
        cut += 2
    return ".".join(parts[:cut]), ".".join(parts[cut:])


def plan_of(*changes: dict[str, Any], outputs: Mapping[str, Any] | None = None) -> Plan:
    return Plan.from_json(
        {
            "format_version": "1.2",
            "resource_changes": list(changes),
            "output_changes": outputs or {},
        }
    )


def recorded(name: str) -> Plan:
    return Plan.from_json((PLANS / f"{name}.json").read_bytes())


@pytest.fixture(scope="module")
def builtin() -> PolicySet:
    return PolicySet.load(None)


def decide(
    policies: PolicySet,
    plan: Plan,
    *,
    settings: Mapping[str, Any] | None = None,
    tags: list[str] | None = None,
    run: Mapping[str, Any] | None = None,
) -> Decision:
    workspace = {"name": "ws", "tags": tags or [], "settings": dict(settings or {})}
    run = {"requester": {"subject": REQUESTER}} if run is None else run
    return evaluate(policies, build_input(plan, run, workspace))


def messages(findings: Any) -> list[str]:
    return [f.message for f in findings]


# ------------------------------------------------------------------ public API


def test_public_api_is_exactly_the_documented_names() -> None:
    assert tofuflow.policy.__all__ == [
        "Decision",
        "Finding",
        "Outcome",
        "PolicySet",
        "build_input",
        "check_settings",
        "evaluate",
    ]
    for name in tofuflow.policy.__all__:
        assert getattr(tofuflow.policy, name) is not None


# ------------------------------------------------------------------ the input document


def test_input_lists_what_changes_by_address_module_type_name_provider_and_action() -> None:
    plan = plan_of(
        change("module.net.aws_vpc.main", "create"),
        change("aws_s3_bucket.logs", ["delete", "create"]),
        change("aws_iam_role.ci", "no-op"),
    )
    doc = build_input(plan, {"branch": "main"}, {"name": "prod", "tags": ["production"]})
    assert doc["plan"]["resource_changes"] == [
        {
            "address": "module.net.aws_vpc.main",
            "module": "module.net",
            "type": "aws_vpc",
            "name": "main",
            "provider": "registry.opentofu.org/hashicorp/aws",
            "action": "create",
        },
        {
            "address": "aws_s3_bucket.logs",
            "module": "",
            "type": "aws_s3_bucket",
            "name": "logs",
            "provider": "registry.opentofu.org/hashicorp/aws",
            "action": "replace",
        },
    ]
    assert doc["plan"]["counts"]["no_op"] == 1 and doc["plan"]["counts"]["to_destroy"] == 1
    assert doc["plan"]["summary"] == "Plan: 2 to add, 0 to change, 1 to destroy."
    assert doc["plan"]["has_changes"] is True
    assert doc["run"] == {"branch": "main"}
    assert doc["workspace"] == {
        "name": "prod",
        "tags": ["production"],
        "settings": {},
        "environment": False,
    }


def test_input_of_the_recorded_plan_leaves_out_no_op_and_read_changes() -> None:
    doc = build_input(recorded("mixed"), {}, {"name": "ws"})
    actions = {rc["action"] for rc in doc["plan"]["resource_changes"]}
    assert actions == {"create", "update", "delete", "replace"}
    assert len(doc["plan"]["resource_changes"]) == 11
    assert doc["plan"]["output_changes"] == [
        {"name": "app_ids", "action": "update", "sensitive": False},
        {"name": "greeting", "action": "update", "sensitive": False},
        {"name": "new_output", "action": "create", "sensitive": False},
        {"name": "old_output", "action": "delete", "sensitive": False},
    ]


def test_input_never_holds_resource_or_output_values() -> None:
    secret_change = change("aws_db_instance.main", "update", before={"password": "old"})
    secret_change["change"]["after"] = {"password": CANARY, "nested": [{"token": CANARY}]}
    outputs = {
        "dsn": {"actions": ["update"], "before": "x", "after": CANARY, "after_sensitive": True}
    }
    synthetic = build_input(plan_of(secret_change, outputs=outputs), {}, {"name": "ws"})
    assert CANARY not in json.dumps(synthetic)
    # The recorded plan carries the canary in a resource input and a sensitive output.
    assert CANARY.encode() in (PLANS / "mixed.json").read_bytes()
    assert CANARY not in json.dumps(build_input(recorded("mixed"), {}, {"name": "ws"}))


def test_input_refuses_run_values_that_are_not_json() -> None:
    with pytest.raises(ConfigError, match=r"run\.requester\.claims is a set"):
        build_input(plan_of(), {"requester": {"claims": {"a", "b"}}}, {"name": "ws"})


def test_input_refuses_tags_that_are_not_a_list_of_strings() -> None:
    with pytest.raises(ConfigError, match="workspace tags must be a list of strings"):
        build_input(plan_of(), {}, {"name": "ws", "tags": "production"})


def test_strings_with_quotes_backslashes_and_unicode_reach_rego_intact() -> None:
    # rego-cpp 1.5 keeps strings escaped; regopy.Input gets that wrong, our builder not.
    # (Non-ASCII compares equal to a literal written in UTF-8, as policy files are.)
    tricky = 'module.app["blue"].x\\y é\n\0'
    literal = json.dumps(tricky, ensure_ascii=False)
    source = f"package t\n\nimport rego.v1\n\nsame if input.run.s == {literal}\n" + (
        'deny contains input.run.s if same\nwarn contains sprintf("<%s>", [input.run.s]) if true\n'
    )
    policies = PolicySet.from_sources({"t.rego": source}, builtin=False)
    decision = evaluate(policies, build_input(plan_of(), {"s": tricky}, {"name": "ws"}))
    assert messages(decision.denies) == [tricky]
    assert messages(decision.warnings) == [f"<{tricky}>"]


def test_evaluate_computes_derived_facts_itself_so_they_cannot_be_spoofed(
    builtin: PolicySet,
) -> None:
    plan = plan_of(change("aws_s3_bucket.state", "delete"))
    doc = build_input(plan, {}, {"name": "ws", "settings": {"protected": ["aws_s3_bucket.*"]}})
    doc["derived"] = {"protected": [], "groups": [], "allowed": []}
    assert evaluate(builtin, doc).outcome == "needs_approval"


@pytest.mark.parametrize("odd", [{"a", "b"}, 2**64, b"bytes"])
def test_evaluate_refuses_values_json_cannot_hold(builtin: PolicySet, odd: Any) -> None:
    doc = build_input(plan_of(), {}, {"name": "ws"})
    doc["run"] = {"odd": odd}
    with pytest.raises(DocumentError, match="policy input holds"):
        evaluate(builtin, doc)


def test_evaluate_refuses_an_input_not_shaped_like_build_input(builtin: PolicySet) -> None:
    with pytest.raises(DocumentError, match="build_input"):
        evaluate(builtin, {"plan": {"resource_changes": [{"address": 1}]}, "workspace": {}})


# ------------------------------------------------------------------ built-in: routine


def test_creates_and_updates_outside_production_are_auto_approved(builtin: PolicySet) -> None:
    decision = decide(
        builtin, plan_of(change("aws_s3_bucket.a", "create"), change("aws_iam_role.b", "update"))
    )
    assert decision.outcome == "auto_approved"
    assert decision.routine_reasons == ("tofuflow.library.routine",)
    assert decision.denies == decision.approval_reasons == ()


def test_a_delete_is_not_routine_and_needs_a_person(builtin: PolicySet) -> None:
    decision = decide(builtin, plan_of(change("aws_s3_bucket.a", "delete")))
    assert decision.outcome == "needs_approval"
    assert decision.routine_reasons == ()
    [reason] = messages(decision.approval_reasons)
    assert "no policy marked this change as routine" in reason
    assert "Plan: 0 to add, 0 to change, 1 to destroy." in reason


@pytest.mark.parametrize("actions", [["delete", "create"], ["create", "delete"], ["forget"]])
def test_replaces_and_forgets_are_not_routine(builtin: PolicySet, actions: list[str]) -> None:
    assert decide(builtin, plan_of(change("aws_s3_bucket.a", actions))).outcome == "needs_approval"


def test_a_plan_without_changes_is_auto_approved_even_in_production(builtin: PolicySet) -> None:
    decision = decide(builtin, recorded("no_changes"), tags=["production"])
    assert decision.outcome == "auto_approved"


def test_the_recorded_plan_destroys_things_so_it_needs_approval(builtin: PolicySet) -> None:
    assert decide(builtin, recorded("mixed")).outcome == "needs_approval"


# ------------------------------------------------------------------ built-in: production


def test_any_change_in_a_production_workspace_needs_a_person(builtin: PolicySet) -> None:
    decision = decide(
        builtin, plan_of(change("aws_s3_bucket.a", "create")), tags=["eu", "production"]
    )
    assert decision.outcome == "needs_approval"
    [reason] = decision.approval_reasons
    assert reason.policy == "tofuflow.library.production"
    assert 'workspace "ws" is tagged production' in reason.message
    assert "an approver must approve this run" in reason.message


def test_require_approval_setting_makes_any_workspace_need_a_person(builtin: PolicySet) -> None:
    decision = decide(
        builtin, plan_of(change("aws_s3_bucket.a", "create")), settings={"require_approval": True}
    )
    assert decision.outcome == "needs_approval"
    assert "sets require_approval" in decision.approval_reasons[0].message


def test_other_tags_do_not_make_a_workspace_production(builtin: PolicySet) -> None:
    plan = plan_of(change("aws_s3_bucket.a", "create"))
    assert decide(builtin, plan, tags=["prod-like", "staging"]).outcome == "auto_approved"


# ------------------------------------------------------------------ built-in: protected


def test_deleting_a_protected_resource_needs_an_approval_naming_it(builtin: PolicySet) -> None:
    plan = plan_of(
        change("module.db.aws_db_instance.main", "delete"), change("aws_s3_bucket.a", "create")
    )
    decision = decide(builtin, plan, settings={"protected": ["module.db.*"]})
    assert decision.outcome == "needs_approval"
    protected = [f for f in decision.approval_reasons if f.policy == "tofuflow.library.protected"]
    assert messages(protected) == [
        'module.db.aws_db_instance.main is protected (it matches "module.db.*" in '
        "settings.protected) and this plan would delete it: an approver must approve this "
        "run, or change the configuration to keep it"
    ]


def test_replacing_a_protected_resource_needs_an_approval(builtin: PolicySet) -> None:
    plan = plan_of(change("aws_kms_key.main", ["create", "delete"]))
    decision = decide(builtin, plan, settings={"protected": ["aws_kms_key.*"]})
    assert "would destroy and re-create it" in decision.approval_reasons[0].message


def test_updating_a_protected_resource_stays_routine(builtin: PolicySet) -> None:
    plan = plan_of(change("aws_kms_key.main", "update"))
    assert (
        decide(builtin, plan, settings={"protected": ["aws_kms_key.*"]}).outcome == "auto_approved"
    )


def test_protected_globs_take_brackets_and_quotes_literally(builtin: PolicySet) -> None:
    plan = plan_of(
        change('module.app["blue"].aws_instance.web[0]', "delete"),
        change('module.app["blue"].aws_instance.web[1]', "delete"),
        change("aws_instance.web0", "delete"),
    )
    decision = decide(
        builtin, plan, settings={"protected": ['module.app["blue"].aws_instance.web[0]']}
    )
    protected = [f.message for f in decision.approval_reasons if f.policy.endswith("protected")]
    assert len(protected) == 1 and protected[0].startswith(
        'module.app["blue"].aws_instance.web[0] is'
    )


def test_deleting_an_unprotected_resource_raises_no_protected_reason(builtin: PolicySet) -> None:
    plan = plan_of(change("aws_s3_bucket.logs", "delete"))
    decision = decide(builtin, plan, settings={"protected": ["aws_s3_bucket.state"]})
    assert all(f.policy != "tofuflow.library.protected" for f in decision.approval_reasons)


# ------------------------------------------------------------------ built-in: allowed


GRANTS = [
    {
        "subject": "repo:acme/infra:*",
        "types": ["aws_s3_*", "aws_iam_role"],
        "modules": ["", "module.storage*"],
    },
    {"subject": "repo:acme/network:*", "modules": ["module.network"]},
]


def test_a_change_the_requester_is_granted_passes(builtin: PolicySet) -> None:
    plan = plan_of(
        change("aws_s3_bucket.a", "create"), change("module.storage.aws_iam_role.r", "update")
    )
    assert decide(builtin, plan, settings={"allowed": GRANTS}).outcome == "auto_approved"


def test_a_type_the_requester_is_not_granted_is_denied_naming_type_and_module(
    builtin: PolicySet,
) -> None:
    plan = plan_of(
        change("aws_s3_bucket.a", "create"),
        change("aws_iam_user.x", "create"),
        change("aws_iam_user.y", "create"),
    )
    decision = decide(builtin, plan, settings={"allowed": GRANTS})
    assert decision.outcome == "denied"
    assert messages(decision.denies) == [
        f'requester "{REQUESTER}" may not change aws_iam_user resources in the root module '
        "(2 changes, e.g. aws_iam_user.x): move the change to a pipeline allowed to, or "
        "extend its grant in settings.allowed"
    ]


def test_a_module_the_requester_is_not_granted_is_denied(builtin: PolicySet) -> None:
    plan = plan_of(change("module.network.aws_s3_bucket.flow_logs", "create"))
    decision = decide(builtin, plan, settings={"allowed": GRANTS})
    assert decision.outcome == "denied"
    assert "aws_s3_bucket resources in module.network" in decision.denies[0].message


def test_grants_of_other_subjects_do_not_apply(builtin: PolicySet) -> None:
    plan = plan_of(change("module.network.aws_vpc.main", "create"))
    network = {"requester": {"subject": "repo:acme/network:ref:refs/heads/main"}}
    assert (
        decide(builtin, plan, settings={"allowed": GRANTS}, run=network).outcome == "auto_approved"
    )
    assert decide(builtin, plan, settings={"allowed": GRANTS}).outcome == "denied"


def test_a_requester_without_any_grant_is_denied_once(builtin: PolicySet) -> None:
    plan = plan_of(change("aws_s3_bucket.a", "create"), change("module.x.aws_vpc.b", "create"))
    decision = decide(
        builtin, plan, settings={"allowed": GRANTS}, run={"requester": {"subject": "someone"}}
    )
    assert messages(decision.denies) == [
        'requester "someone" matches no grant in settings.allowed, so it may not change '
        'workspace "ws" (2 resource changes): run this from a pipeline the workspace allows, '
        "or add a grant for this subject"
    ]


def test_a_run_without_a_requester_is_denied_where_grants_are_configured(
    builtin: PolicySet,
) -> None:
    plan = plan_of(change("aws_s3_bucket.a", "create"))
    decision = decide(builtin, plan, settings={"allowed": GRANTS}, run={})
    assert decision.outcome == "denied"
    assert decision.denies[0].message.startswith('requester "(no requester)" matches no grant')


def test_without_allowed_settings_anyone_may_change_anything(builtin: PolicySet) -> None:
    plan = plan_of(change("module.any.aws_iam_user.x", "create"))
    assert decide(builtin, plan, run={}).outcome == "auto_approved"


def test_an_empty_allowed_list_allows_nobody(builtin: PolicySet) -> None:
    plan = plan_of(change("aws_s3_bucket.a", "create"))
    assert decide(builtin, plan, settings={"allowed": []}).outcome == "denied"


# ------------------------------------------------------------------ built-in: max deletions


def deletes(n: int) -> Plan:
    return plan_of(*(change(f"aws_s3_bucket.b{i}", "delete") for i in range(n)))


def test_more_deletions_than_allowed_is_denied(builtin: PolicySet) -> None:
    decision = decide(builtin, deletes(3), settings={"max_deletions": 2})
    assert decision.outcome == "denied"
    assert messages(decision.denies) == [
        "this plan destroys 3 resources, more than settings.max_deletions (2) allows in "
        'workspace "ws": split the change into smaller plans, or raise max_deletions'
    ]


def test_replacements_count_as_deletions(builtin: PolicySet) -> None:
    plan = plan_of(
        change("aws_s3_bucket.a", ["delete", "create"]), change("aws_s3_bucket.b", "delete")
    )
    assert decide(builtin, plan, settings={"max_deletions": 1}).outcome == "denied"


def test_deletions_up_to_the_limit_are_not_denied(builtin: PolicySet) -> None:
    assert decide(builtin, deletes(2), settings={"max_deletions": 2}).denies == ()


def test_without_a_limit_any_number_of_deletions_is_not_denied(builtin: PolicySet) -> None:
    assert decide(builtin, deletes(50)).denies == ()
    assert decide(builtin, deletes(50), settings={"max_deletions": None}).denies == ()


# ------------------------------------------------------------------ settings fail closed


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"max_deletions": "10"}, "max_deletions must be a whole number"),
        ({"max_deletions": True}, "max_deletions must be a whole number"),
        ({"max_deletions": -1}, "max_deletions must be a whole number"),
        ({"protected": "module.db.*"}, "settings.protected must be a list of glob strings"),
        ({"allowed": {"subject": "x"}}, "settings.allowed must be a list of grants"),
        (
            {"allowed": [{"subject": "x", "module": ["m"]}]},
            r"settings.allowed\[0\] has unknown keys \['module'\]",
        ),
        (
            {"allowed": [{"types": ["aws_*"]}]},
            r'settings.allowed\[0\] must be an object with a "subject"',
        ),
        ({"require_approval": "yes"}, "require_approval must be true or false"),
        # A misspelt built-in key would switch its rule off: an auto-approval.
        (
            {"require_aproval": True},
            'settings.require_aproval is no built-in setting; did you mean "require_approval"',
        ),
        (
            {"max_deletion": 0},
            'settings.max_deletion is no built-in setting; did you mean "max_deletions"',
        ),
        (
            {"Protected": ["a.*"]},
            'settings.Protected is no built-in setting; did you mean "protected"',
        ),
        ({"alowed": GRANTS}, 'settings.alowed is no built-in setting; did you mean "allowed"'),
    ],
)
def test_bad_builtin_settings_are_refused_not_ignored(
    builtin: PolicySet, settings: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        decide(builtin, deletes(1), settings=settings)
    with pytest.raises(ConfigError, match=match):
        check_settings(settings)


def test_good_settings_and_unknown_keys_pass_the_check() -> None:
    check_settings({"protected": ["a.*"], "max_deletions": 0, "allowed": GRANTS, "team": "x"})
    # Your own keys may start like a built-in one.
    check_settings({"allowed_regions": ["eu"], "protected_paths": ["x"], "max_cost": 3})


# ------------------------------------------------------------------ user policies


@pytest.fixture(scope="module")
def team() -> PolicySet:
    return PolicySet.load(POLICIES / "valid")


def test_user_policies_load_recursively_beside_the_builtins_skipping_test_files(
    team: PolicySet,
) -> None:
    assert team.packages == (
        "tofuflow.library.allowed",
        "tofuflow.library.inputs",
        "tofuflow.library.max_deletions",
        "tofuflow.library.production",
        "tofuflow.library.protected",
        "tofuflow.library.routine",
        "acme.routine",
        "acme.guardrails",
        "acme.lib.names",
    )


def test_a_user_deny_blocks_and_its_warning_is_reported(team: PolicySet) -> None:
    decision = decide(team, recorded("mixed"), run={"branch": "feature/x"})
    assert decision.outcome == "denied"
    assert messages(decision.denies) == [
        "branch feature/x would destroy 7 resources: only main may destroy; merge first"
    ]
    assert decision.denies[0].policy == "acme.guardrails"


def test_a_user_warning_decides_nothing(team: PolicySet) -> None:
    outputs = {
        "password": {"actions": ["update"], "before": "a", "after": "b", "after_sensitive": True}
    }
    decision = decide(
        team, plan_of(change("aws_s3_bucket.a", "create"), outputs=outputs), run={"branch": "main"}
    )
    assert decision.outcome == "auto_approved"
    assert messages(decision.warnings) == [
        "sensitive output 'password' changes: tell its consumers"
    ]


def test_a_user_auto_approve_adds_routine_cases(team: PolicySet, builtin: PolicySet) -> None:
    # Built-in rules say production needs a person; routine rules cannot override that,
    # but a user auto_approve does make an otherwise non-routine plan routine.
    plan = plan_of(change("terraform_data.a", "update", type_="terraform_data"))
    decision = decide(team, plan, run={"branch": "main"}, tags=["production"])
    assert decision.outcome == "needs_approval"
    assert decision.routine_reasons == ("acme.routine",)


def test_without_builtins_only_the_user_policies_decide() -> None:
    policies = PolicySet.load(POLICIES / "valid", builtin=False)
    assert not any(p.startswith("tofuflow.") for p in policies.packages)
    plan = plan_of(change("aws_s3_bucket.a", "create"))
    decision = decide(policies, plan, run={"branch": "main"})
    assert decision.outcome == "needs_approval"
    assert "no policy marked this change as routine, so" in decision.approval_reasons[0].message


def test_a_syntax_error_names_the_file_line_and_column() -> None:
    with pytest.raises(ConfigError) as caught:
        PolicySet.load(POLICIES / "broken")
    assert f"{POLICIES / 'broken' / 'syntax_error.rego'}:6:6: Invalid assignment operator" in str(
        caught.value
    )


def test_a_policy_that_fails_at_run_time_fails_at_load_time() -> None:
    source = (
        "package acme.bad\n\ndeny contains msg if {\n\tx := 1 / 0\n\tmsg := sprintf(`%d`, [x])\n}\n"
    )
    with pytest.raises(ConfigError, match=r"bad\.rego:3: divide by zero"):
        PolicySet.from_sources({"bad.rego": source})


def _loaded(directory: Path, source: str) -> tuple[PolicySet, Path]:
    """A user's policy file on disk, loaded (it passes the check on an empty plan)."""
    path = directory / "budget.rego"
    path.write_text(source)
    return PolicySet.load(directory), path


def _evaluation_error(policies: PolicySet) -> str:
    with pytest.raises(ConfigError) as caught:
        decide(policies, plan_of(change("aws_s3_bucket.logs", "create")))
    return str(caught.value)


def test_an_evaluation_error_rego_locates_names_the_file_line_and_column(tmp_path: Path) -> None:
    policies, path = _loaded(tmp_path, (
        "package acme.budget\n\nimport rego.v1\n\n"
        "deny contains msg if {\n"
        "\tsome rc in input.plan.resource_changes\n"
        "\tmsg := concat(\" \", [rc.address, \"is over budget by\", 3])\n"
        "}\n"
    ))  # fmt: skip
    assert (
        f"{path}:7:55: concat: operand 2 must be array of strings but got array containing number"
    ) in _evaluation_error(policies)


def test_an_evaluation_error_without_a_location_names_the_file_and_the_rule_line(
    tmp_path: Path,
) -> None:
    """rego-cpp reports a division by zero with no location at all: the rule it happened
    in is the closest place tofuflow can name, and it says so."""
    policies, path = _loaded(tmp_path, (
        "package acme.budget\n\nimport rego.v1\n\n"
        "deny contains msg if {\n"
        "\tsome rc in input.plan.resource_changes\n"
        "\tshare := 100 / (count(input.plan.resource_changes) - 1)\n"
        "\tshare > 50\n"
        "\tmsg := rc.address\n"
        "}\n"
    ))  # fmt: skip
    assert (
        f"{path}:5: divide by zero (in rule deny; rego-cpp reports no line or column "
        "for this error)"
    ) in _evaluation_error(policies)


def test_a_conflict_names_the_conflicting_rule_not_the_rule_that_reads_it(
    tmp_path: Path,
) -> None:
    policies, path = _loaded(tmp_path, (
        "package acme.budget\n\nimport rego.v1\n\n"
        "owner := \"team-a\" if some rc in input.plan.resource_changes\n"
        "# the second team claims the same plan\n"
        "owner := \"team-b\" if some rc in input.plan.resource_changes\n\n"
        "deny contains \"no owner\" if {\n"
        "\tnot owner\n"
        "}\n"
    ))  # fmt: skip
    assert (
        f"{path}:5: complete rules must not produce multiple outputs (in rule owner, also "
        f"defined at {path}:7; rego-cpp reports no line or column for this error)"
    ) in _evaluation_error(policies)


def test_an_unknown_function_names_the_file() -> None:
    source = "package acme.bad\n\nimport rego.v1\n\ndeny contains msg if msg := nope.fn(1)\n"
    with pytest.raises(ConfigError, match=r"bad\.rego:5: Function not found: nope\.fn"):
        PolicySet.from_sources({"bad.rego": source})


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("package acme.x\n\nauto_approve := 3\n", "auto_approve must be a boolean"),
        ("package acme.x\n\ndeny := 5\n", "deny must be a set of messages"),
        ("# no package\n", "no package declaration"),
        (
            "package tofuflow.library.protected\n\nx := 1\n",
            "reserved for tofuflow's built-in library",
        ),
    ],
)
def test_malformed_policies_are_refused_at_load(source: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        PolicySet.from_sources({"x.rego": source})


def test_a_missing_policy_directory_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        PolicySet.load(POLICIES / "nope")


@pytest.mark.parametrize("files", [{}, {"deny_test.rego": "package acme.x_test\n"}])
def test_a_policy_directory_without_policies_is_a_config_error(
    tmp_path: Path, files: dict[str, str]
) -> None:
    """A failed mount or a wrong path left only the built-ins in force, without a word."""
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=f"policy directory {tmp_path} holds no policies"):
        PolicySet.load(tmp_path)


@pytest.mark.parametrize(
    ("head", "rule", "meant"),
    [
        ('denny contains msg if {\n  msg := "x"\n}', "denny", "deny"),
        ('warns contains "x" if true', "warns", "warn"),
        ("default requires_approval := false", "requires_approval", "require_approval"),
        ("auto_approved if true", "auto_approved", "auto_approve"),
        # Rego is case-sensitive: `Deny` is never read either.
        ('Deny contains "x" if true', "Deny", "deny"),
        ('Require_Approval contains "x" if true', "Require_Approval", "require_approval"),
    ],
)
def test_a_misspelt_decision_rule_is_refused_with_its_line(
    head: str, rule: str, meant: str
) -> None:
    """tofuflow reads only deny, warn, require_approval and auto_approve: `denny` was
    never evaluated, and the run it should have denied was auto-approved."""
    source = f"package acme.x\n\nimport rego.v1\n\n{head}\n"
    with pytest.raises(ConfigError, match=re.escape(
        f'x.rego:5: rule {rule} is no decision rule; did you mean "{meant}"?'
    )):  # fmt: skip
        PolicySet.from_sources({"x.rego": source})


def test_a_misspelt_decision_rule_after_comments_is_refused_with_its_own_line() -> None:
    source = (
        "# Budget rules for the data team: ask them before changing anything here.\n"
        "package acme.x\n\n# Deletions of buckets need a second look, always.\n\n"
        'denny contains "x" if true\n'
    )
    with pytest.raises(ConfigError, match=re.escape("x.rego:6: rule denny is no decision rule")):
        PolicySet.from_sources({"x.rego": source})


@pytest.mark.parametrize(
    ("reference", "path", "meant"),
    [
        (
            "some rc in input.plan.resource_change",
            "input.plan.resource_change",
            "input.plan.resource_changes",
        ),
        ('"production" in input.workspace.tag', "input.workspace.tag", "input.workspace.tags"),
        ("input.plan.counts.destroy_count > 3", "input.plan.counts.destroy_count", None),
        ("input.plans.has_changes", "input.plans", "input.plan"),
        ("count(input.derived.protect) > 0", "input.derived.protect", "input.derived.protected"),
    ],
)
def test_an_input_field_that_does_not_exist_is_refused_with_its_line(
    reference: str, path: str, meant: str | None
) -> None:
    """A rule reading a field the input does not have is undefined and never fires: a
    misspelt `input.plan.resource_change` switched a deny off without a word."""
    source = f'package acme.x\n\nimport rego.v1\n\ndeny contains "x" if {{\n  {reference}\n}}\n'
    with pytest.raises(ConfigError) as caught:
        PolicySet.from_sources({"x.rego": source})
    message = str(caught.value)
    assert message.startswith(f"x.rego:6: {path} is not in the policy input"), message
    if meant:
        assert f"did you mean {meant}?" in message, message
    assert "docs/policies.md#the-input-document" in message, message


def test_input_fields_that_exist_or_are_yours_pass_the_check() -> None:
    """run, run.context, run.requester.claims and workspace.settings hold what the runner,
    the identity and the server's settings put there: any name is allowed below them."""
    PolicySet.from_sources({"x.rego": (
        "package acme.x\n\nimport rego.v1\n\n"
        'msg := "input.plan.nonsense in a string is not a reference"\n'
        "deny contains msg if {\n"
        "  input.plan.counts.to_destroy > input.workspace.settings.my_limit\n"
        "  input.run.context.branch != \"main\"\n  input.run.requester.claims.repository\n"
        "  input.derived.groups[_].count > 1\n  input.workspace.environment\n"
        "  input.plan.resource_changes[_].action == \"delete\"\n  input.run.anything_yours\n}\n"
    )})  # fmt: skip


def test_helper_rules_named_like_nothing_tofuflow_reads_are_fine() -> None:
    PolicySet.from_sources({"x.rego": (
        "package acme.x\n\nimport rego.v1\n\nis_prod if input.workspace.name == \"p\"\n"
        "deny_reasons contains \"x\" if is_prod\nwarning_limit := 3\n"
        "deny contains r if {\n  some r in deny_reasons\n  denny := r\n}\n"
    )})  # fmt: skip


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("package acme.x\n\ndeny if true\n", ["acme.x.deny is true"]),
        ('package acme.x\n\ndeny[msg] { msg := "old style" }\n', ["old style"]),
        ('package acme.x\n\ndeny := ["a", "a", "b"]\n', ["a", "b"]),
        ('package acme.x\n\ndeny contains {"msg": "structured"} if true\n', ["structured"]),
    ],
)
def test_deny_rules_may_be_booleans_sets_arrays_or_v0_partial_sets(
    source: str, expected: list[str]
) -> None:
    policies = PolicySet.from_sources({"x.rego": source}, builtin=False)
    decision = evaluate(policies, build_input(plan_of(), {}, {"name": "ws"}))
    assert decision.outcome == "denied" and messages(decision.denies) == expected


# ------------------------------------------------------------------ digest


def test_the_digest_identifies_exactly_the_policy_sources(builtin: PolicySet) -> None:
    a = PolicySet.from_sources({"a.rego": "package acme.a\n\nx := 1\n"})
    again = PolicySet.from_sources({"a.rego": "package acme.a\n\nx := 1\n"})
    changed = PolicySet.from_sources({"a.rego": "package acme.a\n\nx := 2\n"})
    assert a.digest == again.digest != changed.digest
    assert a.digest != builtin.digest and a.digest.startswith("sha256:") and len(a.digest) == 71
    decision = decide(a, plan_of())
    assert decision.policy_digest == a.digest and decision.to_dict()["policy_digest"] == a.digest


# ------------------------------------------------------------------ CLI


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(policy_cli, ["test", *args], catch_exceptions=False)


def test_cli_exits_0_when_auto_approved() -> None:
    result = run_cli(str(PLANS / "no_changes.json"))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("outcome: auto_approved\npolicies: sha256:")


def test_cli_exits_2_and_says_why_when_a_person_must_approve() -> None:
    result = run_cli(str(PLANS / "mixed.json"), "--workspace-tags", "eu, production")
    assert result.exit_code == 2, result.output
    assert "outcome: needs_approval" in result.output
    assert 'workspace "local" is tagged production' in result.output


def test_cli_judges_a_plan_as_an_ephemeral_environments_with_environment() -> None:
    # mixed.json destroys: not routine for a workspace, routine for an environment
    # (routine.rego), unless it is production. Policy authors test that rule here.
    assert run_cli(str(PLANS / "mixed.json")).exit_code == 2
    routine = run_cli(str(PLANS / "mixed.json"), "--environment")
    assert routine.exit_code == 0, routine.output
    production = run_cli(
        str(PLANS / "mixed.json"), "--environment", "--workspace-tags", "production"
    )
    assert production.exit_code == 2, production.output


def test_cli_exits_3_when_denied_with_settings_requester_and_user_policies(tmp_path: Path) -> None:
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"allowed": [{"subject": "repo:acme/*", "types": ["aws_*"]}]}))
    result = run_cli(
        str(PLANS / "mixed.json"),
        "--policies",
        str(POLICIES / "valid"),
        "--settings",
        str(settings),
        "--requester",
        "repo:acme/infra",
    )
    assert result.exit_code == 3, result.output
    assert "outcome: denied" in result.output
    assert "may not change terraform_data resources in the root module" in result.output


def test_cli_json_output_is_the_decision() -> None:
    result = run_cli(str(PLANS / "mixed.json"), "--json")
    assert result.exit_code == 2
    assert json.loads(result.output)["outcome"] == "needs_approval"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.json"], "cannot read the plan file missing.json"),
        ([str(PLANS / "mixed.summary.txt")], "not a plan document"),
        (
            [str(PLANS / "mixed.json"), "--policies", str(POLICIES / "broken")],
            "syntax_error.rego:6:6",
        ),
        (
            [str(PLANS / "mixed.json"), "--settings", str(PLANS / "mixed.summary.txt")],
            "is not valid JSON",
        ),
        ([str(PLANS / "mixed.json"), "--no-such-option"], "No such option"),
    ],
)
def test_cli_exits_1_on_errors_never_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(policy_cli, ["test", *args])
    assert result.exit_code == 1, result.output
    assert message in result.output


def _shape(value: Any) -> Any:
    """The keys of a JSON value, nested (a list by its first item), without the values."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items() if key != "…"}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return None


def test_the_policy_guides_input_document_has_the_keys_policies_see() -> None:
    # docs/policies.md shows the input document a policy reads; its plan, workspace and
    # derived sections must have exactly the keys build_input and derive make.
    from tofuflow.policy._facts import derive
    from tofuflow.tofu import Plan

    guide = (Path(__file__).parents[2] / "docs" / "policies.md").read_text()
    shown = json.loads(
        guide.split("## The input document", 1)[1].split("```json\n")[1].split("```")[0]
    )
    change = {"address": "module.db.aws_db_instance.main", "module_address": "module.db",
              "mode": "managed", "type": "aws_db_instance", "name": "main",
              "provider_name": "registry.opentofu.org/hashicorp/aws",
              "change": {"actions": ["delete", "create"], "before": {}, "after": {}}}  # fmt: skip
    plan = Plan.from_json({
        "format_version": "1.2", "resource_changes": [change],
        "output_changes": {"endpoint": {"actions": ["update"], "before": "a", "after": "b"}},
    })  # fmt: skip
    grant = {"subject": "*", "types": ["aws_db_instance"], "modules": ["module.db"]}
    settings = {"max_deletions": 3, "protected": ["module.db.*"], "allowed": [grant]}
    doc = tofuflow.policy.build_input(
        plan, shown["run"], {"name": "app/prod", "tags": ["production"], "settings": settings}
    )
    doc["derived"] = derive(doc)
    for section in ("plan", "workspace", "derived"):
        assert _shape(shown[section]) == _shape(doc[section]) | (
            {"settings": _shape(shown[section]["settings"])} if section == "workspace" else {}
        ), section


def test_context_the_runner_did_not_know_is_undefined_to_policies_not_null(
    builtin: PolicySet,
) -> None:
    """docs/policies.md's example `warn` on `input.run.context.branch != "main"` fired on
    every local plan ("planned from branch null, not main"): the runner reports what it
    does not know as null, and null != "main"."""
    rule = (
        "package acme.rules\n\nimport rego.v1\n\nwarn contains msg if {\n"
        '\tinput.run.context.branch != "main"\n'
        '\tmsg := sprintf("planned from branch %v, not main", [input.run.context.branch])\n}\n'
    )
    policies = PolicySet.from_sources({"rules.rego": rule})

    def warned(branch: str | None) -> list[str]:
        run = {"requester": {"subject": REQUESTER}, "context": {"branch": branch, "commit": None}}
        return messages(decide(policies, deletes(1), run=run).warnings)

    assert warned(None) == []
    assert warned("main") == []
    assert warned("feature/x") == ["planned from branch feature/x, not main"]


def test_a_plan_made_with_an_unknown_input_needs_a_person(builtin: PolicySet) -> None:
    """`inputs = { password = "net.db_pasword" }` while net has state: planned with the
    variable's default, an update, auto-approved; the apply reset the password."""
    run = {"requester": {"subject": REQUESTER}, "context": {"unknown_inputs": ["password"]}}
    update = plan_of(change("terraform_data.db", "update"))
    decided = decide(builtin, update, run=run)
    assert decided.outcome == "needs_approval"
    (reason,) = messages(decided.approval_reasons)
    assert reason.startswith("input password was unknown when this was planned")
    assert decide(builtin, update).outcome == "auto_approved"
