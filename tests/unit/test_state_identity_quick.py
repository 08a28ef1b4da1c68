"""``state_identity`` reads serial and lineage without building the document (issue 18),
and still accepts and refuses every body exactly as ``State.from_json`` does, with the
same message."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tofuflow.errors import BadRequestError, DocumentError
from tofuflow.server import state_identity
from tofuflow.tofu import State

LINEAGE = "4bd6ad6f-5a5c-4a0e-9d38-3e3b0bd1a111"


def _doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": 4, "terraform_version": "1.11.4", "serial": 3, "lineage": LINEAGE,
        "outputs": {"o": {"value": 1, "type": "number"}},
        "resources": [{"mode": "managed", "type": "t", "name": "n", "provider": "p",
                       "instances": [{"index_key": 0, "attributes": {"id": "x"}}]}],
    }  # fmt: skip
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not _DROP}


_DROP = object()

BODIES = {
    "valid": json.dumps(_doc()).encode(),
    "indented, as the binary writes it": json.dumps(_doc(), indent=2).encode(),
    "no outputs or resources": json.dumps(_doc(outputs=None, resources=None)).encode(),
    "serial 0": json.dumps(_doc(serial=0)).encode(),
    "empty instances": json.dumps(
        _doc(resources=[{"mode": "m", "type": "t", "name": "n", "instances": 0}])
    ).encode(),
    "duplicate serial key": json.dumps(_doc())[:-1].encode() + b', "serial": 9}',
    "encrypted envelope": json.dumps(
        {"serial": 2, "lineage": LINEAGE, "encryption_version": "v0", "encrypted_data": "abc"}
    ).encode(),
    "envelope without serial": json.dumps(
        {"encryption_version": "v0", "encrypted_data": "abc"}
    ).encode(),
    "not JSON": b"not a state",
    "trailing garbage": json.dumps(_doc()).encode() + b" x",
    "bad JSON in a skipped field": json.dumps(_doc())[:-1].encode() + b', "z": [1,]}',
    "NaN in a skipped field": json.dumps(_doc())[:-1].encode() + b', "z": NaN}',
    "a list": b"[1, 2]",
    "version 3": json.dumps(_doc(version=3)).encode(),
    "version true": json.dumps(_doc(version=True)).encode(),
    "no version": json.dumps(_doc(version=_DROP)).encode(),
    "show -json output": json.dumps({"format_version": "1.0"}).encode(),
    "negative serial": json.dumps(_doc(serial=-1)).encode(),
    "serial as a string": json.dumps(_doc(serial="3")).encode(),
    "serial past 64 bits": json.dumps(_doc(serial=2**70)).encode(),
    "serial past BIGINT": json.dumps(_doc(serial=2**63)).encode(),
    "empty lineage": json.dumps(_doc(lineage="")).encode(),
    "long lineage": json.dumps(_doc(lineage="x" * 65)).encode(),
    "outputs a list": json.dumps(_doc(outputs=[])).encode(),
    "output without value": json.dumps(_doc(outputs={"o": {"type": "string"}})).encode(),
    "resource without type": json.dumps(_doc(resources=[{"mode": "m", "name": "n"}])).encode(),
    "resource a string": json.dumps(_doc(resources=["r"])).encode(),
    "instance a string": json.dumps(
        _doc(resources=[{"mode": "m", "type": "t", "name": "n", "instances": ["i"]}])
    ).encode(),
    "nested 1,000 deep": json.dumps(_doc())[:-1].encode()
    + b', "z": '
    + b"[" * 1000
    + b"]" * 1000
    + b"}",
    "nested 5,000 deep": json.dumps(_doc())[:-1].encode()
    + b', "z": '
    + b"[" * 5000
    + b"]" * 5000
    + b"}",
    "invalid UTF-8": json.dumps(_doc())[:-1].encode() + b', "z": "\xff"}',
    "invalid UTF-8 in a key": json.dumps(_doc())[:-1].encode() + b', "\xc3": 1}',
    "valid UTF-8": json.dumps(_doc(), ensure_ascii=False)[:-1].encode() + ', "z": "ü"}'.encode(),
    "a UTF-8 byte order mark": b"\xef\xbb\xbf" + json.dumps(_doc()).encode(),
    "UTF-16": json.dumps(_doc()).encode("utf-16"),
    "lone surrogate": json.dumps(_doc())[:-1].encode() + b', "z": "\\ud800"}',
}


def _verdict_of_the_full_parse(body: bytes) -> tuple[int, str] | str:
    """What the server answered before issue 18: the whole document parsed and built."""
    try:
        state = State.from_json(body)
    except DocumentError as exc:
        return f"the body was refused: {exc}"
    except RecursionError:
        return "the body is not a state document: its JSON is nested too deeply"
    if not state.lineage or len(state.lineage) > 64 or state.serial > 2**63 - 1:
        return "refused by the range checks"
    return state.serial, state.lineage


@pytest.mark.parametrize("case", sorted(BODIES))
def test_a_body_is_accepted_or_refused_as_the_full_parse_decides(case: str) -> None:
    body = BODIES[case]
    expected = _verdict_of_the_full_parse(body)
    try:
        verdict: tuple[int, str] | str = state_identity(body)
    except BadRequestError as exc:
        verdict = str(exc)
        if expected == "refused by the range checks":
            assert "push a state written by tofu/terraform" in verdict
            return
    assert verdict == expected
