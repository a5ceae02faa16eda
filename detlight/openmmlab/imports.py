"""A config's ``custom_imports`` and the errors of OpenMMLab's registries, with detlight's messages.

Replaces: mmcv's ``import_modules_from_strings`` as ``tools/train.py`` calls it for ``custom_imports`` (each module
imported once, in order; which ones is logged) and the bare ``KeyError: 'X is not in the models registry'`` of
``build_from_cfg``, which gets the ``custom_imports`` hint. Imports neither torch nor mmcv.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from detlight.exceptions import ConfigError

__all__ = ["CustomImportError", "custom_import_names", "import_custom_modules", "registry_errors"]

log = logging.getLogger(__name__)

_NOT_IN_REGISTRY = re.compile(r"(\S+) is not in the (\S+) registry")


class CustomImportError(ConfigError):
    """A module listed in ``custom_imports`` failed to import (the message names it and its own error)."""


def custom_import_names(custom_imports: Mapping[str, Any] | Sequence[str] | str | None) -> tuple[list[str], bool]:
    """``custom_imports`` as mmcv writes it (``dict(imports=[...], allow_failed_imports=False)``), a list or one name.

    Returns:
        The module names and ``allow_failed_imports``.

    Raises:
        ConfigError: the value has another shape or a name is not a string.

    Example:
        >>> custom_import_names(dict(imports=["my_pkg.heads"], allow_failed_imports=True))
        (['my_pkg.heads'], True)
        >>> custom_import_names("my_pkg")
        (['my_pkg'], False)
    """
    if custom_imports is None:
        return [], False
    allow = False
    names: Any = custom_imports
    if isinstance(custom_imports, Mapping):
        unknown = set(custom_imports) - {"imports", "allow_failed_imports"}
        if unknown:
            raise ConfigError(f"`custom_imports` has unknown key(s) {sorted(unknown)}; accepted: imports, "
                              "allow_failed_imports")
        names, allow = custom_imports.get("imports", []), bool(custom_imports.get("allow_failed_imports", False))
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"`custom_imports.imports` must be a list of module names, got {names!r}")
    return list(names), allow


def import_custom_modules(custom_imports: Mapping[str, Any] | Sequence[str] | str | None) -> list[str]:
    """Import the modules of ``custom_imports`` (their imports register types); log and return the imported names.

    Raises:
        CustomImportError: a module failed to import (unless ``allow_failed_imports``, which logs a warning, as
            mmcv does); the message names the module and its own error.
    """
    names, allow = custom_import_names(custom_imports)
    imported = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - any error of the user's module is reported with its name
            first = str(err).splitlines()[0] if str(err) else ""
            if allow:
                log.warning("custom_imports: %s failed to import and is skipped (allow_failed_imports=True): %s: %s",
                            name, type(err).__name__, first)
                continue
            raise CustomImportError(f"custom_imports: importing `{name}` failed: {type(err).__name__}: {first}. "
                                    "Fix the module or its PYTHONPATH, or remove it from `custom_imports`") from err
        imported.append(name)
    if imported:
        log.info("custom_imports: imported %s", ", ".join(imported))
    return imported


@contextlib.contextmanager
def registry_errors(what: str, custom_imports: Mapping[str, Any] | Sequence[str] | str | None = None) -> Iterator[None]:
    """Re-raise a registry ``KeyError`` from building ``what`` as a :class:`ConfigError` with the custom_imports hint.

    mmcv's ``build_from_cfg`` raises ``KeyError('X is not in the models registry')``, prefixed by each enclosing
    type's name when nested; the message is kept and the hint says how to register ``X``.
    """
    try:
        yield
    except KeyError as err:
        text = str(err.args[0]) if err.args else str(err)
        match = _NOT_IN_REGISTRY.search(text)
        if match is None:
            raise
        names, _ = custom_import_names(custom_imports)
        listed = f" (now: {names})" if names else ""
        raise ConfigError(
            f"{what}: {text}. If `{match.group(1)}` is your own class, decorate it with "
            f"@{match.group(2).upper()}.register_module() and list its module in the config's `custom_imports = "
            f"dict(imports=['my_pkg.my_module'])`{listed}; otherwise check the spelling of `type`") from None
