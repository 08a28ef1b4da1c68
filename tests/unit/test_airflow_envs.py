"""Ephemeral environments: names per DAG run, and the task group's setup/teardown shape."""

from __future__ import annotations

from datetime import datetime

import pytest
from airflow.sdk import DAG, task

from tofuflow.airflow import (
    TofuflowApplyOperator,
    TofuflowDestroyOperator,
    TofuflowOutputsOperator,
    environment_name,
    ephemeral_environment,
)
from tofuflow.airflow.envs import TofuflowCreateEnvironmentOperator
from tofuflow.server import validate_workspace_name


@pytest.mark.parametrize(
    ("dag_id", "run_id"),
    [
        ("deploy", "manual__2025-01-01T00:00:00+00:00"),
        ("deploy", "scheduled__2025-01-01T00:00:00.123456+00:00"),
        ("team.deploy-v2", "my_run"),
        ("_private", "-leading"),
        ("d" * 120, "r" * 300),
        ("déploiement", "lock"),
        ("a b/c", "..weird::id"),
    ],
)
def test_names_are_valid_workspace_names(dag_id: str, run_id: str) -> None:
    name = environment_name(dag_id, run_id)
    assert validate_workspace_name(name) == name  # the control plane accepts it as is
    assert name.startswith("airflow/") and len(name) <= 200
    assert all(len(segment) <= 64 for segment in name.split("/"))
    assert environment_name(dag_id, run_id) == name  # every task computes the same name


def test_clean_ids_are_kept_and_changed_ones_get_a_hash() -> None:
    assert environment_name("deploy", "nightly_1", prefix="preview") == "preview/deploy/nightly_1"
    name = environment_name("deploy", "manual__2025-01-01T00:00:00+00:00")
    assert name.startswith("airflow/deploy/manual__2025-01-01T00-00-00-00-00-")


def test_run_ids_that_clean_up_alike_still_get_different_names() -> None:
    names = {environment_name("d", run) for run in ("a:b", "a+b", "a b", "a-b", "a/b")}
    assert len(names) == 5


def test_the_group_has_a_cheap_setup_a_teardown_and_the_work_in_between() -> None:
    with DAG("envs", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
        env = ephemeral_environment(
            "preview", workspace="app/preview", ttl="45m", name_variable="env_name",
            variables={"size": "small"}, include_sensitive=True,
        )  # fmt: skip

        @task
        def smoke(outputs: dict[str, str]) -> None: ...

        work = smoke(env.outputs.output)
        env.wrap(work)
    create, deploy, outputs, destroy = env.create, env.deploy, env.outputs, env.destroy
    assert isinstance(create, TofuflowCreateEnvironmentOperator)
    assert isinstance(deploy, TofuflowApplyOperator) and isinstance(
        destroy, TofuflowDestroyOperator
    )
    assert isinstance(outputs, TofuflowOutputsOperator) and outputs.include_sensitive
    assert [t.task_id for t in (create, deploy, outputs, destroy)] == [
        "preview.create", "preview.deploy", "preview.outputs", "preview.destroy",
    ]  # fmt: skip
    assert create.is_setup and destroy.is_teardown
    assert not deploy.is_setup  # the apply runs in the work scope, never in the setup
    assert destroy.trigger_rule == "all_done_setup_success"
    assert (create.ttl, create.name_variable, create.variables) == ("45m", "env_name",
                                                                    {"size": "small"})  # fmt: skip
    for downstream in (deploy, outputs, destroy):
        assert (
            downstream.environment
            == env.name
            == ("{{ ti.xcom_pull(task_ids='preview.create')['workspace'] }}")
        )
        assert downstream.workspace == "app/preview"
    assert dag.task_dict[work.operator.task_id].upstream_task_ids == {"preview.outputs"}
    # as_teardown(setups=create) links the setup to its teardown directly.
    assert destroy.upstream_task_ids == {"preview.create", "preview.outputs", "smoke"}
    assert create.downstream_task_ids == {"preview.deploy", "preview.destroy"}
