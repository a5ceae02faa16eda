"""The shared machinery of mmcv's LR and momentum updater hooks: training position, warm-up, argument checks, builder.

Replaces: ``LrUpdaterHook`` / ``MomentumUpdaterHook`` (the base classes of mmcv 1.7
``mmcv/runner/hooks/lr_updater.py`` and ``momentum_updater.py``): ``by_epoch``, the three warm-up kinds, mmcv's
per-group ``format_param`` and the policy-name casing rule. The concrete policies live in :mod:`detlight.optim.lr_step`,
:mod:`detlight.optim.lr_annealing`, :mod:`detlight.optim.lr_cyclic`, :mod:`detlight.optim.lr_yolox` and
:mod:`detlight.optim.momentum`.
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
    "AnnealStrategy",
    "LrPolicy",
    "Progress",
    "WarmupKind",
    "accepted_args",
    "anneal",
    "annealing_cos",
    "annealing_linear",
    "build_policy",
    "check_anneal",
    "check_one_of",
    "check_pct_start",
    "check_step",
    "check_target_ratio",
    "cyclic_value",
    "per_group",
    "policy_class_name",
    "step_exponent",
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
