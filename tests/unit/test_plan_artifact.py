"""The plan artifact records the inputs its plan was made with, for a rollback."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from tofuflow.runs._artifact import PLAN_FILE, pack, restore_inputs
from tofuflow.runs._workcopy import configuration


def _planned(tmp_path: Path) -> Path:
    directory = tmp_path / "repo" / "infra"
    directory.mkdir(parents=True)
    (directory / "main.tf").write_text('variable "items" {}\n')
    (directory / PLAN_FILE).write_bytes(b"plan")
    return directory


def test_the_variables_and_var_files_of_the_plan_come_back_in_order(tmp_path: Path) -> None:
    directory = _planned(tmp_path)
    (tmp_path / "repo" / "envs").mkdir()
    dev = directory / "dev.tfvars"
    dev.write_text('items = ["a"]\n')
    common = tmp_path / "repo" / "envs" / "dev.tfvars"  # the same name, elsewhere
    common.write_text('region = "x"\n')
    as_json = directory / "extra.tfvars.json"
    as_json.write_text('{"size": 2}')
    data = pack(
        configuration(directory), variables={"with_database": False, "tags": {"a": "b"}},
        var_files=[dev, common, as_json],
    )  # fmt: skip
    dev.write_text('items = ["a", "b"]\n')  # changed since the plan

    planned = restore_inputs(data, tmp_path / "restored")

    assert planned is not None
    assert planned.variables == {"with_database": False, "tags": {"a": "b"}}
    assert [p.read_text() for p in planned.var_files] == [
        'items = ["a"]\n',
        'region = "x"\n',
        '{"size": 2}',
    ]
    assert planned.var_files[2].name.endswith(".tfvars.json")  # the binary reads it as JSON
    assert all(p.parent == tmp_path / "restored" for p in planned.var_files)
    assert planned.run_time_var_files == frozenset()


def test_a_run_time_var_file_is_recorded_by_its_path_only(tmp_path: Path) -> None:
    directory = _planned(tmp_path)
    secret = tmp_path / "agent-temp" / "secrets.tfvars"
    secret.parent.mkdir()
    secret.write_text('db_password = "s3cret-fetched-at-run-time"\n')
    data = pack(configuration(directory), var_files=[secret], run_time_var_files={secret})

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        stored = b"".join(archive.read(name) for name in archive.namelist())
    assert b"s3cret-fetched-at-run-time" not in stored
    planned = restore_inputs(data, tmp_path / "restored")
    assert planned is not None
    assert planned.var_files == (secret,)  # read where the pipeline writes it, as it is now
    assert planned.run_time_var_files == frozenset({secret})


def test_an_artifact_from_before_the_inputs_were_recorded_gives_none(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(PLAN_FILE, b"plan")
        archive.writestr("tofuflow-artifact.json", json.dumps({"directory": "."}))
    assert restore_inputs(buffer.getvalue(), tmp_path) is None


def test_a_recorded_name_cannot_write_outside_the_directory(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    inputs = {"variables": {}, "var_files": [{"name": "../../evil.tfvars", "text": "x = 1\n"}]}
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(PLAN_FILE, b"plan")
        archive.writestr("tofuflow-artifact.json", json.dumps({"directory": ".", "inputs": inputs}))
    planned = restore_inputs(buffer.getvalue(), tmp_path / "restored")
    assert planned is not None
    assert [p.parent for p in planned.var_files] == [tmp_path / "restored"]
    assert not (tmp_path / "evil.tfvars").exists()


def test_an_archive_from_a_newer_tofuflow_is_refused_with_what_to_do(tmp_path: Path) -> None:
    """Plan and apply may run different tofuflow versions: an artifact in a format this
    one does not know is refused before anything runs, not misread."""
    from tofuflow.errors import ConflictError
    from tofuflow.runs._artifact import FORMAT, MANIFEST, check_artifact, restore_config

    directory = _planned(tmp_path)
    data = pack(configuration(directory))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert json.loads(archive.read(MANIFEST))["format"] == FORMAT
        members = {name: archive.read(name) for name in archive.namelist()}
    manifest = json.loads(members[MANIFEST])
    manifest["format"] = FORMAT + 1
    members[MANIFEST] = json.dumps(manifest).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    newer = buffer.getvalue()
    for read in (check_artifact, lambda d: restore_config(d, tmp_path / "out")):
        with pytest.raises(ConflictError, match=r"written by a newer tofuflow .*format 2"):
            read(newer)
    check_artifact(data)  # its own format reads
