"""Learning-rate policies with mmcv's per-iteration values, as pure functions of the training position.

Replaces: the ``<Policy>LrUpdaterHook`` classes of mmcv 1.7 (``mmcv/runner/hooks/lr_updater.py``). Each policy is
built from the keyword arguments of an mmcv ``lr_config`` dict (validated here, with errors that name the key) and
answers two questions for a :class:`Progress`: the regular value (``get_regular``) and the value mmcv writes into the
optimizer before that iteration, warm-up included (``value_at``). Nothing here knows about Lightning; the callbacks in
:mod:`detlight.callbacks.lr_updater` drive these objects.

Example:
    >>> policy = build_lr_policy(policy="step", step=[8, 11], warmup="linear", warmup_iters=500, warmup_ratio=0.001)
    >>> p = Progress(epoch=0, iter=0, max_epochs=12, max_iters=1200, iters_per_epoch=100)
    >>> round(policy.value_at(0.02, p), 10)
    2e-05
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from detlight.exceptions import ConfigError

__all__ = [
    "LR_POLICIES",
    "AnnealStrategy",
    "LrPolicy",
    "Progress",
    "WarmupKind",
    "annealing_cos",
    "annealing_linear",
    "build_lr_policy",
    "build_policy",
    "policy_class_name",
]

WarmupKind = Literal["constant", "linear", "exp"]
AnnealStrategy = Literal["cos", "linear"]


@dataclass(frozen=True)
class Progress:
    """Where training stands, in mmcv runner terms (``runner.epoch``, ``runner.iter``, ...).

    Attributes:
        epoch: 0-based epoch index.
        iter: 0-based global iteration (train batch) index.
        max_epochs: Length of the run in epochs.
        max_iters: Length of the run in iterations (``max_epochs * iters_per_epoch`` for an epoch-based run).
        iters_per_epoch: ``len(train_loader)``; used by ``warmup_by_epoch``.
    """

    epoch: int
    iter: int
    max_epochs: int
    max_iters: int
    iters_per_epoch: int


def annealing_cos(start: float, end: float, factor: float, weight: float = 1.0) -> float:
    """Cosine from ``start`` (factor 0) to ``end`` (factor 1), scaled by ``weight`` around ``end`` (mmcv's formula)."""
    cos_out = math.cos(math.pi * factor) + 1
    return end + 0.5 * weight * (start - end) * cos_out


def annealing_linear(start: float, end: float, factor: float) -> float:
    """Straight line from ``start`` (factor 0) to ``end`` (factor 1)."""
    return start + (end - start) * factor


def policy_class_name(policy: str) -> str:
    """mmcv's casing rule: an all-lowercase name is title-cased (``'step'`` -> ``'Step'``), any other is kept."""
    return policy.title() if policy == policy.lower() else policy


def _fail(key: str, message: str) -> ConfigError:
    return ConfigError(f"`{key}`: {message}")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class _Policy:
    """Shared machinery of the LR and momentum policies: ``by_epoch``, the warm-up and per-group binding."""

    #: mmcv config section, used in error messages (``lr_config.min_lr``).
    section: ClassVar[str] = "lr_config"
    #: Policy name as written in the config (after the casing rule).
    name: ClassVar[str] = ""
    #: False for Cyclic / OneCycle, which mmcv only runs per iteration.
    supports_by_epoch: ClassVar[bool] = True
    #: The momentum warm-up divides by the factor where the LR warm-up multiplies.
    warmup_divides: ClassVar[bool] = False

    def __init__(
        self,
        by_epoch: bool | None = None,
        warmup: WarmupKind | None = None,
        warmup_iters: int = 0,
        warmup_ratio: float = 0.1,
        warmup_by_epoch: bool = False,
    ) -> None:
        if by_epoch is None:
            by_epoch = self.supports_by_epoch
        if by_epoch and not self.supports_by_epoch:
            raise self._error("by_epoch", f"policy {self.name!r} only supports by_epoch=False (mmcv asserts this)")
        if warmup is not None and warmup not in ("constant", "linear", "exp"):
            raise self._error("warmup", f"{warmup!r} is not a warm-up type; use 'constant', 'linear', 'exp' or None")
        if not isinstance(warmup_iters, int) or isinstance(warmup_iters, bool) or warmup_iters < 0:
            raise self._error("warmup_iters", f"must be a non-negative int, got {warmup_iters!r}")
        if warmup is not None and warmup_iters == 0:
            raise self._error("warmup_iters", f"must be > 0 when warmup={warmup!r}")
        if warmup is not None and not (_is_number(warmup_ratio) and 0 < warmup_ratio <= 1):
            raise self._error("warmup_ratio", f"must be in (0, 1], got {warmup_ratio!r}")
        self.by_epoch = bool(by_epoch)
        self.warmup = warmup
        self.warmup_iters = warmup_iters
        self.warmup_ratio = warmup_ratio
        self.warmup_by_epoch = warmup_by_epoch

    def _error(self, key: str, message: str) -> ConfigError:
        return _fail(f"{self.section}.{key}", message)

    # ------------------------------------------------------------------ hooks for subclasses
    def bind(self, num_groups: int, optimizer_name: str) -> list[float] | None:
        """Resolve per-group arguments for an optimizer; return base values that replace the stored initial ones.

        Args:
            num_groups: Number of param groups of the optimizer.
            optimizer_name: Class name of the optimizer (the key of a dict-valued per-group argument, as mmcv).

        Returns:
            ``None`` to use the groups' ``initial_lr`` / ``initial_momentum``, or one base value per group.
        """
        return None

    def check_run(self, max_epochs: int, max_iters: int) -> None:
        """Raise if the policy cannot run for this length (called once at train start)."""

    def get_regular(self, base: float, progress: Progress, group: int = 0) -> float:
        """Value of the schedule without warm-up (mmcv ``get_lr`` / ``get_momentum``)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ warm-up
    def warmup_length(self, iters_per_epoch: int) -> int:
        """Warm-up length in iterations (``warmup_iters`` epochs of ``iters_per_epoch`` when ``warmup_by_epoch``)."""
        if self.warmup is None:
            return 0
        return self.warmup_iters * iters_per_epoch if self.warmup_by_epoch else self.warmup_iters

    def in_warmup(self, cur_iter: int, iters_per_epoch: int) -> bool:
        """Whether mmcv writes a warm-up value (rather than the regular one) before iteration ``cur_iter``."""
        return self.warmup is not None and cur_iter < self.warmup_length(iters_per_epoch)

    def warmup_factor(self, cur_iter: int, warmup_iters: int) -> float:
        """The warm-up factor k; the LR is ``regular * k``, the momentum ``regular / k``."""
        ratio = self.warmup_ratio
        if self.warmup == "constant":
            return ratio
        if self.warmup == "linear":
            return 1 - (1 - cur_iter / warmup_iters) * (1 - ratio)
        return ratio ** (1 - cur_iter / warmup_iters)

    def apply_warmup(self, regular: float, cur_iter: int, warmup_iters: int) -> float:
        """The warm-up value for ``regular`` at ``cur_iter``, computed with mmcv's operation order."""
        factor = self.warmup_factor(cur_iter, warmup_iters)
        return regular / factor if self.warmup_divides else regular * factor

    def warmup_value(self, base: float, regular: float, cur_iter: int, warmup_iters: int) -> float:
        """The warm-up value at ``cur_iter``; mmcv's warm-ups scale the regular value (``base`` is for subclasses)."""
        return self.apply_warmup(regular, cur_iter, warmup_iters)

    def value_at(self, base: float, progress: Progress, group: int = 0) -> float:
        """The value mmcv has written into the optimizer when iteration ``progress.iter`` runs."""
        regular = self.get_regular(base, progress, group)
        if self.in_warmup(progress.iter, progress.iters_per_epoch):
            return self.warmup_value(base, regular, progress.iter, self.warmup_length(progress.iters_per_epoch))
        return regular

    def _progress(self, progress: Progress) -> tuple[int, int]:
        if self.by_epoch:
            return progress.epoch, progress.max_epochs
        return progress.iter, progress.max_iters


class LrPolicy(_Policy):
    """Base of the LR policies (mmcv ``LrUpdaterHook``)."""


# ---------------------------------------------------------------------- helpers shared with momentum.py
def check_step(policy: _Policy, step: Any) -> int | list[int]:
    """Validate mmcv's ``step``: a positive int, or a list of positive ints (milestones)."""
    if isinstance(step, int) and not isinstance(step, bool):
        if step <= 0:
            raise policy._error("step", f"must be positive, got {step}")
        return step
    if isinstance(step, Sequence) and not isinstance(step, str):
        if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in step):
            raise policy._error("step", f"milestones must be positive ints, got {list(step)}")
        return list(step)
    raise policy._error("step", f"must be an int or a list of ints, got {step!r}")


def step_exponent(step: int | list[int], progress: int) -> int:
    """Number of decays at ``progress``: ``progress // step`` or the number of milestones <= progress."""
    if isinstance(step, int):
        return progress // step
    for i, milestone in enumerate(step):
        if progress < milestone:
            return i
    return len(step)


def check_one_of(policy: _Policy, names: tuple[str, str], values: tuple[Any, Any]) -> None:
    """mmcv asserts that exactly one of ``min_x`` / ``min_x_ratio`` is given."""
    given = [n for n, v in zip(names, values) if v is not None]
    if len(given) != 1:
        detail = "both were given" if given else "neither was given"
        raise policy._error(
            names[0] if given else names[1],
            f"policy {policy.name!r} needs exactly one of `{names[0]}` and `{names[1]}`, but {detail}",
        )


def check_anneal(policy: _Policy, strategy: Any) -> AnnealStrategy:
    """Validate ``anneal_strategy``."""
    if strategy not in ("cos", "linear"):
        raise policy._error("anneal_strategy", f"must be 'cos' or 'linear', got {strategy!r}")
    return strategy  # type: ignore[no-any-return]


def anneal(strategy: AnnealStrategy, start: float, end: float, factor: float) -> float:
    """Apply the cosine or linear annealing function."""
    return annealing_cos(start, end, factor) if strategy == "cos" else annealing_linear(start, end, factor)


def check_pct_start(policy: _Policy, pct_start: Any) -> float:
    """mmcv requires a float in [0, 1] (an int such as ``0`` or ``1`` is rejected)."""
    if not isinstance(pct_start, float) or not 0 <= pct_start <= 1:
        raise policy._error("pct_start", f"expected a float between 0 and 1, got {pct_start!r}")
    return pct_start


def check_target_ratio(policy: _Policy, target_ratio: Any) -> tuple[float, float]:
    """A number r becomes ``(r, r / 1e5)``; a one-element sequence likewise; else two numbers are needed."""
    if _is_number(target_ratio):
        return float(target_ratio), target_ratio / 1e5
    if isinstance(target_ratio, Sequence) and not isinstance(target_ratio, str):
        values = list(target_ratio)
        if len(values) == 1 and _is_number(values[0]):
            return values[0], values[0] / 1e5
        if len(values) == 2 and all(_is_number(v) for v in values):
            return values[0], values[1]
    raise policy._error("target_ratio", f"must be a number or a list of two numbers, got {target_ratio!r}")


def cyclic_value(
    base: float,
    cur_iter: int,
    max_iters: int,
    cyclic_times: int,
    step_ratio_up: float,
    target_ratio: tuple[float, float],
    gamma: float,
    strategy: AnnealStrategy,
) -> float:
    """mmcv's cyclic schedule: up from 1 to ``target_ratio[0]``, down to ``target_ratio[1]``, repeated."""
    per_cycle = max_iters // cyclic_times
    up = int(step_ratio_up * per_cycle)
    t, cycle = cur_iter % per_cycle, cur_iter // per_cycle
    scale = gamma**cycle
    if t < up:
        end = 1 - scale + target_ratio[0] * scale
        return anneal(strategy, base * 1, base * end, (t - 0) / (up - 0))
    start = 1 - scale + target_ratio[0] * scale
    return anneal(strategy, base * start, base * target_ratio[1], (t - up) / (per_cycle - up))


def per_group(policy: _Policy, key: str, value: Any, num_groups: int, optimizer_name: str) -> list[float]:
    """mmcv ``format_param``: a number for every group, one per group, or a dict keyed by optimizer class name."""
    if _is_number(value):
        return [value] * num_groups
    if isinstance(value, Mapping):
        if optimizer_name not in value:
            raise policy._error(key, f"no entry for optimizer {optimizer_name!r}; keys are {sorted(value)}")
        value = value[optimizer_name]
        return per_group(policy, key, value, num_groups, optimizer_name)
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != num_groups:
            raise policy._error(key, f"expected {num_groups} values (one per param group), got {len(value)}")
        return list(value)
    raise policy._error(key, f"must be a number, a list or a dict, got {value!r}")


# ---------------------------------------------------------------------- policies
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


class YoloxLr(_TargetLr):
    """mmdet 2.x ``YOLOXLrUpdaterHook`` (``lr_config.policy='YOLOX'``): quadratic warm-up, cosine, flat tail.

    Per mmdet 2.28 ``mmdet/core/hook/yolox_lrupdater_hook.py``, with ``W`` the warm-up length in iterations
    (``warmup_iters`` epochs of ``iters_per_epoch`` with ``warmup_by_epoch``), ``L = iters_per_epoch *
    num_last_epochs``, ``p = progress + 1`` and ``P`` the run length (iterations, or epochs with ``by_epoch``, where
    ``L`` stays in iterations exactly as mmdet computes it):

    - warm-up (``iter < W``): ``base * warmup_ratio * ((iter + 1) / W) ** 2`` (of the base lr, not the regular one);
    - ``p >= P - L``: the target lr (``base * min_lr_ratio`` or ``min_lr``);
    - otherwise: ``annealing_cos(base, target, (p - W) / (P - W - L))``.

    Example:
        >>> policy = YoloxLr(num_last_epochs=1, min_lr_ratio=0.05, by_epoch=False, warmup="exp", warmup_iters=1,
        ...                  warmup_by_epoch=True, warmup_ratio=1)
        >>> [round(policy.value_at(0.01, Progress(i // 4, i, 4, 16, 4)), 7) for i in (0, 3, 4, 10, 11)]
        [0.000625, 0.01, 0.0096384, 0.0008616, 0.0005]
    """

    name = "YOLOX"

    def __init__(self, num_last_epochs: int, min_lr: float | None = None, min_lr_ratio: float | None = None,
                 **kwargs: Any) -> None:
        super().__init__(min_lr=min_lr, min_lr_ratio=min_lr_ratio, **kwargs)
        if not isinstance(num_last_epochs, int) or isinstance(num_last_epochs, bool) or num_last_epochs < 0:
            raise self._error("num_last_epochs", f"must be a non-negative int, got {num_last_epochs!r}")
        self.num_last_epochs = num_last_epochs

    def _warmup_iters(self, iters_per_epoch: int) -> int:
        # mmcv keeps warmup_iters even without a warm-up type, and YOLOX's cosine starts after it
        return self.warmup_iters * iters_per_epoch if self.warmup_by_epoch else self.warmup_iters

    def get_regular(self, base: float, progress: Progress, group: int = 0) -> float:
        last_iter = progress.iters_per_epoch * self.num_last_epochs
        p, total = self._progress(progress)
        p += 1
        target = self.target(base)
        if p >= total - last_iter:
            return target
        warm = self._warmup_iters(progress.iters_per_epoch)
        return annealing_cos(base, target, (p - warm) / (total - warm - last_iter))

    def warmup_value(self, base: float, regular: float, cur_iter: int, warmup_iters: int) -> float:
        return base * (self.warmup_ratio * ((cur_iter + 1) / float(warmup_iters)) ** 2)


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


LR_POLICIES: dict[str, type[LrPolicy]] = {
    cls.name: cls
    for cls in (
        FixedLr, StepLr, ExpLr, PolyLr, InvLr, CosineAnnealingLr, FlatCosineAnnealingLr, CosineRestartLr, CyclicLr,
        OneCycleLr, LinearAnnealingLr, YoloxLr,
    )
}


def accepted_args(cls: type) -> list[str]:
    """Keyword arguments a policy class accepts (its own and those of every base up to :class:`_Policy`)."""
    names: list[str] = []
    for klass in cls.__mro__:
        if klass is object or "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()  # type: ignore[misc]
        names += [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"]
        # a base is only reached through **kwargs: stop at the first __init__ without them
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return list(dict.fromkeys(names))


def build_policy(registry: Mapping[str, type[_Policy]], section: str, config: Mapping[str, Any]) -> Any:
    """Build a policy from an mmcv config dict, with mmcv's casing rule and errors that name the key at fault."""
    cfg = dict(config)
    if "policy" not in cfg:
        raise _fail(f"{section}.policy", f"is required; one of {sorted(registry)}")
    policy = cfg.pop("policy")
    if not isinstance(policy, str):
        raise _fail(f"{section}.policy", f"must be a string, got {policy!r}")
    name = policy_class_name(policy)
    if name not in registry:
        close = [known for known in registry if known.lower() == policy.lower()]
        hint = f" (mmcv's casing rule turns {policy!r} into {name!r}; write {close[0]!r})" if close else ""
        raise _fail(f"{section}.policy", f"unknown policy {policy!r}{hint}; known policies: {sorted(registry)}")
    cls = registry[name]
    accepted = accepted_args(cls)
    unknown = sorted(set(cfg) - set(accepted))
    if unknown:
        raise _fail(f"{section}.{unknown[0]}", f"is not an argument of policy {name!r}; it accepts {accepted}")
    missing = [p.name for p in inspect.signature(cls.__init__).parameters.values()
               if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self" and p.name not in cfg]
    if missing:
        raise _fail(f"{section}.{missing[0]}", f"is required by policy {name!r}")
    return cls(**cfg)


def build_lr_policy(**lr_config: Any) -> LrPolicy:
    """Build an LR policy from the keys of an mmcv ``lr_config`` (``policy`` plus its arguments).

    Raises:
        ValueError: For an unknown policy, an argument the policy does not take, a missing required argument,
            both ``min_lr`` and ``min_lr_ratio``, ``by_epoch=True`` for Cyclic / OneCycle, or a bad warm-up.
    """
    policy: LrPolicy = build_policy(LR_POLICIES, "lr_config", lr_config)
    return policy
