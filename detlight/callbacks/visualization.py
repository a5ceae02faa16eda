"""Validation images with ground-truth and predicted boxes, logged to TensorBoard at each evaluation.

Replaces: mmdet's ``show_result`` / ``--show-dir`` drawing of detections (those write files after testing; this logs
images while training). Ground truth is drawn in green, predictions in a colour per class with ``name score`` labels.
The same drawing is available outside a Trainer through :func:`render_batch` (see :mod:`detlight.plotting`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torchvision.utils import draw_bounding_boxes
from typing_extensions import override

from detlight.exceptions import ConfigError

__all__ = ["DetVisualization", "denormalize", "draw_detections", "render_batch", "slice_batch"]

GT_COLOUR = (0, 200, 0)
CLASS_COLOURS = [(230, 25, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230),
                 (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)]


def denormalize(img: torch.Tensor, meta: Mapping[str, Any]) -> torch.Tensor:
    """Undo the pipeline's ``Normalize`` on one ``float[3, H, W]`` image and crop the padding: ``uint8[3, h, w]`` RGB.

    Reads ``img_norm_cfg`` (``mean``, ``std``, ``to_rgb``) and ``img_shape`` from ``meta``; without ``img_norm_cfg``
    the image is min-max scaled. A 0-1 pipeline (``to_unit_range``) is recognised by its values and scaled by 255.
    """
    h, w = int(meta["img_shape"][0]), int(meta["img_shape"][1])
    img = img.detach().float().cpu()[:, :h, :w]
    norm = meta.get("img_norm_cfg")
    if norm:
        mean = torch.tensor(norm["mean"], dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(norm["std"], dtype=torch.float32).view(3, 1, 1)
        img = img * std + mean
        if float(img.max()) <= 1.5:
            img = img * 255.0
        if not norm.get("to_rgb", True):
            img = img.flip(0)  # the pipeline kept mmcv's BGR order
    else:
        low, high = float(img.min()), float(img.max())
        img = (img - low) / max(high - low, 1e-6) * 255.0
    return img.clamp(0, 255).round().to(torch.uint8)


def draw_detections(
    image: torch.Tensor,
    class_names: Sequence[str],
    gt_boxes: torch.Tensor | None = None,
    gt_labels: torch.Tensor | None = None,
    det: Mapping[str, torch.Tensor] | None = None,
    score_thr: float = 0.3,
    max_dets: int = 20,
    upscale: int = 1,
) -> torch.Tensor:
    """Draw ground truth (green, class name) and detections (class colour, ``name score``) on ``uint8[3, H, W]``.

    Labels are written on a filled background in the box colour.

    Boxes are ``xyxy`` pixels in ``image``'s frame. Detections below ``score_thr`` are left out, and at most
    ``max_dets`` of the highest-scoring ones are drawn. ``upscale`` enlarges the image (nearest neighbour) first, so
    labels stay readable on small images.
    """
    if upscale > 1:
        image = image.repeat_interleave(upscale, dim=1).repeat_interleave(upscale, dim=2)

    def name(label: int) -> str:
        return class_names[label] if 0 <= label < len(class_names) else str(label)

    if gt_boxes is not None and len(gt_boxes):
        labels = gt_labels.tolist() if gt_labels is not None else [-1] * len(gt_boxes)
        image = draw_bounding_boxes(image, gt_boxes.detach().float().cpu() * upscale,
                                    labels=[name(int(lab)) for lab in labels], colors=GT_COLOUR, width=1,
                                    fill_labels=True)
    if det is not None and len(det["boxes"]):
        scores = det["scores"].detach().float().cpu()
        keep = (scores >= score_thr).nonzero().flatten()
        keep = keep[scores[keep].argsort(descending=True)][:max_dets]
        if len(keep):
            labels = det["labels"].detach().cpu()[keep].tolist()
            texts = [f"{name(int(lab))} {float(s):.2f}" for lab, s in zip(labels, scores[keep].tolist())]
            colours = [CLASS_COLOURS[int(lab) % len(CLASS_COLOURS)] for lab in labels]
            image = draw_bounding_boxes(image, det["boxes"].detach().float().cpu()[keep] * upscale, labels=texts,
                                        colors=colours, width=2, fill_labels=True)  # type: ignore[arg-type]
    return image


def slice_batch(batch: Mapping[str, Any], count: int) -> dict[str, Any]:
    """The first ``count`` images of a collated batch (tensors sliced on dim 0, lists cut)."""
    out: dict[str, Any] = {}
    for key, value in batch.items():
        out[key] = value[:count] if isinstance(value, (torch.Tensor, list, tuple)) else value
    return out


def render_batch(module: Any, batch: Mapping[str, Any], class_names: Sequence[str], num_images: int | None = None,
                 score_thr: float = 0.3, max_dets: int = 20, upscale: int = 1) -> list[torch.Tensor]:
    """Predict on (the first ``num_images`` images of) ``batch`` and draw each image: a list of ``uint8[3, H, W]``.

    ``module`` is a :class:`~detlight.module.DetectorModule` (anything with an ``adapter.predict(batch)``). The
    images are shown in the resized frame the detector saw (padding cropped); detections, which the adapter returns
    in the original frame, are scaled into it with ``scale_factor``. The module's train/eval mode is restored after.
    """
    if num_images is not None:
        batch = slice_batch(batch, num_images)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            dets = module.adapter.predict(batch)
    finally:
        module.train(was_training)
    images = []
    for i, (det, meta) in enumerate(zip(dets, batch["img_metas"])):
        scale = torch.as_tensor(meta.get("scale_factor", [1.0, 1.0, 1.0, 1.0]), dtype=torch.float32)
        det = {k: v.detach().cpu() for k, v in det.items()}
        det["boxes"] = det["boxes"].float() * scale
        gt_boxes = batch["gt_bboxes"][i] if "gt_bboxes" in batch else None
        gt_labels = batch["gt_labels"][i] if "gt_labels" in batch else None
        images.append(draw_detections(denormalize(batch["img"][i], meta), class_names, gt_boxes, gt_labels, det,
                                      score_thr=score_thr, max_dets=max_dets, upscale=upscale))
    return images


def class_names_of(trainer: pl.Trainer | None, pl_module: pl.LightningModule) -> tuple[str, ...]:
    """Class names from the datamodule (``CLASSES``), else the detector (``CLASSES``), else ``()``."""
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    for source in (datamodule, getattr(pl_module, "model", None)):
        names = getattr(source, "CLASSES", None)
        if names:
            return tuple(str(n) for n in names)
    return ()


class DetVisualization(Callback):
    """Logs the first ``num_images`` validation images with ground truth and predictions at each evaluation.

    Replaces: mmdet's ``show_result`` / ``--show-dir`` for the evaluation pass. On rank 0, the first validation
    batches of each validation epoch (``fit`` and ``validate``; not the sanity check) are predicted once more (only
    the images that are drawn) and rendered with :func:`render_batch`. Each image is logged to every logger that has
    a TensorBoard ``add_image`` as ``<tag>/<n>`` (``n`` = position in the val set, so one slider per image) at the
    Trainer's ``global_step``. The images of the last evaluation stay in :attr:`images` (``uint8[3, H, W]``).

    Args:
        num_images: how many validation images to draw.
        score_thr: detections scoring below this are not drawn.
        max_dets: most detections drawn per image (highest scores first).
        upscale: integer zoom before drawing, so labels stay readable on small images.
        tag: TensorBoard tag prefix.

    Raises:
        ValueError: ``num_images`` or ``upscale`` < 1, or ``score_thr`` outside [0, 1].

    Example:
        >>> cb = DetVisualization(num_images=2, score_thr=0.5)
        >>> cb.num_images, cb.images
        (2, [])
    """

    def __init__(self, num_images: int = 4, score_thr: float = 0.3, max_dets: int = 20, upscale: int = 2,
                 tag: str = "val_images") -> None:
        super().__init__()
        for key, value in (("num_images", num_images), ("upscale", upscale), ("max_dets", max_dets)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"Expected `{key}` to be an int >= 1, but got {value!r}")
        if not 0.0 <= float(score_thr) <= 1.0:
            raise ConfigError(f"Expected `score_thr` to be in [0, 1], but got {score_thr!r}")
        self.num_images = num_images
        self.score_thr = float(score_thr)
        self.max_dets = max_dets
        self.upscale = upscale
        self.tag = tag
        self.images: list[torch.Tensor] = []
        self._pending: list[torch.Tensor] = []
        self._warned = False

    def _active(self, trainer: pl.Trainer) -> bool:
        return trainer.is_global_zero and not trainer.sanity_checking

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pending = []

    @override
    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        wanted = self.num_images - len(self._pending)
        if dataloader_idx != 0 or wanted <= 0 or not self._active(trainer):
            return
        if not isinstance(batch, Mapping) or "img" not in batch or not hasattr(pl_module, "adapter"):
            return  # not a 2D detection batch (point clouds have their own BEV callback)
        self._pending += render_batch(pl_module, batch, class_names_of(trainer, pl_module), wanted,
                                      self.score_thr, self.max_dets, self.upscale)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._active(trainer) or not self._pending:
            return
        self.images, self._pending = self._pending, []
        # Any: a logger's `experiment` is backend-specific (SummaryWriter for TensorBoard); not on the Logger base
        writers: list[Any] = [getattr(lg, "experiment", None) for lg in trainer.loggers]
        writers = [w for w in writers if hasattr(w, "add_image")]
        if not writers and trainer.loggers and not self._warned:
            self._warned = True
            rank_zero_warn("DetVisualization: none of the loggers can take images (add a TensorBoardLogger); the "
                           "images are kept in `.images` only")
        for writer in writers:
            for n, image in enumerate(self.images):
                writer.add_image(f"{self.tag}/{n}", image, global_step=trainer.global_step)
