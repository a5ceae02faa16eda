"""The runner that mmcv-style hooks see: a read-mostly view of Lightning's state with mmcv's names and counters.

Replaces: the ``runner`` argument of ``mmcv.runner.Hook`` methods (``BaseRunner`` / ``EpochBasedRunner`` /
``IterBasedRunner`` state, docs/mmcv-semantics.md §3.1-3.3). :class:`detlight.compat.hooks.MMCVHooks` owns one view and moves
its counters at the points where mmcv's runners move theirs, so a hook reads the values mmcv would have shown it:

- ``epoch``: finished train epochs. It grows right after ``after_train_epoch``, so a val phase and ``after_run`` see
  the number of finished epochs (Lightning's ``current_epoch`` is one less there). Under an iteration-based run it is
  the number of times the train loader was exhausted *before* the current batch was fetched (mmcv's ``IterLoader``).
- ``iter``: finished train batches across epochs, incremented after the ``after_train_iter`` dispatch (not
  ``global_step``, which counts optimizer steps).
- ``inner_iter``: the batch index in the current phase; it is not reset at an epoch start (mmcv keeps the previous
  value until the first batch), and is reset per workflow phase under an iteration-based run.
- ``max_iters``: ``max_epochs x num_training_batches`` (epoch-based) or ``max_steps`` (iteration-based); never
  ``trainer.estimated_stepping_batches`` (its early data set-up breaks stateful-loader resume, Lightning #20550).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
from torch import nn

if TYPE_CHECKING:
    from detlight.logbuffer import LogBuffer

__all__ = ["RunnerView"]

log = logging.getLogger("detlight")


class _LoaderView:
    """A data loader whose ``len`` is the number of batches Lightning will actually run (limits included).

    mmcv hooks call ``len(runner.data_loader)`` (``end_of_epoch``, warmup by epoch); every other attribute (``sampler``,
    ``dataset``, ``batch_size``) is the wrapped loader's.
    """

    def __init__(self, loader: Any, num_batches: int | float) -> None:
        self._loader = loader
        self._num_batches = num_batches

    def __len__(self) -> int:
        if self._num_batches == float("inf"):
            return len(self._loader)
        return int(self._num_batches)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


def _first(loaders: Any) -> Any:
    if isinstance(loaders, (list, tuple)):
        return loaders[0] if loaders else None
    if isinstance(loaders, dict):
        return next(iter(loaders.values()), None)
    return loaders


class RunnerView:
    """Stands in for an mmcv runner inside mmcv-style hooks (see the module docstring for the counters).

    Replaces: ``mmcv.runner.EpochBasedRunner`` / ``IterBasedRunner`` as seen from a hook. Everything a hook reads is
    taken from the Trainer and the LightningModule at call time: ``model`` is the bare detector
    (``pl_module.model``), ``optimizer`` is ``trainer.optimizers[0]``, ``log_buffer`` / ``outputs`` are the module's
    (its validation buffer and outputs while ``mode == 'val'``, when it has them), ``work_dir`` is
    ``trainer.log_dir`` or ``default_root_dir``. ``meta`` is a plain dict that :class:`~detlight.compat.hooks.MMCVHooks`
    stores in Lightning checkpoints. The private spellings mmcv's own ``Hook`` helpers use (``_max_epochs``,
    ``_max_iters``, ``_epoch``, ...) are attributes of the view too.

    Args:
        meta: initial ``runner.meta``.
        timestamp: ``runner.timestamp`` (mmcv names ``{timestamp}.log`` after it).
    """

    def __init__(self, meta: dict[str, Any] | None = None, timestamp: str = "") -> None:
        self.trainer: pl.Trainer | None = None
        self.pl_module: pl.LightningModule | None = None
        self.meta: dict[str, Any] = dict(meta) if meta else {}
        self.timestamp = timestamp
        self.mode: str | None = None
        self.by_epoch = True
        self.data_batch: Any = None
        self._epoch = 0
        self._iter = 0
        self._inner_iter = 0
        self._max_epochs: int | None = None
        self._max_iters: int | None = None
        self._hooks: list[Any] = []

    def bind(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Attach the view to the running Trainer and module."""
        self.trainer, self.pl_module = trainer, pl_module

    def _require_trainer(self) -> pl.Trainer:
        if self.trainer is None:
            raise RuntimeError("RunnerView is not bound to a Trainer yet: runner attributes exist only during fit")
        return self.trainer

    # ------------------------------------------------------------------ counters
    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def iter(self) -> int:
        return self._iter

    @property
    def inner_iter(self) -> int:
        return self._inner_iter

    @property
    def max_epochs(self) -> int | None:
        return self._max_epochs

    @property
    def max_iters(self) -> int | None:
        return self._max_iters

    @property
    def hooks(self) -> list[Any]:
        """The registered hooks in call order (mmcv's ``runner.hooks``; LoggerHook's ``before_run`` reads it)."""
        return self._hooks

    # ------------------------------------------------------------------ objects
    @property
    def model(self) -> nn.Module | None:
        module = self.pl_module
        return getattr(module, "model", module) if module is not None else None

    @property
    def model_name(self) -> str:
        model = self.model
        return type(model).__name__ if model is not None else ""

    @property
    def optimizer(self) -> Any:
        trainer = self._require_trainer()
        return trainer.optimizers[0] if trainer.optimizers else None

    @property
    def log_buffer(self) -> LogBuffer | None:
        module = self.pl_module
        if module is None:
            return None
        if self.mode == "val" and getattr(module, "val_log_buffer", None) is not None:
            return module.val_log_buffer  # type: ignore[return-value]
        return getattr(module, "log_buffer", None)

    @property
    def outputs(self) -> dict[str, Any] | None:
        module = self.pl_module
        if module is None:
            return None
        if self.mode == "val" and hasattr(module, "last_val_outputs"):
            return module.last_val_outputs  # type: ignore[return-value]
        return getattr(module, "last_outputs", None)

    @property
    def work_dir(self) -> str:
        trainer = self._require_trainer()
        return os.fspath(trainer.log_dir or trainer.default_root_dir)

    @property
    def rank(self) -> int:
        return self._require_trainer().global_rank

    @property
    def world_size(self) -> int:
        return self._require_trainer().world_size

    @property
    def logger(self) -> logging.Logger:
        return log

    @property
    def data_loader(self) -> Any:
        """The loader of the current phase, with ``len`` = batches Lightning runs in it (``None`` before a phase)."""
        trainer = self._require_trainer()
        if self.mode == "val":
            loader = _first(trainer.val_dataloaders)
            counts = trainer.num_val_batches
            num = counts[0] if counts else float("inf")
        else:
            loader = _first(trainer.train_dataloader)
            num = trainer.num_training_batches
        return None if loader is None else _LoaderView(loader, num)

    # ------------------------------------------------------------------ optimizer state
    def current_lr(self) -> list[float]:
        """Learning rate of each param group (mmcv ``runner.current_lr()``)."""
        optimizer = self.optimizer
        if optimizer is None:
            raise RuntimeError("lr is not applicable because optimizer does not exist.")
        return [group["lr"] for group in optimizer.param_groups]

    def current_momentum(self) -> list[float]:
        """Momentum (SGD) or ``betas[0]`` (Adam family) of each param group, 0 when neither exists."""
        optimizer = self.optimizer
        if optimizer is None:
            raise RuntimeError("momentum is not applicable because optimizer does not exist.")
        momentums = []
        for group in optimizer.param_groups:
            if "momentum" in group:
                momentums.append(group["momentum"])
            elif "betas" in group:
                momentums.append(group["betas"][0])
            else:
                momentums.append(0)
        return momentums

    def __repr__(self) -> str:
        return (f"RunnerView(mode={self.mode!r}, epoch={self._epoch}, iter={self._iter}, "
                f"inner_iter={self._inner_iter}, max_epochs={self._max_epochs}, max_iters={self._max_iters})")
