"""Lazy package exports: a package lists ``name -> submodule`` and imports the submodule on first access.

Keeps ``import detlight`` and ``import detlight.callbacks`` cheap (no torch, lightning or torchmetrics until a name is
used) while ``class_path: detlight.callbacks.LrUpdater`` still resolves.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str], namespace: dict[str, Any]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``; ``exports`` maps a public name to its module (relative or absolute).

    A resolved name is cached in ``namespace`` (the package's globals), so each import happens once.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        target = module if "." in module and module.startswith("detlight") else f"{package}.{module}"
        value = getattr(importlib.import_module(target), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
