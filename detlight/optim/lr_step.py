"""mmcv's step-like LR policies: ``Fixed``, ``Step``, ``Exp``, ``Poly`` and ``Inv``.

Replaces: ``FixedLrUpdaterHook``, ``StepLrUpdaterHook``, ``ExpLrUpdaterHook``, ``PolyLrUpdaterHook`` and
``InvLrUpdaterHook`` of mmcv 1.7 (``mmcv/runner/hooks/lr_updater.py``).
"""

from __future__ import annotations

from typing import Any

from detlight.optim.policy import LrPolicy, Progress, check_step, step_exponent

__all__ = ["ExpLr", "FixedLr", "InvLr", "PolyLr", "StepLr"]


class FixedLr(LrPolicy):
    """mmcv ``FixedLrUpdaterHook``: the base lr (warm-up still applies)."""

    name = "Fixed"

    def get_regular(self, base: float, progress: Progress, group: int = 0) -> float:
        return base


class StepLr(LrPolicy):
    """mmcv ``StepLrUpdaterHook``: ``max(base * gamma**k, min_lr)``, k decays so far."""

    name = "Step"

    def __init__(
        self, step: int | list[int], gamma: float = 0.1, min_lr: float | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.step = check_step(self, step)
        self.gamma = gamma
        self.min_lr = min_lr

    def get_regular(self, base: float, progress: Progress, group: int = 0) -> float:
        lr = base * (self.gamma ** step_exponent(self.step, self._progress(progress)[0]))
        return lr if self.min_lr is None else max(lr, self.min_lr)


class ExpLr(LrPolicy):
    """mmcv ``ExpLrUpdaterHook``: ``base * gamma**progress``."""

    name = "Exp"

    def __init__(self, gamma: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gamma = gamma

    def get_regular(self, base: float, progress: Progress, group: int = 0) -> float:
        return base * self.gamma ** self._progress(progress)[0]


class PolyLr(LrPolicy):
    """mmcv ``PolyLrUpdaterHook``: ``(base - min_lr) * (1 - p/P)**power + min_lr``."""

    name = "Poly"

    def __init__(self, power: float = 1.0, min_lr: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.power = power
        self.min_lr = min_lr

    def get_regular(self, base: float, progress: Progress, group: int = 0) -> float:
        p, total = self._progress(progress)
        coeff = (1 - p / total) ** self.power
        return (base - self.min_lr) * coeff + self.min_lr


class InvLr(LrPolicy):
    """mmcv ``InvLrUpdaterHook``: ``base * (1 + gamma * p)**(-power)``."""

    name = "Inv"

    def __init__(self, gamma: float, power: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gamma = gamma
        self.power = power

    def get_regular(self, base: float, progress: Progress, group: int = 0) -> float:
        return base * (1 + self.gamma * self._progress(progress)[0]) ** (-self.power)
