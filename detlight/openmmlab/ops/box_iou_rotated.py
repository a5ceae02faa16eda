"""``mmcv._ext.box_iou_rotated``: IoU / IoF of rotated boxes ``(cx, cy, w, h, angle)``, in vectorised torch.

Replaces mmcv-full's ``box_iou_rotated`` kernel (CPU and CUDA) behind ``mmcv.ops.box_iou_rotated``. The area of each
pair's intersection is the exact area of the rectangles' intersection polygon (see
:func:`detlight.openmmlab.ops._rotated.rect_intersection_area`); only pairs whose circumscribed circles overlap are
computed, the rest are 0. Boxes with an area below 1e-14 overlap nothing, as in mmcv. Works on CPU and CUDA tensors
in float32 and float64 (the arithmetic runs in the input dtype).
"""

from __future__ import annotations

import torch
from torch import Tensor

from detlight.openmmlab.ops import ext_op
from detlight.openmmlab.ops._rotated import cross_pairs, pairwise_rotated_iou

__all__ = ["box_iou_rotated"]


@ext_op(how="torch")
def box_iou_rotated(bboxes1: Tensor, bboxes2: Tensor, ious: Tensor, mode_flag: int = 0, aligned: bool = False,
                    ) -> None:
    """Fill ``ious`` with the IoU (``mode_flag=0``) or IoF (``1``) of rotated boxes.

    Args:
        bboxes1: ``(N, 5)`` boxes.
        bboxes2: ``(M, 5)`` boxes (``M == N`` when ``aligned``).
        ious: output, ``(N,)`` when ``aligned`` else ``(N * M,)`` (row-major ``N x M``), zero-initialised.
        mode_flag: 0 for IoU, 1 for IoF (intersection over the area of the box of ``bboxes1``).
        aligned: pair row ``i`` of ``bboxes1`` with row ``i`` of ``bboxes2`` only.
    """
    if mode_flag not in (0, 1):
        raise ValueError(f"box_iou_rotated: mode_flag must be 0 (iou) or 1 (iof), got {mode_flag!r}")
    b1, b2 = bboxes1.to(ious.dtype), bboxes2.to(ious.dtype)
    if aligned:
        if b1.shape[0] != b2.shape[0]:
            raise ValueError(f"box_iou_rotated(aligned=True) needs as many boxes on both sides, got "
                             f"{b1.shape[0]} and {b2.shape[0]}")
        ious.copy_(pairwise_rotated_iou(b1, b2, mode_flag))
        return
    m = b2.shape[0]
    flat = ious.view(-1)
    with torch.no_grad():
        for i, j in cross_pairs(b1, b2):
            flat[i * m + j] = pairwise_rotated_iou(b1[i], b2[j], mode_flag)
