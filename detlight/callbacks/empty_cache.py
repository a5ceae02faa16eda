"""Free the CUDA caching allocator around epochs / iterations.

Replaces: mmcv ``EmptyCacheHook`` (docs/mmcv-semantics.md §2.9).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

__all__ = ["EmptyCache"]


# Looked up at call time so that tests can observe the calls on a machine without CUDA.
def _empty_cache() -> None:
    torch.cuda.empty_cache()


class EmptyCache(Callback):
    """mmcv ``EmptyCacheHook``: ``torch.cuda.empty_cache()`` around epochs and/or after iterations.

    As mmcv's ``before_epoch`` / ``after_epoch`` / ``after_iter`` hooks fire for training and validation, so do these.

    Args:
        before_epoch: free the cache at the start of each train / validation epoch.
        after_epoch: free it at the end of each train / validation epoch.
        after_iter: free it after each train / validation batch (slow; debugging only).
    """

    def __init__(self, before_epoch: bool = False, after_epoch: bool = True, after_iter: bool = False) -> None:
        self.before_epoch = before_epoch
        self.after_epoch = after_epoch
        self.after_iter = after_iter

    def _maybe(self, flag: bool) -> None:
        if flag:
            _empty_cache()

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._maybe(self.before_epoch)

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._maybe(self.before_epoch)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._maybe(self.after_epoch)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._maybe(self.after_epoch)

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._maybe(self.after_iter)

    @override
    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        self._maybe(self.after_iter)
