"""Hook ``type`` names and building hooks from config dicts.

Replaces: mmcv's ``HOOKS`` registry and ``build_from_cfg`` as ``BaseRunner.register_hook_from_cfg`` uses them. A
``type`` name resolves through mmcv's own ``HOOKS`` registry when a real mmcv is installed (so classes decorated with
``@HOOKS.register_module()`` are found), then through detlight's registry (:func:`register_hook`, which is also the
``HOOKS`` of :func:`detlight.compat.install_mmcv_shim`), then as an import path. One of mmcv's standard hooks that no
installed registry provides gets the sentence from :mod:`detlight.compat.hook_table` naming its detlight
counterpart.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Mapping
from typing import Any, TypeVar

from detlight.compat.hook_base import DIRECT_STAGES, STAGES, get_priority
from detlight.compat.hook_table import lookup_standard_hook, refusal
from detlight.exceptions import ConfigError, DetLightError, HookError

__all__ = ["HookSpec", "build_hook", "check_hook", "import_hook_module", "real_mmcv_available", "register_hook",
           "registered_hooks", "resolve_hook_type"]

HookSpec = Any  # an mmcv-style hook object, or {type | class_path, priority?, init_args? | **kwargs}

_HookT = TypeVar("_HookT", bound=type)
_REGISTRY: dict[str, type] = {}

_SHIM_HINT = ("the hook file imports mmcv, which is not installed here: pass `mmcv_shim: true` to "
              "detlight.compat.MMCVHooks (or call detlight.compat.install_mmcv_shim() before importing it) to run it "
              "on detlight's dependency-free mmcv.runner surface, or install mmcv 1.x")


def register_hook(cls: _HookT | None = None, *, name: str | None = None, force: bool = False) -> Any:
    """Register an mmcv-style hook class under ``name`` (default: the class name) so ``{type: Name}`` finds it.

    Use as ``@register_hook`` or ``@register_hook(name="Alias")``. A ``class_path`` needs no registration; this is
    for configs written with mmcv's ``type=`` names. The module defining the class must be imported before the
    hooks are built (``class_path`` has no such catch).

    Raises:
        HookError: ``name`` is taken by another class and ``force`` is False.
    """

    def _register(klass: _HookT) -> _HookT:
        key = name or klass.__name__
        existing = _REGISTRY.get(key)
        if existing is not None and existing is not klass and not force:
            raise HookError(f"Hook type `{key}` is already registered to {existing.__module__}."
                            f"{existing.__qualname__}; pass force=True to replace it or register under another name")
        _REGISTRY[key] = klass
        return klass

    return _register(cls) if cls is not None else _register


def registered_hooks() -> dict[str, type]:
    """The registered ``type`` names and their classes (a copy)."""
    return dict(_REGISTRY)


def import_hook_module(module_name: str, what: str | None = None) -> Any:
    """Import a module of hooks; any failure becomes a :class:`ConfigError` that carries the reason.

    Raises:
        ConfigError: the import failed (an ``mmcv`` import gets the hint to use the shim).
    """
    what = what or f"hook module `{module_name}`"
    try:
        return importlib.import_module(module_name)
    except ImportError as err:
        hint = ""
        if (err.name or "").split(".")[0] == "mmcv":
            hint = f"; {_shim_lacks(err) or _SHIM_HINT}"
        raise ConfigError(f"Cannot import {what}: {type(err).__name__}: {err}{hint}") from err
    except Exception as err:  # the user's hook module itself failed while importing
        raise ConfigError(f"Cannot import {what}: importing `{module_name}` raised {type(err).__name__}: "
                          f"{err}") from err


def _shim_lacks(err: ImportError) -> str | None:
    """With detlight's mmcv shim in effect: which import it lacks, and what the module does serve."""
    if not any(getattr(finder, "detlight_mmcv_shim", False) for finder in sys.meta_path):
        return None
    module = err.name or "mmcv"
    match = re.match(r"cannot import name '([^']+)'", str(err))
    loaded = sys.modules.get(module)
    served = getattr(loaded, "__all__", None) if getattr(loaded, "__detlight_shim__", False) else None
    if match is None or served is None:  # a submodule the shim does not serve: its own message says so
        return "detlight's mmcv shim (in effect: mmcv is not installed) does not serve that module; install mmcv 1.x"
    public = sorted(n for n in served if not n.startswith("_") and n[0].islower())
    return (f"detlight's mmcv shim (in effect: mmcv is not installed) has no `{module}.{match.group(1)}`; its "
            f"functions there are {', '.join(public)} (and mmcv's hook classes). Install mmcv 1.x, or import "
            f"`{match.group(1)}` from where it is defined in your own code")


def _import(path: str) -> Any:
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ConfigError(f"Hook class_path `{path}` must be a full import path such as `my_pkg.hooks.MyHook`")
    module = import_hook_module(module_name, f"hook class_path `{path}`")
    if not hasattr(module, attr):
        raise ConfigError(f"Cannot import hook class_path `{path}`: module `{module_name}` has no attribute `{attr}`")
    return getattr(module, attr)


def real_mmcv_available() -> bool:
    """Whether a real mmcv is imported or importable (detlight's shim, :mod:`detlight.compat.mmcv_shim`, does not
    count)."""
    loaded = sys.modules.get("mmcv")
    if loaded is not None:
        return not getattr(loaded, "__detlight_shim__", False)
    for finder in sys.meta_path:
        if getattr(finder, "detlight_mmcv_shim", False) or not hasattr(finder, "find_spec"):
            continue
        try:
            if finder.find_spec("mmcv", None) is not None:
                return True
        except (ImportError, ValueError):
            continue
    return False


def _mmcv_registry_get(hook_type: str) -> Any:
    """The class a real mmcv's ``HOOKS`` registry holds under ``hook_type`` (``None``: no real mmcv, or absent)."""
    if not real_mmcv_available():
        return None
    try:
        from mmcv.runner import HOOKS  # type: ignore[import-not-found]
    except Exception:  # a broken mmcv install: fall back to detlight's registry
        return None
    return HOOKS.get(hook_type)


def resolve_hook_type(hook_type: Any) -> Any:
    """The class for an mmcv ``type``: mmcv's ``HOOKS``, detlight's registry, an import path, in that order.

    Raises:
        ConfigError: one of mmcv's standard hooks that no registry provides (the message names its detlight
            counterpart), or an unknown name (the message lists the registered ones).
    """
    if not isinstance(hook_type, str):
        if callable(hook_type):
            return hook_type
        raise ConfigError(f"Expected hook `type` to be a registered name or a class, but got {hook_type!r}")
    found = _mmcv_registry_get(hook_type)
    if found is not None:
        return found
    if hook_type in _REGISTRY:
        return _REGISTRY[hook_type]
    mapping = lookup_standard_hook(hook_type)
    if mapping is not None:
        raise ConfigError(mapping.message(hook_type))
    if "." in hook_type:
        return _import(hook_type)
    known = ", ".join(sorted(_REGISTRY)) or "none registered"
    mmcv_note = " (mmcv's HOOKS registry was searched first)" if "mmcv.runner" in sys.modules else ""
    raise ConfigError(f"Unknown hook type `{hook_type}`{mmcv_note}. Registered hook types: {known}. Decorate the "
                      "class with detlight.compat.register_hook or mmcv's @HOOKS.register_module() and list its module "
                      "in MMCVHooks(custom_imports=[...]), or give `class_path: my_pkg.hooks.MyHook` instead of `type`")


def check_hook(hook: Any, where: str) -> None:
    """Refuse an object with none of mmcv's stage methods.

    Raises:
        HookError: ``hook`` has no stage method (the message lists them).
    """
    names = (*STAGES, *DIRECT_STAGES, "before_iter", "after_iter")
    if not any(callable(getattr(hook, name, None)) for name in names):
        raise HookError(f"{where} ({type(hook).__name__}) is not an mmcv-style hook: it has none of the stage "
                        f"methods {list(STAGES)} nor before_epoch/after_epoch/before_iter/after_iter")


def _unparsed(spec: Any) -> Any:
    """A ``class_path`` entry that the config parser could not instantiate reaches here as its ``Namespace``
    (``class_path``, ``init_args``): turn it back into a dict, so building it again reports the constructor's error
    instead of calling the Namespace "not an mmcv-style hook"."""
    if type(spec).__module__.split(".")[0] != "jsonargparse" or not callable(getattr(spec, "as_dict", None)):
        return spec
    as_dict = spec.as_dict()
    return as_dict if isinstance(as_dict, dict) and ("class_path" in as_dict or "type" in as_dict) else spec


def build_hook(spec: HookSpec) -> tuple[Any, int]:
    """Build one hook from an object or a dict; return it with its priority.

    A dict is ``{type: Name | class_path: a.b.C, priority: 'NORMAL' | int, init_args: {...}}`` or mmcv's flat
    ``{type: Name, priority: ..., **kwargs}``. A hook object's priority is its own ``priority`` attribute when it has
    one (mmengine hooks do), else ``NORMAL``; a dict's ``priority`` key wins over both.

    Raises:
        ConfigError: a malformed dict, an unknown or standard ``type`` (the message names the detlight
            counterpart), an import failure (with its reason), arguments the class rejects, or an invalid priority.
        HookError: the built object has no mmcv stage method.
    """
    spec = _unparsed(spec)
    if not isinstance(spec, Mapping):
        check_hook(spec, "Hook object")
        return spec, get_priority(getattr(spec, "priority", "NORMAL"))
    cfg = dict(spec)
    priority = cfg.pop("priority", None)
    if ("type" in cfg) == ("class_path" in cfg):
        raise ConfigError(f"A hook dict needs exactly one of `type` (registered name) or `class_path` (import path); "
                          f"got keys {sorted(spec)}")
    name = cfg.pop("type") if "type" in cfg else cfg.pop("class_path")
    if priority is not None:  # a bad priority fails before the hook is built, naming the hook
        try:
            priority = get_priority(priority)
        except ConfigError as err:
            raise ConfigError(f"Hook `{name}`: {err}") from None
    cls = resolve_hook_type(name) if "type" in spec else _import(name)
    kwargs = dict(cfg.pop("init_args", None) or {})
    kwargs.update(cfg)
    reason = refusal(cls) if isinstance(cls, type) else None
    if reason is not None:  # before building: a refused logger need not have its tracker installed
        raise HookError(reason)
    try:
        hook = cls(**kwargs)
    except DetLightError:
        raise
    except Exception as err:  # the reason must reach the user: the CLI shows only this message
        raise ConfigError(f"Cannot build hook `{name}` with arguments {sorted(kwargs)}: {type(err).__name__}: "
                          f"{err}") from err
    check_hook(hook, f"Hook `{name}`")
    if priority is None:
        priority = getattr(hook, "priority", "NORMAL")
    return hook, get_priority(priority)
