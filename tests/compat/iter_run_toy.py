"""The toy detector and data of the logged IterBasedRunner run, importable with torch alone: the recording script
(``record_mmcv_iter_run.py``, real mmcv) and its replay (``test_mmcv_iter_logs.py``, detlight) use the same ones.

The run: ``runner=dict(type='IterBasedRunner', max_iters=7)``, ``workflow=[('train', 3), ('val', 2)]``, log
interval 2, ``evaluation=dict(interval=2, by_epoch=False, save_best="acc")``, SGD lr 0.1 momentum 0.9, a train
loader of 4 batches and a val loader of 3 batches of 2 images (a val phase takes 2), no shuffling.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

MAX_ITERS = 7
WORKFLOW = [("train", 3), ("val", 2)]
LOG_INTERVAL = 2
EVAL_INTERVAL = 2
TRAIN_BATCHES, VAL_BATCHES, BATCH_SIZE = 4, 3, 2
LR, MOMENTUM = 0.1, 0.9


class ToyDetector(nn.Module):
    """mmdet's model interface: ``train_step`` / ``val_step`` (losses ``loss_cls`` and ``loss_reg``),
    ``forward(return_loss=False)`` / ``simple_test`` (one box per image scored by the model)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3, 2)

    def _losses(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.fc(img.mean(dim=(2, 3)))
        return {"loss_cls": (out[:, 0] - 1.0).pow(2).mean(), "loss_reg": out[:, 1].abs().mean()}

    def _step(self, data: dict[str, Any]) -> dict[str, Any]:
        losses = self._losses(data["img"])
        loss = sum(losses.values())
        log_vars = OrderedDict((k, float(v.item())) for k, v in losses.items())
        log_vars["loss"] = float(loss.item())
        return {"loss": loss, "log_vars": log_vars, "num_samples": len(data["img_metas"])}

    def train_step(self, data: dict[str, Any], optimizer: Any = None, **kwargs: Any) -> dict[str, Any]:
        return self._step(data)

    def val_step(self, data: dict[str, Any], optimizer: Any = None, **kwargs: Any) -> dict[str, Any]:
        return self._step(data)

    def simple_test(self, img: torch.Tensor, img_metas: list[dict], rescale: bool = True) -> list[dict[str, Any]]:
        scores = torch.sigmoid(self.fc(img.mean(dim=(2, 3)))[:, 0]).detach()
        return [{"boxes": torch.tensor([[0.0, 0.0, 2.0, 2.0]]), "scores": s.reshape(1),
                 "labels": torch.zeros(1, dtype=torch.long)} for s in scores]

    def forward(self, img: torch.Tensor, img_metas: list[dict], return_loss: bool = True, **kwargs: Any) -> Any:
        if return_loss:
            return self._losses(img)
        return self.simple_test(img, img_metas)


def mean_score(results: list[dict[str, Any]]) -> float:
    """The evaluation metric of the run: the mean score of the images' boxes."""
    return float(torch.cat([r["scores"].reshape(-1) for r in results]).mean())


class ToyDataset(Dataset):
    """``n`` images of 3x4x4 from a fixed seed per index; ``evaluate`` gives ``{"acc": mean_score}``."""

    def __init__(self, n: int, offset: int = 0) -> None:
        self.n, self.offset = n, offset

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i + self.offset

    def evaluate(self, results: list[dict[str, Any]], logger: Any = None, **kwargs: Any) -> dict[str, float]:
        return {"acc": mean_score(results)}


def collate(items: list[int]) -> dict[str, Any]:
    images = [torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(i)) for i in items]
    return {"img": torch.stack(images), "img_metas": [{"idx": i} for i in items],
            "gt_bboxes": [torch.zeros(0, 4) for _ in items], "gt_labels": [torch.zeros(0, dtype=torch.long)
                                                                           for _ in items]}


def train_loader() -> DataLoader:
    return DataLoader(ToyDataset(TRAIN_BATCHES * BATCH_SIZE), batch_size=BATCH_SIZE, shuffle=False, collate_fn=collate)


def val_loader() -> DataLoader:
    return DataLoader(ToyDataset(VAL_BATCHES * BATCH_SIZE, offset=1000), batch_size=BATCH_SIZE, shuffle=False,
                      collate_fn=collate)
