"""Operator parameters: templated fields, assets, and how they render (no binary)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import DAG, Asset, AssetAlias
from airflow.sdk._shared.secrets_masker import redact
from airflow.sdk.log import mask_secret

from tofuflow.airflow import (
    TofuflowApplyOperator,
    TofuflowDestroyOperator,
    TofuflowDriftSensor,
    TofuflowOutputsOperator,
    TofuflowPlanOperator,
)
from tofuflow.airflow.hooks import _leaves

BASE = ("workspace", "environment", "variables", "var_files", "project")


def test_templated_fields() -> None:
    assert tuple(TofuflowPlanOperator.template_fields) == (*BASE, "targets")
    assert tuple(TofuflowApplyOperator.template_fields) == (*BASE, "targets", "run_id")
    assert tuple(TofuflowDestroyOperator.template_fields) == (*BASE, "targets", "run_id")
    assert tuple(TofuflowOutputsOperator.template_fields) == (*BASE, "names")
    assert tuple(TofuflowDriftSensor.template_fields) == BASE


def test_templates_render_from_the_task_context() -> None:
    with DAG("render", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
        plan = TofuflowPlanOperator(
            task_id="plan",
            workspace="app/{{ params.stage }}",
            variables={"region": "{{ params.region }}", "replicas": 3},
            var_files=["vars/{{ params.stage }}.tfvars"],
            targets=["module.{{ params.module }}"],
        )
    plan.render_template_fields(
        {"params": {"stage": "dev", "region": "eu-west-1", "module": "db"}},  # type: ignore[arg-type]
        jinja_env=dag.get_template_env(),
    )
    assert plan.workspace == "app/dev"
    assert plan.variables == {"region": "eu-west-1", "replicas": 3}
    assert plan.var_files == ["vars/dev.tfvars"]
    assert plan.targets == ["module.db"]


def test_apply_and_destroy_declare_the_workspace_as_an_outlet_reads_as_an_inlet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_TOFUFLOW_DEFAULT", json.dumps({"conn_type": "tofuflow"}))
    with DAG("assets", schedule=None, start_date=datetime(2025, 1, 1)):
        plan = TofuflowPlanOperator(task_id="plan", workspace="app/dev")
        apply = TofuflowApplyOperator(task_id="apply", workspace="app/dev", run_id="r1")
        destroy = TofuflowDestroyOperator(task_id="destroy", workspace="app/dev")
        outputs = TofuflowOutputsOperator(task_id="outputs", workspace="app/dev")
        drift = TofuflowDriftSensor(task_id="drift", workspace="app/dev")
        named = TofuflowApplyOperator(task_id="named", workspace="app/dev", environment="pr-7")
    asset = Asset("tofuflow://embedded/app/dev")
    assert apply.outlets == [asset] and destroy.outlets == [asset]
    # A plan or a read never looks like a change to data DAGs scheduled on the asset.
    for task in (plan, outputs, drift):
        assert task.outlets == [] and task.inlets == [asset]
    # An environment is its source workspace's asset (the environment is in the event's
    # extra): ephemeral DAG runs do not add an asset each.
    assert named.outlets == [asset]


def test_a_connection_only_airflow_knows_is_declared_as_an_alias_never_guessed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_TF_DB", raising=False)  # it lives in Airflow's database
    with DAG("db", schedule=None, start_date=datetime(2025, 1, 1)):
        apply = TofuflowApplyOperator(task_id="a", workspace="app/prod", tofuflow_conn_id="tf_db")
    assert apply.outlets == [AssetAlias(name="tofuflow:tf_db:app/prod")]


def test_the_asset_host_comes_from_the_connection_variable_or_asset_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_TF_REMOTE",
        json.dumps({"conn_type": "tofuflow", "host": "https://cp.example.com:8443",
                    "password": "tfw_x_0123456789"}),
    )  # fmt: skip
    with DAG("hosts", schedule=None, start_date=datetime(2025, 1, 1)):
        remote = TofuflowApplyOperator(
            task_id="a", workspace="app/prod", tofuflow_conn_id="tf_remote"
        )
        given = TofuflowApplyOperator(task_id="b", workspace="app/prod", asset_host="cp.internal")
    assert remote.outlets == [Asset("tofuflow://cp.example.com:8443/app/prod")]
    assert given.outlets == [Asset("tofuflow://cp.internal/app/prod")]


def test_a_templated_workspace_is_declared_as_an_alias() -> None:
    with DAG("alias", schedule=None, start_date=datetime(2025, 1, 1)):
        apply = TofuflowApplyOperator(
            task_id="apply", workspace="app/preview",
            environment="{{ ti.xcom_pull(task_ids='create')['workspace'] }}",
        )  # fmt: skip
    assert apply.outlets == [AssetAlias(name="tofuflow:tofuflow_default:app/preview")]


def test_operator_options() -> None:
    with DAG("options", schedule=None, start_date=datetime(2025, 1, 1)):
        apply = TofuflowApplyOperator(task_id="apply", workspace="a")
        waiting = TofuflowApplyOperator(
            task_id="waiting", workspace="a", deferrable=True, poll_interval=5,
            approval_timeout=timedelta(minutes=10), replan=False, wait_for_approval=False,
        )  # fmt: skip
        destroy = TofuflowDestroyOperator(task_id="destroy", workspace="a")
    assert (apply.deferrable, apply.replan, apply.wait_for_approval) == (False, True, True)
    assert apply.approval_timeout == timedelta(hours=24) and apply.poll_interval == 30
    assert (waiting.deferrable, waiting.replan, waiting.poll_interval) == (True, False, 5)
    assert destroy.destroy is True and destroy.run_id is None
    with pytest.raises(ValueError, match="plans its own destroy"):
        TofuflowDestroyOperator(task_id="x", workspace="a", run_id="r1")
    with pytest.raises(ValueError, match="expect must be"):
        TofuflowDriftSensor(task_id="d", workspace="a", expect="sometimes")  # type: ignore[arg-type]


def test_sensitive_output_values_are_masked_leaf_by_leaf() -> None:
    value: dict[str, Any] = {"user": "svc-admin-xyz", "keys": ["k-1111-aaaa", "k-2222-bbbb"],
                             "port": 54321, "tls": True}  # fmt: skip
    leaves = sorted(_leaves(value))
    assert leaves == ["54321", "k-1111-aaaa", "k-2222-bbbb", "svc-admin-xyz"]
    for leaf in leaves:
        mask_secret(leaf)  # what TofuflowOutputsOperator does for include_sensitive=True
    assert redact("user svc-admin-xyz key k-2222-bbbb") == "user *** key ***"


def test_the_trigger_serializes_ids_never_a_token() -> None:
    from tofuflow.airflow import TofuflowRunTrigger

    trigger = TofuflowRunTrigger(run_id="r1", tofuflow_conn_id="tf", poll_interval=7,
                             workspace="app/dev", base_dir="/dags/x.py")  # fmt: skip
    classpath, kwargs = trigger.serialize()
    assert classpath == "tofuflow.airflow.triggers.TofuflowRunTrigger"
    assert kwargs == {"run_id": "r1", "tofuflow_conn_id": "tf", "poll_interval": 7,
                      "workspace": "app/dev", "base_dir": "/dags/x.py"}  # fmt: skip
    assert TofuflowRunTrigger(**kwargs).serialize() == (classpath, kwargs)


def test_an_apply_given_another_workspaces_run_names_the_mix_up_not_a_missing_grant(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The embedded plane scopes the task's token to its workspace: reading the other
    workspace's run was refused as "may not read_runs … ask an admin for a reader grant",
    where there is no admin and no grant is missing."""
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowFailException

    from tofuflow.embedded import EmbeddedControlPlane
    from tofuflow.runs import ControlPlane
    from tofuflow.server.config import ServerConfig

    data = tmp_path / "plane"
    monkeypatch.setenv("AIRFLOW_CONN_TOFUFLOW_DEFAULT", json.dumps({"conn_type": "tofuflow"}))
    monkeypatch.setenv("TOFUFLOW_DATA_DIR", str(data))
    monkeypatch.delenv("TOFUFLOW_SERVER_CONFIG", raising=False)
    config = ServerConfig.from_mapping({"server": {"data_dir": str(data)}})
    with (
        EmbeddedControlPlane(config) as plane,
        ControlPlane(plane.url, plane.token("admin")) as admin,
    ):
        other = admin.create_run("examples/lifecycle", "0" * 64, {})["id"]
    apply = TofuflowApplyOperator(task_id="apply", workspace="examples/preview", run_id=other)
    ti = SimpleNamespace(dag_id="d", run_id="manual", task_id="apply", try_number=1)
    with pytest.raises(AirflowFailException) as refused:
        apply._read({"ti": ti}, apply.hook({}), other)  # type: ignore[arg-type]
    assert str(refused.value).startswith(f"run {other} is not a run of examples/preview")
    assert "give this task the run_id of examples/preview's plan task" in str(refused.value)
