"""Lazy package exports (PEP 562), so `import tofuflow` and `tofuflow --help` stay fast."""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's, nor importlib at the top: see tofuflow/__init__.py
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return ``__getattr__`` and ``__dir__`` for ``package``.

    __getattr__, __dir__ = lazy_exports(__name__, {"Tofu": "tofuflow.tofu._tofu"})
    """

    def __getattr__(name: str) -> Any:
        import importlib

        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals_ = importlib.import_module(package).__dict__
        globals_[name] = value  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
