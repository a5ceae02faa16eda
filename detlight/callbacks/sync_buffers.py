"""Average the model's buffers (BN statistics) across ranks after each epoch.

Replaces: mmcv ``SyncBuffersHook`` and its ``allreduce_params`` (docs/mmcv-semantics.md §2.9).
"""

from __future__ import annotations

from collections.abc import Iterable

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from detlight.callbacks.checkpoint import bare_model

__all__ = ["SyncBuffers", "allreduce_buffers"]


def allreduce_buffers(buffers: Iterable[torch.Tensor]) -> None:
    """Average floating-point buffers across the default process group, in place, in one coalesced call.

    mmcv's ``allreduce_params`` also divides integer buffers (``num_batches_tracked``), which current torch rejects
    for in-place integer division; those are left alone here. No-op without an initialised group of size > 1.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return
    tensors = [b for b in buffers if b.is_floating_point()]
    if not tensors:
        return
    world = dist.get_world_size()
    by_type: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for t in tensors:
        by_type.setdefault((t.dtype, t.device), []).append(t)
    for group in by_type.values():
        flat = torch.cat([t.detach().reshape(-1) for t in group])
        dist.all_reduce(flat)
        flat.div_(world)
        offset = 0
        for t in group:
            t.data.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


class SyncBuffers(Callback):
    """mmcv ``SyncBuffersHook``: average the model's buffers (BN statistics) across ranks after each epoch.

    Fires after train and validation epochs, as mmcv's ``after_epoch``. Only useful with
    ``DDPStrategy(broadcast_buffers=False)`` (mmdet's setting); with Lightning's default ``broadcast_buffers=True``
    rank 0's buffers are broadcast every forward anyway.

    Args:
        distributed: mmcv's switch; ``False`` makes the callback a no-op.
    """

    def __init__(self, distributed: bool = True) -> None:
        self.distributed = distributed

    def _sync(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.distributed and trainer.world_size > 1:
            allreduce_buffers(bare_model(pl_module).buffers())

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sync(trainer, pl_module)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sync(trainer, pl_module)
