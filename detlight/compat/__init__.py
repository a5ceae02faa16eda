"""Running users' mmcv-style hooks under Lightning: the ``Hook`` base, the registry, mmcv's standard hook table, the
runner view and the opt-in ``import mmcv.runner`` shim.

Reading and converting mmcv ``.py`` configs is :mod:`detlight.convert`; the OpenMMLab bridge (real mmcv / mmdet
installed) is :mod:`detlight.openmmlab`. Names are imported on first access (see :mod:`detlight._lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from detlight._lazy import lazy_exports

if TYPE_CHECKING:
    from detlight.callbacks.mmcv_hooks import MMCVHooks
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
    "install_mmcv_shim": "mmcv_shim",
    "register_hook": "hook_registry",
}

__all__ = [
    "ConfigError",
    "Hook",
    "MMCVHooks",
    "Priority",
    "RunnerView",
    "install_mmcv_shim",
    "register_hook",
]

if not TYPE_CHECKING:  # type checkers read the imports above
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
