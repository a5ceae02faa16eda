"""The LR updater hooks of the dependency-free ``mmcv`` shim, for users' hook files that subclass them.

Replaces: ``mmcv.runner.hooks.lr_updater`` (``LrUpdaterHook`` and its Fixed / Step / Exp / Poly / Inv /
CosineAnnealing subclasses) of mmcv 1.7.2 (Copyright (c) OpenMMLab, Apache-2.0). detlight's own ``lr_config``
handling does not use these: see :mod:`detlight.optim.lr`.
"""

from __future__ import annotations

from math import cos, pi
from typing import Any

from detlight.compat.hook_base import Hook
from detlight.compat.mmcv_shim_utils import is_list_of

__all__ = [
    "CosineAnnealingLrUpdaterHook",
    "ExpLrUpdaterHook",
    "FixedLrUpdaterHook",
    "InvLrUpdaterHook",
    "LrUpdaterHook",
    "PolyLrUpdaterHook",
    "StepLrUpdaterHook",
    "annealing_cos",
    "annealing_linear",
]


# ---------------------------------------------------------------------------------------------------- LR updaters
def annealing_cos(start: float, end: float, factor: float, weight: float = 1.0) -> float:
    return end + 0.5 * weight * (start - end) * (cos(pi * factor) + 1)


def annealing_linear(start: float, end: float, factor: float) -> float:
    return start + (end - start) * factor


class LrUpdaterHook(Hook):
    """mmcv 1.7's ``LrUpdaterHook`` for one optimizer: constant / linear / exp warmup, ``get_lr`` per policy."""

    def __init__(self, by_epoch: bool = True, warmup: str | None = None, warmup_iters: int = 0,
                 warmup_ratio: float = 0.1, warmup_by_epoch: bool = False) -> None:
        if warmup is not None:
            if warmup not in ("constant", "linear", "exp"):
                raise ValueError(f'"{warmup}" is not a supported type for warming up, valid types are "constant", '
                                 '"linear" and "exp"')
            if warmup_iters <= 0:
                raise ValueError('"warmup_iters" must be a positive integer')
            if not 0 < warmup_ratio <= 1.0:
                raise ValueError('"warmup_ratio" must be in range (0,1]')
        self.by_epoch = by_epoch
        self.warmup = warmup
        self.warmup_iters: int | None = warmup_iters
        self.warmup_ratio = warmup_ratio
        self.warmup_by_epoch = warmup_by_epoch
        self.warmup_epochs: int | None = None
        if warmup_by_epoch:
            self.warmup_epochs, self.warmup_iters = warmup_iters, None
        self.base_lr: list[float] = []
        self.regular_lr: list[float] = []

    def _set_lr(self, runner: Any, lr_groups: list[float]) -> None:
        for group, lr in zip(runner.optimizer.param_groups, lr_groups):
            group["lr"] = lr

    def get_lr(self, runner: Any, base_lr: float) -> float:
        raise NotImplementedError

    def get_regular_lr(self, runner: Any) -> list[float]:
        return [self.get_lr(runner, base_lr) for base_lr in self.base_lr]

    def get_warmup_lr(self, cur_iters: int) -> list[float]:
        assert self.warmup_iters is not None
        if self.warmup == "constant":
            return [lr * self.warmup_ratio for lr in self.regular_lr]
        if self.warmup == "linear":
            k = (1 - cur_iters / self.warmup_iters) * (1 - self.warmup_ratio)
            return [lr * (1 - k) for lr in self.regular_lr]
        k = self.warmup_ratio ** (1 - cur_iters / self.warmup_iters)
        return [lr * k for lr in self.regular_lr]

    def before_run(self, runner: Any) -> None:
        for group in runner.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lr = [group["initial_lr"] for group in runner.optimizer.param_groups]

    def before_train_epoch(self, runner: Any) -> None:
        if self.warmup_iters is None:
            self.warmup_iters = (self.warmup_epochs or 0) * len(runner.data_loader)
        if not self.by_epoch:
            return
        self.regular_lr = self.get_regular_lr(runner)
        self._set_lr(runner, self.regular_lr)

    def before_train_iter(self, runner: Any) -> None:
        cur_iter = runner.iter
        assert isinstance(self.warmup_iters, int)
        if not self.by_epoch:
            self.regular_lr = self.get_regular_lr(runner)
            if self.warmup is None or cur_iter >= self.warmup_iters:
                self._set_lr(runner, self.regular_lr)
            else:
                self._set_lr(runner, self.get_warmup_lr(cur_iter))
        elif self.warmup is not None and cur_iter <= self.warmup_iters:
            if cur_iter == self.warmup_iters:
                self._set_lr(runner, self.regular_lr)
            else:
                self._set_lr(runner, self.get_warmup_lr(cur_iter))


class FixedLrUpdaterHook(LrUpdaterHook):
    def get_lr(self, runner: Any, base_lr: float) -> float:
        return base_lr


class StepLrUpdaterHook(LrUpdaterHook):
    def __init__(self, step: int | list[int], gamma: float = 0.1, min_lr: float | None = None, **kwargs: Any) -> None:
        if isinstance(step, list):
            if not (is_list_of(step, int) and all(s > 0 for s in step)):
                raise ValueError(f'"step" must be a list of positive ints, got {step!r}')
        elif not isinstance(step, int) or step <= 0:
            raise TypeError('"step" must be a list or integer')
        self.step, self.gamma, self.min_lr = step, gamma, min_lr
        super().__init__(**kwargs)

    def get_lr(self, runner: Any, base_lr: float) -> float:
        progress = runner.epoch if self.by_epoch else runner.iter
        if isinstance(self.step, int):
            exp = progress // self.step
        else:
            exp = next((i for i, s in enumerate(self.step) if progress < s), len(self.step))
        lr = base_lr * self.gamma**exp
        return max(lr, self.min_lr) if self.min_lr is not None else lr


class ExpLrUpdaterHook(LrUpdaterHook):
    def __init__(self, gamma: float, **kwargs: Any) -> None:
        self.gamma = gamma
        super().__init__(**kwargs)

    def get_lr(self, runner: Any, base_lr: float) -> float:
        return base_lr * self.gamma ** (runner.epoch if self.by_epoch else runner.iter)


class PolyLrUpdaterHook(LrUpdaterHook):
    def __init__(self, power: float = 1.0, min_lr: float = 0.0, **kwargs: Any) -> None:
        self.power, self.min_lr = power, min_lr
        super().__init__(**kwargs)

    def get_lr(self, runner: Any, base_lr: float) -> float:
        progress, max_progress = (runner.epoch, runner.max_epochs) if self.by_epoch else (runner.iter, runner.max_iters)
        return (base_lr - self.min_lr) * (1 - progress / max_progress) ** self.power + self.min_lr


class InvLrUpdaterHook(LrUpdaterHook):
    def __init__(self, gamma: float, power: float = 1.0, **kwargs: Any) -> None:
        self.gamma, self.power = gamma, power
        super().__init__(**kwargs)

    def get_lr(self, runner: Any, base_lr: float) -> float:
        progress = runner.epoch if self.by_epoch else runner.iter
        return base_lr * (1 + self.gamma * progress) ** (-self.power)


class CosineAnnealingLrUpdaterHook(LrUpdaterHook):
    def __init__(self, min_lr: float | None = None, min_lr_ratio: float | None = None, **kwargs: Any) -> None:
        if (min_lr is None) == (min_lr_ratio is None):
            raise ValueError("give exactly one of `min_lr` and `min_lr_ratio`")
        self.min_lr, self.min_lr_ratio = min_lr, min_lr_ratio
        super().__init__(**kwargs)

    def get_lr(self, runner: Any, base_lr: float) -> float:
        progress, max_progress = (runner.epoch, runner.max_epochs) if self.by_epoch else (runner.iter, runner.max_iters)
        target = base_lr * self.min_lr_ratio if self.min_lr_ratio is not None else self.min_lr
        return annealing_cos(base_lr, float(target), progress / max_progress)  # type: ignore[arg-type]

