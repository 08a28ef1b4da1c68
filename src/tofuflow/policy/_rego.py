"""The one module that talks to regopy (rego-cpp): compile, pass the input, query.

    rules = query_rules(modules, ["tofuflow.library.protected"], input_doc)
    rules["tofuflow.library.protected"]["require_approval"]   # [value] or [] when undefined

Two things here go below regopy's Python surface, for correctness and for speed on a
10,000-resource plan; both are pinned by tests (regopy 1.5.x):

- the input is built through rego-cpp's C input API (``regoInputString`` & co.) directly:
  ``regopy.Input`` passes strings unescaped, which rego-cpp 1.5 mishandles (see
  ``_escaped``), and costs about 1.5 times as much; the JSON and term parsers
  (``regoSetInputJSON``, ``set_input_term``) take ~1.6 s for a 1.7 MB input;
- queries read the raw output, because ``regopy.Output`` raises a bare JSON error when
  rego-cpp reports some errors (unknown function, recursion) as text.

Every call builds a fresh interpreter: nothing native is shared between threads, and
compiling the few modules costs milliseconds.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tofuflow.errors import ConfigError, DocumentError
from tofuflow.policy._rules import RuleHead, rule_heads

__all__ = ["DECISION_RULES", "RegoModule", "query_rules"]

DECISION_RULES = ("deny", "warn", "require_approval", "auto_approve")

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

_ERROR_START = re.compile(r"\(error(?=\s)")
# `6:a.rego|55|1` after an error's start (compile) or an AST node's type (evaluation).
_ERROR_LOCATION = re.compile(r"(?:\A\s*|\(rego-[\w-]+ )\d+:(?P<name>[^|\n]*)\|(?P<offset>\d+)\|\d+")
_ERROR_MESSAGE = re.compile(r"\(errormsg \d+:(?P<message>.*)\)$", re.MULTILINE)
# The token a location-less message is about, e.g. "Function not found: foo.bar".
_ERROR_SUBJECT = re.compile(r": (?:data\.)?(?P<subject>[\w.]+)$")


@dataclass(frozen=True)
class RegoModule:
    """A module to compile.

    ``name`` identifies it (and goes into the policy digest), ``origin`` is where it came
    from for error messages (a file path), ``package`` is its Rego package path.
    """

    name: str
    package: str
    source: str
    origin: str = ""
    builtin: bool = False

    @property
    def where(self) -> str:
        """How error messages name the module."""
        return self.origin or self.name


def query_rules(
    modules: Sequence[RegoModule], packages: Sequence[str], doc: Mapping[str, Any]
) -> dict[str, dict[str, list[Any]]]:
    """Each package's decision rules: ``{package: {rule: [value] or []}}``.

    Raises ConfigError naming the file (when rego-cpp says which) for compile or
    evaluation errors, DocumentError when ``doc`` holds a value Rego cannot.
    """
    interpreter = _interpreter(modules)
    interpreter.set_input(_input(doc))
    result = _query(interpreter, _decision_query(packages), modules)
    if not isinstance(result, dict):
        raise ConfigError(
            "the policies returned no decision: check them with `tofuflow policy test`"
        )
    return result


def _regopy(module: str = "regopy") -> Any:
    """``regopy`` (or one of its modules), imported on first use: it loads a native library."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            "policy evaluation needs regopy (rego-cpp): install it with `pip install regopy`"
        ) from exc


def _interpreter(modules: Sequence[RegoModule]) -> Any:
    """A fresh regopy.Interpreter with ``modules`` added (regopy has no type hints)."""
    regopy = _regopy()
    interpreter = regopy.Interpreter()
    # Errors come back to us as values; rego-cpp would also print them to stdout.
    interpreter.log_level = regopy.LogLevel.NONE
    # A built-in that fails (1/0, sprintf on a wrong type) must fail the check, not quietly
    # leave a deny rule undefined, which would let the change through.
    interpreter.strict_built_in_errors = True
    for module in modules:
        try:
            interpreter.add_module(module.name, module.source)
        except regopy.RegoError as exc:
            raise ConfigError(_error_text(str(exc), modules, module.name)) from None
    return interpreter


def _decision_query(packages: Sequence[str]) -> str:
    # A comprehension is empty, never undefined, when a package lacks a rule.
    per_package = (
        f'"{package}": {{'
        + ", ".join(f'"{rule}": [v | v := data.{package}.{rule}]' for rule in DECISION_RULES)
        + "}"
        for package in packages
    )
    return "x := {" + ", ".join(per_package) + "}"


def _query(interpreter: Any, query: str, modules: Sequence[RegoModule]) -> Any:
    failed, text = _run(interpreter, query, modules)
    if failed:
        blame = functools.partial(_failing_rules, interpreter, modules)
        raise ConfigError(_error_text(text, modules, blame=blame))
    if text == "undefined":
        return None
    return json.loads(text)["bindings"]["x"]


def _run(interpreter: Any, query: str, modules: Sequence[RegoModule]) -> tuple[bool, str]:
    """``(failed, text)``: the query's output, or its errors when it failed."""
    native = _regopy("regopy.rego_shared")
    try:
        output = native.rego_query(interpreter._impl, query)
    except native.RegoError as exc:
        raise ConfigError(_error_text(str(exc), modules)) from None
    try:
        ok = native.rego_output_ok(output)
        text = native.rego_output_string(output)
        if not ok or text.startswith("(error"):
            return True, _errors_of(native, output, text)
        return False, text
    finally:
        native.rego_free_output(output)


def _errors_of(native: Any, output: Any, text: str) -> str:
    # A failed output is an error sequence whose text form is just "<error>"; its children
    # carry the messages.
    if text.startswith("(error"):
        return text
    node = native.rego_output_node(output)
    size = native.rego_node_size(node)
    return "\n".join(native.rego_node_json(native.rego_node_get(node, i)) for i in range(size))


def _error_text(
    raw: str,
    modules: Sequence[RegoModule],
    name: str | None = None,
    blame: Callable[[str], list[_Rule]] | None = None,
) -> str:
    """rego-cpp's s-expression errors as ``file:line:col: message`` lines plus the fix.

    ``name`` is the module being added (a compile error is in it); ``blame`` finds the
    rules an error without a location came from.
    """
    by_name = {m.name: m for m in modules}
    added = by_name.get(name or "")
    lines = []
    for message, where in _parsed(raw, by_name):
        if where is None and added is None and blame is not None:
            lines += _blamed(message, blame(message)) or [
                f"{_suspects(message, modules)}: {message}"
            ]
        else:
            lines.append(f"{where or _suspects(message, modules, added)}: {message}")
    return "policy error:\n  " + "\n  ".join(lines) + "\nFix the policy and load it again."


def _parsed(raw: str, by_name: Mapping[str, RegoModule]) -> list[tuple[str, str | None]]:
    """Each error's message and ``file:line:col``, when rego-cpp located it in a module.

    A compile error carries its location; an evaluation error at most the location of the
    AST node it failed on (a literal operand, never a value from the input).
    """
    errors: list[tuple[str, str | None]] = []
    for block in _ERROR_START.split(raw):
        message = _ERROR_MESSAGE.search(block)
        if message is not None:
            locations = (_location(m, by_name) for m in _ERROR_LOCATION.finditer(block))
            errors.append((message.group("message"), next(filter(None, locations), None)))
    return errors or [(raw.strip(), None)]


def _location(match: re.Match[str], by_name: Mapping[str, RegoModule]) -> str | None:
    module = by_name.get(match.group("name"))
    if module is None:
        return None
    offset = int(match.group("offset"))
    # rego-cpp counts bytes; editors count lines and characters.
    before = module.source.encode()[:offset].decode(errors="replace")
    line = before.count("\n") + 1
    column = len(before) - (before.rfind("\n") + 1) + 1
    return f"{module.where}:{line}:{column}"


def _suspects(message: str, modules: Sequence[RegoModule], added: RegoModule | None = None) -> str:
    """The modules a location-less error is probably about, most specific first."""
    if added is not None:
        return added.where
    subject = _ERROR_SUBJECT.search(message)
    token = subject.group("subject") if subject else None
    mentioned = [
        m for m in modules if token and (token in m.source or token.startswith(m.package + "."))
    ]
    # The built-ins are tested; a user's module is the likelier culprit.
    suspects = mentioned or [m for m in modules if not m.builtin] or list(modules)
    return ", ".join(m.where for m in suspects) or "policies"


# ------------------------------------------------------------------ blame


@dataclass(frozen=True)
class _Rule:
    """A rule by its definitions: ``(module, head)`` each, in load order."""

    name: str
    definitions: tuple[tuple[RegoModule, RuleHead], ...]

    def uses(self, other: _Rule) -> bool:
        word = re.compile(rf"\b{re.escape(other.name)}\b")
        return any(word.search(head.body) for _, head in self.definitions)


def _failing_rules(interpreter: Any, modules: Sequence[RegoModule], message: str) -> list[_Rule]:
    """The rules that fail with ``message`` on their own, less those that fail only by
    using another of them: rego-cpp gives no location for some evaluation errors (a
    division by zero, a rule with conflicting values), so the rule is the closest place.

    User modules are tried first (the built-ins are tested), one query per rule.
    """
    for group in ([m for m in modules if not m.builtin], [m for m in modules if m.builtin]):
        failing = [
            rule
            for (package, name), rule in _rules_of(group).items()
            if _fails_with(interpreter, modules, f"x := data.{package}.{name}", message)
        ]
        if failing:
            deepest = [r for r in failing if not any(r.uses(o) for o in failing if o is not r)]
            return deepest or failing
    return []


def _rules_of(modules: Sequence[RegoModule]) -> dict[tuple[str, str], _Rule]:
    """``{(package, name): rule}``: a package's rules may be defined in several files."""
    rules: dict[tuple[str, str], list[tuple[RegoModule, RuleHead]]] = {}
    for module in modules:
        for head in rule_heads(module.source):
            rules.setdefault((module.package, head.name), []).append((module, head))
    return {key: _Rule(key[1], tuple(defs)) for key, defs in rules.items()}


def _fails_with(interpreter: Any, modules: Sequence[RegoModule], query: str, message: str) -> bool:
    try:
        failed, text = _run(interpreter, query, modules)
    except ConfigError:
        return False
    return failed and message in _ERROR_MESSAGE.findall(text)


def _blamed(message: str, rules: Sequence[_Rule]) -> list[str]:
    """``file:line: message (in rule …)`` per rule, at its first definition."""
    lines = []
    for rule in rules:
        (module, head), *others = rule.definitions
        also = ", ".join(f"{m.where}:{h.line}" for m, h in others)
        lines.append(
            f"{module.where}:{head.line}: {message} (in rule {rule.name}"
            f"{f', also defined at {also}' if also else ''}; rego-cpp reports no line or "
            "column for this error)"
        )
    return lines


# ------------------------------------------------------------------ input


def _input(doc: Mapping[str, Any]) -> Any:
    """``doc`` as a regopy.Input, built through the C API."""
    regopy = _regopy()
    try:
        builder = _native_builder()
    except (AttributeError, OSError) as exc:  # pragma: no cover - a regopy we do not know
        raise ConfigError(
            f"this regopy ({getattr(regopy, '__version__', '?')}) lacks rego-cpp's C input "
            "API; install regopy 1.5.x"
        ) from exc
    handle = builder(doc)
    value = regopy.Input.__new__(regopy.Input)
    value._impl = handle  # regopy.Input frees it when collected
    return value


@functools.cache
def _native_builder() -> Callable[[Any], int]:
    """``build(doc) -> handle`` of a new C input holding ``doc`` (typed once per process)."""
    native = _regopy("regopy.rego_shared")
    # Our own handle on the same library, so regopy's prototypes are never changed.
    lib = ctypes.CDLL(native.rego._name)
    new_input = _proto(lib.regoNewInput, [], ctypes.c_void_p)
    validate = _proto(lib.regoInputValidate, [ctypes.c_void_p], ctypes.c_uint32)
    free_input = _proto(lib.regoFreeInput, [ctypes.c_void_p], None)
    functions = _Functions(lib)

    def build(doc: Any) -> int:
        handle = new_input()
        try:
            _Push(functions, ctypes.c_void_p(handle)).value(doc)
            # A failed push poisons the input; one check at the end catches any of them.
            status = validate(handle)
            if status:
                raise DocumentError(f"rego-cpp refused the policy input (code {status})")
        except BaseException:
            free_input(handle)
            raise
        return int(handle)

    return build


def _proto(fn: Any, args: list[Any], result: Any) -> Any:
    fn.argtypes, fn.restype = args, result
    return fn


class _Functions:
    """rego-cpp's C input functions, typed once; each pushes onto an input's value stack."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        p, status = ctypes.c_void_p, ctypes.c_uint32
        self.string = _proto(lib.regoInputString, [p, ctypes.c_char_p], status)
        self.int = _proto(lib.regoInputInt, [p, ctypes.c_int64], status)
        self.float = _proto(lib.regoInputFloat, [p, ctypes.c_double], status)
        self.bool = _proto(lib.regoInputBoolean, [p, ctypes.c_bool], status)
        self.null = _proto(lib.regoInputNull, [p], status)
        self.item = _proto(lib.regoInputObjectItem, [p], status)
        self.object = _proto(lib.regoInputObject, [p, ctypes.c_uint32], status)
        self.array = _proto(lib.regoInputArray, [p, ctypes.c_uint32], status)


class _Push:
    """Pushes one JSON value onto a C input, children before their parent.

    This is the hot loop of a 10,000-resource input (about 230,000 pushes): dispatch on the
    exact type, and strings inside objects (most of them) skip a level of calls.
    """

    def __init__(self, functions: _Functions, handle: ctypes.c_void_p) -> None:
        self.f = functions
        self.handle = handle
        # Keys, types, modules and actions repeat thousands of times: encode each once.
        self.strings: dict[str, bytes] = {}

    def value(self, value: Any) -> None:
        """Push ``value``; DocumentError for anything JSON cannot hold."""
        f, handle, kind = self.f, self.handle, type(value)
        if kind is str:
            f.string(handle, self.text(value))
        elif kind is dict:
            self.items(value)
        elif kind is list or kind is tuple:
            for item in value:
                self.value(item)
            f.array(handle, len(value))
        elif kind is bool:
            f.bool(handle, value)
        elif kind is int:
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise DocumentError(f"policy input holds {value}, beyond what Rego numbers hold")
            f.int(handle, value)
        elif kind is float:
            f.float(handle, value)
        elif value is None:
            f.null(handle)
        elif isinstance(value, Mapping):
            self.items(dict(value))
        else:
            raise DocumentError(f"policy input holds a {kind.__name__}: only JSON values fit")

    def items(self, value: dict[Any, Any]) -> None:
        """Push an object's items, then the object."""
        string, item, handle = self.f.string, self.f.item, self.handle
        known, text, push = self.strings.get, self.text, self.value
        for key, child in value.items():
            string(handle, known(key) or text(key))
            if type(child) is str:
                string(handle, known(child) or text(child))
            else:
                push(child)
            item(handle)
        self.f.object(handle, len(value))

    def text(self, value: Any) -> bytes:
        encoded = self.strings.get(value)
        if encoded is None:
            encoded = self.strings[value] = _escaped(value)
        return encoded


def _escaped(text: Any) -> bytes:
    """``text`` as rego-cpp keeps strings: JSON-escaped, without the quotes.

    rego-cpp stores a string as the escaped text of its literal; a raw ``"`` or ``\\``
    breaks comparisons with literals and the JSON of every result that contains it
    (regopy.Input passes raw text and has exactly that bug). Escaping also turns a NUL,
    which the C API would cut the string at, into ``\\u0000``.
    """
    if type(text) is not str:
        raise DocumentError(f"policy input has a non-string object key {text!r}: keys are strings")
    if '"' in text or "\\" in text or not text.isprintable():
        return json.dumps(text, ensure_ascii=False)[1:-1].encode()
    return text.encode()
