"""The detector contracts detlight trains: mmdet's (``forward_train`` / ``train_step`` / ``simple_test``) and
torchvision's (``model(images, targets)``).

Batch layout (what :func:`detlight.data.collate.collate` yields and every contract below receives):

- ``img``: ``float32[B, 3, H, W]``, normalized and padded to the size divisor (bottom/right padding).
- ``img_metas``: ``list[dict]`` with ``filename``, ``image_id`` (int), ``ori_shape`` / ``img_shape`` / ``pad_shape``
  (``(h, w, 3)``), ``scale_factor`` (``[sx, sy, sx, sy]`` floats: resized = original * scale), ``flip`` (bool),
  ``flip_direction``.
- ``gt_bboxes``: ``list[float32[n_i, 4]]`` in the *resized, flipped* image frame, ``xyxy`` pixels.
- ``gt_labels``: ``list[int64[n_i]]``, 0-based contiguous class indices.

Detections (what :meth:`DetectorAdapter.predict` returns, one dict per image, in the *original* image frame):
``{"boxes": float32[n, 4] xyxy, "scores": float32[n], "labels": int64[n]}``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from detlight.exceptions import ModelContractError

__all__ = ["DetectorAdapter", "parse_losses", "to_detections"]


def parse_losses(losses: Mapping[str, Any]) -> tuple[torch.Tensor, OrderedDict[str, torch.Tensor]]:
    """mmdet's ``BaseDetector._parse_losses`` without the host sync.

    Each tensor is averaged (``.mean()``); a list of tensors contributes the sum of its means. The total ``loss`` is
    the sum of every entry whose key contains ``"loss"``; other entries (accuracies, ...) are only logged. The returned
    ``log_vars`` keep the head's key order, then ``loss``, and hold detached 0-dim tensors (mmdet calls ``.item()``;
    detlight defers that to the log interval).

    Raises:
        TypeError: a value is neither a tensor nor a list of tensors.
        ValueError: no key contains ``"loss"``.

    Example:
        >>> loss, log_vars = parse_losses({"loss_cls": torch.tensor([1.0, 3.0]), "acc": torch.tensor(0.5),
        ...                                "loss_bbox": [torch.tensor(1.0), torch.tensor([2.0, 4.0])]})
        >>> float(loss), list(log_vars)
        (6.0, ['loss_cls', 'acc', 'loss_bbox', 'loss'])
    """
    means: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name, value in losses.items():
        if isinstance(value, torch.Tensor):
            means[name] = value.mean()
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
            means[name] = sum(v.mean() for v in value)  # type: ignore[assignment]
        else:
            raise ModelContractError(
                f"Expected loss `{name}` to be a tensor or a list of tensors, but got {type(value).__name__}. "
                "The detector's forward_train must return dict[str, Tensor | list[Tensor]]."
            )
    loss_keys = [k for k in means if "loss" in k]
    if not loss_keys:
        raise ModelContractError(
            f"The detector returned no key containing 'loss' (got keys {sorted(means)}); detlight sums the entries "
            "whose key contains 'loss' into the total loss, as mmdet does. Rename the loss terms, e.g. `loss_cls`."
        )
    loss = sum(means[k] for k in loss_keys)
    log_vars: OrderedDict[str, torch.Tensor] = OrderedDict((k, v.detach()) for k, v in means.items())
    log_vars["loss"] = loss.detach()  # type: ignore[union-attr]
    return loss, log_vars  # type: ignore[return-value]


def to_detections(result: Any, device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """Normalise one image's detections to ``{"boxes", "scores", "labels"}``.

    Accepts a dict (torchvision style, or ``bboxes``/``scores``/``labels``), a ``(bboxes[n, 5], labels[n])`` pair
    (mmdet head output), or mmdet's ``bbox2result`` list with one ``[n, 5]`` array per class.
    """
    if isinstance(result, Mapping):
        boxes = result.get("boxes", result.get("bboxes"))
        scores, labels = result.get("scores"), result.get("labels")
        if boxes is None or scores is None or labels is None:
            raise ModelContractError(f"Detection dict needs boxes, scores and labels; got keys {sorted(result)}")
        out = {"boxes": torch.as_tensor(boxes), "scores": torch.as_tensor(scores), "labels": torch.as_tensor(labels)}
    elif isinstance(result, tuple) and len(result) == 2 and not isinstance(result[0], (list, tuple)):
        bboxes, labels = torch.as_tensor(result[0]), torch.as_tensor(result[1])
        out = {"boxes": bboxes[:, :4], "scores": bboxes[:, 4], "labels": labels}
    elif isinstance(result, (list, tuple)):
        per_class = [torch.as_tensor(np.asarray(r, dtype=np.float32)).reshape(-1, 5) for r in result]
        stacked = torch.cat(per_class) if per_class else torch.zeros(0, 5)
        labels = torch.cat([torch.full((len(r),), i, dtype=torch.int64) for i, r in enumerate(per_class)]) \
            if per_class else torch.zeros(0, dtype=torch.int64)
        out = {"boxes": stacked[:, :4], "scores": stacked[:, 4], "labels": labels}
    else:
        raise ModelContractError(f"Cannot read detections of type {type(result).__name__}")
    out["boxes"] = out["boxes"].float().reshape(-1, 4)
    out["scores"] = out["scores"].float().reshape(-1)
    out["labels"] = out["labels"].long().reshape(-1)
    if device is not None:
        out = {k: v.to(device) for k, v in out.items()}
    return out


class DetectorAdapter:
    """Calls a detector through whichever contract it implements.

    Order of preference: mmdet ``forward_train`` (losses parsed by :func:`parse_losses`), mmdet ``train_step``
    (returns ``loss``/``log_vars``/``num_samples`` itself), then the torchvision contract
    (``model(images, targets)`` -> loss dict in train mode; list of ``{boxes, labels, scores}`` in eval mode).

    The torchvision contract receives the un-padded per-image crops of ``batch["img"]``; torchvision detectors
    normalise internally, so give such a detector a pipeline with ``mean=[0,0,0], std=[1,1,1]`` and 0-1 scaling
    (``PipelineConfig.to_unit_range``) or expect a double normalisation.
    """

    #: the detector; Any because the contract methods (forward_train, train_step, simple_test) are duck-typed
    model: Any

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        if hasattr(model, "forward_train"):
            self.kind = "mmdet"
        elif hasattr(model, "train_step"):
            self.kind = "mmdet_train_step"
        else:
            self.kind = "torchvision"

    # ------------------------------------------------------------------ training
    def losses(self, batch: dict[str, Any], optimizer: Any = None) -> dict[str, Any]:
        """Run the training forward and return ``{"loss", "log_vars", "num_samples"}`` (mmcv ``runner.outputs``)."""
        num_samples = len(batch["img_metas"])
        if self.kind == "mmdet":
            raw = self.model.forward_train(**batch)
            loss, log_vars = parse_losses(raw)
            return {"loss": loss, "log_vars": log_vars, "num_samples": num_samples}
        if self.kind == "mmdet_train_step":
            out = dict(self.model.train_step(batch, optimizer))
            missing = {"loss", "log_vars"} - set(out)
            if missing:
                raise ModelContractError(f"train_step must return loss, log_vars and num_samples; missing "
                                         f"{sorted(missing)}")
            out.setdefault("num_samples", num_samples)
            return out
        images = self._crops(batch)
        targets = [{"boxes": b, "labels": lab} for b, lab in zip(batch["gt_bboxes"], batch["gt_labels"])]
        raw = self.model(images, targets)
        loss, log_vars = parse_losses(raw)
        return {"loss": loss, "log_vars": log_vars, "num_samples": num_samples}

    def val_losses(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Losses on a validation batch (mmcv ``val_step``), used by a ``('val', n)`` workflow phase."""
        if self.kind == "mmdet_train_step" and hasattr(self.model, "val_step"):
            out = dict(self.model.val_step(batch, None))
            out.setdefault("num_samples", len(batch["img_metas"]))
            return out
        if self.kind == "torchvision":
            was_training = self.model.training
            self.model.train()  # torchvision detectors only return losses in train mode
            try:
                return self.losses(batch)
            finally:
                self.model.train(was_training)
        return self.losses(batch)

    # ------------------------------------------------------------------ inference
    def predict(self, batch: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
        """Per-image detections in the original image frame (see module docstring).

        Point-cloud batches (a ``points`` key) are passed to ``simple_test(points, img_metas, rescale=True)`` and its
        results are returned unchanged.
        """
        metas = batch["img_metas"]
        if "points" in batch and hasattr(self.model, "simple_test"):
            # 3D detectors return their own box layout (boxes_3d / scores_3d / labels_3d); the evaluator reads it.
            return list(self.model.simple_test(batch["points"], metas, rescale=True))
        if hasattr(self.model, "simple_test"):
            results = self.model.simple_test(batch["img"], metas, rescale=True)
            return [to_detections(r) for r in results]
        if hasattr(self.model, "forward_test"):
            results = self.model.forward_test([batch["img"]], [metas], rescale=True)
            return [to_detections(r) for r in results]
        results = self.model(self._crops(batch))
        dets = []
        for r, meta in zip(results, metas):
            det = to_detections(r)
            scale = det["boxes"].new_tensor(meta["scale_factor"])
            det["boxes"] = det["boxes"] / scale
            if meta.get("flip"):
                det["boxes"] = flip_boxes(det["boxes"], meta["ori_shape"], meta.get("flip_direction", "horizontal"))
            dets.append(det)
        return dets

    @staticmethod
    def _crops(batch: dict[str, Any]) -> list[torch.Tensor]:
        return [img[:, : meta["img_shape"][0], : meta["img_shape"][1]] for img, meta in zip(batch["img"],
                                                                                          batch["img_metas"])]


def flip_boxes(boxes: torch.Tensor, shape: Sequence[int], direction: str = "horizontal") -> torch.Tensor:
    """Mirror ``xyxy`` boxes inside an image of ``shape = (h, w, ...)``."""
    flipped = boxes.clone()
    h, w = shape[0], shape[1]
    if direction == "horizontal":
        flipped[:, 0], flipped[:, 2] = w - boxes[:, 2], w - boxes[:, 0]
    elif direction == "vertical":
        flipped[:, 1], flipped[:, 3] = h - boxes[:, 3], h - boxes[:, 1]
    else:
        raise ValueError(f"flip_direction must be 'horizontal' or 'vertical', got {direction!r}")
    return flipped
