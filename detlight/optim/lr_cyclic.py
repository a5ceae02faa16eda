"""mmcv's cyclic LR policies: ``Cyclic`` (and the phase maths shared with the momentum ``Cyclic``) and ``OneCycle``.

Replaces: ``CyclicLrUpdaterHook`` and ``OneCycleLrUpdaterHook`` of mmcv 1.7 (``mmcv/runner/hooks/lr_updater.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from detlight.optim.policy import (
    AnnealStrategy,
    LrPolicy,
    Progress,
    _is_number,
    _Policy,
    anneal,
    check_anneal,
    check_pct_start,
    check_target_ratio,
    cyclic_value,
    per_group,
)

__all__ = ["CyclicLr", "CyclicPhases", "OneCycleLr"]


class CyclicPhases(_Policy):
    """mmcv's cyclic phase maths, shared by the LR and momentum ``Cyclic`` policies (mixed in before the base)."""

    name = "Cyclic"
    supports_by_epoch = False

    def __init__(
        self,
        target_ratio: float | Sequence[float],
        cyclic_times: int = 1,
        step_ratio_up: float = 0.4,
        anneal_strategy: AnnealStrategy = "cos",
        gamma: float = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.target_ratio = check_target_ratio(self, target_ratio)
        if not _is_number(step_ratio_up) or not 0 <= step_ratio_up < 1:
            raise self._error("step_ratio_up", f"must be in [0, 1), got {step_ratio_up!r}")
        if not _is_number(gamma) or not 0 < gamma <= 1:
            raise self._error("gamma", f"must be in (0, 1], got {gamma!r}")
        if not isinstance(cyclic_times, int) or cyclic_times < 1:
            raise self._error("cyclic_times", f"must be a positive int, got {cyclic_times!r}")
        self.cyclic_times = cyclic_times
        self.step_ratio_up = step_ratio_up
        self.anneal_strategy = check_anneal(self, anneal_strategy)
        self.gamma = gamma

    def check_run(self, max_epochs: int, max_iters: int) -> None:
        if max_iters // self.cyclic_times < 1:
            raise self._error("cyclic_times", f"{self.cyclic_times} cycles do not fit in {max_iters} iterations")

    def get_regular(self, base: float, progress: Progress, group: int = 0) -> float:
        return cyclic_value(
            base, progress.iter, progress.max_iters, self.cyclic_times, self.step_ratio_up, self.target_ratio,
            self.gamma, self.anneal_strategy,
        )


class CyclicLr(CyclicPhases, LrPolicy):
    """mmcv ``CyclicLrUpdaterHook``: per-iteration cycles up to ``base * target_ratio[0]`` and down."""

    def __init__(self, target_ratio: float | Sequence[float] = (10, 1e-4), **kwargs: Any) -> None:
        super().__init__(target_ratio, **kwargs)


class OneCycleLr(LrPolicy):
    """mmcv ``OneCycleLrUpdaterHook``: from ``max_lr / div_factor`` up to ``max_lr`` and down to ``/ final_div``."""

    name = "OneCycle"
    supports_by_epoch = False

    def __init__(
        self,
        max_lr: float | list[float] | dict[str, Any],
        total_steps: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: AnnealStrategy = "cos",
        div_factor: float = 25,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not (_is_number(max_lr) or isinstance(max_lr, (list, tuple, Mapping))):
            raise self._error("max_lr", f"must be a number, a list or a dict, got {max_lr!r}")
        if total_steps is not None and (not isinstance(total_steps, int) or isinstance(total_steps, bool)):
            raise self._error("total_steps", f"must be an int, got {total_steps!r}")
        self.max_lr = max_lr
        self.total_steps = total_steps
        self.pct_start = check_pct_start(self, pct_start)
        self.anneal_strategy = check_anneal(self, anneal_strategy)
        self.div_factor = div_factor
        self.final_div_factor = final_div_factor
        self.three_phase = three_phase

    def bind(self, num_groups: int, optimizer_name: str) -> list[float] | None:
        return [lr / self.div_factor for lr in per_group(self, "max_lr", self.max_lr, num_groups, optimizer_name)]

    def check_run(self, max_epochs: int, max_iters: int) -> None:
        if self.total_steps is not None and self.total_steps < max_iters:
            raise self._error("total_steps", f"must be >= the run's {max_iters} iterations, got {self.total_steps}")

    def phases(self, max_iters: int) -> list[tuple[float, float, float]]:
        """``(end_iter, start multiplier, end multiplier)`` of each phase, as mmcv builds them."""
        total = self.total_steps if self.total_steps is not None else max_iters
        if self.three_phase:
            return [
                (float(self.pct_start * total) - 1, 1, self.div_factor),
                (float(2 * self.pct_start * total) - 2, self.div_factor, 1),
                (total - 1, 1, 1 / self.final_div_factor),
            ]
        return [
            (float(self.pct_start * total) - 1, 1, self.div_factor),
            (total - 1, self.div_factor, 1 / self.final_div_factor),
        ]

    def get_regular(self, base: float, progress: Progress, group: int = 0) -> float:
        start_iter: float = 0
        for end_iter, start, end in self.phases(progress.max_iters):
            if progress.iter <= end_iter:
                pct = (progress.iter - start_iter) / (end_iter - start_iter)
                return anneal(self.anneal_strategy, base * start, base * end, pct)
            start_iter = end_iter
        raise self._error("total_steps", f"iteration {progress.iter} is past the end of the one-cycle schedule")
