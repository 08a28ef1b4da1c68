"""The options of each command, as small frozen values (terraform-exec's shape).

Each option's name, type and default is declared here once. The argv builders
(``_argv.py``) take these values, and ``Tofu``'s methods take their fields as keyword
arguments, so ``tf.plan(out="p.tfplan", lock=False)`` is ``PlanOptions(out="p.tfplan",
lock=False)`` run::

    plan_argv(PlanOptions(out="plan.tfplan", targets=["module.app"]))

Options that several commands share (locking, targeting, replacement) live in small bases,
so they too are declared once. ``timeout`` is not a flag: it bounds this one call, in
seconds, and overrides the ``Tofu``'s own.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

__all__ = [
    "ApplyOptions",
    "DestroyOptions",
    "InitOptions",
    "PlanOptions",
    "StatePushOptions",
    "keywords_of",
]

_P = ParamSpec("_P")
_O = TypeVar("_O")
_R = TypeVar("_R")
_S = TypeVar("_S")


@dataclass(frozen=True, kw_only=True)
class _Options:
    timeout: float | None = None

    def __post_init__(self) -> None:
        # A value, not a view of the caller's list: later changes to that list do not leak in.
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))


@dataclass(frozen=True, kw_only=True)
class _Locking(_Options):
    lock: bool = True
    lock_timeout: str | None = None


@dataclass(frozen=True, kw_only=True)
class _Targeting(_Locking):
    targets: Sequence[str] = ()
    excludes: Sequence[str] = ()
    var_files: Sequence[str | Path] = ()
    parallelism: int | None = None


@dataclass(frozen=True, kw_only=True)
class _Replacing(_Targeting):
    replace: Sequence[str] = ()


@dataclass(frozen=True, kw_only=True)
class InitOptions(_Options):
    """``init``; ``backend_config`` holds only non-secret settings (credentials go in env)."""

    backend: bool = True
    backend_config: Mapping[str, str] | None = None
    backend_config_files: Sequence[str | Path] = ()
    reconfigure: bool = False
    upgrade: bool = False
    lockfile_readonly: bool = False


@dataclass(frozen=True, kw_only=True)
class PlanOptions(_Replacing):
    """``plan``: ``PlanOptions(out="plan.tfplan", destroy=True)``."""

    out: str | Path | None = None
    destroy: bool = False
    refresh_only: bool = False
    refresh: bool = True


@dataclass(frozen=True, kw_only=True)
class ApplyOptions(_Replacing):
    """``apply`` of ``plan_file`` (the reviewed plan), or a direct apply without one."""

    plan_file: str | Path | None = field(default=None, kw_only=False)


@dataclass(frozen=True, kw_only=True)
class DestroyOptions(_Targeting):
    """``destroy``: like a direct apply, without ``replace``."""


@dataclass(frozen=True, kw_only=True)
class StatePushOptions(_Locking):
    """``state push`` of a state file (a path, or the document's bytes)."""

    state: str | Path | bytes = field(kw_only=False)
    force: bool = False


def keywords_of(
    options_type: Callable[_P, _O],
) -> Callable[[Callable[[_S, _O], _R]], Callable[Concatenate[_S, _P], _R]]:
    """Give a method that takes an options value its fields as arguments instead.

        @keywords_of(PlanOptions)
        def plan(self, options: PlanOptions) -> PlanResult: ...

        tf.plan(out="p.tfplan")  # runs plan(tf, PlanOptions(out="p.tfplan"))

    Type checkers and ``help()`` see ``PlanOptions``' parameters, so each option's name,
    type and default stays declared once, on the options type.
    """

    def decorate(method: Callable[[_S, _O], _R]) -> Callable[Concatenate[_S, _P], _R]:
        @functools.wraps(method)
        def with_keywords(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
            return method(self, options_type(*args, **kwargs))

        own = inspect.signature(method).parameters["self"]
        accepted = inspect.signature(options_type).parameters.values()
        with_keywords.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [own, *accepted], return_annotation=inspect.signature(method).return_annotation
        )
        return with_keywords

    return decorate
