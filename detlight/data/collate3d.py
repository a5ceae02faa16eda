"""Batch collation for point-cloud samples with variable point and box counts.

Replaces: mmcv ``collate`` over ``DataContainer(stack=False)`` / ``cpu_only=True`` fields, which mmdet3d uses for
``points``, ``gt_bboxes_3d``, ``gt_labels_3d`` and ``img_metas``: nothing is padded or stacked, each key becomes a
per-sample list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["collate_3d"]

_REQUIRED = ("points", "img_metas")


def collate_3d(samples: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Turn a list of samples into ``{key: [value per sample]}``.

    Point clouds keep their own length (``list[float32[N_i, C]]``), as do boxes (``list[float32[n_i, 7]]``) and
    labels (``list[int64[n_i]]``); ``img_metas`` stays a list of plain dicts.

    Raises:
        ValueError: an empty batch, or samples without ``points``/``img_metas`` or with different keys.
    """
    if not samples:
        raise ValueError("collate_3d got an empty batch")
    keys = list(samples[0])
    missing = [k for k in _REQUIRED if k not in keys]
    if missing:
        raise ValueError(f"3D samples need keys {list(_REQUIRED)}; the first sample lacks {missing} (has {keys})")
    for i, sample in enumerate(samples[1:], start=1):
        if set(sample) != set(keys):
            raise ValueError(f"Sample {i} has keys {sorted(sample)}, but sample 0 has {sorted(keys)}")
    batch: dict[str, list[Any]] = {k: [s[k] for s in samples] for k in keys}
    for i, pts in enumerate(batch["points"]):
        if not isinstance(pts, torch.Tensor) or pts.ndim != 2:
            raise ValueError(f"Sample {i}: `points` must be a 2D tensor [N, C], got "
                             f"{type(pts).__name__} {getattr(pts, 'shape', '')}")
    return batch
