"""Tell the detector which epoch starts.

Replaces: mmdet ``SetEpochInfoHook`` (docs/mmcv-semantics.md §2.9).
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from detlight.callbacks.checkpoint import bare_model
from detlight.exceptions import ModelContractError

__all__ = ["SetEpochInfo"]


class SetEpochInfo(Callback):
    """mmdet ``SetEpochInfoHook``: calls ``model.set_epoch(epoch)`` (0-based) on the bare detector before each epoch."""

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model = bare_model(pl_module)
        set_epoch = getattr(model, "set_epoch", None)
        if not callable(set_epoch):
            raise ModelContractError(
                f"SetEpochInfo calls `set_epoch(epoch)` on the detector, but {type(model).__name__} has no such "
                "method. Add one or remove the callback."
            )
        set_epoch(trainer.current_epoch)
