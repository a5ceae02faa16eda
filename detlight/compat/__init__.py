"""Everything that reads mmcv/mmdet syntax: ``.py`` configs and users' own mmcv-style hooks.

Names are imported on first access (see :mod:`detlight._lazy`).
"""

from __future__ import annotations

from detlight._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "ConfigError": "config",
    "Hook": "hook_base",
    "MMCVHooks": "detlight.callbacks.mmcv_hooks",
    "Priority": "hook_base",
    "RunnerView": "runner",
    "convert_config": "convert",
    "install_mmcv_shim": "mmcv_shim",
    "convert_file": "convert",
    "convert_py_configs": "convert",
    "load_config": "config",
    "register_hook": "hook_registry",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
