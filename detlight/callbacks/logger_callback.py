"""The base of detlight's interval loggers: when to average the log buffer and what to hand to each logger.

Replaces: mmcv's ``LoggerHook`` base class (docs/mmcv-semantics.md §2.6) and the runner properties it reads
(``runner.iter``, ``runner.max_iters``, ``runner.current_lr()``, ``runner.current_momentum()``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from detlight.callbacks._reduce import cached_averages, invalidate, log_buffer_of
from detlight.callbacks.iter_timer import IterTimer
from detlight.exceptions import ConfigError
from detlight.logbuffer import LogBuffer

#: the value COCO evaluation reports for a metric it could not compute (e.g. ``bbox_mAP_l`` without large objects)
NOT_COMPUTED = -1.0

__all__ = ["NOT_COMPUTED", "LoggerCallback", "completed_iters", "current_lrs", "current_momentums", "max_iters", "train_iter"]


class LoggerCallback(Callback):
    """Replaces mmcv's ``LoggerHook`` base: when to average the log buffer and what to hand to :meth:`log_train`.

    At every ``interval``-th iteration of an epoch (``by_epoch``) or of the run (not ``by_epoch``), and at the last
    iteration of an epoch unless ``ignore_last``, the sample-weighted mean of each key over its last ``interval``
    entries of ``pl_module.log_buffer`` is computed (across ranks under DDP, once per step for all logger callbacks,
    see :mod:`detlight.callbacks._reduce`) and passed to :meth:`log_train`. The buffer is cleared at each epoch start
    when ``by_epoch`` (mmcv's ``EpochBasedRunner``) and once at train start otherwise (mmcv's ``IterBasedRunner``).
    After each validation run inside ``fit`` the module's ``eval_results`` (if it has that attribute and it is not
    empty) go to :meth:`log_eval`, as mmcv's ``EvalHook`` results did; then, if the module has a ``val_log_buffer``
    (validation losses of a ``('val', n)`` workflow phase), its average over the whole validation run goes to
    :meth:`log_eval` as a second record, as mmcv's val phase logged it.

    Evaluation results equal to ``-1`` (COCO's "not computed", e.g. ``bbox_mAP_l`` when the set has no large objects)
    are left out of every logger; mmcv printed them as ``bbox_mAP_l: -1.0000``.

    Like mmcv, the averages are also put into ``log_buffer.output`` (``ready`` set) and the last logger callback in
    the Trainer's list clears that output after logging (mmcv's ``reset_flag``), so every logger sees the same values.
    Unlike mmcv, each logger averages at its own boundaries only (mmcv also logged whenever another logger had left
    the buffer ``ready``), and train lines are always labelled ``train`` (mmcv said ``val`` when no ``time`` key was
    present, i.e. without an ``IterTimerHook``).

    Args:
        interval: log every this many iterations (mmcv default 10; mmdet configs use 50).
        ignore_last: skip the last, incomplete interval of an epoch. When False the last iteration of an epoch is
            logged with the mean over the last ``interval`` entries, which may reach into the previous interval as
            in mmcv.
        by_epoch: count iterations within the epoch (text ``Epoch [e][i/N]``) instead of over the run (``Iter
            [i/max_iters]``).
    """

    def __init__(self, interval: int = 10, ignore_last: bool = True, by_epoch: bool = True) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ConfigError(f"`interval` must be a positive integer (iterations between logs), got {interval!r}")
        self.interval = interval
        self.ignore_last = bool(ignore_last)
        self.by_epoch = bool(by_epoch)
        self._val_losses: OrderedDict[str, float] = OrderedDict()

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != TrainerFn.FITTING:
            return
        from detlight.callbacks.progress_bar import quiet_log_every_n_steps

        quiet_log_every_n_steps()  # this callback logs by its own interval, not Lightning's log_every_n_steps
        log_buffer_of(pl_module, type(self).__name__)
        callbacks = list(getattr(trainer, "callbacks", []))
        after = callbacks[callbacks.index(self) + 1:] if self in callbacks else []
        later = [type(c).__name__ for c in after if isinstance(c, IterTimer)]
        if later:
            raise ConfigError(
                f"{type(self).__name__} comes before {later[0]} in the Trainer's callbacks, so the iteration time "
                f"would be missing when it averages. Put IterTimer() before {type(self).__name__}() in "
                "`trainer.callbacks`."
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        buffer = log_buffer_of(pl_module, type(self).__name__)
        invalidate(buffer)
        val_buffer = getattr(pl_module, "val_log_buffer", None)
        if isinstance(val_buffer, LogBuffer):  # a new run restarts the iteration count the cache is keyed on
            invalidate(val_buffer)
        if not self.by_epoch:
            buffer.clear()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        buffer = log_buffer_of(pl_module, type(self).__name__)
        invalidate(buffer)
        if self.by_epoch:
            buffer.clear()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        iteration = train_iter(trainer)
        if not self.should_log(trainer, batch_idx, iteration):
            return
        buffer = log_buffer_of(pl_module, type(self).__name__)
        values = cached_averages(buffer, self.interval, iteration)
        buffer.output.update(values)
        buffer.ready = True
        self.log_train(trainer, pl_module, values, batch_idx, iteration)
        if self._is_last_logger(trainer):
            buffer.clear_output()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Runs before the module's hook of the same name, which averages and clears `val_log_buffer`.
        self._val_losses = OrderedDict()
        buffer = getattr(pl_module, "val_log_buffer", None)
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING or not isinstance(buffer, LogBuffer):
            return
        # Called even when this rank's buffer is empty: under DDP it is a collective, and another rank may have data.
        self._val_losses = cached_averages(buffer, 0, completed_iters(trainer))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        results = getattr(pl_module, "eval_results", None)
        if isinstance(results, Mapping) and results:
            # COCO reports -1 for an area range without ground truth: "not computed", not a result; left out.
            kept = OrderedDict((k, v) for k, v in results.items() if float(v) != NOT_COMPUTED)
            if kept:
                self.log_eval(trainer, pl_module, kept)
        if self._val_losses:  # a ('val', n) workflow phase: mmcv logged it after the evaluation, as its own line
            self.log_eval(trainer, pl_module, self._val_losses)
            self._val_losses = OrderedDict()

    # ------------------------------------------------------------------ to override
    def log_train(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        values: OrderedDict[str, float],
        batch_idx: int,
        iteration: int,
    ) -> None:
        """Write one interval's averages. Called on every rank (collectives allowed); write on rank 0 only.

        Args:
            trainer: the Trainer.
            pl_module: the LightningModule.
            values: global sample-weighted means, in log buffer order.
            batch_idx: index of the iteration within the epoch (mmcv ``inner_iter``).
            iteration: index of the iteration within the run (mmcv ``runner.iter``).
        """
        raise NotImplementedError

    def log_eval(self, trainer: pl.Trainer, pl_module: pl.LightningModule, results: OrderedDict[str, float]) -> None:
        """Write the results of one evaluation (already global). Called on every rank; write on rank 0 only."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    def should_log(self, trainer: pl.Trainer, batch_idx: int, iteration: int) -> bool:
        """mmcv ``LoggerHook.after_train_iter``'s condition for averaging at this iteration."""
        if self.by_epoch and (batch_idx + 1) % self.interval == 0:
            return True
        if not self.by_epoch and (iteration + 1) % self.interval == 0:
            return True
        return not self.ignore_last and batch_idx + 1 == trainer.num_training_batches

    def _is_last_logger(self, trainer: pl.Trainer) -> bool:
        loggers = [c for c in getattr(trainer, "callbacks", []) if isinstance(c, LoggerCallback)]
        return not loggers or loggers[-1] is self


# ---------------------------------------------------------------------- runner-state helpers
def train_iter(trainer: pl.Trainer) -> int:
    """mmcv ``runner.iter`` inside a training batch hook: 0-based index of the current batch in the run."""
    return int(trainer.fit_loop.epoch_loop.total_batch_idx)


def completed_iters(trainer: pl.Trainer) -> int:
    """mmcv ``runner.iter`` between iterations: number of training batches finished in the run."""
    return int(trainer.fit_loop.epoch_loop.batch_progress.total.completed)


def max_iters(trainer: pl.Trainer) -> int | None:
    """mmcv ``runner.max_iters``: ``max_epochs * num_training_batches`` or ``max_steps`` (iterations), the smaller.

    ``max_steps`` counts optimizer steps, so it is multiplied by ``accumulate_grad_batches``. ``None`` when neither
    bound is finite. Deliberately not ``trainer.estimated_stepping_batches`` (it resets stateful loaders, Lightning
    #20550).
    """
    bounds: list[int] = []
    if trainer.max_steps is not None and trainer.max_steps >= 0:
        bounds.append(trainer.max_steps * max(1, int(trainer.accumulate_grad_batches)))
    batches = trainer.num_training_batches
    if trainer.max_epochs is not None and trainer.max_epochs >= 0 and math.isfinite(batches):
        bounds.append(trainer.max_epochs * int(batches))
    return min(bounds) if bounds else None


def current_lrs(trainer: pl.Trainer) -> list[float]:
    """mmcv ``runner.current_lr()``: the lr of every parameter group of the first optimizer (empty without one)."""
    if not trainer.optimizers:
        return []
    return [float(group["lr"]) for group in trainer.optimizers[0].param_groups]


def current_momentums(trainer: pl.Trainer) -> list[float]:
    """mmcv ``runner.current_momentum()``: ``momentum``, else ``betas[0]``, else 0, per group of the first optimizer."""
    if not trainer.optimizers:
        return []
    values = []
    for group in trainer.optimizers[0].param_groups:
        if "momentum" in group:
            values.append(float(group["momentum"]))
        elif "betas" in group:
            values.append(float(group["betas"][0]))
        else:
            values.append(0.0)
    return values
