"""Optimizer construction (mmcv ``optimizer`` + ``paramwise_cfg``) and mmcv LR / momentum policies.

Names are imported on first access (see :mod:`detlight._lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from detlight._lazy import lazy_exports

if TYPE_CHECKING:
    from detlight.optim.builder import (
        build_optimizer,
        scale_lr,
    )
    from detlight.optim.lr import build_lr_policy
    from detlight.optim.momentum import build_momentum_policy

_EXPORTS: dict[str, str] = {
    "build_lr_policy": "lr",
    "build_momentum_policy": "momentum",
    "build_optimizer": "builder",
    "scale_lr": "builder",
}

__all__ = [
    "build_lr_policy",
    "build_momentum_policy",
    "build_optimizer",
    "scale_lr",
]

if not TYPE_CHECKING:  # type checkers read the imports above
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
