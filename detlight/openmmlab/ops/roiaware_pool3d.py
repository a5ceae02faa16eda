"""``mmcv._ext.roiaware_pool3d_{forward,backward}``: max / average pooling of points in a box's voxel grid, in torch.

Replaces mmcv-full's CUDA kernels behind ``mmcv.ops.RoIAwarePool3d`` (PartA2's RoI head) on CPU and CUDA tensors,
with mmcv's semantics: a point inside a box (mmcv's test, see :mod:`detlight.openmmlab.ops.points_in_boxes`) falls
in cell ``trunc((local + size / 2) / (size / out))`` (z from the box bottom), clamped to the grid; each cell lists its
first ``max_pts_per_voxel - 1`` points in input order (``pts_idx_of_voxels[..., 0]`` is the count); max pooling
takes, per channel, the largest listed feature and records the lowest listed index attaining it (``argmax``, -1
for an empty cell), average pooling the mean; empty cells stay 0. The backward routes the gradient to ``argmax``
(max) or spreads it evenly over the listed points (avg).
"""

from __future__ import annotations

import torch
from torch import Tensor

from detlight.openmmlab.ops import ext_op
from detlight.openmmlab.ops._points import local_xy_in_boxes, rows_per_chunk

__all__ = ["roiaware_pool3d_backward", "roiaware_pool3d_forward"]


def _check_mode(pool_method: int) -> int:
    if int(pool_method) not in (0, 1):
        raise ValueError(f"roiaware_pool3d: pool_method must be 0 (max) or 1 (avg), got {pool_method!r}")
    return int(pool_method)


def _cells(rois: Tensor, pts: Tensor, grid: tuple[int, int, int]) -> tuple[Tensor, Tensor, Tensor]:
    """Inside (box, point) pairs, box-major with ascending points, and each pair's flat cell in its box's grid."""
    ox, oy, oz = grid
    boxes, points, cells = [], [], []
    step = rows_per_chunk(pts.shape[0], 4)
    for r0 in range(0, rois.shape[0], step):
        r = rois[r0:r0 + step]
        inside, lx, ly = local_xy_in_boxes(pts, r)  # (N, R')
        pi, ri = torch.nonzero(inside.t(), as_tuple=True)[::-1]  # row-major over (box, point)
        box = r[ri]
        lz = pts[pi, 2] - box[:, 2]
        xi = torch.trunc((lx[pi, ri] + box[:, 3] / 2) / (box[:, 3] / ox)).long().clamp(0, ox - 1)
        yi = torch.trunc((ly[pi, ri] + box[:, 4] / 2) / (box[:, 4] / oy)).long().clamp(0, oy - 1)
        zi = torch.trunc(lz / (box[:, 5] / oz)).long().clamp(0, oz - 1)
        boxes.append(ri + r0)
        points.append(pi)
        cells.append((xi * oy + yi) * oz + zi)
    if not boxes:
        empty = torch.zeros(0, dtype=torch.long, device=pts.device)
        return empty, empty, empty
    return torch.cat(boxes), torch.cat(points), torch.cat(cells)


@ext_op(how="torch")
def roiaware_pool3d_forward(rois: Tensor, pts: Tensor, pts_feature: Tensor, argmax: Tensor, pts_idx_of_voxels: Tensor,
                            pooled_features: Tensor, pool_method: int = 0) -> None:
    """Fill ``pooled_features``, ``argmax`` (both ``(R, X, Y, Z, C)``) and ``pts_idx_of_voxels (R, X, Y, Z, P)``.

    Args:
        rois: ``(R, 7)`` boxes ``(x, y, z_bottom, x_size, y_size, z_size, rz)``.
        pts: ``(N, 3)`` points.
        pts_feature: ``(N, C)`` features.
        argmax: output int, zero-initialised.
        pts_idx_of_voxels: output int, zero-initialised.
        pooled_features: output, zero-initialised.
        pool_method: 0 max, 1 average.
    """
    mode = _check_mode(pool_method)
    nr, ox, oy, oz, cap = pts_idx_of_voxels.shape
    ch = pts_feature.shape[1]
    ncell = ox * oy * oz
    box, pt, cell = _cells(rois, pts[:, :3], (ox, oy, oz))
    flat = box * ncell + cell  # already grouped by box, points ascending within each box
    order = torch.sort(flat, stable=True).indices
    flat, pt = flat[order], pt[order]
    counts = torch.bincount(flat, minlength=nr * ncell)
    starts = counts.cumsum(0) - counts
    slot = torch.arange(flat.numel(), device=pts.device) - starts[flat]
    keep = slot < cap - 1
    flat, pt, slot = flat[keep], pt[keep], slot[keep]
    idx_view = pts_idx_of_voxels.view(nr * ncell, cap)
    idx_view[flat, slot + 1] = pt.to(idx_view.dtype)
    listed = counts.clamp(max=cap - 1)
    idx_view[:, 0] = listed.to(idx_view.dtype)
    pooled = pooled_features.view(nr * ncell, ch)
    arg = argmax.view(nr * ncell, ch)
    feats = pts_feature[pt].to(pooled.dtype)  # (K, C)
    index = flat.unsqueeze(1).expand(-1, ch)
    filled = listed > 0
    if mode == 0:
        best = torch.full_like(pooled, float("-inf")).scatter_reduce(0, index, feats, reduce="amax")
        cand = torch.where(feats == best[flat], pt.unsqueeze(1), pts.shape[0])
        first = torch.full((nr * ncell, ch), pts.shape[0], dtype=torch.long, device=pts.device)
        first = first.scatter_reduce(0, index, cand, reduce="amin")
        pooled.copy_(torch.where(filled.unsqueeze(1), best, pooled))
        arg.copy_(torch.where(filled.unsqueeze(1), first, -1).to(arg.dtype))
    else:
        total = torch.zeros_like(pooled).index_add(0, flat, feats)
        mean = total / listed.clamp(min=1).unsqueeze(1).to(total.dtype)
        pooled.copy_(torch.where(filled.unsqueeze(1), mean, pooled))


@ext_op(how="torch")
def roiaware_pool3d_backward(pts_idx_of_voxels: Tensor, argmax: Tensor, grad_out: Tensor, grad_in: Tensor,
                             pool_method: int = 0) -> None:
    """Accumulate ``grad_out (R, X, Y, Z, C)`` into ``grad_in (N, C)`` (to ``argmax``, or evenly for avg)."""
    mode = _check_mode(pool_method)
    ch = grad_out.shape[-1]
    g = grad_out.reshape(-1, ch).to(grad_in.dtype)
    if mode == 0:
        arg = argmax.reshape(-1, ch).long()
        cell, c = torch.nonzero(arg >= 0, as_tuple=True)
        grad_in.index_put_((arg[cell, c], c), g[cell, c], accumulate=True)
        return
    idx = pts_idx_of_voxels.reshape(g.shape[0], -1)
    cells = torch.nonzero(idx[:, 0] > 0).flatten()  # only non-empty cells
    count = idx[cells, 0].long()
    listed = torch.arange(idx.shape[1] - 1, device=idx.device).unsqueeze(0) < count.unsqueeze(1)
    row, s = torch.nonzero(listed, as_tuple=True)
    share = g[cells] / count.unsqueeze(1).to(g.dtype)
    grad_in.index_add_(0, idx[cells[row], s + 1].long(), share[row])
