"""``mmcv._ext.points_in_boxes_{part,all,cpu}_forward``: which LiDAR boxes contain which points, in torch.

Replaces mmcv-full's kernels behind ``mmcv.ops.points_in_boxes_part / _all / _cpu`` (mmdet3d's
``LiDARInstance3DBoxes.points_in_boxes_*``, ``ObjectSample``, ...), on CPU and CUDA tensors. A box is
``(x, y, z_bottom, x_size, y_size, z_size, rz)``; a point is inside when ``|z - z_centre| <= z_size / 2`` and its
box-local ``x, y`` (rotated by ``-rz``) lie strictly inside ``(±x_size / 2, ±y_size / 2)``, as in mmcv. The
point x box test is dense, taken in chunks of points to bound memory.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detlight.openmmlab.ops import ext_op
from detlight.openmmlab.ops._points import local_xy_in_boxes, rows_per_chunk

__all__ = ["points_in_boxes_all_forward", "points_in_boxes_cpu_forward", "points_in_boxes_part_forward"]


def _check(boxes: Tensor, pts: Tensor, batched: bool) -> None:
    want = 3 if batched else 2
    if boxes.dim() != want or boxes.shape[-1] != 7 or pts.dim() != want or pts.shape[-1] < 3:
        lead = "(B, " if batched else "("
        raise ValueError(f"points_in_boxes: boxes must be {lead}M, 7) and points {lead}N, 3), got "
                         f"{tuple(boxes.shape)} and {tuple(pts.shape)}")


@ext_op(how="torch")
def points_in_boxes_part_forward(boxes: Tensor, pts: Tensor, box_idx_of_points: Tensor) -> None:
    """Fill ``box_idx_of_points (B, N)`` with the first box (lowest index) containing each point; -1 stays for none."""
    _check(boxes, pts, True)
    n, m = pts.shape[1], boxes.shape[1]
    step = rows_per_chunk(m, 4)
    arange = torch.arange(m, device=pts.device)
    for s in range(0, n, step):
        inside, _, _ = local_xy_in_boxes(pts[:, s:s + step, :3], boxes)
        first = torch.where(inside, arange, m).amin(-1) if m else torch.full(inside.shape[:2], m, device=pts.device)
        cur = box_idx_of_points[:, s:s + step]
        cur.copy_(torch.where(first < m, first.to(cur.dtype), cur))


@ext_op(how="torch")
def points_in_boxes_all_forward(boxes: Tensor, pts: Tensor, box_idx_of_points: Tensor) -> None:
    """Set ``box_idx_of_points[b, n, m] = 1`` for every box ``m`` containing point ``n``."""
    _check(boxes, pts, True)
    n, m = pts.shape[1], boxes.shape[1]
    step = rows_per_chunk(m, 4)
    for s in range(0, n, step):
        inside, _, _ = local_xy_in_boxes(pts[:, s:s + step, :3], boxes)
        cur = box_idx_of_points[:, s:s + step]
        cur.masked_fill_(inside, 1)


@ext_op(how="torch")
def points_in_boxes_cpu_forward(boxes_tensor: Tensor, pts_tensor: Tensor, pts_indices_tensor: Tensor) -> None:
    """Set ``pts_indices_tensor[m, n] = 1`` for every box ``m`` (of ``(M, 7)``) containing point ``n`` (of ``(N, 3)``)."""
    _check(boxes_tensor, pts_tensor, False)
    n, m = pts_tensor.shape[0], boxes_tensor.shape[0]
    step = rows_per_chunk(m, 4)
    for s in range(0, n, step):
        inside, _, _ = local_xy_in_boxes(pts_tensor[s:s + step, :3], boxes_tensor)
        pts_indices_tensor[:, s:s + step].masked_fill_(inside.t(), 1)
