"""The boring detector of :mod:`detlight.testing` in a module, loaders, a Trainer and reference mmcv runner loops
for the hook / runner-view tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader
from torchmetrics import Metric

from detlight.compat.hook_base import STAGES
from detlight.module import DetectorModule
from detlight.testing import BoringDetector, boring_loader, boring_trainer

Record = tuple[str, Any, int, int, int]


class NullEvaluator(Metric):
    """An evaluator with nothing to report (keeps these tests off the COCO code path)."""

    def update(self, preds: Any, batch: Any) -> None:
        pass

    def compute(self) -> dict[str, float]:
        return {}


class ToyModule(DetectorModule):
    def __init__(self) -> None:
        super().__init__(BoringDetector(), evaluator=NullEvaluator())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)


def loader(num_batches: int, batch_size: int = 2) -> DataLoader:
    return boring_loader(num_batches, batch_size=batch_size, image_size=8)


def make_trainer(tmp_path: Path, callbacks: list[pl.Callback], **kwargs: Any) -> pl.Trainer:
    """:func:`detlight.testing.boring_trainer` with every batch and Lightning's default length (a Workflow sets it)."""
    kwargs.setdefault("max_epochs", None)
    return boring_trainer(tmp_path, callbacks, limit_batches=None, **kwargs)


def _record(stage: str) -> Any:
    def method(self: Recorder, runner: Any) -> None:
        self.trace.append((stage, runner.mode, runner.epoch, runner.iter, runner.inner_iter))

    return method


class Recorder:
    """Duck-typed mmcv hook (no base class) recording (stage, mode, epoch, iter, inner_iter) at every stage."""

    def __init__(self) -> None:
        self.trace: list[Record] = []


for _stage in (*STAGES, "before_epoch", "after_epoch"):
    setattr(Recorder, _stage, _record(_stage))


# ---------------------------------------------------------------------------------------------------- mmcv reference
class _Runner:
    def __init__(self) -> None:
        self.mode: str | None = None
        self.epoch = self.iter = self.inner_iter = 0
        self.trace: list[Record] = []

    def call(self, stage: str) -> None:
        self.trace.append((stage, self.mode, self.epoch, self.iter, self.inner_iter))


def mmcv_epoch_trace(workflow: Sequence[tuple[str, int]], max_epochs: int, train_len: int, val_len: int) -> list[Record]:
    """EpochBasedRunner.run as in mmcv 1.7 (docs/mmcv-semantics.md §3.2), with one recording hook."""
    r = _Runner()
    r.call("before_run")
    while r.epoch < max_epochs:
        for mode, n in workflow:
            for _ in range(n):
                if mode == "train" and r.epoch >= max_epochs:
                    break
                r.mode = mode
                length = train_len if mode == "train" else val_len
                r.call(f"before_{mode}_epoch")
                for i in range(length):
                    r.inner_iter = i
                    r.call(f"before_{mode}_iter")
                    r.call(f"after_{mode}_iter")
                    if mode == "train":
                        r.iter += 1
                r.call(f"after_{mode}_epoch")
                if mode == "train":
                    r.epoch += 1
    r.call("after_run")
    return r.trace


def mmcv_iter_trace(workflow: Sequence[tuple[str, int]], max_iters: int, train_len: int, val_len: int) -> list[Record]:
    """IterBasedRunner.run with IterLoader as in mmcv 1.7 (docs/mmcv-semantics.md §3.3), with one recording hook."""
    r = _Runner()
    loader_epoch, fetched = {"train": 0, "val": 0}, {"train": 0, "val": 0}
    lengths = {"train": train_len, "val": val_len}
    r.call("before_run")
    r.call("before_epoch")
    while r.iter < max_iters:
        for mode, n in workflow:
            r.inner_iter = 0
            for _ in range(n):
                if mode == "train" and r.iter >= max_iters:
                    break
                r.mode = mode
                if mode == "train":
                    r.epoch = loader_epoch["train"]
                if fetched[mode] == lengths[mode]:  # next() exhausts the loader: IterLoader.epoch += 1
                    loader_epoch[mode] += 1
                    fetched[mode] = 0
                fetched[mode] += 1
                r.call(f"before_{mode}_iter")
                r.call(f"after_{mode}_iter")
                r.inner_iter += 1
                if mode == "train":
                    r.iter += 1
    r.call("after_epoch")
    r.call("after_run")
    return r.trace
