"""Interval-averaged training logs written to the Lightning loggers with mmcv's tags and steps."""

from __future__ import annotations

import warnings
from collections import OrderedDict

import lightning.pytorch as pl
from lightning.pytorch.trainer.states import TrainerFn

from detlight.callbacks.logger_callback import (
    LoggerCallback,
    completed_iters,
    current_lrs,
    current_momentums,
    max_iters,
    train_iter,
)

# LoggerCallback and the runner-state helpers moved to detlight.callbacks.logger_callback; re-exported here.
__all__ = ["IntervalLogger", "LoggerCallback", "completed_iters", "current_lrs", "current_momentums", "max_iters",
           "optimizer_tags", "train_iter"]

#: Buffer keys that are timings, not metrics: no ``train/`` tag (mmcv ``tags_to_skip``).
TIME_KEYS = ("time", "data_time")


class IntervalLogger(LoggerCallback):
    """Replaces mmcv's ``TensorboardLoggerHook`` (and any other mmcv metric-sink logger hook).

    Writes the interval averages to every logger of the Trainer (``TensorBoardLogger`` by default) with
    ``logger.log_metrics(metrics, step=iter + 1)``, where ``iter`` is the 0-based index of the iteration in the run
    (mmcv ``runner.iter``), and mmcv's tags: ``train/<key>`` for every buffer key but ``time``/``data_time``,
    ``learning_rate`` and ``momentum`` (first parameter group of the first optimizer; ``momentum`` is ``betas[0]``
    for Adam-style optimizers and 0 when there is none), plus ``learning_rate/group<i>`` for every group when the
    groups' learning rates differ. Evaluation results after each validation go in as ``val/<key>`` (with the lr
    tags) at mmcv's step: ``iters_done + 1`` after an epoch (``by_epoch``), ``iters_done`` after an iteration (not
    ``by_epoch``, where mmcv evaluates before counting the iteration).

    Values stay on the device between logging steps; a logging step costs one host copy (and, under DDP, one
    ``all_gather_object`` of the key names plus one ``all_reduce``). Only rank 0 writes.

    Note that a :class:`~detlight.module.DetectorModule` also logs ``val/<key>`` through ``self.log`` at Lightning's
    own step; set ``log_eval=False`` to keep a single series per tag.

    Args:
        interval: log every this many iterations (mmcv default 10).
        ignore_last: skip the last, incomplete interval of an epoch.
        by_epoch: count intervals within the epoch rather than over the run.
        log_eval: also write the evaluation results as ``val/<key>``.
    """

    def __init__(
        self, interval: int = 10, ignore_last: bool = True, by_epoch: bool = True, log_eval: bool = True
    ) -> None:
        super().__init__(interval, ignore_last, by_epoch)
        self.log_eval_results = bool(log_eval)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == TrainerFn.FITTING and not trainer.loggers:
            warnings.warn(
                "IntervalLogger has no Lightning logger to write to (Trainer(logger=False)); give the Trainer a "
                "logger, e.g. TensorBoardLogger, or drop the callback.",
                UserWarning,
                stacklevel=2,
            )

    def log_train(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        values: OrderedDict[str, float],
        batch_idx: int,
        iteration: int,
    ) -> None:
        metrics = {f"train/{k}": v for k, v in values.items() if k not in TIME_KEYS}
        self._write(trainer, {**metrics, **optimizer_tags(trainer)}, iteration + 1)

    def log_eval(self, trainer: pl.Trainer, pl_module: pl.LightningModule, results: OrderedDict[str, float]) -> None:
        if not self.log_eval_results:
            return
        metrics = {f"val/{k}": float(v) for k, v in results.items() if k not in TIME_KEYS}
        # mmcv's step is runner.iter + 1: after an epoch (EpochBasedRunner) runner.iter counts every batch; inside
        # IterBasedRunner's after_train_iter it is still the index of the batch just trained.
        done = completed_iters(trainer)
        self._write(trainer, {**metrics, **optimizer_tags(trainer)}, done + 1 if self.by_epoch else done)

    @staticmethod
    def _write(trainer: pl.Trainer, metrics: dict[str, float], step: int) -> None:
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)


def optimizer_tags(trainer: pl.Trainer) -> dict[str, float]:
    """mmcv ``get_lr_tags`` + ``get_momentum_tags``, plus ``learning_rate/group<i>`` when the groups differ."""
    tags: dict[str, float] = {}
    lrs, momentums = current_lrs(trainer), current_momentums(trainer)
    if lrs:
        tags["learning_rate"] = lrs[0]
        if len(set(lrs)) > 1:
            tags.update({f"learning_rate/group{i}": lr for i, lr in enumerate(lrs)})
    if momentums:
        tags["momentum"] = momentums[0]
    return tags
