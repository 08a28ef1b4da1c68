"""Values for people: masked, unknowns marked, cut to length; attribute-level diffs.

    masker = _Masker(plan.sensitive_values())
    _format_value({"name": "db", "password": "pw"}, {"password": True}, None, masker)
    # '{ name = "db", password = (sensitive value) }'

Pure functions shared by the plan model (``_plan_view.py``), the writers (``_render.py``)
and the drift report.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tofuflow.tofu._plan import ResourceChange

__all__ = ["SENSITIVE", "UNKNOWN"]

SENSITIVE = "(sensitive value)"
UNKNOWN = "(known after apply)"

_MAX_VALUE_CHARS = 200
# Shorter secrets are masked only where the binary marks them: scrubbing "db" or "true"
# from every line would mangle ordinary text.
_MIN_SCRUB_LEN = 6
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


# ---------------------------------------------------------------------------- masking


class _Masker:
    """Knows the plan's secrets; masks strings that contain one and scrubs finished text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        long_enough = {s for s in secrets if len(s) >= _MIN_SCRUB_LEN}
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = sorted(long_enough, key=len, reverse=True)

    def leaks(self, text: str) -> bool:
        return any(secret in text for secret in self.secrets)

    def scrub(self, text: str, *forms: Callable[[str], str]) -> str:
        every_form: tuple[Callable[[str], str], ...] = (str, _json_inner, *forms)
        for secret in self.secrets:
            for form in every_form:
                text = text.replace(form(secret), SENSITIVE)
        return text


def _json_inner(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]


@dataclass(slots=True)
class _Out:
    """Collects a formatted value and stops growing once it is long enough to be cut."""

    parts: list[str] = field(default_factory=list)
    size: int = 0

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)

    @property
    def full(self) -> bool:
        return self.size > _MAX_VALUE_CHARS

    def text(self) -> str:
        joined = "".join(self.parts)
        return joined if len(joined) <= _MAX_VALUE_CHARS else joined[: _MAX_VALUE_CHARS - 1] + "…"


def _format_value(value: Any, sensitive: Any, unknown: Any, masker: _Masker) -> str:
    """One value as compact HCL-like text: masked, unknowns marked, cut at 200 chars."""
    out = _Out()
    _emit(value, sensitive, unknown, masker, out)
    return out.text()


def _emit(value: Any, sensitive: Any, unknown: Any, masker: _Masker, out: _Out) -> None:
    if sensitive is True:
        out.add(SENSITIVE)
    elif unknown is True:
        out.add(UNKNOWN)
    elif isinstance(value, dict) or (isinstance(unknown, dict) and value is None):
        _emit_object(value or {}, sensitive, unknown, masker, out)
    elif isinstance(value, list):
        _emit_list(value, sensitive, unknown, masker, out)
    elif isinstance(value, str):
        out.add(SENSITIVE if masker.leaks(value) else json.dumps(value, ensure_ascii=False))
    else:
        out.add(json.dumps(value))


def _emit_object(
    value: Mapping[str, Any], sensitive: Any, unknown: Any, masker: _Masker, out: _Out
) -> None:
    keys = _keys(value, unknown)
    out.add("{")
    for n, key in enumerate(keys):
        if out.full:
            out.add(" …")
            break
        out.add(", " if n else " ")
        out.add(SENSITIVE if masker.leaks(key) else _key_text(key))
        out.add(" = ")
        _emit(value.get(key), _sub(sensitive, key), _sub(unknown, key), masker, out)
    out.add(" }" if keys else "}")


def _emit_list(value: list[Any], sensitive: Any, unknown: Any, masker: _Masker, out: _Out) -> None:
    out.add("[")
    for i, item in enumerate(value):
        if out.full:
            out.add(", …")
            break
        if i:
            out.add(", ")
        _emit(item, _sub(sensitive, i), _sub(unknown, i), masker, out)
    out.add("]")


def _keys(*objects: Any) -> list[str]:
    seen: dict[str, None] = {}
    for obj in objects:
        if isinstance(obj, dict):
            seen.update(dict.fromkeys(obj))
    return list(seen)


def _key_text(key: str) -> str:
    return key if _IDENTIFIER.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _sub(mark: Any, key: str | int) -> Any:
    """The part of a sensitivity/unknown mirror that belongs to ``key``."""
    if isinstance(mark, dict) and isinstance(key, str):
        return mark.get(key)
    if isinstance(mark, list) and isinstance(key, int) and key < len(mark):
        return mark[key]
    return None


# ----------------------------------------------------------------- attribute changes


@dataclass(frozen=True, slots=True)
class _AttrChange:
    path: tuple[str | int, ...]
    old: str
    new: str
    forces_replacement: bool = False


def _attribute_changes(rc: ResourceChange, masker: _Masker) -> list[_AttrChange]:
    """Leaf-level differences between before and after, masked, for updates and replaces."""
    found: list[_AttrChange] = []
    _diff(
        rc.before,
        rc.after,
        rc.after_unknown,
        rc.before_sensitive,
        rc.after_sensitive,
        (),
        masker,
        found,
    )
    if not rc.replace_paths:
        return found
    forced = [tuple(p) for p in rc.replace_paths]
    return [
        _AttrChange(c.path, c.old, c.new, any(c.path[: len(p)] == p for p in forced)) for c in found
    ]


def _diff(
    before: Any,
    after: Any,
    unknown: Any,
    b_sens: Any,
    a_sens: Any,
    path: tuple[str | int, ...],
    masker: _Masker,
    found: list[_AttrChange],
) -> None:
    if b_sens is True or a_sens is True or unknown is True:
        if unknown is True or _differs(before, after):
            old = _format_value(before, b_sens, None, masker)
            found.append(_AttrChange(path, old, _format_value(after, a_sens, unknown, masker)))
        return
    if isinstance(before, dict) and isinstance(after, dict):
        for key in _keys(before, after, unknown):
            args = (before.get(key), after.get(key), _sub(unknown, key))
            _diff(*args, _sub(b_sens, key), _sub(a_sens, key), (*path, key), masker, found)
    elif isinstance(before, list) and isinstance(after, list):
        for i in range(max(len(before), len(after))):
            args = (_at(before, i), _at(after, i), _sub(unknown, i))
            _diff(*args, _sub(b_sens, i), _sub(a_sens, i), (*path, i), masker, found)
    elif _differs(before, after) or _any_true(unknown):
        old = _format_value(before, b_sens, None, masker)
        found.append(_AttrChange(path, old, _format_value(after, a_sens, unknown, masker)))


def _any_true(mark: Any) -> bool:
    """True when a mirror (unknown or sensitive marks) has a ``true`` leaf anywhere."""
    if isinstance(mark, dict):
        return any(_any_true(m) for m in mark.values())
    if isinstance(mark, list):
        return any(_any_true(m) for m in mark)
    return mark is True


def _differs(before: Any, after: Any) -> bool:
    # `1 == True` in Python, but not in the plan.
    return before != after or type(before) is not type(after)


def _at(items: list[Any], i: int) -> Any:
    return items[i] if i < len(items) else None


def _path_text(path: Sequence[str | int]) -> str:
    parts: list[str] = []
    for step in path:
        if isinstance(step, int):
            parts.append(f"[{step}]")
        elif _IDENTIFIER.fullmatch(step):
            parts.append(f".{step}" if parts else step)
        else:
            parts.append(f"[{json.dumps(step, ensure_ascii=False)}]")
    return "".join(parts) or "(whole object)"


# Public names for the drift report and the console, which show values the way plans do.
any_marked = _any_true
Masker = _Masker
attribute_changes = _attribute_changes
format_value = _format_value
path_text = _path_text
