"""mmcv's ``fp16=dict(loss_scale=...)`` as a Lightning precision plugin.

Replaces: ``Fp16OptimizerHook(loss_scale=...)`` (docs/mmcv-semantics.md §2.3). ``trainer.precision: 16-mixed`` alone gives
a *dynamic* GradScaler; mmcv's float ``loss_scale`` is a **static** scale (overflow steps are still skipped, the
scale never changes). :class:`MMFp16Precision` reproduces the three accepted forms:

- a float (e.g. ``512.``): static scale, ``scaler.update(scale)`` after every step, as mmcv does;
- ``'dynamic'``: ``GradScaler()`` with torch's defaults;
- a dict: ``GradScaler(**kwargs)``.

An int (``512``) is refused, as mmcv refuses it. Difference kept: Lightning autocasts the whole training step,
while mmcv autocast only inside ``@auto_fp16`` methods.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from detlight.exceptions import ConfigError

__all__ = ["MMFp16Precision", "StaticGradScaler"]


class StaticGradScaler(torch.amp.GradScaler):
    """A GradScaler whose scale never moves: mmcv's float ``loss_scale``.

    Steps whose gradients overflow are still skipped by ``step``; ``update`` puts the scale back to its fixed value.
    """

    def __init__(self, loss_scale: float, device: str = "cuda") -> None:
        super().__init__(device, init_scale=loss_scale)
        self.static_scale = float(loss_scale)

    def update(self, new_scale: float | torch.Tensor | None = None) -> None:
        super().update(self.static_scale if new_scale is None else new_scale)


def build_scaler(loss_scale: float | str | Mapping[str, Any], device: str = "cuda") -> torch.amp.GradScaler:
    """The GradScaler mmcv's ``Fp16OptimizerHook`` builds for ``loss_scale``.

    Raises:
        ValueError: ``loss_scale`` is an int, an unknown string, or another type (mmcv raises too).
    """
    if isinstance(loss_scale, str):
        if loss_scale != "dynamic":
            raise ConfigError(f"`fp16.loss_scale` must be a float, 'dynamic' or a dict of GradScaler kwargs; got "
                              f"{loss_scale!r}")
        return torch.amp.GradScaler(device)
    if isinstance(loss_scale, Mapping):
        return torch.amp.GradScaler(device, **dict(loss_scale))
    if isinstance(loss_scale, float) and not isinstance(loss_scale, bool):
        if loss_scale <= 0:
            raise ConfigError(f"`fp16.loss_scale` must be > 0, got {loss_scale}")
        return StaticGradScaler(loss_scale, device)
    raise ConfigError(
        f"`fp16.loss_scale` must be a float (static scale, e.g. 512.), 'dynamic' or a dict of GradScaler kwargs; "
        f"got {loss_scale!r} ({type(loss_scale).__name__}). mmcv refuses ints too: write {loss_scale}. instead."
    )


class MMFp16Precision(MixedPrecision):
    """``16-mixed`` precision with mmcv's ``loss_scale`` semantics; use it in ``trainer.plugins``.

    Example YAML (leave ``trainer.precision`` unset; the plugin sets it)::

        trainer:
          plugins:
            - class_path: detlight.precision.MMFp16Precision
              init_args: {loss_scale: 512.0}

    Args:
        loss_scale: a float (static), ``'dynamic'`` or GradScaler kwargs.
        device: the device type the scaler works on (``cuda``; ``cpu`` for tests on machines without a GPU).
    """

    def __init__(self, loss_scale: float | str | dict[str, Any] = 512.0, device: str = "cuda") -> None:
        super().__init__("16-mixed", device, scaler=build_scaler(loss_scale, device))
        self.loss_scale = loss_scale
