"""Optimizer construction (mmcv ``optimizer`` + ``paramwise_cfg``) and mmcv LR / momentum policies.

Names are imported on first access (see :mod:`detlight._lazy`).
"""

from __future__ import annotations

from detlight._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "build_lr_policy": "lr",
    "build_momentum_policy": "momentum",
    "build_optimizer": "builder",
    "scale_lr": "builder",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
