"""Lightning callbacks that set the learning rate and momentum before every training batch, as mmcv's hooks do.

Replaces: mmcv's ``LrUpdaterHook`` / ``MomentumUpdaterHook`` families (``lr_config`` / ``momentum_config``). The
values come from the pure policies of :mod:`detlight.optim.lr` and :mod:`detlight.optim.momentum`; these callbacks
only map Lightning's loop onto mmcv's runner:

* ``before_run`` -> :meth:`on_train_start`: ``initial_lr`` / ``initial_momentum`` are set with ``setdefault``, so a
  resumed optimizer keeps the values stored in its checkpoint.
* ``before_train_epoch`` -> :meth:`on_train_epoch_start`: the regular value of a ``by_epoch`` schedule (applied at
  the epoch's first batch instead where Lightning skips that hook: a resume from a last-batch checkpoint).
* ``before_train_iter`` -> :meth:`on_train_batch_start`: warm-up and per-iteration values; the iteration index is
  Lightning's global batch counter (``fit_loop.epoch_loop.total_batch_idx``), which a checkpoint restores, so a
  resumed run continues the same sequence.

Put these callbacks first in ``trainer.callbacks``: callbacks run in list order, and one that reads the lr in its own
``on_train_batch_start`` (``LearningRateMonitor``) must come after them. Nothing is logged here; a logging callback
reads :func:`lr_log_values` / :func:`momentum_log_values` (or :meth:`LrUpdater.current_lr`) at its log interval.
The length of the run is ``max_epochs * num_training_batches`` iterations, or ``max_steps * accumulate_grad_batches``
for an iteration-based run (``trainer.estimated_stepping_batches`` is deliberately not used: reading it before the
checkpoint is restored drops a stateful loader's position, Lightning #20550).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from detlight.exceptions import ConfigError
from detlight.optim.lr import build_lr_policy
from detlight.optim.momentum import build_momentum_policy
from detlight.optim.policy import AnnealStrategy, Progress, WarmupKind, _Policy

__all__ = ["LrUpdater", "MomentumUpdater", "lr_log_values", "momentum_log_values", "run_length"]


def run_length(trainer: pl.Trainer) -> tuple[int, int, int]:
    """``(max_epochs, max_iters, iters_per_epoch)`` of a fit, in mmcv's terms (iterations are train batches).

    Raises:
        ValueError: If neither ``max_epochs`` nor ``max_steps`` bounds the run, or an epoch has no known length.
    """
    n = trainer.num_training_batches
    per_epoch = int(n) if n != float("inf") else 0
    max_epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else 0
    max_steps = trainer.max_steps if trainer.max_steps is not None and trainer.max_steps > 0 else 0
    candidates = []
    if max_steps:
        candidates.append(max_steps * trainer.accumulate_grad_batches)
    if max_epochs and per_epoch:
        candidates.append(max_epochs * per_epoch)
    if not candidates:
        raise ConfigError(
            "An lr/momentum schedule needs the length of the run: set `trainer.max_epochs` with a sized train loader,"
            " or `trainer.max_steps`"
        )
    max_iters = min(candidates)
    if not max_epochs:
        max_epochs = math.ceil(max_iters / per_epoch) if per_epoch else 1
    return max_epochs, max_iters, per_epoch


def _group_momentum(group: Mapping[str, Any]) -> float:
    if "momentum" in group:
        return float(group["momentum"])
    if "betas" in group:
        return float(group["betas"][0])
    return 0.0


def _tagged(tag: str, values: list[float], keys: list[Any]) -> dict[str, float]:
    out = {tag: values[0]} if values else {}
    firsts: dict[Any, int] = {}
    for i, key in enumerate(keys):
        firsts.setdefault(key, i)
    if len(firsts) > 1:
        out.update({f"{tag}/group{i}": values[i] for i in firsts.values()})
    return out


def lr_log_values(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """mmcv's ``learning_rate`` tag (first param group), plus ``learning_rate/group<i>`` when groups differ.

    Groups are told apart by their ``initial_lr`` (their lr when it is unset), and each distinct one is reported
    once, under its first group index, so a param-wise optimizer with hundreds of groups gives a handful of tags.
    """
    groups = optimizer.param_groups
    return _tagged("learning_rate", [float(g["lr"]) for g in groups], [g.get("initial_lr", g["lr"]) for g in groups])


def momentum_log_values(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """mmcv's ``momentum`` tag (SGD ``momentum`` or ``betas[0]``, 0 without either), per group like the lr."""
    groups = optimizer.param_groups
    values = [_group_momentum(g) for g in groups]
    return _tagged("momentum", values, [g.get("initial_momentum", v) for g, v in zip(groups, values)])


class _ScheduleCallback(Callback):
    """Shared loop mapping of the LR and momentum callbacks."""

    initial_key = "initial_lr"

    def __init__(self, policy: _Policy) -> None:
        self.policy = policy
        self._bases: list[list[float]] = []
        self._regular: list[list[float]] | None = None
        self._regular_epoch: int | None = None  # the epoch whose regular values ``_regular`` holds
        self._length: tuple[int, int, int] | None = None
        self._optimizers: list[torch.optim.Optimizer] = []

    # ------------------------------------------------------------------ value access
    def _read(self, group: dict[str, Any]) -> float:
        return float(group["lr"])

    def _write(self, group: dict[str, Any], value: float) -> None:
        group["lr"] = value

    def _check_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Raise if the optimizer cannot hold the scheduled value."""

    # ------------------------------------------------------------------ helpers
    def _progress(self, trainer: pl.Trainer, cur_iter: int) -> Progress:
        assert self._length is not None
        max_epochs, max_iters, per_epoch = self._length
        return Progress(trainer.current_epoch, cur_iter, max_epochs, max_iters, per_epoch)

    def _regular_values(self, progress: Progress) -> list[list[float]]:
        return [[self.policy.get_regular(b, progress, i) for i, b in enumerate(bases)] for bases in self._bases]

    def _apply(self, values: list[list[float]]) -> None:
        for optimizer, group_values in zip(self._optimizers, values):
            for group, value in zip(optimizer.param_groups, group_values):
                self._write(group, value)

    def _warmup(self, regular: list[list[float]], cur_iter: int, per_epoch: int) -> list[list[float]]:
        length = self.policy.warmup_length(per_epoch)
        return [[self.policy.warmup_value(b, r, cur_iter, length) for b, r in zip(bs, rs)]
                for bs, rs in zip(self._bases, regular)]

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._optimizers = list(trainer.optimizers)
        if not self._optimizers:
            raise ConfigError(f"{type(self).__name__} needs an optimizer; configure_optimizers returned none")
        self._length = run_length(trainer)
        self.policy.check_run(self._length[0], self._length[1])
        self._bases = []
        for optimizer in self._optimizers:
            self._check_optimizer(optimizer)
            bound = self.policy.bind(len(optimizer.param_groups), type(optimizer).__name__)
            for i, group in enumerate(optimizer.param_groups):
                group.setdefault(self.initial_key, bound[i] if bound is not None else self._read(group))
            bases = bound if bound is not None else [g[self.initial_key] for g in optimizer.param_groups]
            self._bases.append([float(b) for b in bases])
        self._regular = None
        self._regular_epoch = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.policy.by_epoch or self._length is None:
            return
        # the next batch's global index; only the epoch matters to an epoch-based schedule
        self._regular = self._regular_values(self._progress(trainer, self._next_iter(trainer)))
        self._regular_epoch = trainer.current_epoch
        self._apply(self._regular)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._length is None:
            return
        cur_iter = self._current_iter(trainer)
        per_epoch = self._length[2]
        warming = self.policy.in_warmup(cur_iter, per_epoch)
        if self.policy.by_epoch:
            if self._regular is None or self._regular_epoch != trainer.current_epoch:
                # on_train_epoch_start did not run for this epoch: a resumed run, and Lightning skips it entirely
                # when the checkpoint was written at the previous epoch's last batch
                self._regular = self._regular_values(self._progress(trainer, cur_iter))
                self._regular_epoch = trainer.current_epoch
                if not warming:
                    self._apply(self._regular)
            if self.policy.warmup is None or cur_iter > self.policy.warmup_length(per_epoch):
                return
            regular = self._regular
        else:
            regular = self._regular_values(self._progress(trainer, cur_iter))
        self._apply(self._warmup(regular, cur_iter, per_epoch) if warming else regular)

    @staticmethod
    def _current_iter(trainer: pl.Trainer) -> int:
        """Global 0-based index of the batch about to run (mmcv ``runner.iter`` in ``before_train_iter``)."""
        return int(trainer.fit_loop.epoch_loop.total_batch_idx)

    @staticmethod
    def _next_iter(trainer: pl.Trainer) -> int:
        return int(trainer.fit_loop.epoch_loop.batch_progress.total.ready)

    # ------------------------------------------------------------------ read-out
    def current_values(self) -> list[float]:
        """Current value of every param group of the first optimizer (host floats; no device sync)."""
        return [self._read(g) for g in self._optimizers[0].param_groups] if self._optimizers else []


def _policy_kwargs(frame_locals: Mapping[str, Any], skip: tuple[str, ...] = ("self", "__class__")) -> dict[str, Any]:
    return {k: v for k, v in frame_locals.items() if k not in skip and v is not None}


def _from_config(cls: type, section: str, cfg: Mapping[str, Any]) -> Any:
    accepted = list(inspect.signature(cls).parameters)
    for key in cfg:
        if key not in accepted:
            raise ConfigError(f"`{section}.{key}` is not a {section} key; accepted keys: {accepted}")
    return cls(**cfg)


class LrUpdater(_ScheduleCallback):
    """mmcv ``lr_config`` / ``<Policy>LrUpdaterHook`` as a Lightning callback.

    Args:
        policy: ``Fixed``, ``Step``, ``Exp``, ``Poly``, ``Inv``, ``CosineAnnealing``, ``FlatCosineAnnealing``,
            ``CosineRestart``, ``Cyclic``, ``OneCycle`` or ``LinearAnnealing``; an all-lowercase name is title-cased
            (``step`` -> ``Step``) as mmcv does.
        by_epoch: Change the lr once per epoch (True) or every iteration; unset means the policy's mmcv default
            (True, but False for Cyclic and OneCycle, which reject True).
        warmup: Warm-up type, or None for no warm-up.
        warmup_iters: Warm-up length in iterations (in epochs with ``warmup_by_epoch``).
        warmup_ratio: Lr at the start of the warm-up, relative to the regular lr.
        warmup_by_epoch: Count ``warmup_iters`` in epochs.
        step: Step: decay interval (int) or milestones (list).
        gamma: Step / Exp / Inv / Cyclic decay factor.
        min_lr: Lower bound (Step, Poly) or annealing target (CosineAnnealing, FlatCosineAnnealing, CosineRestart,
            LinearAnnealing).
        min_lr_ratio: Annealing target relative to the base lr; exclusive with ``min_lr``.
        power: Poly / Inv exponent.
        start_percent: FlatCosineAnnealing: fraction of the run kept flat.
        periods: CosineRestart period lengths.
        restart_weights: CosineRestart weight of each period.
        target_ratio: Cyclic (peak, end) ratios to the base lr, or a single peak ratio.
        cyclic_times: Cyclic: number of cycles.
        step_ratio_up: Cyclic: fraction of a cycle spent going up.
        anneal_strategy: Cyclic / OneCycle: ``cos`` or ``linear``.
        max_lr: OneCycle peak lr (number, one per param group, or a dict keyed by optimizer class name).
        total_steps: OneCycle length (defaults to the run's iterations; may not be shorter).
        pct_start: OneCycle: fraction of the cycle spent going up.
        div_factor: OneCycle: initial lr is ``max_lr / div_factor``.
        final_div_factor: OneCycle: final lr is the initial lr ``/ final_div_factor``.
        three_phase: OneCycle: add a symmetric third phase.
        num_last_epochs: YOLOX: epochs at the end run at the target lr (mmdet's ``YOLOXLrUpdaterHook``).
    """

    def __init__(
        self,
        policy: str,
        by_epoch: bool | None = None,
        warmup: WarmupKind | None = None,
        warmup_iters: int = 0,
        warmup_ratio: float = 0.1,
        warmup_by_epoch: bool = False,
        step: int | list[int] | None = None,
        gamma: float | None = None,
        min_lr: float | None = None,
        min_lr_ratio: float | None = None,
        power: float | None = None,
        start_percent: float | None = None,
        periods: list[int] | None = None,
        restart_weights: list[float] | None = None,
        target_ratio: float | list[float] | None = None,
        cyclic_times: int | None = None,
        step_ratio_up: float | None = None,
        anneal_strategy: AnnealStrategy | None = None,
        max_lr: float | list[float] | dict[str, float] | None = None,
        total_steps: int | None = None,
        pct_start: float | None = None,
        div_factor: float | None = None,
        final_div_factor: float | None = None,
        three_phase: bool | None = None,
        num_last_epochs: int | None = None,
    ) -> None:
        super().__init__(build_lr_policy(**_policy_kwargs(locals())))

    @classmethod
    def from_config(cls, lr_config: Mapping[str, Any]) -> LrUpdater:
        """Build from an mmcv ``lr_config`` dict (errors name ``lr_config.<key>``)."""
        return _from_config(cls, "lr_config", lr_config)  # type: ignore[no-any-return]

    def current_lr(self) -> list[float]:
        """Lr of every param group of the first optimizer (mmcv ``runner.current_lr()``)."""
        return self.current_values()


class MomentumUpdater(_ScheduleCallback):
    """mmcv ``momentum_config`` / ``<Policy>MomentumUpdaterHook`` as a Lightning callback.

    Writes SGD-style ``momentum`` or Adam-style ``betas[0]``. Register it after :class:`LrUpdater` (mmcv priorities:
    LR 10, momentum 30).

    Args:
        policy: ``Step``, ``CosineAnnealing``, ``LinearAnnealing``, ``Cyclic`` or ``OneCycle`` (mmcv casing rule).
        by_epoch: As for :class:`LrUpdater`.
        warmup: Warm-up type; the warm-up momentum is the regular one *divided* by the warm-up factor.
        warmup_iters: Warm-up length in iterations.
        warmup_ratio: Warm-up factor at the start.
        step: Step: decay interval or milestones.
        gamma: Step decay factor / Cyclic per-cycle amplitude scale.
        min_momentum: Lower bound (Step) or annealing target.
        min_momentum_ratio: Annealing target relative to the base momentum; exclusive with ``min_momentum``.
        target_ratio: Cyclic (low, end) ratios to the base momentum.
        cyclic_times: Cyclic: number of cycles.
        step_ratio_up: Cyclic: fraction of a cycle spent in the first phase.
        anneal_strategy: Cyclic / OneCycle: ``cos`` or ``linear``.
        base_momentum: OneCycle lower momentum (number, per group list, or dict keyed by optimizer class name).
        max_momentum: OneCycle upper momentum.
        pct_start: OneCycle: fraction of the run spent going down.
        three_phase: OneCycle: add a third phase.
    """

    initial_key = "initial_momentum"

    def __init__(
        self,
        policy: str,
        by_epoch: bool | None = None,
        warmup: Literal["constant", "linear", "exp"] | None = None,
        warmup_iters: int = 0,
        warmup_ratio: float = 0.9,
        step: int | list[int] | None = None,
        gamma: float | None = None,
        min_momentum: float | None = None,
        min_momentum_ratio: float | None = None,
        target_ratio: float | list[float] | None = None,
        cyclic_times: int | None = None,
        step_ratio_up: float | None = None,
        anneal_strategy: AnnealStrategy | None = None,
        base_momentum: float | list[float] | dict[str, float] | None = None,
        max_momentum: float | list[float] | dict[str, float] | None = None,
        pct_start: float | None = None,
        three_phase: bool | None = None,
    ) -> None:
        super().__init__(build_momentum_policy(**_policy_kwargs(locals())))

    @classmethod
    def from_config(cls, momentum_config: Mapping[str, Any]) -> MomentumUpdater:
        """Build from an mmcv ``momentum_config`` dict (errors name ``momentum_config.<key>``)."""
        return _from_config(cls, "momentum_config", momentum_config)  # type: ignore[no-any-return]

    def _read(self, group: dict[str, Any]) -> float:
        return _group_momentum(group)

    def _write(self, group: dict[str, Any], value: float) -> None:
        if "momentum" in group:
            group["momentum"] = value
        elif "betas" in group:
            group["betas"] = (value, group["betas"][1])

    def _check_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        if not all("momentum" in g or "betas" in g for g in optimizer.param_groups):
            raise ConfigError(
                f"momentum_config: {type(optimizer).__name__} has neither `momentum` nor `betas` in its param groups; "
                "use SGD/RMSprop-style momentum or an Adam-style optimizer, or drop momentum_config"
            )

    def current_momentum(self) -> list[float]:
        """Momentum (or ``betas[0]``) of every param group of the first optimizer."""
        return self.current_values()
