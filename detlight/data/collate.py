"""Batch pipeline outputs into the layout documented in :mod:`detlight.models.contract`.

Replaces: mmcv's ``collate`` + ``DataContainer`` + mmdet's ``DefaultFormatBundle``/``Collect``. There are no
DataContainers: images are stacked (padded bottom/right to the largest in the batch), metas stay a list of plain
dicts, and boxes/labels stay per-image lists, so Lightning's default ``transfer_batch_to_device`` moves the tensors
and leaves the metas alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from detlight.exceptions import ConfigError

__all__ = ["META_KEYS", "collate"]

#: Keys copied from each sample into ``img_metas`` (mmdet's ``Collect.meta_keys`` plus ``image_id``).
META_KEYS: tuple[str, ...] = (
    "filename", "ori_filename", "image_id", "ori_shape", "img_shape", "pad_shape", "scale_factor", "flip",
    "flip_direction", "img_norm_cfg",
)


def collate(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack pipeline outputs into ``{"img", "img_metas", "gt_bboxes", "gt_labels"}``.

    ``img`` is ``float32[B, 3, H, W]`` with H, W the largest padded size in the batch (so still divisible by the
    pipeline's ``size_divisor``); the extra area is 0. Each meta gets ``batch_input_shape`` ``(H, W)`` as mmdet's
    detectors set it. A sample without ``gt_bboxes`` (an annotation-free test pipeline) gets empty tensors.

    Raises:
        ValueError: the batch is empty or an ``img`` is not a ``[3, h, w]`` tensor.

    Example:
        >>> batch = collate([{"img": torch.zeros(3, 32, 64), "image_id": 1, "flip": False},
        ...                  {"img": torch.zeros(3, 64, 32), "image_id": 2, "flip": True}])
        >>> tuple(batch["img"].shape), batch["img_metas"][1]["batch_input_shape"], batch["gt_labels"][0].dtype
        ((2, 3, 64, 64), (64, 64), torch.int64)
    """
    if not samples:
        raise ValueError("collate() got an empty list of samples; check `data.samples_per_gpu` and the dataset.")
    imgs = [_image(s, i) for i, s in enumerate(samples)]
    height, width = max(int(i.shape[1]) for i in imgs), max(int(i.shape[2]) for i in imgs)
    batch_img = imgs[0].new_zeros((len(imgs), 3, height, width))
    for out, img in zip(batch_img, imgs):
        out[:, : img.shape[1], : img.shape[2]].copy_(img)
    metas = []
    for sample in samples:
        meta = {key: _plain(sample[key]) for key in META_KEYS if key in sample}
        meta.setdefault("flip", False)
        meta.setdefault("flip_direction", None)
        meta["batch_input_shape"] = (height, width)
        metas.append(meta)
    return {
        "img": batch_img,
        "img_metas": metas,
        "gt_bboxes": [_boxes(s.get("gt_bboxes")) for s in samples],
        "gt_labels": [_labels(s.get("gt_labels")) for s in samples],
    }


def _image(sample: Mapping[str, Any], index: int) -> torch.Tensor:
    img = sample.get("img")
    if not isinstance(img, torch.Tensor) or img.ndim != 3 or img.shape[0] != 3:
        got = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
        raise ConfigError(f"Expected sample {index}'s `img` to be a [3, h, w] tensor, but got {got}; the pipeline "
                          "must load and normalise the image (see detlight.data.transforms).")
    return img.float()


def _boxes(value: Any) -> torch.Tensor:
    if value is None:
        return torch.zeros((0, 4), dtype=torch.float32)
    return torch.as_tensor(value, dtype=torch.float32).reshape(-1, 4)


def _labels(value: Any) -> torch.Tensor:
    if value is None:
        return torch.zeros((0,), dtype=torch.int64)
    return torch.as_tensor(value, dtype=torch.int64).reshape(-1)


def _plain(value: Any) -> Any:
    """Tensors, numpy values and nested containers -> python scalars, lists, tuples and dicts."""
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
