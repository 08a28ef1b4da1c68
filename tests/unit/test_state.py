"""State documents: v4 state files, and OpenTofu's encrypted envelope around them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tofuflow.errors import DocumentError
from tofuflow.tofu import State

STATES = Path(__file__).parents[1] / "fixtures" / "states"
CANARY = "canary-s3cr3t-value"


def recorded(name: str) -> bytes:
    return (STATES / name).read_bytes()


def state_doc(*resources: dict[str, Any], **top: Any) -> dict[str, Any]:
    base = {"version": 4, "terraform_version": "1.11.4", "serial": 3, "lineage": "l-1"}
    return {**base, "outputs": {}, "resources": list(resources), **top}


def resource(instances: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    base = {"mode": "managed", "type": "terraform_data", "name": "x", "provider": "p"}
    return {**base, **fields, "instances": instances}


def addresses(state: State) -> list[str]:
    return [address for r in state.resources for address in r.addresses]


@pytest.fixture(scope="module")
def v1() -> State:
    return State.from_json(recorded("v1.tfstate.json"))


# ------------------------------------------------------------------ recorded state


def test_header_fields_are_read(v1: State) -> None:
    raw = json.loads(recorded("v1.tfstate.json"))
    assert (v1.serial, v1.lineage) == (raw["serial"], raw["lineage"])
    assert (v1.version, v1.terraform_version) == (4, "1.11.4")
    assert v1.encrypted is False


def test_applying_again_keeps_the_lineage_and_raises_the_serial(v1: State) -> None:
    v2 = State.from_json(recorded("v2.tfstate.json"))
    assert v2.lineage == v1.lineage
    assert v2.serial > v1.serial


def test_outputs_keep_value_type_and_sensitivity(v1: State) -> None:
    assert v1.outputs["greeting"].value == "hello"
    assert v1.outputs["greeting"].type == "string"
    assert v1.outputs["greeting"].sensitive is False
    assert v1.outputs["password"].sensitive is True


def test_every_instance_has_the_address_the_binary_uses(v1: State) -> None:
    found = addresses(v1)
    assert "terraform_data.changed" in found
    assert "data.terraform_remote_state.other" in found
    assert 'module.app["blue"].terraform_data.item["a"]' in found
    assert 'module.app["green"].terraform_data.item["<script>x</script>|*y*"]' in found
    assert len(found) == 13


def test_resources_keep_mode_module_and_provider(v1: State) -> None:
    items = [r for r in v1.resources if r.module == 'module.app["blue"]']
    assert [r.address for r in items] == ['module.app["blue"].terraform_data.item']
    assert items[0].provider == 'provider["terraform.io/builtin/terraform"]'
    data = next(r for r in v1.resources if r.mode == "data")
    assert (data.module, data.address) == (None, "data.terraform_remote_state.other")


def test_instances_keep_attributes_and_index_keys(v1: State) -> None:
    items = next(r for r in v1.resources if r.module == 'module.app["blue"]')
    a = next(i for i in items.instances if i.index_key == "a")
    # terraform_data.input has a dynamic type, which state stores with its type beside it.
    assert a.attributes["input"] == {"value": "blue-a", "type": "string"}


def test_sensitive_values_names_the_secrets_for_log_masking(v1: State) -> None:
    assert CANARY in v1.sensitive_values()
    assert "hello" not in v1.sensitive_values()


def test_repr_hides_sensitive_output_values(v1: State) -> None:
    assert CANARY not in repr(v1.outputs["password"])
    assert CANARY not in repr(v1)
    assert "'hello'" in repr(v1.outputs["greeting"])


# ------------------------------------------------------------------ addresses


@pytest.mark.parametrize(
    ("index_key", "suffix"),
    [
        (None, ""),
        (0, "[0]"),
        (12, "[12]"),
        ("k", '["k"]'),
        ('quote"back\\slash', '["quote\\"back\\\\slash"]'),
        ("line\nbreak\ttab", '["line\\nbreak\\ttab"]'),
        ("${tmpl} %{dir} $x", '["$${tmpl} %%{dir} $x"]'),
        ("bell\x07", '["bell\\u0007"]'),
        ("", '[""]'),
    ],
)
def test_index_keys_are_quoted_like_the_binary_quotes_them(index_key: Any, suffix: str) -> None:
    instance: dict[str, Any] = {"attributes": {}}
    if index_key is not None:
        instance["index_key"] = index_key
    state = State.from_json(state_doc(resource([instance])))
    assert addresses(state) == ["terraform_data.x" + suffix]


def test_data_sources_in_modules_get_both_prefixes() -> None:
    state = State.from_json(
        state_doc(resource([{"index_key": 1, "attributes": {}}], mode="data", module="module.m"))
    )
    assert addresses(state) == ["module.m.data.terraform_data.x[1]"]


def test_a_deposed_object_keeps_its_instance_address() -> None:
    instances: list[dict[str, Any]] = [{"attributes": {}}, {"attributes": {}, "deposed": "0001"}]
    state = State.from_json(state_doc(resource(instances)))
    assert addresses(state) == ["terraform_data.x", "terraform_data.x"]
    assert state.resources[0].instances[1].deposed == "0001"


def test_sensitive_attributes_of_dynamic_type_yield_only_the_value() -> None:
    attrs = {"input": {"value": {"password": "pw-in-dynamic"}, "type": ["object", {}]}}
    paths = [[{"type": "get_attr", "value": "input"}, {"type": "get_attr", "value": "password"}]]
    state = State.from_json(
        state_doc(resource([{"attributes": attrs, "sensitive_attributes": paths}]))
    )
    assert state.sensitive_values() == {"pw-in-dynamic"}


def test_sensitive_attribute_paths_reach_nested_values() -> None:
    attrs = {"input": {"list": ["a", "hidden-by-index"], "map": {"k": "hidden-by-key"}}}
    paths = [
        [{"type": "get_attr", "value": "input"}, {"type": "get_attr", "value": "list"},
         {"type": "index", "value": {"value": 1, "type": "number"}}],
        [{"type": "get_attr", "value": "input"}, {"type": "get_attr", "value": "map"},
         {"type": "index", "value": {"value": "k", "type": "string"}}],
        [{"type": "get_attr", "value": "missing"}],
    ]  # fmt: skip
    state = State.from_json(
        state_doc(resource([{"attributes": attrs, "sensitive_attributes": paths}]))
    )
    assert state.sensitive_values() == {"hidden-by-index", "hidden-by-key"}


# ------------------------------------------------------------------ encrypted


def test_an_encrypted_state_still_shows_serial_and_lineage() -> None:
    state = State.from_json(recorded("encrypted_envelope.json"))
    assert state.encrypted is True
    assert (state.serial, state.lineage) == (7, "0f6c1c2e-3b7a-4d5e-9f10-1a2b3c4d5e6f")
    assert state.encryption_version == "v0"


def test_an_encrypted_state_exposes_no_resources_or_outputs() -> None:
    state = State.from_json(recorded("encrypted_envelope.json"))
    assert state.resources == ()
    assert dict(state.outputs) == {}
    assert state.version is None
    assert state.terraform_version is None
    assert state.sensitive_values() == frozenset()


def test_an_envelope_without_serial_says_serial_is_unreadable() -> None:
    envelope = json.loads(recorded("encrypted_envelope.json"))
    del envelope["serial"]
    with pytest.raises(DocumentError, match="encrypted state has no readable serial"):
        State.from_json(envelope)


def test_an_envelope_without_a_payload_is_a_document_error() -> None:
    envelope = json.loads(recorded("encrypted_envelope.json"))
    del envelope["encrypted_data"]
    with pytest.raises(DocumentError, match="encryption envelope needs"):
        State.from_json(envelope)


# ------------------------------------------------------------------ tolerance and errors


def test_unknown_fields_are_ignored() -> None:
    raw = json.loads(recorded("v1.tfstate.json"))
    raw["future"] = 1
    for r in raw["resources"]:
        r["future"] = {"a": 1}
        for i in r["instances"]:
            i["identity_schema_version"] = 0
    state = State.from_json(raw)
    assert addresses(state) == addresses(State.from_json(recorded("v1.tfstate.json")))


def test_an_empty_state_has_no_resources_or_outputs() -> None:
    state = State.from_json(
        {"version": 4, "serial": 1, "lineage": "l", "terraform_version": "1.9.0"}
    )
    assert state.resources == ()
    assert dict(state.outputs) == {}


HEAD = '"version": 4, "serial": 1, "lineage": "l"'


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{", r"not a state document: invalid JSON .*tofu state pull"),
        ('"text"', r"expected a JSON object, got str"),
        ('{"format_version": "1.0", "values": {}}', r"this is `show -json` output"),
        ('{"serial": 1, "lineage": "l"}', r"missing version"),
        ('{"version": 3, "serial": 1, "lineage": "l"}', r"unsupported state version 3"),
        ('{"version": 4, "lineage": "l"}', r"serial is missing or invalid"),
        ('{"version": 4, "serial": -1, "lineage": "l"}', r"serial is missing or invalid"),
        ('{"version": 4, "serial": 1}', r"lineage is missing or invalid"),
        ("{" + HEAD + ', "resources": {}}', r"resources is not a list"),
        ("{" + HEAD + ', "outputs": []}', r"outputs is not an object"),
        ("{" + HEAD + ', "outputs": {"o": {}}}', r"needs a value"),
    ],
)
def test_malformed_states_say_what_was_expected(data: str, message: str) -> None:
    with pytest.raises(DocumentError, match=message):
        State.from_json(data)


def test_a_resource_without_a_type_is_named_by_position() -> None:
    broken = resource([])
    del broken["type"]
    with pytest.raises(DocumentError, match=r"resources\[1\] has no 'type'"):
        State.from_json(state_doc(resource([]), broken))


def test_a_resource_of_the_wrong_shape_is_a_document_error() -> None:
    with pytest.raises(DocumentError, match=r"resources\[0\] is not an object"):
        State.from_json(state_doc("terraform_data.x"))  # type: ignore[arg-type]
