"""A tiny mmdet-contract detector, in-memory batches and a scripted evaluator, shared by the checkpoint / evaluation /
EMA / misc callback tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchmetrics import Metric

from detlight.module import DetectorModule


class TinyDet(nn.Module):
    """mmdet contract: ``forward_train`` -> ``{"loss_x"}``, ``simple_test`` -> one detection per image."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.fc = nn.Linear(3, 2)
        self.norm = nn.BatchNorm1d(2)
        self.epochs_seen: list[int] = []

    def features(self, img: torch.Tensor) -> torch.Tensor:
        return self.norm(self.fc(img.mean(dim=(2, 3))))

    def forward_train(self, img: torch.Tensor, img_metas: list[dict], gt_bboxes: Any = None, gt_labels: Any = None,
                      **kwargs: Any) -> dict[str, torch.Tensor]:
        return {"loss_x": (self.features(img) - 1.0).pow(2).mean()}

    def simple_test(self, img: torch.Tensor, img_metas: list[dict], rescale: bool = True) -> list[dict]:
        scores = self.features(img).sigmoid()[:, 0]
        return [{"boxes": torch.tensor([[0.0, 0.0, 2.0, 2.0]]), "scores": s.reshape(1),
                 "labels": torch.zeros(1, dtype=torch.int64)} for s in scores]

    def set_epoch(self, epoch: int) -> None:
        self.epochs_seen.append(epoch)


class ScriptedMetric(Metric):
    """Returns ``values[k]`` for key ``key`` on its k-th ``compute`` (the last value repeats)."""

    def __init__(self, values: Sequence[float], key: str = "bbox_mAP", extra: dict[str, float] | None = None) -> None:
        super().__init__()
        self.values = list(values)
        self.key = key
        self.extra = dict(extra or {})
        self.calls = 0
        self.add_state("seen", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: list[dict], batch: dict) -> None:
        self.seen += len(preds)

    def compute(self) -> dict[str, torch.Tensor]:
        value = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        return {self.key: torch.tensor(value), **{k: torch.tensor(v) for k, v in self.extra.items()}}


class BatchSet(Dataset):
    """Pre-collated batches in the detlight layout (``DataLoader(batch_size=None)`` yields them as they are)."""

    def __init__(self, num_batches: int = 4, batch_size: int = 2, seed: int = 0, classes: tuple[str, ...] = ("a", "b"),
                 nan_at: int | None = None) -> None:
        g = torch.Generator().manual_seed(seed)
        self.CLASSES = classes
        self.batches = []
        for i in range(num_batches):
            img = torch.rand(batch_size, 3, 4, 4, generator=g)
            if nan_at == i:
                img[0, 0, 0, 0] = float("nan")
            metas = [{"image_id": i * batch_size + j, "img_shape": (4, 4, 3), "ori_shape": (4, 4, 3),
                      "scale_factor": [1.0, 1.0, 1.0, 1.0], "flip": False} for j in range(batch_size)]
            self.batches.append({"img": img, "img_metas": metas,
                                 "gt_bboxes": [torch.tensor([[0.0, 0.0, 2.0, 2.0]])] * batch_size,
                                 "gt_labels": [torch.zeros(1, dtype=torch.int64)] * batch_size})

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict:
        return self.batches[i]


def loader(num_batches: int = 4, **kwargs: Any) -> DataLoader:
    sampler = kwargs.pop("sampler", None)
    return DataLoader(BatchSet(num_batches, **kwargs), batch_size=None, shuffle=False, sampler=sampler)


def module(values: Sequence[float] = (0.1,), key: str = "bbox_mAP", lr: float = 0.1, num_classes: int = 2,
           seed: int = 0) -> DetectorModule:
    torch.manual_seed(seed)
    return DetectorModule(TinyDet(num_classes), optimizer={"type": "SGD", "lr": lr, "momentum": 0.9},
                          evaluator=ScriptedMetric(values, key))


def trainer(tmp_path: Any, callbacks: list[pl.Callback], max_epochs: int = 2, **kwargs: Any) -> pl.Trainer:
    args: dict[str, Any] = dict(default_root_dir=str(tmp_path), max_epochs=max_epochs, logger=False,
                                enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                                accelerator="cpu", devices=1, use_distributed_sampler=False)
    args.update(kwargs)
    return pl.Trainer(callbacks=callbacks, **args)
