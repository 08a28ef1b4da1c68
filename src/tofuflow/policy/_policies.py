"""A set of Rego policies: the built-in library plus the user's own files.

    policies = PolicySet.load(Path("/etc/tofuflow/policies"))   # built-ins included
    policies.digest      # 'sha256:…', recorded with every decision
    policies.packages    # ('tofuflow.library.allowed', …, 'acme.tags')

Loading compiles every module and evaluates it once on an empty plan, so a syntax error
(or a rule that cannot run at all) fails at start-up with a ConfigError naming the file,
not at the first plan.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path

from tofuflow.errors import ConfigError
from tofuflow.policy._decision import empty_input, evaluate
from tofuflow.policy._rego import DECISION_RULES, RegoModule
from tofuflow.policy._rules import rule_heads, without_comments

__all__ = ["BUILTIN_PREFIX", "PolicySet"]

#: Packages of the built-in library; user policies cannot add to them.
BUILTIN_PREFIX = "tofuflow.library"
_BUILTIN_NAME = "builtin:{}"
_PACKAGE = re.compile(r"^[ \t]*package[ \t]+(?P<path>\S+)", re.MULTILINE)
_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
_INPUT_PATH = re.compile(r"(?<![\w.])input((?:\.[A-Za-z_]\w*)+)")
_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"|`[^`]*`')


@dataclass(frozen=True)
class PolicySet:
    """Compiled-and-checked Rego modules; build it with ``load`` or ``from_sources``."""

    modules: tuple[RegoModule, ...]

    @classmethod
    def load(cls, directory: Path | None, *, builtin: bool = True) -> PolicySet:
        """The built-in library (unless ``builtin=False``) plus every ``*.rego`` under
        ``directory`` (recursively, ``*_test.rego`` skipped: those are ``opa test`` files).

        PolicySet.load(None)                       # the built-in library alone
        PolicySet.load(Path("policies"), builtin=False)
        """
        user = _read_directory(directory) if directory else []
        return cls._checked(user, builtin)

    @classmethod
    def from_sources(cls, sources: Mapping[str, str], *, builtin: bool = True) -> PolicySet:
        """Policies kept elsewhere (a database, a test): ``{name: rego source}``.

        PolicySet.from_sources({"tags.rego": 'package acme.tags\\n…'})
        """
        user = [_user_module(name, source) for name, source in sorted(sources.items())]
        return cls._checked(user, builtin)

    @classmethod
    def _checked(cls, user: list[RegoModule], builtin: bool) -> PolicySet:
        policy_set = cls(modules=(*(_builtin_modules() if builtin else ()), *user))
        policy_set.check()
        return policy_set

    @cached_property
    def packages(self) -> tuple[str, ...]:
        """Every package, once, in load order: the decision rules are read from each."""
        return tuple(dict.fromkeys(m.package for m in self.modules))

    @cached_property
    def digest(self) -> str:
        """``sha256:<hex>`` over every module's name and source, so the audit log can say
        exactly which policies decided."""
        sha = hashlib.sha256()
        for module in self.modules:
            for part in (module.name.encode(), module.source.encode()):
                sha.update(b"%d:" % len(part))  # length-prefixed: no two sets hash alike
                sha.update(part)
        return f"sha256:{sha.hexdigest()}"

    def check(self) -> None:
        """Compile and decide once on an empty plan; ConfigError naming the file if not."""
        evaluate(self, empty_input())


def _builtin_modules() -> tuple[RegoModule, ...]:
    library = resources.files("tofuflow.policy") / "library"
    files = sorted((f for f in library.iterdir() if f.name.endswith(".rego")), key=lambda f: f.name)
    return tuple(
        _module(_BUILTIN_NAME.format(f.name), f.read_text(encoding="utf-8"), builtin=True)
        for f in files
    )


def _read_directory(directory: Path) -> list[RegoModule]:
    if not directory.is_dir():
        raise ConfigError(
            f"policy directory {directory} does not exist or is not a directory: "
            "point the configuration at a directory of .rego files"
        )
    paths = sorted(
        p for p in directory.rglob("*.rego") if p.is_file() and not p.name.endswith("_test.rego")
    )
    if not paths:
        # A failed mount or a wrong path would leave only the built-ins in force.
        raise ConfigError(
            f"policy directory {directory} holds no policies (no .rego file but *_test.rego "
            "ones, which are opa test files): point the configuration at the directory of "
            "your .rego policies, or leave it unset to use the built-ins alone"
        )
    # Names are relative, so the digest does not change when the directory moves.
    return [
        _user_module(path.relative_to(directory).as_posix(), _read(path), origin=str(path))
        for path in paths
    ]


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read policy file {path}: {exc}") from exc


def _user_module(name: str, source: str, origin: str = "") -> RegoModule:
    module = _module(name, source, origin=origin)
    _check_rule_names(module)
    _check_input_paths(module)
    if module.package == BUILTIN_PREFIX or module.package.startswith(BUILTIN_PREFIX + "."):
        raise ConfigError(
            f"{module.where}: package {module.package} is reserved for tofuflow's built-in "
            "library; use a package of your own (e.g. acme.policies) and configure the "
            "built-ins through workspace settings"
        )
    return module


def _module(name: str, source: str, *, origin: str = "", builtin: bool = False) -> RegoModule:
    where = origin or name
    match = _PACKAGE.search(without_comments(source))
    if match is None:
        raise ConfigError(f"{where}: no package declaration; start the file with `package <name>`")
    package = match.group("path")
    if not _DOTTED.fullmatch(package):
        raise ConfigError(
            f"{where}: package {package} is not a dotted name; tofuflow reads decision rules "
            "from packages like acme.policies"
        )
    return RegoModule(name, package, source, origin=origin, builtin=builtin)


def _check_rule_names(module: RegoModule) -> None:
    """A rule named almost like a decision rule (``denny``) is never read: the run it
    should deny is approved. Refused, with its line."""
    for head in rule_heads(module.source):
        if head.name in DECISION_RULES:
            continue
        # Rego is case-sensitive, so `Deny` is never read either.
        close = difflib.get_close_matches(head.name.lower(), DECISION_RULES, n=1, cutoff=0.8)
        if close:
            raise ConfigError(
                f"{module.where}:{head.line}: rule {head.name} is no decision rule; did you "
                f'mean "{close[0]}"? tofuflow reads only {", ".join(DECISION_RULES)} from a '
                "package, so this rule would never decide anything"
            )


def _check_input_paths(module: RegoModule) -> None:
    """A reference to a field the input does not have (``input.plan.resource_change``)
    is undefined, so the rule reading it never fires: refused, with its line. Only the
    parts of the input tofuflow shapes are checked; below ``input.run`` and
    ``input.workspace.settings`` (empty in ``empty_input``) any name may be yours."""
    shape = empty_input()
    text = _STRING.sub(lambda m: "\n" * m.group().count("\n"), without_comments(module.source))
    for match in _INPUT_PATH.finditer(text):
        node: object = shape
        path = "input"
        for name in match.group(1).split(".")[1:]:
            if not isinstance(node, dict) or not node:
                break  # a list, a value, or a section whose names are not tofuflow's
            if name not in node:
                line = text.count("\n", 0, match.start()) + 1
                close = difflib.get_close_matches(name, list(node), n=1, cutoff=0.6)
                hint = f"; did you mean {path}.{close[0]}?" if close else "."
                raise ConfigError(
                    f"{module.where}:{line}: {path}.{name} is not in the policy input, so a "
                    f"rule reading it is undefined and never fires{hint} {path} has "
                    f"{', '.join(sorted(node))} (docs/policies.md#the-input-document)"
                )
            node, path = node[name], f"{path}.{name}"
