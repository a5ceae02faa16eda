"""Per-iteration wall-clock timing into the log buffer."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from detlight.callbacks._reduce import log_buffer_of
from detlight.callbacks._val_gate import in_val_phase

__all__ = ["IterTimer"]


class IterTimer(Callback):
    """Replaces mmcv's ``IterTimerHook``: logs ``data_time`` and ``time`` (seconds) per training (and val phase)
    iteration.

    ``data_time`` is the time from the end of the previous iteration (or the epoch start) to the start of this one,
    which in Lightning covers fetching the batch and moving it to the device; ``time`` is the whole iteration,
    ``data_time`` included. Both go into ``pl_module.log_buffer`` as python floats with count 1, so the logger
    callbacks average them like mmcv and reading them never syncs the device. Key order in the buffer follows mmcv:
    ``data_time`` (batch start), the module's ``log_vars``, ``grad_norm``, then ``time`` (batch end).

    Place it before :class:`~detlight.callbacks.interval_logger.IntervalLogger` and
    :class:`~detlight.callbacks.text_logger.TextLogger` in the callback list (they check), so that the current
    iteration's ``time`` is in the buffer when they average.

    In the validation runs of a ``('val', n)`` workflow phase (the module's ``val_losses`` on) both are also timed
    per val iteration into ``pl_module.val_log_buffer``, so the val-loss record carries them, as mmcv's does.

    Differences from mmcv, on purpose: mmcv's 2 s sleep at each epoch start is not reproduced (so the first
    ``data_time`` of an epoch is not inflated), and the clock also restarts after a validation run inside the training
    epoch, so evaluation time is not counted as data loading of the next iteration.
    """

    def __init__(self) -> None:
        self._t: float | None = None
        self._val_t: float | None = None
        self._val_batch_timed = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        log_buffer_of(pl_module, type(self).__name__)
        self._t = time.perf_counter()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._t is None:
            self._t = now
        log_buffer_of(pl_module, type(self).__name__).update({"data_time": now - self._t}, 1)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._t is None:
            self._t = now
        log_buffer_of(pl_module, type(self).__name__).update({"time": now - self._t}, 1)
        self._t = now

    # ------------------------------------------------------------------ a ('val', n) workflow phase
    def _timing_val(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch_idx: int) -> bool:
        return (trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking
                and in_val_phase(pl_module, batch_idx) and hasattr(pl_module, "val_log_buffer"))

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._val_t = time.perf_counter()

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        self._val_batch_timed = self._timing_val(trainer, pl_module, batch_idx)
        if self._val_batch_timed:
            now = time.perf_counter()
            buffer: Any = getattr(pl_module, "val_log_buffer")  # noqa: B009 - checked in _timing_val
            buffer.update({"data_time": now - (self._val_t or now)}, 1)

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        now = time.perf_counter()
        if self._val_batch_timed:
            buffer: Any = getattr(pl_module, "val_log_buffer")  # noqa: B009 - checked in _timing_val
            buffer.update({"time": now - (self._val_t or now)}, 1)
        self._val_batch_timed = False
        self._val_t = now

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            self._t = time.perf_counter()
