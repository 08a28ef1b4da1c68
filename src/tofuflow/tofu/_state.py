"""The state document (version 4), plain or in OpenTofu's native encryption envelope.

    state = State.from_json(Path("terraform.tfstate").read_bytes())
    state.serial, state.lineage        # readable even when state.encrypted
    [i.address for r in state.resources for i in r.instances]

An encrypted state keeps ``serial`` and ``lineage`` in clear beside the opaque payload, so
state rules (same lineage, growing serial) can be enforced without the key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NoReturn

from tofuflow.errors import DocumentError
from tofuflow.tofu._plan import decode_json_object, string_leaves

__all__ = ["State", "StateInstance", "StateOutput", "StateResource", "format_index_key"]

_STATE_HINT = "pass a state file (`tofu state pull`), not `tofu show -json` output"


@dataclass(frozen=True, slots=True, repr=False)
class StateOutput:
    """A root module output; ``repr`` hides the value when it is sensitive."""

    value: Any
    sensitive: bool = False
    type: Any = None

    def __str__(self) -> str:
        return "(sensitive)" if self.sensitive else str(self.value)

    def __repr__(self) -> str:
        shown = "<sensitive>" if self.sensitive else repr(self.value)
        return f"StateOutput(value={shown}, sensitive={self.sensitive}, type={self.type!r})"


@dataclass(frozen=True, slots=True)
class StateInstance:
    """One instance of a resource, e.g. ``module.m.terraform_data.x["k"]``."""

    address: str
    index_key: Any = None
    attributes: Mapping[str, Any] = field(default_factory=dict, repr=False)
    sensitive_attributes: Any = field(default=(), repr=False)
    status: str | None = None
    deposed: str | None = None


@dataclass(frozen=True, slots=True)
class StateResource:
    """One ``resources`` entry: a resource block (or data source) and its instances."""

    mode: str
    type: str
    name: str
    module: str | None
    provider: str
    instances: tuple[StateInstance, ...] = ()

    @property
    def address(self) -> str:
        """The address without an instance key: ``module.m.data.terraform_remote_state.x``."""
        return resource_address(self.module, self.mode, self.type, self.name)

    @property
    def addresses(self) -> tuple[str, ...]:
        """One address per instance (a deposed object repeats its instance's address)."""
        return tuple(instance.address for instance in self.instances)


@dataclass(frozen=True, slots=True)
class State:
    """A parsed state document.

        state = State.from_json(body)
        if state.encrypted: ...    # only serial and lineage are readable

    ``version`` and ``terraform_version`` are ``None`` for an encrypted state.
    """

    serial: int
    lineage: str
    version: int | None
    terraform_version: str | None
    outputs: Mapping[str, StateOutput]
    resources: tuple[StateResource, ...]
    check_results: Any = field(default=None, repr=False)
    encrypted: bool = False
    encryption_version: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: bytes | bytearray | str | Mapping[str, Any]) -> State:
        """Parse a state from bytes, text or a mapping; ``DocumentError`` if it is not one."""
        doc = decode_json_object(data, kind="state", hint=_STATE_HINT)
        if "encryption_version" in doc:
            return cls._encrypted(doc)
        _check_version(doc)
        return cls(
            serial=_serial(doc),
            lineage=_lineage(doc),
            version=doc["version"],
            terraform_version=_optional_str(doc, "terraform_version"),
            outputs=_outputs(doc.get("outputs")),
            resources=tuple(_resource(item, i) for i, item in enumerate(_list(doc, "resources"))),
            check_results=doc.get("check_results"),
            raw=doc,
        )

    @classmethod
    def _encrypted(cls, doc: Mapping[str, Any]) -> State:
        version = doc["encryption_version"]
        if not isinstance(version, str) or not isinstance(doc.get("encrypted_data"), str):
            raise DocumentError(
                "not a state document: an encryption envelope needs string `encryption_version` "
                "and `encrypted_data` — pass the file exactly as OpenTofu wrote it"
            )
        return cls(
            serial=_serial(doc, encrypted=True),
            lineage=_lineage(doc, encrypted=True),
            version=None,
            terraform_version=None,
            outputs=MappingProxyType({}),
            resources=(),
            encrypted=True,
            encryption_version=version,
            raw=doc,
        )

    def sensitive_values(self) -> frozenset[str]:
        """Every string marked sensitive (outputs and attributes), e.g. for a CI log masker."""
        found = {
            text
            for output in self.outputs.values()
            if output.sensitive
            for text in string_leaves(output.value)
        }
        for resource in self.resources:
            for instance in resource.instances:
                found.update(_sensitive_attribute_values(instance))
        return frozenset(found)


def resource_address(module: str | None, mode: str, type_: str, name: str) -> str:
    """``resource_address("module.m", "data", "t", "n")`` → ``module.m.data.t.n``."""
    prefix = f"{module}." if module else ""
    data = "data." if mode == "data" else ""
    return f"{prefix}{data}{type_}.{name}"


def format_index_key(key: Any) -> str:
    """The ``[...]`` suffix the binary prints: ``[0]`` or ``["k"]`` (HCL string quoting)."""
    if key is None:
        return ""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"[{key}]"
    return f"[{_hcl_quote(str(key))}]"


def _hcl_quote(text: str) -> str:
    # Mirrors the binary's addrs.StringKey quoting so addresses match `tofu state list`.
    out = ['"']
    for i, char in enumerate(text):
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char in "$%":
            # A template introducer is doubled so the address never reads as a template.
            out.append(char * 2 if text[i + 1 : i + 2] == "{" else char)
        elif not char.isprintable():
            code = ord(char)
            out.append(f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", '"': '\\"', "\\": "\\\\"}


def _check_version(doc: Mapping[str, Any]) -> None:
    version = doc.get("version")
    if version is None:
        if "format_version" in doc:
            raise DocumentError(
                "not a state document: this is `show -json` output (it has format_version) — "
                f"{_STATE_HINT}"
            )
        raise DocumentError(f"not a state document: missing version — {_STATE_HINT}")
    if version != 4 or isinstance(version, bool):
        raise DocumentError(
            f"unsupported state version {version!r}: tofuflow reads version 4 — "
            "run `tofu state pull` with a current binary to upgrade it"
        )


def _serial(doc: Mapping[str, Any], *, encrypted: bool = False) -> int:
    serial = doc.get("serial")
    if isinstance(serial, int) and not isinstance(serial, bool) and serial >= 0:
        return serial
    _missing("serial", serial, encrypted)


def _lineage(doc: Mapping[str, Any], *, encrypted: bool = False) -> str:
    lineage = doc.get("lineage")
    if isinstance(lineage, str) and lineage:
        return lineage
    _missing("lineage", lineage, encrypted)


def _missing(key: str, value: Any, encrypted: bool) -> NoReturn:
    if encrypted:
        # Older OpenTofu releases wrote envelopes without the clear-text passthrough fields.
        raise DocumentError(
            f"encrypted state has no readable {key} (got {value!r}): it was written by an "
            "OpenTofu that does not keep serial and lineage in clear — re-save it with a "
            "current OpenTofu (`tofu apply -refresh-only`)"
        )
    raise DocumentError(
        f"not a state document: {key} is missing or invalid ({value!r}) — {_STATE_HINT}"
    )


def _optional_str(doc: Mapping[str, Any], key: str) -> str | None:
    value = doc.get(key)
    return value if isinstance(value, str) else None


def _list(doc: Mapping[str, Any], key: str) -> list[Any]:
    value = doc.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise DocumentError(f"not a state document: {key} is not a list — {_STATE_HINT}")
    return value


def _outputs(items: Any) -> Mapping[str, StateOutput]:
    if items is None:
        return MappingProxyType({})
    if not isinstance(items, dict):
        raise DocumentError(f"not a state document: outputs is not an object — {_STATE_HINT}")
    try:
        return MappingProxyType(
            {
                name: StateOutput(item["value"], item.get("sensitive") is True, item.get("type"))
                for name, item in items.items()
            }
        )
    except (KeyError, TypeError, AttributeError):
        raise DocumentError(
            f"not a state document: every output needs a value — {_STATE_HINT}"
        ) from None


def _resource(item: Any, i: int) -> StateResource:
    try:
        module = item.get("module")
        base = resource_address(module, item["mode"], item["type"], item["name"])
        return StateResource(
            mode=item["mode"],
            type=item["type"],
            name=item["name"],
            module=module,
            provider=item.get("provider", ""),
            instances=tuple(_instance(base, raw) for raw in item.get("instances") or ()),
        )
    except KeyError as exc:
        raise DocumentError(
            f"not a state document: resources[{i}] has no {exc.args[0]!r} — {_STATE_HINT}"
        ) from None
    except (TypeError, AttributeError):
        raise DocumentError(
            f"not a state document: resources[{i}] is not an object with mode, type, name and "
            f"instances — {_STATE_HINT}"
        ) from None


def _instance(base: str, raw: Mapping[str, Any]) -> StateInstance:
    key = raw.get("index_key")
    return StateInstance(
        address=base + format_index_key(key),
        index_key=key,
        attributes=raw.get("attributes") or {},
        sensitive_attributes=raw.get("sensitive_attributes") or (),
        status=raw.get("status"),
        deposed=raw.get("deposed"),
    )


def _sensitive_attribute_values(instance: StateInstance) -> Iterator[str]:
    paths = instance.sensitive_attributes
    if not isinstance(paths, list):
        return
    for path in paths:
        yield from string_leaves(_follow(instance.attributes, path))


def _follow(value: Any, path: Any) -> Any:
    # A path is a list of steps: {"type": "get_attr", "value": "input"} or
    # {"type": "index", "value": {"value": "k", "type": "string"}}.
    if not isinstance(path, list):
        return None
    for step in path:
        if not isinstance(step, dict):
            return None
        key = step.get("value")
        if step.get("type") == "index" and isinstance(key, dict):
            key = key.get("value")
        value = _step(_unwrap(value), key)
    return _unwrap(value)


def _step(value: Any, key: Any) -> Any:
    if isinstance(value, dict) and isinstance(key, str):
        return value.get(key)
    if isinstance(value, list) and isinstance(key, int) and 0 <= key < len(value):
        return value[key]
    return None


def _unwrap(value: Any) -> Any:
    # Attributes of dynamic type (e.g. terraform_data.input) are stored as
    # {"value": ..., "type": ...}; the type names must not be mistaken for secrets.
    if isinstance(value, dict) and value.keys() == {"value", "type"}:
        return value["value"]
    return value
