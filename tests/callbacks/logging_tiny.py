"""A tiny LightningModule with a LogBuffer and uneven batches, shared by the logger callback tests."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from detlight.logbuffer import LogBuffer
from detlight.testing import boring_trainer


class TinyModule(pl.LightningModule):
    """Logs ``loss_a`` = mean of the batch values + ``epoch_offset * epoch``, ``loss`` = ``2 * loss_a`` (weighted by
    batch size) and, when ``grad_norm`` is set, a constant ``grad_norm`` before the step; eval results depend on the
    epoch."""

    def __init__(self, lr: float = 0.1, grad_norm: bool = False, epoch_offset: float = 0.0) -> None:
        super().__init__()
        self.layer = nn.Linear(1, 1)
        self.lr = lr
        self.with_grad_norm = grad_norm
        self.epoch_offset = epoch_offset
        self.log_buffer = LogBuffer()
        self.eval_results: OrderedDict[str, float] = OrderedDict()

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        (x,) = batch
        value = x.mean() + self.epoch_offset * self.current_epoch
        self.log_buffer.update({"loss_a": value, "loss": 2 * value}, len(x))
        return (self.layer(x) ** 2).mean()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.with_grad_norm:
            self.log_buffer.update({"grad_norm": torch.tensor(3.0)}, 1)

    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        return None

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            epoch = self.current_epoch
            self.eval_results = OrderedDict([("bbox_mAP", 0.5 + epoch / 8), ("bbox_mAP_50", 1 / 3 + epoch)])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def batch_values(sizes: Sequence[int]) -> list[list[float]]:
    """The sample values of each batch: sample ``i`` of the run has value ``i + 1``."""
    out, start = [], 0
    for size in sizes:
        out.append([float(v) for v in range(start + 1, start + size + 1)])
        start += size
    return out


def uneven_loader(sizes: Sequence[int]) -> DataLoader:
    """Batches of the given sizes over values ``1..sum(sizes)``."""
    values = torch.arange(1, sum(sizes) + 1, dtype=torch.float32).unsqueeze(1)
    batches, start = [], 0
    for size in sizes:
        batches.append(list(range(start, start + size)))
        start += size
    return DataLoader(TensorDataset(values), batch_sampler=batches)


def make_trainer(root: Path, callbacks: list[Callback], max_epochs: int = 1, logger: Any = False,
                 **kwargs: Any) -> pl.Trainer:
    """A quiet CPU Trainer for callback tests."""
    torch.set_num_threads(1)
    return boring_trainer(root, callbacks, max_epochs=max_epochs, limit_batches=None, logger=logger,
                          log_every_n_steps=1000, **kwargs)


def weighted_mean(values: Sequence[Sequence[float]]) -> float:
    """Hand computation of the sample-weighted mean of per-batch means, weights = batch sizes."""
    total = sum(sum(batch) / len(batch) * len(batch) for batch in values)
    return total / sum(len(batch) for batch in values)
