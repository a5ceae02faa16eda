"""Small mmcv / mmdet hooks as Lightning callbacks.

Replaces: mmdet ``CheckInvalidLossHook``, ``NumClassCheckHook``, ``SetEpochInfoHook``; mmcv ``EmptyCacheHook`` and
``SyncBuffersHook`` (docs/mmcv-semantics.md §2.9). mmcv's ``DistSamplerSeedHook`` needs no port: Lightning's fit loop calls
``set_epoch(epoch)`` on ``dataloader.sampler`` and ``dataloader.batch_sampler.sampler`` at every train-epoch start,
also with ``use_distributed_sampler=False`` (tested in ``tests/callbacks/test_misc.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from torch import nn
from typing_extensions import override

from detlight.callbacks.checkpoint import bare_model, every_n
from detlight.exceptions import ConfigError, ModelContractError

__all__ = ["CheckInvalidLoss", "EmptyCache", "NumClassCheck", "SetEpochInfo", "SyncBuffers", "allreduce_buffers"]

log = logging.getLogger(__name__)


class CheckInvalidLoss(Callback):
    """mmdet ``CheckInvalidLossHook``: stop when a loss is NaN or infinite, naming the key(s), epoch and iteration.

    Checks ``pl_module.last_outputs["log_vars"]`` (mmcv ``runner.outputs``; falls back to the training step's
    ``loss``) after every ``interval``-th training batch only, so the host sync happens only then. Runs after the
    optimizer step, as mmdet's NORMAL-priority hook did.

    Args:
        interval: check period in training batches (mmcv ``every_n_iters``).

    Raises:
        FloatingPointError: from ``on_train_batch_end`` when a checked value is not finite.
    """

    def __init__(self, interval: int = 50) -> None:
        if not isinstance(interval, int) or interval <= 0:
            raise ConfigError(f"`interval` must be a positive int, got {interval!r}")
        self.interval = interval

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        it = trainer.fit_loop.epoch_loop.total_batch_idx
        if not every_n(it, self.interval):
            return
        values = _loss_values(pl_module, outputs)
        if not values:
            return
        names = list(values)
        finite = torch.stack([v.detach().float().reshape(()) for v in values.values()]).isfinite().tolist()
        bad = [n for n, ok in zip(names, finite) if not ok]
        if bad:
            shown = {n: float(values[n]) for n in bad}
            raise FloatingPointError(
                f"Non-finite loss at epoch {trainer.current_epoch + 1}, iter {it + 1}: {shown}. Lower the learning "
                "rate, enable `grad_clip`, or check the data of this batch."
            )


def _loss_values(pl_module: pl.LightningModule, outputs: Any) -> dict[str, torch.Tensor]:
    last = getattr(pl_module, "last_outputs", None)
    if isinstance(last, dict) and isinstance(last.get("log_vars"), dict):
        return {k: torch.as_tensor(v) for k, v in last["log_vars"].items()}
    if isinstance(outputs, dict) and "loss" in outputs:
        return {"loss": torch.as_tensor(outputs["loss"])}
    if isinstance(outputs, torch.Tensor):
        return {"loss": outputs}
    return {}


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


#: mmdet skips these (their ``num_classes`` is not the dataset's: RPN is class-agnostic, VGG is ImageNet's)
DEFAULT_NUM_CLASS_EXCLUDE: tuple[str, ...] = ("RPNHead", "VGG", "FusedSemanticHead", "GARPNHead")


class NumClassCheck(Callback):
    """mmdet ``NumClassCheckHook``: every submodule's ``num_classes`` must equal ``len(dataset.CLASSES)``.

    Checked at the start of each train epoch (training set) and validation epoch (validation sets). A dataset
    without ``CLASSES`` only gets a warning, as in mmdet.

    Args:
        exclude: class names of modules whose ``num_classes`` is not the dataset's.
    """

    def __init__(self, exclude: Sequence[str] = DEFAULT_NUM_CLASS_EXCLUDE) -> None:
        self.exclude = tuple(exclude)

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(bare_model(pl_module), [getattr(trainer.train_dataloader, "dataset", None)])

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loaders = trainer.val_dataloaders
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        self._check(bare_model(pl_module), [getattr(dl, "dataset", None) for dl in loaders])

    def _check(self, model: nn.Module, datasets: Sequence[Any]) -> None:
        for dataset in datasets:
            if dataset is not None:
                check_num_classes(model, dataset, self.exclude)


def check_num_classes(model: nn.Module, dataset: Any, exclude: Sequence[str] = DEFAULT_NUM_CLASS_EXCLUDE) -> None:
    """Raise ``ValueError`` naming the first module whose ``num_classes`` differs from ``len(dataset.CLASSES)``."""
    name = type(dataset).__name__
    classes = getattr(dataset, "CLASSES", None)
    if classes is None:
        log.warning("Please set `CLASSES` in the %s and check if it is consistent with the `num_classes` of head",
                    name)
        return
    if isinstance(classes, str):
        raise ConfigError(f"`CLASSES` in {name} should be a tuple of str, got the string {classes!r}. Add a comma "
                          f"if there is one class: CLASSES = ({classes!r},)")
    for path, module in model.named_modules():
        num = getattr(module, "num_classes", None)
        if isinstance(num, int) and type(module).__name__ not in exclude and num != len(classes):
            raise ConfigError(
                f"The `num_classes` ({num}) of {type(module).__name__} `{path or 'model'}` does not match the length "
                f"of `CLASSES` ({len(classes)}) in {name}: {tuple(classes)}. Set num_classes: {len(classes)}."
            )
