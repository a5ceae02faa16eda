"""The terminal / notebook progress bar of a detlight run, and the console output it shares the screen with.

Replaces: nothing in mmcv (its runner printed only the text-log lines). Lightning's ``TQDMProgressBar`` is kept, with
mmcv's 1-based epoch numbers and the training loss on the bar; the text log lines are written through
``tqdm.write`` (see :class:`TqdmLoggingHandler`), so they appear above the bar instead of on its line.

Choice: on a terminal the bar stays and the mmcv-style lines go through it (rather than replacing the bar by the
lines), because the bar is the only live output between two log intervals; with ``enable_progress_bar: false`` a
run prints the mmcv lines alone. Off a terminal (stdout a file: a SLURM ``.out``, ``| tee``, CI) the bar is off by
default and a run prints the log lines only, as mmcv did: a bar's carriage returns and cursor escapes would be
stored as hundreds of repaints around the log lines.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm, convert_inf
from typing_extensions import override

from detlight.upstream_internals import progress_bar_leave

__all__ = ["ProgressBar", "TqdmLoggingHandler", "in_notebook", "on_terminal", "quiet_lightning", "use_detlight_progress_bar"]

#: Steps between two host copies of a loss that lives on an accelerator (mmcv's default log interval).
DEVICE_LOSS_READ_EVERY = 50


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where a text bar's cursor-moving escape codes are printed literally)."""
    shell = sys.modules.get("IPython")
    get = getattr(shell, "get_ipython", None)
    try:
        ip = get() if callable(get) else None
    except Exception:  # noqa: BLE001 - an odd IPython state means "not a notebook"
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def on_terminal() -> bool:
    """True when a live bar can redraw in place: stdout (where the bar goes) is a terminal, or this is a notebook."""
    try:
        tty = sys.stdout.isatty()
    except (AttributeError, ValueError):  # no stdout, or a closed one
        tty = False
    return tty or in_notebook()


class TqdmLoggingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A console handler that writes each record with ``tqdm.write``: active bars are cleared, the line printed above
    them and the bars redrawn (without a bar it is a plain ``print`` to the stream). In a notebook it writes plainly:
    a redraw there would leave a copy of the bar for every line."""

    def emit(self, record: logging.LogRecord) -> None:
        if in_notebook():  # a notebook keeps stdout (the bar) and stderr (these lines) apart: no redraw needed
            super().emit(record)
            return
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)


class ProgressBar(TQDMProgressBar):
    """Lightning's ``TQDMProgressBar`` with mmcv's 1-based epochs, the training loss, and short notebook output.

    The bar reads ``Epoch 1/12`` (the number the text log and the ``epoch_N`` files use) and shows ``loss`` (the
    last value the module put into its ``log_buffer``, mmcv's ``runner.outputs`` loss) instead of the logger version
    ``v_num``. In a notebook the nested validation bar is off: it moves the cursor with escape codes that a notebook
    prints as text.

    Args:
        refresh_rate: update the bar every this many batches.
        process_position: Lightning's, for several bars at once.
        leave: keep one finished bar per epoch.
        validation_bar: show the bar of the validation run inside ``fit``; ``None``: not in a notebook.
        terminal_only: show no bar when stdout is not a terminal (see :func:`on_terminal`); ``False`` draws it into
            whatever stdout is.
    """

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False,
                 validation_bar: bool | None = None, terminal_only: bool = True) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        self.validation_bar = validation_bar
        self.terminal_only = bool(terminal_only)
        self._loss_text: str | None = None
        self._loss_read_at = -DEVICE_LOSS_READ_EVERY

    @property
    @override
    def is_enabled(self) -> bool:
        return super().is_enabled and (not self.terminal_only or on_terminal())

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        # Lightning's, with the description set before the first draw (no "Epoch 0" flashing in captured output).
        if progress_bar_leave(self):
            self.train_progress_bar = self.init_train_tqdm()
        total = f"/{trainer.max_epochs}" if trainer.max_epochs is not None and trainer.max_epochs > 0 else ""
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch + 1}{total}", refresh=False)
        self.train_progress_bar.reset(total=convert_inf(self.total_train_batches))
        self.train_progress_bar.initial = 0

    @override
    def init_validation_tqdm(self) -> Tqdm:
        show = self.validation_bar if self.validation_bar is not None else not in_notebook()
        if not show and self.trainer.state.fn == "fit":
            return Tqdm(disable=True)
        return super().init_validation_tqdm()

    @override
    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, int | str | float | dict]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        step = trainer.global_step
        loss = _last_loss(pl_module)
        # A loss still on an accelerator is copied to the host at most once per DEVICE_LOSS_READ_EVERY steps (the
        # training step itself stays free of device syncs); host values are read at every refresh.
        on_host = not isinstance(loss, torch.Tensor) or loss.device.type == "cpu"
        if loss is not None and (on_host or step - self._loss_read_at >= DEVICE_LOSS_READ_EVERY):
            try:
                self._loss_text = f"{float(loss):.4f}"
                self._loss_read_at = step
            except (TypeError, ValueError):
                pass
        if self._loss_text is not None:
            metrics = {"loss": self._loss_text, **metrics}
        return metrics


def _last_loss(pl_module: pl.LightningModule) -> float | torch.Tensor | None:
    buffer = getattr(pl_module, "log_buffer", None)
    history = getattr(buffer, "val_history", None)
    if not isinstance(history, dict) or not history.get("loss"):
        return None
    return history["loss"][-1]


def use_detlight_progress_bar(trainer: pl.Trainer) -> None:
    """Replace a Trainer's plain ``TQDMProgressBar`` (Lightning's default, or one given as is) by :class:`ProgressBar`
    with the same settings. A subclass or another bar the user chose is left alone."""
    callbacks = trainer.callbacks  # type: ignore[attr-defined]
    for i, callback in enumerate(callbacks):
        if type(callback) is TQDMProgressBar:
            callbacks[i] = ProgressBar(refresh_rate=callback.refresh_rate, process_position=callback.process_position,
                                       leave=progress_bar_leave(callback))


class _DropTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("💡 Tip:")


class _DropWeightsOnlyNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("`weights_only` was not set")


def quiet_lightning() -> None:
    """Silence Lightning messages that do not apply to a detlight run, each by its exact text (idempotent):

    - the "💡 Tip: ... litlogger" advertisement printed when a Trainer is built;
    - torch's ``isinstance(treespec, LeafSpec)`` deprecation, raised inside Lightning's own code;
    - "The number of training batches ... is smaller than the logging interval Trainer(log_every_n_steps=...)":
      detlight's loggers average and write by their own ``interval`` (see
      :class:`~detlight.callbacks.logger_callback.LoggerCallback`, which installs this filter when present);
    - "`weights_only` was not set, defaulting to `False`", logged by every ``trainer.save_checkpoint`` that does not
      pass it (detlight's checkpoints are full training states, loadable with ``weights_only=True``).
    """
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTip) for f in logger.filters):
        logger.addFilter(_DropTip())
    connector = logging.getLogger("lightning.pytorch.trainer.connectors.checkpoint_connector")
    if not any(isinstance(f, _DropWeightsOnlyNote) for f in connector.filters):
        connector.addFilter(_DropWeightsOnlyNote())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")


def quiet_log_every_n_steps() -> None:
    """Silence Lightning's ``log_every_n_steps`` warning (see :func:`quiet_lightning`)."""
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging "
                                              r"interval Trainer\(log_every_n_steps=")
