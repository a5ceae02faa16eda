"""``mmcv._ext.roipoint_pool3d_forward``: pool the points inside 3D boxes, in torch.

Replaces mmcv-full's CUDA kernel behind ``mmcv.ops.RoIPointPool3d`` (PointRCNN's RCNN head) on CPU and CUDA tensors,
with mmcv's semantics: for each box, the first ``num_sampled_points`` points inside it (input order), repeated
cyclically when fewer are inside; each pooled row is ``(x, y, z, features...)``; boxes without points get
``pooled_empty_flag = 1`` and keep zero features. The point-in-box test is mmcv's (see
:mod:`detlight.openmmlab.ops.points_in_boxes`); the ``boxes x points`` test is dense per chunk of boxes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detlight.openmmlab.ops import ext_op
from detlight.openmmlab.ops._points import local_xy_in_boxes, rows_per_chunk
from detlight.openmmlab.ops.ball_query import first_hits

__all__ = ["roipoint_pool3d_forward"]


@ext_op(how="torch")
def roipoint_pool3d_forward(xyz: Tensor, boxes3d: Tensor, pts_feature: Tensor, pooled_features: Tensor,
                            pooled_empty_flag: Tensor) -> None:
    """Fill ``pooled_features (B, M, S, 3 + C)`` and ``pooled_empty_flag (B, M)``.

    Args:
        xyz: ``(B, N, 3)`` points.
        boxes3d: ``(B, M, 7)`` boxes ``(x, y, z_bottom, x_size, y_size, z_size, rz)``.
        pts_feature: ``(B, N, C)`` point features.
        pooled_features: output, zero-initialised.
        pooled_empty_flag: output int, zero-initialised.
    """
    bsz, n = xyz.shape[:2]
    m, s = boxes3d.shape[1], pooled_features.shape[2]
    feats = torch.cat((xyz, pts_feature.to(xyz.dtype)), -1).to(pooled_features.dtype)  # (B, N, 3 + C)
    step = rows_per_chunk(bsz, n, 4)
    slots = torch.arange(s, device=xyz.device)
    for b0 in range(0, m, step):
        inside, _, _ = local_xy_in_boxes(xyz, boxes3d[:, b0:b0 + step])  # (B, N, m')
        first, count = first_hits(inside.transpose(1, 2), s)  # (B, m', s), (B, m')
        k = min(s, n)
        pos = slots % count.clamp(min=1).clamp(max=k).unsqueeze(-1)
        src = first.gather(2, pos)  # (B, m', s)
        rows = torch.arange(bsz, device=xyz.device).view(bsz, 1, 1)
        pooled = feats[rows, src]  # (B, m', s, 3 + C)
        empty = count == 0
        cur = pooled_features[:, b0:b0 + step]
        cur.copy_(torch.where(empty.view(*empty.shape, 1, 1), cur, pooled))
        pooled_empty_flag[:, b0:b0 + step] = empty.to(pooled_empty_flag.dtype)
