"""Preemption: on SIGTERM (or a scheduler's warning signal) finish the batch, write a verified checkpoint, exit 0.

Replaces: nothing in mmcv (a killed mmcv job lost everything since its last ``CheckpointHook`` save).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override

from detlight.checkpoint_io import AtomicCheckpointIO, checkpoint_problem
from detlight.exceptions import ConfigError, SaveError
from detlight.upstream_internals import request_graceful_stop, set_restored_signal_handler

__all__ = ["Preemption"]

log = logging.getLogger(__name__)


class Preemption(Callback):
    """On SIGTERM (and SLURM's warning signal) finish the current batch, write a checkpoint and exit with status 0.

    Replaces: nothing in mmcv (a killed mmcv job lost everything since its last ``CheckpointHook`` save).

    Lightning already turns SIGTERM into a flag that is checked after every training batch and then raises
    ``SIGTERMException`` (a ``SystemExit``) at that batch boundary; this callback writes ``<dirpath>/<filename>.ckpt``
    from ``on_exception`` for that exception only, so the state is consistent and a resume continues exactly.
    ``signals`` (default ``SIGUSR1``, what ``sbatch --signal=USR1@90`` sends before a time limit) are routed to the
    same flag, unless Lightning's own SLURM auto-requeue already handles them. Ordinary exceptions write nothing
    (their loader state would count the failed batch as done).

    The save goes through :class:`~detlight.checkpoint_io.AtomicCheckpointIO` (installed in ``setup`` when the
    strategy uses the plain ``TorchCheckpointIO``): a temporary file beside the target, renamed into place once it
    reads back complete. Success is reported only then; a failed save (read-only folder, disk full) raises one
    :class:`~detlight.exceptions.SaveError` naming the path, and the previous checkpoints stay. From the preemption on,
    SIGTERM and ``signals`` are ignored until the process exits (it is stopping already), so an impatient scheduler's
    second SIGTERM during the save or the shutdown after it does not kill the run with status -15. The same holds
    from any other exception on (a failed save, Ctrl-C): the run is stopping and reports why itself.
    (:func:`detlight.fit` puts the caller's handlers back when it returns or raises.)

    Args:
        dirpath: Where to write. Default: the first checkpoint callback's directory, else ``default_root_dir``.
        filename: File name without the ``.ckpt`` extension.
        signals: Extra signal names treated like SIGTERM.
    """

    def __init__(self, dirpath: str | None = None, filename: str = "preempted",
                 signals: Sequence[str] = ("SIGUSR1",)) -> None:
        if not filename:
            raise ConfigError("Preemption `filename` must not be empty")
        unknown = [name for name in signals if not isinstance(getattr(signal, name, None), signal.Signals)]
        if unknown:
            raise ConfigError(f"Unknown signal name(s) {unknown} in Preemption `signals`; use names like 'SIGUSR1'")
        self.dirpath = dirpath
        self.filename = filename
        self.signals = tuple(signals)
        self.saved_path: str | None = None
        self._previous: dict[signal.Signals, Any] = {}
        self._last_batch: tuple[int, int] | None = None  # (epoch, batch index) of the last batch trained, 0-based

    def ckpt_path(self, trainer: pl.Trainer) -> str:
        """Path of the preemption checkpoint for ``trainer``."""
        directory = self.dirpath
        if directory is None:
            callback = trainer.checkpoint_callback
            directory = getattr(callback, "dirpath", None) or str(trainer.default_root_dir)
        return os.path.join(str(directory), f"{self.filename}.ckpt")

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if sys.platform == "win32" or not _in_main_thread():
            return
        owned = _lightning_owns_requeue_signal(trainer)
        for name in self.signals:
            signum = getattr(signal, name)
            if signum in owned:
                continue
            self._previous[signum] = signal.signal(signum, lambda *_: _raise_flag(trainer))

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            # The run is failing (a SaveError, a bug) or interrupted: a SIGTERM during the shutdown must not turn the
            # error's exit status into -15 once Lightning puts the default handler back.
            self._ignore_from_now_on(trainer, (signal.SIGTERM, *(getattr(signal, name) for name in self.signals)))
            return
        path = self.ckpt_path(trainer)
        self._ignore_from_now_on(trainer, (signal.SIGTERM, *(getattr(signal, name) for name in self.signals)))
        trainer.save_checkpoint(path, weights_only=False)  # the full training state
        problem = checkpoint_problem(path) if trainer.is_global_zero else None
        if problem is not None:
            raise SaveError(f"Preemption checkpoint {path} was not written completely: {problem}.")
        self.saved_path = path
        if trainer.is_global_zero:
            print(f"detlight: preempted {self._where(trainer)}; checkpoint written to {path}. Resume with "
                  "`--ckpt_path last` (or the path).", file=sys.stderr, flush=True)

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._last_batch = (trainer.current_epoch, batch_idx)

    def _where(self, trainer: pl.Trainer) -> str:
        """Where training stopped, counted from 1 as the logs count (the epoch of the last batch trained, not the
        next one Lightning has already moved to when the signal came on an epoch's last batch)."""
        iteration = trainer.fit_loop.epoch_loop.total_batch_idx + 1
        if self._last_batch is None:
            return f"in epoch {trainer.current_epoch + 1}, iteration {iteration}"
        epoch, batch_idx = self._last_batch
        per_epoch = trainer.num_training_batches
        if isinstance(per_epoch, int) and batch_idx + 1 >= per_epoch:
            return f"at the end of epoch {epoch + 1} (iteration {iteration})"
        of = f"/{per_epoch}" if isinstance(per_epoch, int) else ""
        return f"in epoch {epoch + 1} after its batch {batch_idx + 1}{of} (iteration {iteration})"

    def _ignore_from_now_on(self, trainer: pl.Trainer, signums: Sequence[signal.Signals]) -> None:
        """Ignore ``signums`` until the process exits, also after Lightning restores its pre-fit signal handlers."""
        if sys.platform == "win32" or not _in_main_thread():
            return
        for signum in dict.fromkeys(signums):
            signal.signal(signum, signal.SIG_IGN)
            self._previous.pop(signum, None)
            set_restored_signal_handler(trainer, signum, signal.SIG_IGN)  # what Lightning's teardown puts back

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


def _raise_flag(trainer: pl.Trainer) -> None:
    log.info("Preemption signal received; stopping after the current batch")
    request_graceful_stop(trainer)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _lightning_owns_requeue_signal(trainer: pl.Trainer) -> set[signal.Signals]:
    from lightning.fabric.plugins.environments import SLURMEnvironment

    env = getattr(trainer.strategy, "cluster_environment", None)
    if isinstance(env, SLURMEnvironment) and env.auto_requeue:
        return {env.requeue_signal} if env.requeue_signal is not None else set()
    return set()
