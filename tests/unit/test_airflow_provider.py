"""The provider as Airflow discovers it: entry point, provider info, connection form."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from importlib.metadata import distribution, entry_points
from pathlib import Path

import airflow
import jsonschema

from tofuflow.airflow import get_provider_info

AIRFLOW_DIR = Path(airflow.__file__).parent


def test_the_entry_point_is_registered_for_the_tofuflow_distribution() -> None:
    (point,) = [
        e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("tofuflow")
    ]
    assert point.value == "tofuflow.airflow:get_provider_info"
    assert point.load() is get_provider_info
    info = get_provider_info()
    assert info["package-name"] == distribution("tofuflow").metadata["name"] == "tofuflow"


def test_provider_info_is_valid_for_airflow() -> None:
    schema = json.loads((AIRFLOW_DIR / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_every_module_and_class_it_names_imports() -> None:
    info = get_provider_info()
    for kind in ("operators", "sensors", "hooks", "triggers"):
        (entry,) = info[kind]
        assert entry["integration-name"] == info["integrations"][0]["integration-name"]
        for module in entry["python-modules"]:
            importlib.import_module(module)
    (conn,) = info["connection-types"]
    module, _, name = conn["hook-class-name"].rpartition(".")
    hook = getattr(importlib.import_module(module), name)
    assert (conn["connection-type"], hook.conn_type) == ("tofuflow", "tofuflow")
    assert conn["hook-name"] == hook.hook_name
    assert hook.default_conn_name == "tofuflow_default"


def test_the_connection_form_declares_the_fields_and_their_behaviour() -> None:
    (conn,) = get_provider_info()["connection-types"]
    fields = conn["conn-fields"]
    assert set(fields) == {
        "oidc_token_file", "apply_token", "binary", "project", "workspace", "server_config",
        "work_dir", "console_url",
    }  # fmt: skip
    assert fields["apply_token"]["schema"]["format"] == "password"  # stored and shown masked
    assert all(f["label"] and f["description"] for f in fields.values())
    behaviour = conn["ui-field-behaviour"]
    assert behaviour["hidden-fields"] == ["login"]
    assert "Control plane URL" in behaviour["relabeling"]["host"]
    schema = json.loads((AIRFLOW_DIR / "customized_form_field_behaviours.schema.json").read_text())
    jsonschema.validate(
        {
            "hidden_fields": behaviour["hidden-fields"],
            "relabeling": behaviour["relabeling"],
            "placeholders": behaviour["placeholders"],
        },
        schema,
    )


def test_airflows_providers_manager_loads_the_form_without_importing_the_hook() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "tofuflow" in manager.providers
    widgets = manager.connection_form_widgets
    assert "extra__tofuflow__project" in widgets
    assert widgets["extra__tofuflow__apply_token"].is_sensitive
    assert manager.field_behaviours["tofuflow"]["hidden_fields"] == ["login"]


def test_importing_the_package_imports_nothing_from_airflow() -> None:
    code = (
        "import sys, tofuflow.airflow as p; p.get_provider_info(); "
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_run_link_is_registered_and_read_from_the_xcom_the_operators_push() -> None:
    """Airflow 3's API server turns a serialized task's links into XComOperatorLink(name,
    xcom_key): the key must be the one the operators push the console link under."""
    from airflow.providers_manager import ProvidersManager
    from airflow.serialization.serialized_objects import OperatorSerialization

    from tofuflow.airflow import TofuflowApplyOperator, TofuflowPlanOperator
    from tofuflow.airflow.links import CONSOLE_LINK_KEY, TofuflowRunLink

    (path,) = get_provider_info()["extra-links"]
    assert path in ProvidersManager().extra_links_class_names
    module, _, name = path.rpartition(".")
    assert getattr(importlib.import_module(module), name) is TofuflowRunLink
    for operator in (TofuflowPlanOperator, TofuflowApplyOperator):
        task = operator(task_id="t", workspace="app/dev")
        serialized = OperatorSerialization.serialize_operator(task)
        assert serialized["_operator_extra_links"] == {"tofuflow run": CONSOLE_LINK_KEY}
