"""Old import paths of moved modules and classes: one table, consulted wherever Python or a YAML ``class_path`` names them.

Replaces the re-export modules that used to stand at the old paths (``detlight/workflow.py``,
``detlight/callbacks/misc.py``, ``detlight/compat/hooks.py``, the converter modules once under ``detlight/compat/``),
so the source tree shows each class in its one real home. An old path keeps working, with a ``FutureWarning`` (shown
by default) that names the path to write instead:

- ``import detlight.workflow`` / ``class_path: detlight.workflow.Workflow`` in a YAML: a finder on
  ``sys.meta_path`` (after the path finder, so it never shadows a real module) serves an old module whose names resolve
  through :data:`ALIASES`. jsonargparse (LightningCLI's YAML loader), :func:`detlight.compat.hook_registry.build_hook`
  and plain imports all go through it (a printed or saved config keeps the path as written).
- ``detlight.compat.convert_file``: an old name on a package that still exists is looked up here by the package's
  lazy ``__getattr__`` (:mod:`detlight._lazy`).

Limits: only the names listed resolve (a private helper of an old module does not); ``isinstance`` and pickling see
the real class, so nothing else differs.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from typing import Any, cast

__all__ = ["ALIASES", "install_alias_finder", "resolve_alias"]

_CALLBACKS = "detlight.callbacks"
_HOOKS = "detlight.compat"

#: ``old dotted path -> new dotted path``. A key naming an old *module* maps every name of it to the new module;
#: a key naming one *object* (``old_module.Name`` or ``package.name``) maps that name alone. Keep sorted by key.
ALIASES: dict[str, str] = {
    "detlight.callbacks.misc.CheckInvalidLoss": f"{_CALLBACKS}.check_invalid_loss.CheckInvalidLoss",
    "detlight.callbacks.misc.DEFAULT_NUM_CLASS_EXCLUDE": f"{_CALLBACKS}.num_class_check.DEFAULT_NUM_CLASS_EXCLUDE",
    "detlight.callbacks.misc.EmptyCache": f"{_CALLBACKS}.empty_cache.EmptyCache",
    "detlight.callbacks.misc.NumClassCheck": f"{_CALLBACKS}.num_class_check.NumClassCheck",
    "detlight.callbacks.misc.SetEpochInfo": f"{_CALLBACKS}.set_epoch_info.SetEpochInfo",
    "detlight.callbacks.misc.SyncBuffers": f"{_CALLBACKS}.sync_buffers.SyncBuffers",
    "detlight.callbacks.misc.allreduce_buffers": f"{_CALLBACKS}.sync_buffers.allreduce_buffers",
    "detlight.callbacks.misc.check_num_classes": f"{_CALLBACKS}.num_class_check.check_num_classes",
    "detlight.cli._convert_py_configs": "detlight.convert.entry.convert_py_configs",
    "detlight.compat._convert_parts": "detlight.convert.sections",
    "detlight.compat.base_ref": "detlight.convert.base_ref",
    "detlight.compat.cli": "detlight.convert.cli",
    "detlight.compat.config": "detlight.convert.config",
    "detlight.compat.convert": "detlight.convert.entry",
    "detlight.compat.convert_config": "detlight.convert.converter.convert_config",
    "detlight.compat.convert_file": "detlight.convert.entry.convert_file",
    "detlight.compat.convert_py_configs": "detlight.convert.entry.convert_py_configs",
    "detlight.compat.convert_targets": "detlight.convert.targets",
    "detlight.compat.converter": "detlight.convert.converter",
    "detlight.compat.hooks.DIRECT_STAGES": f"{_HOOKS}.hook_base.DIRECT_STAGES",
    "detlight.compat.hooks.FALLBACKS": f"{_HOOKS}.hook_base.FALLBACKS",
    "detlight.compat.hooks.Hook": f"{_HOOKS}.hook_base.Hook",
    "detlight.compat.hooks.HookMapping": f"{_HOOKS}.hook_table.HookMapping",
    "detlight.compat.hooks.HookSpec": f"{_HOOKS}.hook_registry.HookSpec",
    "detlight.compat.hooks.MMCVHooks": f"{_CALLBACKS}.mmcv_hooks.MMCVHooks",
    "detlight.compat.hooks.PRIORITIES": f"{_HOOKS}.hook_base.PRIORITIES",
    "detlight.compat.hooks.Priority": f"{_HOOKS}.hook_base.Priority",
    "detlight.compat.hooks.STAGES": f"{_HOOKS}.hook_base.STAGES",
    "detlight.compat.hooks.build_hook": f"{_HOOKS}.hook_registry.build_hook",
    "detlight.compat.hooks.check_hook": f"{_HOOKS}.hook_registry.check_hook",
    "detlight.compat.hooks.get_priority": f"{_HOOKS}.hook_base.get_priority",
    "detlight.compat.hooks.lookup_standard_hook": f"{_HOOKS}.hook_table.lookup_standard_hook",
    "detlight.compat.hooks.register_hook": f"{_HOOKS}.hook_registry.register_hook",
    "detlight.compat.hooks.registered_hooks": f"{_HOOKS}.hook_registry.registered_hooks",
    "detlight.compat.hooks.standard_hook_table": f"{_HOOKS}.hook_table.standard_hook_table",
    "detlight.compat.load_config": "detlight.convert.config.load_config",
    "detlight.compat.model_map": "detlight.convert.model_map",
    "detlight.compat.report": "detlight.convert.report",
    "detlight.compat.safe_builtins": "detlight.convert.safe_builtins",
    "detlight.compat.safe_eval": "detlight.convert.safe_eval",
    "detlight.compat.unmapped_data": "detlight.convert.unmapped_data",
    "detlight.compat.unmapped_detector": "detlight.convert.unmapped_detector",
    "detlight.workflow": "detlight.callbacks.workflow",
}

_MISSING = object()
_warned: set[str] = set()


def _import_target(target: str) -> Any:
    """The module or object ``target`` names (``pkg.module`` or ``pkg.module.Name``)."""
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as err:
        if err.name != target:
            raise
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _warn(old: str, new: str) -> None:
    if old not in _warned:
        _warned.add(old)
        warnings.warn(f"`{old}` is an old path of `{new}`; it still works but will be removed: write `{new}`",
                      FutureWarning, stacklevel=4)


def resolve_alias(old: str) -> Any:
    """The object an old dotted path names now (with a ``FutureWarning`` once per path), or ``_MISSING``.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     resolve_alias("detlight.workflow.Workflow").__module__
        'detlight.callbacks.workflow'
    """
    if old in ALIASES:
        _warn(old, ALIASES[old])
        return _import_target(ALIASES[old])
    module, _, name = old.rpartition(".")
    if module in ALIASES:
        new = f"{ALIASES[module]}.{name}"
        target = importlib.import_module(ALIASES[module])
        if hasattr(target, name):
            _warn(old, new)
            return getattr(target, name)
    return _MISSING


def _is_old_module(name: str) -> bool:
    """Whether ``name`` is an old module: a prefix of an object key, or a key whose new home is a module."""
    if any(key.startswith(name + ".") for key in ALIASES):
        return True
    target = ALIASES.get(name)
    if target is None:
        return False
    try:
        return importlib.util.find_spec(target) is not None
    except ModuleNotFoundError:
        return False


class _AliasModule(types.ModuleType):
    """An old module: each name it is asked for is looked up in :data:`ALIASES`."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = resolve_alias(f"{self.__name__}.{name}")
        if value is _MISSING:
            new = ALIASES.get(self.__name__)
            hint = f"; its names now live in `{new}`" if new else ""
            raise AttributeError(f"module {self.__name__!r} (an old path) has no attribute {name!r}{hint}")
        return value

    def __dir__(self) -> list[str]:
        prefix = self.__name__ + "."
        names = {k[len(prefix):] for k in ALIASES if k.startswith(prefix)}
        if self.__name__ in ALIASES:
            names.update(n for n in dir(importlib.import_module(ALIASES[self.__name__])) if not n.startswith("__"))
        return sorted(names)


class _AliasFinder:
    """Serves the old modules of :data:`ALIASES`; placed after the path finder, so every real module wins.

    A meta-path finder and loader by protocol (``find_spec`` / ``create_module`` / ``exec_module``): subclassing
    ``importlib.abc``'s bases would import ``importlib.resources`` and ``tempfile`` at every ``import detlight``.
    """

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("detlight.") or not _is_old_module(fullname):
            return None
        return importlib.machinery.ModuleSpec(fullname, cast(Any, self), is_package=False)  # a loader by protocol

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _AliasModule(spec.name, "An old path; its names resolve through detlight._aliases.ALIASES.")

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to run: names resolve on access."""


def install_alias_finder() -> None:
    """Put the old-path finder on ``sys.meta_path`` once (``import detlight`` does this), right after the path finder.

    After it, so a real module always wins; before finders added later (an editable install's), which could serve an
    old file of another checkout.
    """
    if any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        return
    position = next((i + 1 for i, f in enumerate(sys.meta_path) if f is importlib.machinery.PathFinder),
                    len(sys.meta_path))
    sys.meta_path.insert(position, _AliasFinder())
