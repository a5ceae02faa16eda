"""Everything that reads mmcv/mmdet syntax: ``.py`` configs and users' own mmcv-style hooks.

Names are imported on first access (see :mod:`detlight._lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from detlight._lazy import lazy_exports

if TYPE_CHECKING:
    from detlight.callbacks.mmcv_hooks import MMCVHooks
    from detlight.compat.config import load_config
    from detlight.compat.convert import (
        convert_file,
        convert_py_configs,
    )
    from detlight.compat.converter import convert_config
    from detlight.compat.hook_base import (
        Hook,
        Priority,
    )
    from detlight.compat.hook_registry import register_hook
    from detlight.compat.mmcv_shim import install_mmcv_shim
    from detlight.compat.runner import RunnerView
    from detlight.exceptions import ConfigError

_EXPORTS: dict[str, str] = {
    "ConfigError": "detlight.exceptions",
    "Hook": "hook_base",
    "MMCVHooks": "detlight.callbacks.mmcv_hooks",
    "Priority": "hook_base",
    "RunnerView": "runner",
    "convert_config": "converter",
    "convert_file": "convert",
    "convert_py_configs": "convert",
    "install_mmcv_shim": "mmcv_shim",
    "load_config": "config",
    "register_hook": "hook_registry",
}

__all__ = [
    "ConfigError",
    "Hook",
    "MMCVHooks",
    "Priority",
    "RunnerView",
    "convert_config",
    "convert_file",
    "convert_py_configs",
    "install_mmcv_shim",
    "load_config",
    "register_hook",
]

if not TYPE_CHECKING:  # type checkers read the imports above
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
