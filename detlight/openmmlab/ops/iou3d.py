"""``mmcv._ext.iou3d_*``: bird's-eye-view overlap and 3D NMS of ``(x, y, z, dx, dy, dz, heading)`` boxes.

Replaces mmcv-full's CUDA-only ``iou3d`` kernels behind ``mmcv.ops.boxes_overlap_bev``, ``boxes_iou3d``, ``nms3d``
and ``nms3d_normal`` (which mmdet3d's ``box3d_multiclass_nms`` calls at test time), on CPU and CUDA tensors:

- ``iou3d_boxes_overlap_bev_forward``: the BEV intersection area of each pair (the rectangle ``(x, y, dx, dy)``
  rotated by ``heading``), computed like mmcv's kernel: a corner of one box less than 1e-2 outside the other counts
  as inside it, which slightly enlarges overlaps (mmcv's expected NMS results depend on it);
- ``iou3d_nms3d_forward``: greedy NMS (boxes already sorted by the caller) with the BEV IoU
  ``overlap / max(area_a + area_b - overlap, 1e-8)`` and suppression at ``IoU > thr``, as mmcv's kernel;
- ``iou3d_nms3d_normal_forward``: the same with the heading ignored (axis-aligned BEV boxes).

Greedy NMS is exact and vectorised (see :mod:`detlight.openmmlab.ops.nms_rotated`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from detlight.openmmlab.ops import ext_op
from detlight.openmmlab.ops._rotated import cross_pairs, pairwise_rotated_overlap
from detlight.openmmlab.ops.nms_rotated import rotated_nms_keep

__all__ = ["iou3d_boxes_overlap_bev_forward", "iou3d_nms3d_forward", "iou3d_nms3d_normal_forward"]

_EPS = 1e-8
_MARGIN = 1e-2  # mmcv's iou3d corner-in-box margin


def _bev(boxes: Tensor, with_heading: bool = True) -> Tensor:
    if boxes.dim() != 2 or boxes.shape[1] < 7:
        raise ValueError(f"iou3d: boxes must be (N, 7) (x, y, z, dx, dy, dz, heading), got {tuple(boxes.shape)}")
    bev = boxes[:, [0, 1, 3, 4, 6]]
    if not with_heading:
        bev = torch.cat((bev[:, :4], torch.zeros_like(bev[:, 4:])), 1)
    return bev


@ext_op(how="torch")
def iou3d_boxes_overlap_bev_forward(boxes_a: Tensor, boxes_b: Tensor, ans_overlap: Tensor) -> None:
    """Fill ``ans_overlap (N, M)`` with the BEV intersection areas of ``boxes_a (N, 7)`` x ``boxes_b (M, 7)``."""
    a, b = _bev(boxes_a).to(ans_overlap.dtype), _bev(boxes_b).to(ans_overlap.dtype)
    ans_overlap.zero_()
    with torch.no_grad():
        for i, j in cross_pairs(a, b, margin=_MARGIN):
            ans_overlap[i, j] = pairwise_rotated_overlap(a[i], b[j], _MARGIN)


def _nms_fill(boxes: Tensor, keep: Tensor, num_out: Tensor, thresh: float, with_heading: bool) -> None:
    kept = rotated_nms_keep(_bev(boxes, with_heading), float(thresh), strict=True, eps=_EPS,
                            margin=_MARGIN if with_heading else 0.0)
    idx = torch.nonzero(kept).flatten()
    keep.zero_()
    keep[: idx.numel()] = idx.to(keep.device, keep.dtype)
    num_out.fill_(idx.numel())


@ext_op(how="torch")
def iou3d_nms3d_forward(boxes: Tensor, keep: Tensor, num_out: Tensor, nms_overlap_thresh: float) -> None:
    """Greedy BEV NMS of score-sorted ``boxes (N, 7)``: kept ranks into ``keep[:num_out]``, their count into ``num_out``."""
    _nms_fill(boxes, keep, num_out, nms_overlap_thresh, with_heading=True)


@ext_op(how="torch")
def iou3d_nms3d_normal_forward(boxes: Tensor, keep: Tensor, num_out: Tensor, nms_overlap_thresh: float) -> None:
    """:func:`iou3d_nms3d_forward` with the heading ignored (axis-aligned BEV IoU)."""
    _nms_fill(boxes, keep, num_out, nms_overlap_thresh, with_heading=False)
