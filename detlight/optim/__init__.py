"""Optimizer construction (mmcv ``optimizer`` + ``paramwise_cfg``) and mmcv LR / momentum policies.

Names are imported on first access, so ``import detlight.optim`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "build_lr_policy": "lr",
    "build_momentum_policy": "momentum",
    "build_optimizer": "builder",
    "scale_lr": "builder",
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
