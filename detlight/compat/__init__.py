"""Everything that reads mmcv/mmdet syntax: ``.py`` configs and users' own mmcv-style hooks.

Names are imported on first access (see :mod:`detlight._lazy`).
"""

from __future__ import annotations

from detlight._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "ConfigError": "config",
    "Hook": "hooks",
    "MMCVHooks": "hooks",
    "RunnerView": "runner",
    "convert_config": "convert",
    "convert_file": "convert",
    "convert_py_configs": "convert",
    "load_config": "config",
    "register_hook": "hooks",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
