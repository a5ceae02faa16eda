"""COCO box (and mask) mAP with mmdet's metric names, exact under DDP.

Replaces: mmdet's ``CocoDataset.evaluate(metric=['bbox', 'segm'])`` as called by ``EvalHook`` / ``DistEvalHook``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torchmetrics import Metric

from detlight.exceptions import ConfigError, ModelContractError
from detlight.models.contract import flip_boxes, masks_to_original

__all__ = ["CocoMeanAP", "MMDET_KEYS"]

#: torchmetrics ``MeanAveragePrecision`` result key -> mmdet ``CocoDataset.evaluate`` key.
MMDET_KEYS: dict[str, str] = {
    "map": "bbox_mAP",
    "map_50": "bbox_mAP_50",
    "map_75": "bbox_mAP_75",
    "map_small": "bbox_mAP_s",
    "map_medium": "bbox_mAP_m",
    "map_large": "bbox_mAP_l",
}


class CocoMeanAP(Metric):
    """COCO bbox mAP computed by ``torchmetrics.detection.MeanAveragePrecision`` (faster-coco-eval backend).

    As input to ``update``:

    - ``preds``: one dict per image, in the *original* image frame: ``boxes`` float ``[n, 4]`` xyxy pixels,
      ``scores`` float ``[n]``, ``labels`` int64 ``[n]`` (0-based class index).
    - ``batch``: the collated batch (layout in :mod:`detlight.models.contract`). Ground truth is read from
      ``gt_bboxes`` (resized/flipped frame) and mapped back to the original frame with ``img_metas[i]["scale_factor"]``
      and ``flip``; ``img_metas[i]["image_id"]`` identifies the image.

    Under DDP the distributed sampler pads the last batch with duplicates; states are gathered as flat tensors and
    duplicates are dropped by ``image_id`` before evaluation, so N ranks give the single-process result.

    With ``"segm"`` in ``iou_types`` the predictions also carry ``masks`` (bool ``[n, H, W]``, original frame) and
    the batch ``gt_masks`` (``uint8[n, h, w]`` in the resized, flipped frame, see :mod:`detlight.models.contract`);
    mask AP is reported as ``segm_mAP``, ``segm_mAP_50``, ... Masks are kept as flat uint8 states with their sizes.

    Args:
        class_names: optional names; when given, per-class AP is reported as ``bbox_AP_<name>``.
        backend: ``faster_coco_eval`` (default) or ``pycocotools``.
        iou_types: ``("bbox",)`` or ``("bbox", "segm")``.
    """

    full_state_update = False
    higher_is_better = True
    backend: Literal["faster_coco_eval", "pycocotools"]
    # States (``add_state(..., default=[])``): per-image tensors; after a DDP sync, one concatenated tensor each.
    det_boxes: list[torch.Tensor]
    det_scores: list[torch.Tensor]
    det_labels: list[torch.Tensor]
    det_counts: list[torch.Tensor]
    gt_boxes: list[torch.Tensor]
    gt_labels: list[torch.Tensor]
    gt_counts: list[torch.Tensor]
    image_ids: list[torch.Tensor]
    det_masks: list[torch.Tensor]  # segm only: flattened uint8 masks per image
    gt_masks: list[torch.Tensor]
    mask_hw: list[torch.Tensor]

    def __init__(self, class_names: Sequence[str] | None = None, backend: str = "faster_coco_eval",
                 iou_types: Sequence[str] = ("bbox",), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if backend not in ("faster_coco_eval", "pycocotools"):
            raise ConfigError(f"Expected `backend` to be 'faster_coco_eval' or 'pycocotools', but got {backend!r}")
        self.iou_types = tuple(iou_types)
        if not self.iou_types or set(self.iou_types) - {"bbox", "segm"}:
            raise ConfigError(f"Expected `iou_types` to hold 'bbox' and/or 'segm', but got {iou_types!r}")
        if "segm" in self.iou_types:
            for name in ("det_masks", "gt_masks", "mask_hw"):
                self.add_state(name, default=[], dist_reduce_fx="cat")
        self.class_names = list(class_names) if class_names is not None else None
        self.backend = "pycocotools" if backend == "pycocotools" else "faster_coco_eval"  # as a Literal
        for name in ("det_boxes", "det_scores", "det_labels", "det_counts",
                     "gt_boxes", "gt_labels", "gt_counts", "image_ids"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, preds: Sequence[dict[str, torch.Tensor]], batch: dict[str, Any]) -> None:  # type: ignore[override]
        """Store one batch of detections and its ground truth (see class docstring for the layout)."""
        metas = batch["img_metas"]
        if len(preds) != len(metas):
            raise ValueError(f"Expected one prediction per image ({len(metas)}), but got {len(preds)}")
        device = self.device
        for det, gt_boxes, gt_labels, meta in zip(preds, batch["gt_bboxes"], batch["gt_labels"], metas):
            boxes = gt_boxes.to(device=device, dtype=torch.float32) / torch.tensor(
                meta["scale_factor"], dtype=torch.float32, device=device)
            if meta.get("flip"):
                boxes = flip_boxes(boxes, meta["ori_shape"], meta.get("flip_direction", "horizontal"))
            self.det_boxes.append(det["boxes"].to(device=device, dtype=torch.float32).reshape(-1, 4))
            self.det_scores.append(det["scores"].to(device=device, dtype=torch.float32).reshape(-1))
            self.det_labels.append(det["labels"].to(device=device, dtype=torch.int64).reshape(-1))
            self.det_counts.append(torch.tensor([len(det["scores"])], device=device, dtype=torch.int64))
            self.gt_boxes.append(boxes.reshape(-1, 4))
            self.gt_labels.append(gt_labels.to(device=device, dtype=torch.int64).reshape(-1))
            self.gt_counts.append(torch.tensor([len(gt_labels)], device=device, dtype=torch.int64))
            self.image_ids.append(torch.tensor([int(meta["image_id"])], device=device, dtype=torch.int64))
        if "segm" in self.iou_types:
            self._update_masks(preds, batch)

    def _update_masks(self, preds: Sequence[dict[str, torch.Tensor]], batch: dict[str, Any]) -> None:
        if "gt_masks" not in batch:
            raise ConfigError("segm evaluation needs `gt_masks` in the batch: set `data.init_args.pipeline.with_mask: "
                          "true`.")
        for det, gt_masks, meta in zip(preds, batch["gt_masks"], batch["img_metas"]):
            if "masks" not in det:
                raise ModelContractError("segm evaluation needs `masks` in the detections; the detector predicts none.")
            h, w = int(meta["ori_shape"][0]), int(meta["ori_shape"][1])
            gt = masks_to_original(gt_masks.to(self.device), meta) > 0.5
            self.det_masks.append(det["masks"].to(self.device, torch.uint8).reshape(-1))
            self.gt_masks.append(gt.to(torch.uint8).reshape(-1))
            self.mask_hw.append(torch.tensor([h, w], device=self.device, dtype=torch.int64))

    def compute(self) -> OrderedDict[str, torch.Tensor]:
        """mmdet-named results: ``bbox_mAP``, ``bbox_mAP_50``, ``bbox_mAP_75``, ``bbox_mAP_s/m/l``."""
        from torchmetrics.detection import MeanAveragePrecision

        def cat(x: Any, width: int | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            if isinstance(x, torch.Tensor):
                return x
            if x:
                return torch.cat(x)
            shape = (0, width) if width else (0,)
            return torch.zeros(shape, dtype=dtype, device=self.device)

        image_ids = cat(self.image_ids, dtype=torch.int64).tolist()
        det_counts = cat(self.det_counts, dtype=torch.int64).tolist()
        gt_counts = cat(self.gt_counts, dtype=torch.int64).tolist()
        det_boxes = cat(self.det_boxes, 4).split(det_counts)
        det_scores = cat(self.det_scores).split(det_counts)
        det_labels = cat(self.det_labels, dtype=torch.int64).split(det_counts)
        gt_boxes = cat(self.gt_boxes, 4).split(gt_counts)
        gt_labels = cat(self.gt_labels, dtype=torch.int64).split(gt_counts)

        segm = "segm" in self.iou_types
        if segm:
            hw = cat(self.mask_hw, dtype=torch.int64).reshape(-1, 2).tolist()
            det_masks = cat(self.det_masks, dtype=torch.uint8).split([n * h * w for n, (h, w) in zip(det_counts, hw)])
            gt_masks = cat(self.gt_masks, dtype=torch.uint8).split([n * h * w for n, (h, w) in zip(gt_counts, hw)])

        preds, target, seen = [], [], set()
        for i, image_id in enumerate(image_ids):
            if image_id in seen:  # padding duplicate from the distributed sampler
                continue
            seen.add(image_id)
            preds.append({"boxes": det_boxes[i].cpu(), "scores": det_scores[i].cpu(), "labels": det_labels[i].cpu()})
            target.append({"boxes": gt_boxes[i].cpu(), "labels": gt_labels[i].cpu()})
            if segm:
                h, w = hw[i]
                preds[-1]["masks"] = det_masks[i].reshape(-1, h, w).bool().cpu()
                target[-1]["masks"] = gt_masks[i].reshape(-1, h, w).bool().cpu()

        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for iou_type in self.iou_types:
            metric = MeanAveragePrecision(iou_type=iou_type, backend=self.backend,  # type: ignore[arg-type]
                                          sync_on_compute=False,
                                          class_metrics=self.class_names is not None and iou_type == "bbox")
            metric.update(preds, target)
            raw_type = metric.compute()
            for key, name in MMDET_KEYS.items():
                out[name.replace("bbox", iou_type, 1)] = raw_type[key].to(torch.float32)
            if iou_type == "bbox":
                raw = raw_type
        if "bbox" in self.iou_types and self.class_names is not None and raw["map_per_class"].numel() > 1:
            for cls, ap in zip(raw["classes"].tolist(), raw["map_per_class"].tolist()):
                if 0 <= cls < len(self.class_names):
                    out[f"bbox_AP_{self.class_names[cls]}"] = torch.tensor(ap)
        self.num_images = len(preds)  # after de-duplication; handy to check distributed evaluation
        return out
