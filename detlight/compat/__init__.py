"""Everything that reads mmcv/mmdet syntax: ``.py`` configs and users' own mmcv-style hooks.

Names are imported on first access (see :mod:`detlight._lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from detlight._lazy import lazy_exports

if TYPE_CHECKING:
    from detlight.compat.config import load_config
    from detlight.compat.convert import (
        convert_config,
        convert_file,
    )
    from detlight.compat.hooks import (
        Hook,
        MMCVHooks,
        register_hook,
    )
    from detlight.compat.runner import RunnerView
    from detlight.exceptions import ConfigError

_EXPORTS: dict[str, str] = {
    "ConfigError": "detlight.exceptions",
    "Hook": "hooks",
    "MMCVHooks": "hooks",
    "RunnerView": "runner",
    "convert_config": "convert",
    "convert_file": "convert",
    "load_config": "config",
    "register_hook": "hooks",
}

__all__ = [
    "ConfigError",
    "Hook",
    "MMCVHooks",
    "RunnerView",
    "convert_config",
    "convert_file",
    "load_config",
    "register_hook",
]

if not TYPE_CHECKING:  # type checkers read the imports above
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
