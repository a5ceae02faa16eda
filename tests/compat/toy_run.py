"""Tiny detector, loaders and reference mmcv runner loops for the hook / runner-view tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics import Metric

from detlight.compat.hooks import STAGES
from detlight.module import DetectorModule

Record = tuple[str, Any, int, int, int]


class TinyDetector(nn.Module):
    """mmdet contract: ``forward_train`` returns a loss dict, ``simple_test`` per-image detections."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 1)

    def forward_train(self, img: torch.Tensor, img_metas: list[dict], **kwargs: Any) -> dict[str, torch.Tensor]:
        pred = self.fc(img.mean(dim=(2, 3)))
        return {"loss_cls": (pred**2).mean(), "acc": pred.detach().mean()}

    def simple_test(self, img: torch.Tensor, img_metas: list[dict], rescale: bool = True) -> list[dict]:
        return [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
                for _ in img_metas]


class NullEvaluator(Metric):
    """An evaluator with nothing to report (keeps these tests off the COCO code path)."""

    def update(self, preds: Any, batch: Any) -> None:
        pass

    def compute(self) -> dict[str, float]:
        return {}


class ToyModule(DetectorModule):
    def __init__(self) -> None:
        super().__init__(TinyDetector(), evaluator=NullEvaluator())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)


def _collate(items: list[int]) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(items[0])
    return {"img": torch.randn(len(items), 3, 8, 8, generator=gen), "img_metas": [{"idx": i} for i in items],
            "gt_bboxes": [torch.zeros(0, 4) for _ in items], "gt_labels": [torch.zeros(0, dtype=torch.long)
                                                                           for _ in items]}


def loader(num_batches: int, batch_size: int = 2) -> DataLoader:
    return DataLoader(list(range(num_batches * batch_size)), batch_size=batch_size, collate_fn=_collate)


def make_trainer(tmp_path: Path, callbacks: list[pl.Callback], **kwargs: Any) -> pl.Trainer:
    defaults: dict[str, Any] = dict(default_root_dir=tmp_path, accelerator="cpu", devices=1, logger=False,
                                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                                    num_sanity_val_steps=0)
    defaults.update(kwargs)
    return pl.Trainer(callbacks=callbacks, **defaults)


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
