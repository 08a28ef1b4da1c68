"""TofuflowHook: an ``tofuflow`` connection resolved into control plane, project and
binary; its secrets registered with Airflow's masker."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from airflow.sdk import Connection
from airflow.sdk._shared.secrets_masker import redact

from tofuflow.airflow.hooks import ConnectionSettings, TofuflowHook
from tofuflow.errors import ConfigError


def _hook(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: object) -> TofuflowHook:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))
    return TofuflowHook(conn_id)


@pytest.mark.parametrize(
    ("fields", "url", "authority"),
    [
        ({"host": "https://cp.example.com/"}, "https://cp.example.com", "cp.example.com"),
        ({"host": "http://127.0.0.1:8470"}, "http://127.0.0.1:8470", "127.0.0.1:8470"),
        ({"host": "cp.example.com", "port": 8443}, "https://cp.example.com:8443",
         "cp.example.com:8443"),
        ({"host": "10.0.0.5", "schema": "http", "port": 80}, "http://10.0.0.5:80", "10.0.0.5:80"),
        ({}, None, "embedded"),
    ],
)  # fmt: skip
def test_the_host_fields_make_the_control_plane_url(
    monkeypatch: pytest.MonkeyPatch, fields: dict[str, object], url: str | None, authority: str
) -> None:
    hook = _hook(monkeypatch, "tf_url", conn_type="tofuflow", **fields)
    assert hook.settings.url == url
    assert hook.settings.embedded is (url is None)
    assert hook.settings.authority == authority
    assert hook.asset_uri("app/dev") == f"tofuflow://{authority}/app/dev"


def test_extras_plain_or_prefixed_and_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    token, apply_token = "tfw_plan_0123456789abcdef", "tfw_apply_fedcba9876543210"
    hook = _hook(
        monkeypatch, "tf_extras", conn_type="tofuflow", host="https://cp", password=token,
        extra={"workspace": "app/dev", "extra__tofuflow__binary": "/opt/tofu",
               "apply_token": apply_token, "project": "infra/tofuflow.toml"},
    )  # fmt: skip
    settings = hook.get_conn()
    assert (settings.workspace, settings.binary, settings.project) == (
        "app/dev", "/opt/tofu", "infra/tofuflow.toml",
    )  # fmt: skip
    assert token not in repr(settings) and apply_token not in repr(settings)
    assert hook.token_for("plan") == hook.token_for("read") == token
    assert hook.token_for("apply") == apply_token
    # Registered with Airflow's masker as soon as the connection is read.
    assert redact(f"Bearer {token} / {apply_token}") == "Bearer *** / ***"


def test_an_oidc_token_file_is_read_at_each_use(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    file = tmp_path / "oidc.jwt"
    hook = _hook(monkeypatch, "tf_oidc", conn_type="tofuflow", host="https://cp",
                 extra={"oidc_token_file": str(file)})  # fmt: skip
    file.write_text("eyJfirst.token.value\n")
    assert hook.token_for("plan") == "eyJfirst.token.value"
    file.write_text("eyJsecond.token.value")  # refreshed by the platform
    assert hook.token_for("apply") == "eyJsecond.token.value"
    assert redact("eyJsecond.token.value") == "***"
    file.unlink()
    with pytest.raises(ConfigError, match="cannot read its oidc_token_file"):
        hook.token_for("plan")


def test_a_remote_connection_without_a_token_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hook = _hook(monkeypatch, "tf_notoken", conn_type="tofuflow", host="https://cp")
    with pytest.raises(ConfigError, match="holds no token: set its password to an API token") as e:
        hook.token_for("apply")
    assert "applier role" in str(e.value)


def test_the_workspace_comes_from_the_project_relative_to_the_dag_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    (repo / "infra").mkdir(parents=True)
    (repo / "vars").mkdir()
    (repo / "tofuflow.toml").write_text(
        '[workspaces."app/dev"]\ndirectory = "infra"\nvariables = { a = 1, b = "x" }\n'
        'tags = ["team-a"]\n'
    )
    dags = repo / "dags"
    dags.mkdir()
    monkeypatch.setenv(
        "AIRFLOW_CONN_TF_PROJECT",
        json.dumps({"conn_type": "tofuflow", "extra": {"project": "../tofuflow.toml",
                                                       "workspace": "app/dev"}}),
    )  # fmt: skip
    hook = TofuflowHook("tf_project", base_dir=dags)
    ws = hook.workspace()
    assert (ws.name, ws.directory, dict(ws.variables)) == ("app/dev", repo / "infra",
                                                           {"a": 1, "b": "x"})  # fmt: skip
    renamed = hook.workspace(
        "app/dev", environment="preview/pr-7", variables={"b": "y"}, var_files=["vars/x.tfvars"]
    )
    assert renamed.name == "preview/pr-7" and renamed.directory == repo / "infra"
    assert dict(renamed.variables) == {"a": 1, "b": "y"}
    assert renamed.var_files == (repo / "vars" / "x.tfvars",)
    assert renamed.run_time_var_files == frozenset()  # a file of the repository
    assert renamed.tags == ("team-a",)
    # A file the DAG writes at run time (a secret it fetched) is never recorded with a plan.
    fetched = hook.workspace("app/dev", var_files=["/run/airflow/secret.tfvars"])
    assert fetched.run_time_var_files == frozenset({Path("/run/airflow/secret.tfvars")})
    with pytest.raises(ConfigError, match="defined"):
        hook.workspace("app/nope")


def test_missing_workspace_or_project_says_where_to_set_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hook = _hook(monkeypatch, "tf_empty", conn_type="tofuflow")
    with pytest.raises(ConfigError, match="no workspace: give the operator workspace="):
        hook.workspace()
    with pytest.raises(ConfigError, match=r"no tofuflow\.toml: give the operator project="):
        hook.workspace("app/dev")


def test_settings_from_a_uri_form_connection() -> None:
    conn = Connection.from_uri(
        "tofuflow://:tfw_uri_token_123456@cp.internal:8470/http?workspace=app%2Fdev",
        conn_id="tf_uri",
    )
    settings = ConnectionSettings.from_connection(conn)
    assert settings.url == "http://cp.internal:8470"
    assert settings.token == "tfw_uri_token_123456"
    assert settings.workspace == "app/dev"


@pytest.mark.parametrize(
    ("fields", "link"),
    [
        ({"host": "https://cp.example.com/"}, "https://cp.example.com/console/runs/r1"),
        ({"host": "https://cp.example.com", "extra": {"console_url": "https://ui.example/"}},
         "https://ui.example/console/runs/r1"),
        ({"extra": {"console_url": "http://127.0.0.1:8470"}}, "http://127.0.0.1:8470/console/runs/r1"),
        ({}, None),  # embedded, no console_url: nothing serves a console to link to
    ],
)  # fmt: skip
def test_the_console_link_is_the_console_url_extra_else_the_control_plane(
    monkeypatch: pytest.MonkeyPatch, fields: dict[str, object], link: str | None
) -> None:
    hook = _hook(monkeypatch, "tf_console", conn_type="tofuflow", **fields)
    assert hook.settings.console_link("r1") == link


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("ftp://ui.example", "is not an http(s) URL"),
        ("ui.example", "is not an http(s) URL"),
        ("https://admin:hunter2@ui.example", "holds credentials; remove them"),
    ],
)
def test_a_console_url_that_is_no_usable_link_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, value: str, says: str
) -> None:
    hook = _hook(monkeypatch, "tf_bad_console", conn_type="tofuflow",
                 extra={"console_url": value})  # fmt: skip
    with pytest.raises(ConfigError, match=re.escape(says)) as caught:
        hook.get_conn()
    assert "tf_bad_console" in str(caught.value) and "hunter2" not in str(caught.value)


def test_a_sensitive_output_is_read_through_the_connection_its_reference_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The docs' `TofuflowHook().sensitive_output(ref)`: the default connection's plane was
    asked, not the one the outputs task read, so another plane's workspace of the same
    name could answer with its secret."""
    from tofuflow.airflow.hooks import sensitive_reference
    from tofuflow.errors import UnreachableError

    _hook(monkeypatch, "tofuflow_default", conn_type="tofuflow",
          extra={"server_config": str(tmp_path / "nothing.toml")})  # fmt: skip
    _hook(monkeypatch, "tf_far", conn_type="tofuflow", host="http://127.0.0.1:9",
          password="tfw_reader_0123456789abcdef")  # fmt: skip
    reference = sensitive_reference("app/dev", "secret", "tf_far")
    with pytest.raises(UnreachableError, match=re.escape("http://127.0.0.1:9")):
        TofuflowHook().sensitive_output(reference)
