"""Everything that reads mmcv/mmdet syntax: ``.py`` configs and users' own mmcv-style hooks.

Names are imported on first access, so ``import detlight.compat`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "ConfigError": "config",
    "Hook": "hooks",
    "MMCVHooks": "hooks",
    "RunnerView": "runner",
    "convert_config": "convert",
    "convert_file": "convert",
    "load_config": "config",
    "register_hook": "hooks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
