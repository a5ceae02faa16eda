"""mmcv's LR policies annealing towards a target lr: ``CosineAnnealing``, ``LinearAnnealing``, ``FlatCosineAnnealing``
and ``CosineRestart``.

Replaces: the matching ``<Policy>LrUpdaterHook`` classes of mmcv 1.7 (``mmcv/runner/hooks/lr_updater.py``).
"""

from __future__ import annotations

from typing import Any

from detlight.optim.policy import LrPolicy, Progress, annealing_cos, annealing_linear, check_one_of

__all__ = ["CosineAnnealingLr", "CosineRestartLr", "FlatCosineAnnealingLr", "LinearAnnealingLr"]


class _TargetLr(LrPolicy):
    """Policies annealing towards ``min_lr`` or ``base * min_lr_ratio``."""

    def __init__(self, min_lr: float | None = None, min_lr_ratio: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_one_of(self, ("min_lr", "min_lr_ratio"), (min_lr, min_lr_ratio))
        self.min_lr = min_lr
        self.min_lr_ratio = min_lr_ratio

    def target(self, base: float) -> float:
        return base * self.min_lr_ratio if self.min_lr_ratio is not None else self.min_lr  # type: ignore[return-value]


class CosineAnnealingLr(_TargetLr):
    """mmcv ``CosineAnnealingLrUpdaterHook``: cosine from base to the target over the run."""

    name = "CosineAnnealing"

    def get_regular(self, base: float, progress: Progress, group: int = 0) -> float:
        p, total = self._progress(progress)
        return annealing_cos(base, self.target(base), p / total)


class LinearAnnealingLr(_TargetLr):
    """mmcv ``LinearAnnealingLrUpdaterHook``: straight line from base to the target over the run."""

    name = "LinearAnnealing"

    def get_regular(self, base: float, progress: Progress, group: int = 0) -> float:
        p, total = self._progress(progress)
        return annealing_linear(base, self.target(base), p / total)


class FlatCosineAnnealingLr(_TargetLr):
    """mmcv ``FlatCosineAnnealingLrUpdaterHook``: flat until ``round(P * start_percent)``, then cosine."""

    name = "FlatCosineAnnealing"

    def __init__(
        self, start_percent: float = 0.75, min_lr: float | None = None, min_lr_ratio: float | None = None, **kwargs: Any
    ) -> None:
        super().__init__(min_lr=min_lr, min_lr_ratio=min_lr_ratio, **kwargs)
        if not isinstance(start_percent, float) or not 0 <= start_percent <= 1:
            raise self._error("start_percent", f"expected a float between 0 and 1, got {start_percent!r}")
        self.start_percent = start_percent

    def get_regular(self, base: float, progress: Progress, group: int = 0) -> float:
        p, total = self._progress(progress)
        start = round(total * self.start_percent)
        if p - start < 0:
            return base
        return annealing_cos(base, self.target(base), (p - start) / (total - start))


class CosineRestartLr(_TargetLr):
    """mmcv ``CosineRestartLrUpdaterHook``: cosine cycles of ``periods``, each scaled by its restart weight."""

    name = "CosineRestart"

    def __init__(
        self,
        periods: list[int],
        restart_weights: list[float] | None = None,
        min_lr: float | None = None,
        min_lr_ratio: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(min_lr=min_lr, min_lr_ratio=min_lr_ratio, **kwargs)
        restart_weights = [1] if restart_weights is None else list(restart_weights)
        if not periods or not all(isinstance(x, int) and x > 0 for x in periods):
            raise self._error("periods", f"must be a non-empty list of positive ints, got {periods!r}")
        if len(periods) != len(restart_weights):
            raise self._error(
                "restart_weights", f"needs one weight per period ({len(periods)}), got {len(restart_weights)}"
            )
        self.periods = list(periods)
        self.restart_weights = restart_weights
        self.cumulative = [sum(self.periods[: i + 1]) for i in range(len(self.periods))]

    def get_regular(self, base: float, progress: Progress, group: int = 0) -> float:
        p = self._progress(progress)[0]
        idx = next((i for i, c in enumerate(self.cumulative) if p < c), None)
        if idx is None:
            raise self._error("periods", f"progress {p} is past the end of the periods {self.cumulative}")
        previous = 0 if idx == 0 else self.cumulative[idx - 1]
        alpha = min((p - previous) / self.periods[idx], 1)
        return annealing_cos(base, self.target(base), alpha, self.restart_weights[idx])

    def check_run(self, max_epochs: int, max_iters: int) -> None:
        length = max_epochs if self.by_epoch else max_iters
        if length > self.cumulative[-1]:
            raise self._error("periods", f"sum to {self.cumulative[-1]}, shorter than the run ({length}); mmcv "
                              "raises when it gets there")
