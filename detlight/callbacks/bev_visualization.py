"""Bird's-eye-view images of point clouds, ground truth and predictions, logged to TensorBoard at evaluation.

Replaces: mmdet3d's ``show_result`` / ``Det3DLocalVisualizer`` BEV drawing for the evaluation pass (those write files;
this logs images). Points are drawn grey (brighter with intensity), ground-truth boxes green, predictions coloured by
class with a heading tick; +x (forward) points up and +y (left) points left.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image, ImageDraw

from detlight.exceptions import ConfigError
from detlight.models.box3d import boxes_bev_corners

__all__ = ["BEVVisualization", "render_bev"]

_CLASS_COLOURS = [(255, 80, 80), (80, 160, 255), (255, 200, 0), (255, 0, 255), (0, 255, 255)]
_GT_COLOUR = (0, 220, 0)


def render_bev(points: torch.Tensor, point_cloud_range: Sequence[float], gt_boxes: torch.Tensor | None = None,
               pred_boxes: torch.Tensor | None = None, pred_labels: torch.Tensor | None = None,
               pred_scores: torch.Tensor | None = None, resolution: float = 0.1, score_thr: float = 0.3) -> np.ndarray:
    """Draw one scene as ``uint8[H, W, 3]``, ``H = (x1 - x0) / resolution`` and ``W = (y1 - y0) / resolution``.

    Predictions scoring below ``score_thr`` are not drawn.
    """
    x0, y0, _, x1, y1, _ = (float(v) for v in point_cloud_range)
    h, w = max(1, round((x1 - x0) / resolution)), max(1, round((y1 - y0) / resolution))
    img = np.zeros((h, w, 3), dtype=np.uint8)
    pts = points.detach().float().cpu()
    rows = ((x1 - pts[:, 0]) / resolution).long()
    cols = ((y1 - pts[:, 1]) / resolution).long()
    ok = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    shade = 110 + 145 * (pts[:, 3].clamp(0, 1) if pts.shape[1] > 3 else torch.zeros(len(pts)))
    img[rows[ok].numpy(), cols[ok].numpy()] = shade[ok].to(torch.uint8).numpy()[:, None]
    canvas = Image.fromarray(img)
    draw = ImageDraw.Draw(canvas)

    def to_px(xy: torch.Tensor) -> list[tuple[float, float]]:
        return [((y1 - float(y)) / resolution, (x1 - float(x)) / resolution) for x, y in xy.tolist()]

    def draw_boxes(boxes: torch.Tensor, colours: Sequence[tuple[int, int, int]]) -> None:
        boxes = boxes.detach().float().cpu().reshape(-1, boxes.shape[-1] if boxes.numel() else 7)
        for corners, box, colour in zip(boxes_bev_corners(boxes), boxes, colours):
            draw.polygon(to_px(corners), outline=colour)
            front = (corners[0] + corners[3]) / 2
            draw.line(to_px(torch.stack([box[:2], front])), fill=colour)

    if gt_boxes is not None and gt_boxes.numel():
        draw_boxes(gt_boxes, [_GT_COLOUR] * len(gt_boxes))
    if pred_boxes is not None and pred_boxes.numel():
        scores = pred_scores.cpu() if pred_scores is not None else torch.ones(len(pred_boxes))
        labels = pred_labels.cpu() if pred_labels is not None else torch.zeros(len(pred_boxes), dtype=torch.long)
        keep = scores >= score_thr
        colours = [_CLASS_COLOURS[int(c) % len(_CLASS_COLOURS)] for c in labels[keep].tolist()]
        draw_boxes(pred_boxes.cpu()[keep], colours)
    return np.asarray(canvas)


class BEVVisualization(Callback):
    """Log BEV images of the first ``max_images`` validation samples to TensorBoard after each evaluation.

    Predictions are taken from the validation step's output when it is a list of ``boxes_3d`` dicts, otherwise the
    callback runs ``pl_module.model.simple_test`` on the batch (a few samples, rank 0 only). Loggers without an
    ``experiment.add_image`` (TensorBoard's ``SummaryWriter`` API) are skipped.

    Args:
        max_images: samples drawn per evaluation.
        resolution: metres per pixel.
        score_thr: predictions below this score are not drawn.
        tag: TensorBoard tag prefix; images are ``<tag>/<sample_idx>``.
    """

    def __init__(self, max_images: int = 4, resolution: float = 0.1, score_thr: float = 0.3,
                 tag: str = "val/bev") -> None:
        if max_images < 0 or resolution <= 0:
            raise ConfigError(f"BEVVisualization needs max_images >= 0 and resolution > 0, got {max_images}, "
                              f"{resolution}")
        self.max_images, self.resolution, self.score_thr, self.tag = max_images, resolution, score_thr, tag
        self._pending: list[tuple[int, np.ndarray]] = []

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pending = []

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if trainer.global_rank != 0 or trainer.sanity_checking or len(self._pending) >= self.max_images:
            return
        if not isinstance(batch, Mapping) or "points" not in batch:
            return
        preds = outputs if _is_pred_list(outputs, len(batch["points"])) else None
        if preds is None:
            model: Any = getattr(pl_module, "model", pl_module)
            preds = model.simple_test(batch["points"], batch["img_metas"], rescale=True)
        for i, (points, meta) in enumerate(zip(batch["points"], batch["img_metas"])):
            if len(self._pending) >= self.max_images:
                break
            pc_range = meta.get("point_cloud_range") or _extent(points)
            gt = batch["gt_bboxes_3d"][i] if "gt_bboxes_3d" in batch else None
            image = render_bev(points, pc_range, gt, preds[i]["boxes_3d"], preds[i]["labels_3d"],
                               preds[i]["scores_3d"], self.resolution, self.score_thr)
            self._pending.append((int(meta.get("sample_idx", len(self._pending))), image))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank != 0 or trainer.sanity_checking:
            return
        experiments: list[Any] = [getattr(lg, "experiment", None) for lg in trainer.loggers]
        writers = [w for w in experiments if hasattr(w, "add_image")]
        for writer in writers:
            for sample_idx, image in self._pending:
                writer.add_image(f"{self.tag}/{sample_idx}", image, trainer.global_step, dataformats="HWC")
        self._pending = []


def _is_pred_list(outputs: Any, n: int) -> bool:
    return isinstance(outputs, (list, tuple)) and len(outputs) == n and all(
        isinstance(o, Mapping) and "boxes_3d" in o for o in outputs)


def _extent(points: torch.Tensor) -> list[float]:
    lo, hi = points[:, :3].min(dim=0).values.tolist(), points[:, :3].max(dim=0).values.tolist()
    return [*lo, *(h + 1e-3 for h in hi)]
