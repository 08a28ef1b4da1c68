"""The state an apply left in errored.tfstate, made the workspace's next version."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tofuflow.errors import DocumentError, StateWriteError
from tofuflow.runs._errored import _unpushed
from tofuflow.runs._errored import next_state_version as _next_version

LINEAGE = "6f1c0000-0000-4000-8000-00000000000a"


def _state(serial: int, lineage: str, *resources: str) -> bytes:
    document = {
        "version": 4, "terraform_version": "1.11.4", "serial": serial, "lineage": lineage,
        "outputs": {}, "resources": [
            {"mode": "managed", "type": "terraform_data", "name": name,
             "provider": 'provider["terraform.io/builtin/terraform"]', "instances": []}
            for name in resources
        ],
    }  # fmt: skip
    return json.dumps(document, indent=2).encode()


def test_a_first_version_gets_a_lineage_and_serial_1() -> None:
    # The binary writes errored.tfstate before it learns a new workspace's lineage.
    body, serial = _next_version(_state(0, "", "a"), None)
    assert body is not None and serial == 1
    written = json.loads(body)
    assert written["serial"] == 1 and len(written["lineage"]) == 36
    assert [r["name"] for r in written["resources"]] == ["a"]


def test_a_later_version_takes_the_workspaces_lineage_and_the_next_serial() -> None:
    for left in (_state(4, LINEAGE, "a", "b"), _state(4, "", "a", "b")):
        body, serial = _next_version(left, _state(4, LINEAGE, "a"))
        assert body is not None and serial == 5
        assert json.loads(body)["lineage"] == LINEAGE


def test_the_state_the_workspace_already_holds_is_not_written_again() -> None:
    assert _next_version(_state(4, LINEAGE, "a"), _state(4, LINEAGE, "a")) == (None, 4)


@pytest.mark.parametrize(
    ("left", "message"),
    [
        (_state(5, "another-lineage", "a"), "is not the workspace's"),
        (_state(2, LINEAGE, "a"), "has moved on meanwhile (serial 4"),
        (b"{not json", "not JSON"),
        (b'{"version": 4}', "no serial and lineage"),
    ],
)
def test_a_state_that_would_overwrite_anothers_is_refused(left: bytes, message: str) -> None:
    with pytest.raises(DocumentError, match=re.escape(message)):
        _next_version(left, _state(4, LINEAGE, "a"))


def test_an_unpushed_state_is_kept_under_a_name_the_next_stage_leaves_alone(
    tmp_path: Path,
) -> None:
    errored = tmp_path / "errored.tfstate"
    errored.write_bytes(_state(0, "", "a"))
    told = _unpushed(
        StateWriteError("apply could not save", errored_state=errored), "app/dev", "down"
    )
    assert told.errored_state is not None and told.errored_state.is_file()
    assert told.errored_state.name.startswith("errored-") and not errored.exists()
    assert str(told.errored_state) in told.message and "(down)" in told.message
    assert f"`tofuflow state push app/dev {told.errored_state}`" in told.message
