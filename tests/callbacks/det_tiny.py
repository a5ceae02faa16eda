"""The boring detector of :mod:`detlight.testing` with a scripted evaluator, shared by the checkpoint / evaluation /
EMA / misc / visualization callback tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torchmetrics import Metric

from detlight.module import DetectorModule
from detlight.testing import boring_loader, boring_module, boring_trainer

loader = boring_loader


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


def module(values: Sequence[float] = (0.1,), key: str = "bbox_mAP", lr: float = 0.1, num_classes: int = 2,
           seed: int = 0) -> DetectorModule:
    return boring_module(num_classes, lr=lr, evaluator=ScriptedMetric(values, key), seed=seed)


def trainer(tmp_path: Any, callbacks: list[pl.Callback], max_epochs: int = 2, **kwargs: Any) -> pl.Trainer:
    """:func:`detlight.testing.boring_trainer` with Lightning's default checkpointing and every batch."""
    kwargs.setdefault("enable_checkpointing", True)
    return boring_trainer(tmp_path, callbacks, max_epochs=max_epochs, limit_batches=None, **kwargs)
