"""Momentum policies with mmcv's per-iteration values (SGD ``momentum`` or Adam-style ``betas[0]``).

Replaces: the ``<Policy>MomentumUpdaterHook`` classes of mmcv 1.7 (``mmcv/runner/hooks/momentum_updater.py``). Same
shape as :mod:`detlight.optim.lr`: pure objects built from the keys of an mmcv ``momentum_config``; the warm-up
*divides* the regular momentum by the factor (docs/mmcv-semantics.md §2.2).

Example:
    >>> policy = build_momentum_policy(policy="CosineAnnealing", min_momentum_ratio=0.5, by_epoch=False)
    >>> p = Progress(epoch=0, iter=50, max_epochs=1, max_iters=100, iters_per_epoch=100)
    >>> round(policy.value_at(0.9, p), 6)
    0.675
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from detlight.optim.lr_cyclic import CyclicPhases
from detlight.optim.policy import (
    AnnealStrategy,
    Progress,
    WarmupKind,
    _Policy,
    anneal,
    annealing_cos,
    annealing_linear,
    build_policy,
    check_anneal,
    check_one_of,
    check_pct_start,
    check_step,
    per_group,
    step_exponent,
)

__all__ = ["MOMENTUM_POLICIES", "MomentumPolicy", "build_momentum_policy"]


class MomentumPolicy(_Policy):
    """Base of the momentum policies (mmcv ``MomentumUpdaterHook``); no ``warmup_by_epoch`` in mmcv."""

    section: ClassVar[str] = "momentum_config"
    warmup_divides: ClassVar[bool] = True

    def __init__(
        self,
        by_epoch: bool | None = None,
        warmup: WarmupKind | None = None,
        warmup_iters: int = 0,
        warmup_ratio: float = 0.9,
    ) -> None:
        super().__init__(by_epoch=by_epoch, warmup=warmup, warmup_iters=warmup_iters, warmup_ratio=warmup_ratio)


class StepMomentum(MomentumPolicy):
    """mmcv ``StepMomentumUpdaterHook``: ``max(base * gamma**k, min_momentum)``."""

    name = "Step"

    def __init__(
        self, step: int | list[int], gamma: float = 0.5, min_momentum: float | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.step = check_step(self, step)
        self.gamma = gamma
        self.min_momentum = min_momentum

    def get_regular(self, base: float, progress: Progress, group: int = 0) -> float:
        momentum = base * (self.gamma ** step_exponent(self.step, self._progress(progress)[0]))
        return momentum if self.min_momentum is None else max(momentum, self.min_momentum)


class _TargetMomentum(MomentumPolicy):
    def __init__(
        self, min_momentum: float | None = None, min_momentum_ratio: float | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        check_one_of(self, ("min_momentum", "min_momentum_ratio"), (min_momentum, min_momentum_ratio))
        self.min_momentum = min_momentum
        self.min_momentum_ratio = min_momentum_ratio

    def target(self, base: float) -> float:
        if self.min_momentum_ratio is not None:
            return base * self.min_momentum_ratio
        return self.min_momentum  # type: ignore[return-value]


class CosineAnnealingMomentum(_TargetMomentum):
    """mmcv ``CosineAnnealingMomentumUpdaterHook``."""

    name = "CosineAnnealing"

    def get_regular(self, base: float, progress: Progress, group: int = 0) -> float:
        p, total = self._progress(progress)
        return annealing_cos(base, self.target(base), p / total)


class LinearAnnealingMomentum(_TargetMomentum):
    """mmcv ``LinearAnnealingMomentumUpdaterHook``."""

    name = "LinearAnnealing"

    def get_regular(self, base: float, progress: Progress, group: int = 0) -> float:
        p, total = self._progress(progress)
        return annealing_linear(base, self.target(base), p / total)


class CyclicMomentum(CyclicPhases, MomentumPolicy):
    """mmcv ``CyclicMomentumUpdaterHook``: the LR cycle's phase maths, usually down to 0.85/0.95 and back."""

    def __init__(self, target_ratio: float | Sequence[float] = (0.85 / 0.95, 1), **kwargs: Any) -> None:
        super().__init__(target_ratio, **kwargs)


class OneCycleMomentum(MomentumPolicy):
    """mmcv ``OneCycleMomentumUpdaterHook``: ``max_momentum`` -> ``base_momentum`` -> ``max_momentum``."""

    name = "OneCycle"
    supports_by_epoch = False

    def __init__(
        self,
        base_momentum: float | list[float] | dict[str, Any] = 0.85,
        max_momentum: float | list[float] | dict[str, Any] = 0.95,
        pct_start: float = 0.3,
        anneal_strategy: AnnealStrategy = "cos",
        three_phase: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        for key, value in (("base_momentum", base_momentum), ("max_momentum", max_momentum)):
            if not isinstance(value, (float, list, tuple, dict)):
                raise self._error(key, f"must be a float, a list or a dict, got {value!r}")
        self.base_momentum = base_momentum
        self.max_momentum = max_momentum
        self.pct_start = check_pct_start(self, pct_start)
        self.anneal_strategy = check_anneal(self, anneal_strategy)
        self.three_phase = three_phase
        self._low: list[float] = []
        self._high: list[float] = []

    def bind(self, num_groups: int, optimizer_name: str) -> list[float] | None:
        self._low = per_group(self, "base_momentum", self.base_momentum, num_groups, optimizer_name)
        self._high = per_group(self, "max_momentum", self.max_momentum, num_groups, optimizer_name)
        return list(self._high)

    def get_regular(self, base: float, progress: Progress, group: int = 0) -> float:
        low, high = (self._low[group], self._high[group]) if self._low else (base, base)
        total = progress.max_iters
        if self.three_phase:
            phases = [
                (float(self.pct_start * total) - 1, high, low),
                (float(2 * self.pct_start * total) - 2, low, high),
                (total - 1, high, high),
            ]
        else:
            phases = [(float(self.pct_start * total) - 1, high, low), (total - 1, low, high)]
        start_iter: float = 0
        for i, (end_iter, start, end) in enumerate(phases):
            # mmcv lets the last phase take any later iteration
            if progress.iter <= end_iter or i == len(phases) - 1:
                return anneal(self.anneal_strategy, start, end, (progress.iter - start_iter) / (end_iter - start_iter))
            start_iter = end_iter
        raise AssertionError("unreachable")


MOMENTUM_POLICIES: dict[str, type[MomentumPolicy]] = {
    cls.name: cls
    for cls in (StepMomentum, CosineAnnealingMomentum, LinearAnnealingMomentum, CyclicMomentum, OneCycleMomentum)
}


def build_momentum_policy(**momentum_config: Any) -> MomentumPolicy:
    """Build a momentum policy from the keys of an mmcv ``momentum_config`` (``policy`` plus its arguments).

    Raises:
        ValueError: Like :func:`detlight.optim.lr.build_lr_policy`, naming ``momentum_config.<key>``.
    """
    policy: MomentumPolicy = build_policy(MOMENTUM_POLICIES, "momentum_config", momentum_config)
    return policy
