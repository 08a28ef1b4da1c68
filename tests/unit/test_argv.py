"""argv of every command, with defaults and with every option (no binary needed)."""

from __future__ import annotations

import pytest

from tofuflow.errors import ConfigError
from tofuflow.tofu import ApplyOptions, DestroyOptions, InitOptions, PlanOptions, StatePushOptions
from tofuflow.tofu import _argv as a


def test_version_asks_for_json() -> None:
    assert a.version_argv() == ["version", "-json"]


def test_init_defaults_are_non_interactive_json_without_color() -> None:
    assert a.init_argv(InitOptions()) == ["init", "-input=false", "-no-color", "-json"]


def test_init_every_option() -> None:
    argv = a.init_argv(
        InitOptions(
            backend=False,
            backend_config={"address": "https://state.example/v1/state/app", "lock_method": "LOCK"},
            backend_config_files=["backend.hcl"],
            reconfigure=True,
            upgrade=True,
            lockfile_readonly=True,
        ),
        json_output=False,
    )
    assert argv == [
        "init", "-input=false", "-no-color", "-backend=false",
        "-backend-config=backend.hcl",
        "-backend-config=address=https://state.example/v1/state/app",
        "-backend-config=lock_method=LOCK",
        "-reconfigure", "-upgrade", "-lockfile=readonly",
    ]  # fmt: skip


@pytest.mark.parametrize("key", ["password", "access_key", "secret_key", "token", "sas_token"])
def test_init_refuses_credentials_on_argv_and_names_the_env_route(key: str) -> None:
    with pytest.raises(ConfigError, match="environment variable"):
        a.init_argv(InitOptions(backend_config={key: "hunter2"}))


def test_plan_defaults_use_detailed_exitcode() -> None:
    assert a.plan_argv(PlanOptions()) == [
        "plan",
        "-input=false",
        "-no-color",
        "-json",
        "-detailed-exitcode",
    ]


def test_plan_every_option() -> None:
    argv = a.plan_argv(
        PlanOptions(
            out="plan.tfplan",
            destroy=True,
            refresh=False,
            lock=False,
            lock_timeout="30s",
            targets=["terraform_data.a"],
            replace=["terraform_data.b"],
            var_files=["prod.tfvars"],
            parallelism=4,
        )
    )
    assert argv == [
        "plan", "-input=false", "-no-color", "-json", "-detailed-exitcode",
        "-lock=false", "-lock-timeout=30s", "-out=plan.tfplan", "-destroy", "-refresh=false",
        "-target=terraform_data.a", "-replace=terraform_data.b", "-var-file=prod.tfvars",
        "-parallelism=4",
    ]  # fmt: skip


def test_plan_refresh_only_and_excludes() -> None:
    argv = a.plan_argv(PlanOptions(refresh_only=True, excludes=["module.big"]))
    assert argv[-2:] == ["-refresh-only", "-exclude=module.big"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"destroy": True, "refresh_only": True}, "destroy and refresh_only"),
        ({"targets": ["a"], "excludes": ["b"]}, "targets and excludes"),
        ({"lock_timeout": "soon"}, "duration"),
        ({"parallelism": 0}, "at least 1"),
    ],
)
def test_plan_rejects_contradictory_or_malformed_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        a.plan_argv(PlanOptions(**kwargs))


def test_show_plan_and_state() -> None:
    assert a.show_argv("p.tfplan") == ["show", "-json", "-no-color", "p.tfplan"]
    assert a.show_argv() == ["show", "-json", "-no-color"]


def test_apply_of_saved_plan_needs_no_auto_approve() -> None:
    assert a.apply_argv(ApplyOptions("p.tfplan")) == [
        "apply",
        "-input=false",
        "-no-color",
        "-json",
        "p.tfplan",
    ]


def test_apply_of_saved_plan_with_lock_options_and_parallelism() -> None:
    argv = a.apply_argv(ApplyOptions("p.tfplan", lock=False, lock_timeout="1m", parallelism=2))
    assert argv == [
        "apply", "-input=false", "-no-color", "-json",
        "-lock=false", "-lock-timeout=1m", "-parallelism=2", "p.tfplan",
    ]  # fmt: skip


def test_direct_apply_every_option() -> None:
    argv = a.apply_argv(
        ApplyOptions(targets=["t"], replace=["r"], var_files=["v.tfvars"], parallelism=3)
    )
    assert argv == [
        "apply", "-input=false", "-no-color", "-json", "-auto-approve",
        "-target=t", "-replace=r", "-var-file=v.tfvars", "-parallelism=3",
    ]  # fmt: skip


def test_apply_of_saved_plan_refuses_targeting() -> None:
    with pytest.raises(ConfigError, match="pass them to plan"):
        a.apply_argv(ApplyOptions("p.tfplan", targets=["x"]))


def test_destroy_every_option() -> None:
    assert a.destroy_argv(DestroyOptions()) == [
        "destroy",
        "-input=false",
        "-no-color",
        "-json",
        "-auto-approve",
    ]
    argv = a.destroy_argv(
        DestroyOptions(lock_timeout="5m", excludes=["e"], var_files=["v"], parallelism=1)
    )
    assert argv[5:] == ["-lock-timeout=5m", "-exclude=e", "-var-file=v", "-parallelism=1"]


def test_output_state_and_unlock_commands() -> None:
    assert a.output_argv() == ["output", "-json", "-no-color"]
    assert a.output_argv("files") == ["output", "-json", "-no-color", "files"]
    assert a.state_pull_argv() == ["state", "pull"]
    assert a.state_push_argv(StatePushOptions("s.tfstate")) == ["state", "push", "s.tfstate"]
    assert a.state_push_argv(StatePushOptions("s", force=True, lock=False, lock_timeout="2s")) == [
        "state", "push", "-lock=false", "-lock-timeout=2s", "-force", "s"
    ]  # fmt: skip
    assert a.force_unlock_argv("abc-123") == ["force-unlock", "-force", "abc-123"]
    assert a.fmt_check_argv() == ["fmt", "-check", "-list=true", "-no-color", "-recursive"]
    assert a.fmt_check_argv(recursive=False) == ["fmt", "-check", "-list=true", "-no-color"]


@pytest.mark.parametrize("lock_id", ["", "-force"])
def test_force_unlock_rejects_non_ids(lock_id: str) -> None:
    with pytest.raises(ConfigError, match="not a lock ID"):
        a.force_unlock_argv(lock_id)


def test_variables_travel_as_env_never_argv() -> None:
    env = a.variables_env({"region": "eu-west-1", "sizes": [1, 2], "tags": {"a": "b"}, "n": 3})
    assert env == {
        "TF_VAR_region": "eu-west-1",
        "TF_VAR_sizes": "[1, 2]",
        "TF_VAR_tags": '{"a": "b"}',
        "TF_VAR_n": "3",
    }


def test_variables_with_bad_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="not a valid identifier"):
        a.variables_env({"bad name": "x"})


def test_options_are_frozen_values_that_do_not_follow_the_callers_list() -> None:
    targets = ["terraform_data.a"]
    options = PlanOptions(targets=targets)
    targets.append("terraform_data.b")
    assert options.targets == ("terraform_data.a",)
    assert a.plan_argv(options)[-1] == "-target=terraform_data.a"
    with pytest.raises(AttributeError):
        options.out = "p.tfplan"  # type: ignore[misc]
    assert PlanOptions(targets=["x"]) == PlanOptions(targets=("x",))


def test_state_push_argv_needs_a_path_not_bytes() -> None:
    with pytest.raises(TypeError, match="path"):
        a.state_push_argv(StatePushOptions(b"{}"))
