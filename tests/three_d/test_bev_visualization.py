"""BEV rendering and the TensorBoard callback."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from detlight.callbacks.bev_visualization import BEVVisualization, render_bev

RANGE = [0.0, -10.0, -3.0, 20.0, 10.0, 1.0]


def test_render_draws_points_and_boxes() -> None:
    points = torch.tensor([[10.0, 0.0, -1.0, 1.0], [50.0, 0.0, 0.0, 1.0]])  # second point is off the image
    gt = torch.tensor([[5.0, 5.0, -1.7, 4.0, 2.0, 1.5, 0.0]])
    pred = torch.tensor([[15.0, -5.0, -1.7, 4.0, 2.0, 1.5, 0.5], [15.0, 5.0, -1.7, 4.0, 2.0, 1.5, 0.5]])
    img = render_bev(points, RANGE, gt, pred, torch.tensor([2, 2]), torch.tensor([0.9, 0.1]), resolution=0.1)
    assert img.shape == (200, 200, 3) and img.dtype == np.uint8
    assert img[100, 100].tolist() == [255, 255, 255]  # x=10 -> row 100, y=0 -> col 100, intensity 1
    green = (img[..., 1] > 200) & (img[..., 0] < 50)
    rows, cols = np.nonzero(green)
    # the gt box spans x 3..7 (rows 130..170) and y 4..6 (cols 40..60)
    assert 128 <= rows.min() and rows.max() <= 172 and 38 <= cols.min() and cols.max() <= 62
    yellow = (img[..., 0] == 255) & (img[..., 1] == 200) & (img[..., 2] == 0)
    assert yellow[:, 100:].any() and not yellow[:, :100].any()  # only the confident prediction (y = -5) is drawn


class _Writer:
    def __init__(self) -> None:
        self.images: list[tuple[str, Any, int]] = []

    def add_image(self, tag: str, image: Any, step: int, dataformats: str = "CHW") -> None:
        self.images.append((tag, image.shape, step, dataformats))


class _Model:
    def simple_test(self, points: list, metas: list, rescale: bool = True) -> list[dict]:
        return [{"boxes_3d": torch.zeros(0, 7), "scores_3d": torch.zeros(0), "labels_3d": torch.zeros(0)}
                for _ in points]


def test_callback_logs_first_samples() -> None:
    writer = _Writer()
    trainer = SimpleNamespace(global_rank=0, sanity_checking=False, global_step=12,
                              loggers=[SimpleNamespace(experiment=writer), SimpleNamespace(experiment=object())])
    module = SimpleNamespace(model=_Model())
    batch = {"points": [torch.rand(50, 4) * 10] * 2, "gt_bboxes_3d": [torch.zeros(0, 7)] * 2,
             "img_metas": [{"sample_idx": 4, "point_cloud_range": RANGE}, {"sample_idx": 9, "point_cloud_range": RANGE}]}
    cb = BEVVisualization(max_images=3)
    cb.on_validation_epoch_start(trainer, module)
    cb.on_validation_batch_end(trainer, module, None, batch, 0)
    cb.on_validation_batch_end(trainer, module, None, batch, 1)
    cb.on_validation_epoch_end(trainer, module)
    assert writer.images == [("val/bev/4", (200, 200, 3), 12, "HWC"), ("val/bev/9", (200, 200, 3), 12, "HWC"),
                             ("val/bev/4", (200, 200, 3), 12, "HWC")]
