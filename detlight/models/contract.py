"""The detector contracts detlight trains: mmdet's (``forward_train`` / ``train_step`` / ``simple_test``) and
torchvision's (``model(images, targets)``).

Batch layout (what :func:`detlight.data.collate.collate` yields and every contract below receives):

- ``img``: ``float32[B, 3, H, W]``, normalized and padded to the size divisor (bottom/right padding).
- ``img_metas``: ``list[dict]`` with ``filename``, ``image_id`` (int), ``ori_shape`` / ``img_shape`` / ``pad_shape``
  (``(h, w, 3)``), ``scale_factor`` (``[sx, sy, sx, sy]`` floats: resized = original * scale), ``flip`` (bool),
  ``flip_direction``.
- ``gt_bboxes``: ``list[float32[n_i, 4]]`` in the *resized, flipped* image frame, ``xyxy`` pixels.
- ``gt_labels``: ``list[int64[n_i]]``, 0-based contiguous class indices.

- ``gt_masks`` (only with ``PipelineConfig.with_mask``): ``list[uint8[n_i, h_i, w_i]]`` instance masks in the
  resized, flipped, *un-padded* image frame (``img_shape``).

Detections (what :meth:`DetectorAdapter.predict` returns, one dict per image, in the *original* image frame):
``{"boxes": float32[n, 4] xyxy, "scores": float32[n], "labels": int64[n]}`` (0-based labels), plus
``"masks": bool[n, H, W]`` (original size) for detectors that predict masks.

torchvision detectors: :data:`TORCHVISION_FAMILIES` declares, per torchvision class, whether the model reserves class
0 for background (then labels go in as ``label + 1`` and come out as ``label - 1``) and which extra targets it needs
(``masks``, ``keypoints``). In train mode every key such a detector returns is a loss.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from detlight.exceptions import ModelContractError

__all__ = ["TORCHVISION_FAMILIES", "DetectorAdapter", "TorchvisionFamily", "parse_losses", "to_detections",
           "torchvision_family"]


def parse_losses(losses: Mapping[str, Any], all_losses: bool = False,
                 model_name: str = "The detector") -> tuple[torch.Tensor, OrderedDict[str, torch.Tensor]]:
    """mmdet's ``BaseDetector._parse_losses`` without the host sync.

    With ``all_losses`` (the torchvision contract, whose train-mode output holds losses only, whatever their names:
    ``classification``, ``bbox_regression``, ``bbox_ctrness``, ...) every entry is summed into ``loss``.

    Each tensor is averaged (``.mean()``); a list of tensors contributes the sum of its means. The total ``loss`` is
    the sum of every entry whose key contains ``"loss"``; other entries (accuracies, ...) are only logged. The returned
    ``log_vars`` keep the head's key order, then ``loss``, and hold detached 0-dim tensors (mmdet calls ``.item()``;
    detlight defers that to the log interval).

    Raises:
        ModelContractError: ``losses`` is not a mapping, a value is neither a tensor nor a list of tensors, or (mmdet
            rule) no key contains ``"loss"``.

    Example:
        >>> loss, log_vars = parse_losses({"loss_cls": torch.tensor([1.0, 3.0]), "acc": torch.tensor(0.5),
        ...                                "loss_bbox": [torch.tensor(1.0), torch.tensor([2.0, 4.0])]})
        >>> float(loss), list(log_vars)
        (6.0, ['loss_cls', 'acc', 'loss_bbox', 'loss'])
    """
    if not isinstance(losses, Mapping):
        raise ModelContractError(
            f"{model_name} returned {type(losses).__name__} in train mode; detlight expects a dict of loss tensors "
            "(str -> Tensor or list of Tensors). Return e.g. {'loss_cls': ..., 'loss_bbox': ...} from the training "
            "forward."
        )
    means: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name, value in losses.items():
        if isinstance(value, torch.Tensor):
            means[name] = value.mean()
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
            means[name] = sum(v.mean() for v in value)  # type: ignore[assignment]
        else:
            raise ModelContractError(
                f"Expected loss `{name}` of {model_name} to be a tensor or a list of tensors, but got "
                f"{type(value).__name__}. The training forward must return dict[str, Tensor | list[Tensor]]."
            )
    loss_keys = list(means) if all_losses else [k for k in means if "loss" in k]
    if not loss_keys:
        raise ModelContractError(
            f"{model_name} returned no key containing 'loss' (got keys {sorted(means)}); detlight sums the entries "
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


@dataclass(frozen=True)
class TorchvisionFamily:
    """What detlight must know about one torchvision detector class to train and evaluate it.

    Args:
        name: the family's name in messages.
        background: the classifier reserves index 0 for background, so a dataset of ``C`` classes needs a head of
            ``C + 1`` and labels are shifted by +1 on the way in and -1 on the way out.
        targets: target keys needed beyond ``boxes`` and ``labels`` (``masks``, ``keypoints``).
        head_classes: returns the number of classes the built model's classifier scores (background included).
    """

    name: str
    background: bool
    targets: tuple[str, ...]
    head_classes: Callable[[nn.Module], int | None]


def _rcnn_classes(model: nn.Module) -> int | None:
    predictor = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
    cls_score = getattr(predictor, "cls_score", None)
    return int(cls_score.out_features) if isinstance(cls_score, nn.Linear) else None


def _dense_classes(model: nn.Module) -> int | None:
    num = getattr(getattr(getattr(model, "head", None), "classification_head", None), "num_classes", None)
    return int(num) if isinstance(num, int) else None


def _ssd_classes(model: nn.Module) -> int | None:
    num = getattr(getattr(getattr(model, "head", None), "classification_head", None), "num_columns", None)
    return int(num) if isinstance(num, int) else None


def _build_families() -> dict[type, TorchvisionFamily]:
    from torchvision.models import detection as tvd
    from torchvision.models.detection.ssd import SSD

    return {
        tvd.KeypointRCNN: TorchvisionFamily("KeypointRCNN", True, ("keypoints",), _rcnn_classes),
        tvd.MaskRCNN: TorchvisionFamily("MaskRCNN", True, ("masks",), _rcnn_classes),
        tvd.FasterRCNN: TorchvisionFamily("FasterRCNN", True, (), _rcnn_classes),
        tvd.RetinaNet: TorchvisionFamily("RetinaNet", False, (), _dense_classes),
        tvd.FCOS: TorchvisionFamily("FCOS", False, (), _dense_classes),
        SSD: TorchvisionFamily("SSD", True, (), _ssd_classes),  # SSDLite is an SSD instance
    }


#: torchvision detector class -> its family. Looked up along the model's MRO, so subclasses inherit their base's
#: entry (MaskRCNN and KeypointRCNN are listed before FasterRCNN, which they subclass). Add your own class here to
#: declare its background convention; a torchvision-contract model found nowhere in the MRO gets labels unchanged.
TORCHVISION_FAMILIES: dict[type, TorchvisionFamily] = {}


def torchvision_family(model: nn.Module) -> TorchvisionFamily | None:
    """The :class:`TorchvisionFamily` declared for ``model``'s class (or a base class), else ``None``."""
    if not TORCHVISION_FAMILIES:
        TORCHVISION_FAMILIES.update(_build_families())
    for cls in type(model).__mro__:
        if cls in TORCHVISION_FAMILIES:
            return TORCHVISION_FAMILIES[cls]
    return None


class DetectorAdapter:
    """Calls a detector through whichever contract it implements.

    Order of preference: mmdet ``forward_train`` (losses parsed by :func:`parse_losses`), mmdet ``train_step``
    (returns ``loss``/``log_vars``/``num_samples`` itself), then the torchvision contract
    (``model(images, targets)`` -> loss dict in train mode, every entry a loss; list of ``{boxes, labels, scores}``
    in eval mode).

    The torchvision contract receives the un-padded per-image crops of ``batch["img"]``; torchvision detectors
    normalise internally, so give such a detector a pipeline with ``mean=[0,0,0], std=[1,1,1]`` and 0-1 scaling
    (``PipelineConfig.to_unit_range``) or expect a double normalisation. Labels are shifted for families with a
    background class (:data:`TORCHVISION_FAMILIES`), checked against the head's class count, and masks / keypoints
    are passed when the family needs them.
    """

    #: the detector; Any because the contract methods (forward_train, train_step, simple_test) are duck-typed
    model: Any

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.family: TorchvisionFamily | None = None
        self._labels_checked_on_device = False
        if hasattr(model, "forward_train"):
            self.kind = "mmdet"
        elif hasattr(model, "train_step"):
            self.kind = "mmdet_train_step"
        else:
            self.kind = "torchvision"
            self.family = torchvision_family(model)

    @property
    def label_offset(self) -> int:
        """1 for torchvision families with a background class at index 0, else 0."""
        return 1 if self.family is not None and self.family.background else 0

    @property
    def needs(self) -> tuple[str, ...]:
        """Target keys the detector needs beyond boxes and labels (``masks``, ``keypoints``)."""
        return self.family.targets if self.family is not None else ()

    def num_classes(self) -> int | None:
        """The dataset classes the detector can predict (background excluded), when the family declares it."""
        if self.family is None:
            return None
        head = self.family.head_classes(self.model)
        return None if head is None else head - self.label_offset

    @property
    def model_name(self) -> str:
        family = f" ({self.family.name} family)" if self.family is not None else ""
        return f"`{type(self.model).__name__}`{family}"

    # ------------------------------------------------------------------ training
    def check_inputs(self, batch: Mapping[str, Any], source: str) -> None:
        """Refuse a batch that the detector's ``forward_train`` cannot take (a 3D model on image data, ...).

        Checked on the first training batch, before the forward: the keys the datamodule yields are bound to the
        signature of ``forward_train``, so a mismatch names both sides instead of failing inside the model.

        Raises:
            ModelContractError: ``forward_train`` needs arguments the batch lacks, or does not accept some of its keys.
        """
        if self.kind != "mmdet":
            return
        try:
            signature = inspect.signature(self.model.forward_train)
        except (TypeError, ValueError):  # a builtin or C-level callable: nothing to compare
            return
        try:
            signature.bind(**batch)
            return
        except TypeError:
            pass
        params = signature.parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        missing = [n for n, p in params.items() if p.kind in named and p.default is p.empty and n not in batch]
        unexpected = [] if takes_any else [k for k in batch if k not in params]
        parts = []
        if missing:
            parts.append(f"it needs {', '.join(missing)}, which the batches lack")
        if unexpected:
            parts.append(f"it takes no {', '.join(unexpected)}")
        if "points" in missing:
            fix = "a LiDAR datamodule such as detlight.data.Det3DDataModule"
        elif "img" in missing:
            fix = "an image datamodule such as detlight.data.DetDataModule"
        else:
            fix = "a datamodule that yields these keys"
        raise ModelContractError(
            f"The model {self.model_name} does not fit the data of {source}: {'; '.join(parts) or 'the keys differ'} "
            f"(the batches hold {', '.join(batch)}; forward_train takes {', '.join(params)}). Give the model {fix}, or "
            "the datamodule a model made for its data."
        )

    def losses(self, batch: dict[str, Any], optimizer: Any = None) -> dict[str, Any]:
        """Run the training forward and return ``{"loss", "log_vars", "num_samples"}`` (mmcv ``runner.outputs``)."""
        num_samples = len(batch["img_metas"])
        if self.kind == "mmdet":
            raw = self.model.forward_train(**batch)
            loss, log_vars = parse_losses(raw, model_name=self.model_name)
            return {"loss": loss, "log_vars": log_vars, "num_samples": num_samples}
        if self.kind == "mmdet_train_step":
            out = dict(self.model.train_step(batch, optimizer))
            missing = {"loss", "log_vars"} - set(out)
            if missing:
                raise ModelContractError(f"{self.model_name}.train_step must return loss, log_vars and num_samples; "
                                         f"missing {sorted(missing)}")
            out.setdefault("num_samples", num_samples)
            return out
        raw = self.model(self._crops(batch), self.targets(batch))
        loss, log_vars = parse_losses(raw, all_losses=True, model_name=self.model_name)
        return {"loss": loss, "log_vars": log_vars, "num_samples": num_samples}

    def targets(self, batch: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
        """torchvision targets: ``boxes``, ``labels`` (shifted for background families) and what the family needs.

        Raises:
            ModelContractError: a label is outside ``[0, C)`` for the head's ``C`` classes, or the batch lacks the
                masks / keypoints the family needs.
        """
        self._check_labels(batch["gt_labels"])
        targets = [{"boxes": b, "labels": lab + self.label_offset if self.label_offset else lab}
                   for b, lab in zip(batch["gt_bboxes"], batch["gt_labels"])]
        for need in self.needs:
            key = f"gt_{need}"
            if key not in batch:
                raise ModelContractError(_MISSING_TARGET[need].format(model=self.model_name, key=key))
            for target, value in zip(targets, batch[key]):
                target[need] = value
        return targets

    def _check_labels(self, labels: Sequence[torch.Tensor]) -> None:
        """Refuse labels outside ``[0, num_classes)``.

        Free for host tensors, so it runs on every CPU batch. On an accelerator the range check needs a device -> host
        sync, so it runs on the first batch only (it catches a ``num_classes`` that does not fit the dataset, the
        usual cause) and the steps after it stay free of syncs.
        """
        num = self.num_classes()
        if num is None or not labels:
            return
        if labels[0].device.type != "cpu":
            if self._labels_checked_on_device:
                return
            self._labels_checked_on_device = True
        flat = torch.cat([lab.reshape(-1) for lab in labels])
        if flat.numel() == 0:
            return
        low, high = (int(v) for v in torch.aminmax(flat))
        if low < 0 or high >= num:
            bad = low if low < 0 else high
            hint = (f" The head scores {num + self.label_offset} classes including background (index 0), i.e. "
                    f"{num} dataset classes." if self.label_offset else "")
            raise ModelContractError(
                f"{self.model_name} got gt_labels value {bad}, outside [0, {num}) for its {num} classes.{hint} Set "
                "`num_classes` to the number of dataset classes (detlight.models.torchvision_detector adds the "
                "background class itself), or select classes with `data.<split>.classes`."
            )

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

        A model with a ``predict_batch(batch)`` method answers for itself (its list is returned unchanged).
        Point-cloud batches (a ``points`` key) are passed to ``simple_test(points, img_metas, rescale=True)`` and its
        results are returned unchanged.
        """
        custom = getattr(self.model, "predict_batch", None)
        if callable(custom):  # the model reads its own batch and returns its own result layout (detlight.openmmlab)
            return list(custom(batch))
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
        if not isinstance(results, (list, tuple)) or len(results) != len(metas):
            raise ModelContractError(
                f"{self.model_name} returned {type(results).__name__} in eval mode; the torchvision contract expects "
                f"a list with one dict (boxes, scores, labels) per image ({len(metas)} images)."
            )
        dets = []
        for r, meta in zip(results, metas):
            det = to_detections(r)
            if self.label_offset:
                det["labels"] = det["labels"] - self.label_offset
            scale = det["boxes"].new_tensor(meta["scale_factor"])
            det["boxes"] = det["boxes"] / scale
            if meta.get("flip"):
                det["boxes"] = flip_boxes(det["boxes"], meta["ori_shape"], meta.get("flip_direction", "horizontal"))
            if isinstance(r, Mapping) and r.get("masks") is not None:
                det["masks"] = masks_to_original(r["masks"], meta) > 0.5
            dets.append(det)
        return dets

    @staticmethod
    def _crops(batch: dict[str, Any]) -> list[torch.Tensor]:
        return [img[:, : meta["img_shape"][0], : meta["img_shape"][1]] for img, meta in zip(batch["img"],
                                                                                          batch["img_metas"])]


_MISSING_TARGET = {
    "masks": "{model} needs instance masks (`{key}`) but the batch has none: set "
             "`data.init_args.pipeline.with_mask: true` and use an annotation file whose annotations carry "
             "`segmentation` (COCO polygons or RLE); or train a box-only family (FasterRCNN).",
    "keypoints": "{model} needs keypoints (`{key}`) but the batch has none: the annotations must carry COCO "
                 "`keypoints` and `data.init_args.pipeline.with_keypoints: true` must be set; or train a box-only "
                 "family (FasterRCNN).",
}


def masks_to_original(masks: torch.Tensor, meta: Mapping[str, Any]) -> torch.Tensor:
    """``[n, (1,) h, w]`` masks in the resized, flipped frame -> ``float[n, H, W]`` in the original image frame."""
    masks = masks.reshape(-1, *masks.shape[-2:]).float()
    height, width = int(meta["ori_shape"][0]), int(meta["ori_shape"][1])
    if masks.shape[0] == 0:
        return masks.new_zeros((0, height, width))
    if tuple(masks.shape[-2:]) != (height, width):
        masks = F.interpolate(masks[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    if meta.get("flip"):
        direction = meta.get("flip_direction", "horizontal")
        masks = masks.flip({"horizontal": [-1], "vertical": [-2], "diagonal": [-2, -1]}[direction])
    return masks


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
