"""Lazy package exports: a package lists ``name -> submodule`` and imports the submodule on first access.

Keeps ``import detlight`` and ``import detlight.callbacks`` cheap (no torch, lightning or torchmetrics until a name is
used) while ``class_path: detlight.callbacks.LrUpdater`` still resolves.

Each package ``__init__`` keeps three sorted lists of the same names, one name per line: the ``_EXPORTS`` table read
at run time, explicit imports under ``if TYPE_CHECKING:`` for type checkers and IDEs, and ``__all__``.
``tests/test_public_api.py`` checks that the three agree and that each name resolves to an object of the module the
table names.
A name that is not in ``_EXPORTS`` is looked up in :data:`detlight._aliases.ALIASES` (old paths of moved names).
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def _target(package: str, module: str) -> str:
    """The absolute module name of an ``_EXPORTS`` value (absolute ``detlight...`` or relative to ``package``)."""
    return module if module.startswith("detlight.") else f"{package}.{module}"


class _LazyPackage(types.ModuleType):
    """A package whose exported name may equal a submodule's name (``detlight.data.collate``, the function in
    ``detlight/data/collate.py``).

    Importing a submodule binds it on its package; without this class, the first import of the submodule would
    replace the exported function with the module object.
    """

    _lazy_exports: Mapping[str, str]

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and name in self._lazy_exports \
                and value.__name__ == _target(self.__name__, self._lazy_exports[name]) and hasattr(value, name):
            value = getattr(value, name)
        super().__setattr__(name, value)


def lazy_exports(package: str, exports: Mapping[str, str], namespace: dict[str, Any]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``; ``exports`` maps a public name to its module (relative or absolute).

    A resolved name is cached in ``namespace`` (the package's globals), so each import happens once.
    """
    module_object = sys.modules.get(package)
    if module_object is not None and type(module_object) is types.ModuleType:
        module_object.__class__ = _LazyPackage
    if isinstance(module_object, _LazyPackage):
        module_object._lazy_exports = exports

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            from detlight._aliases import _MISSING, resolve_alias  # an old name of something that moved

            value = resolve_alias(f"{package}.{name}")
            if value is _MISSING:
                raise AttributeError(f"module {package!r} has no attribute {name!r}")
            return value
        value = getattr(importlib.import_module(_target(package, module)), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
