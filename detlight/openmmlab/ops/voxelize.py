"""``mmcv._ext.hard_voxelize_forward`` / ``dynamic_voxelize_forward``: point-cloud voxelisation in vectorised torch.

Replaces mmcv-full's voxelisation kernels behind ``mmcv.ops.Voxelization`` / ``voxelization`` (PointPillars,
SECOND, ...), on CPU and CUDA tensors, with mmcv's semantics:

- a point's voxel is ``floor((p - range_min) / voxel_size)`` per axis (in the points' dtype), the grid has
  ``round((range_max - range_min) / voxel_size)`` cells per axis, and a point outside the grid gets ``-1`` on every
  axis; coordinates are written ``(z, y, x)``;
- hard voxelisation numbers voxels by the first point (in input order) that falls in them, keeps the first
  ``max_voxels`` voxels (points of later voxels are dropped) and, in each voxel, the first ``max_points`` points in
  input order (``-1``: no limit). This is mmcv's CPU kernel and its CUDA ``deterministic=True`` kernel;
  ``deterministic=False`` only allowed mmcv's CUDA kernel another order, so the same (deterministic) result is
  returned for both.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detlight.openmmlab.ops import ext_op

__all__ = ["dynamic_voxelize_forward", "hard_voxelize_forward", "point_voxel_coords"]


def _grid(voxel_size: Tensor, coors_range: Tensor, ndim: int) -> tuple[list[float], list[float], list[int]]:
    vs = [float(v) for v in voxel_size.flatten().tolist()]
    cr = [float(v) for v in coors_range.flatten().tolist()]
    if len(vs) < ndim or len(cr) < 2 * ndim or any(v <= 0 for v in vs[:ndim]):
        raise ValueError(f"voxelize: voxel_size needs {ndim} positive values and coors_range {2 * ndim} "
                         f"(min..., max...), got voxel_size={vs} coors_range={cr}")
    grid = [round((cr[ndim + i] - cr[i]) / vs[i]) for i in range(ndim)]
    return vs[:ndim], cr[:ndim], grid


def point_voxel_coords(points: Tensor, voxel_size: Tensor, coors_range: Tensor, ndim: int = 3) -> Tensor:
    """``(N, ndim)`` int32 voxel coordinates in reversed axis order (``z, y, x``); ``-1`` rows for points outside.

    Args:
        points: ``(N, >=ndim)`` points.
        voxel_size: ``(ndim,)`` voxel size.
        coors_range: ``(2 * ndim,)``: the minima then the maxima.
        ndim: number of spatial axes.
    """
    vs, lo, grid = _grid(voxel_size, coors_range, ndim)
    xyz = points[:, :ndim]
    size = torch.tensor(vs, dtype=xyz.dtype, device=xyz.device)
    low = torch.tensor(lo, dtype=xyz.dtype, device=xyz.device)
    cells = torch.floor((xyz - low) / size).to(torch.int64)
    inside = ((cells >= 0) & (cells < torch.tensor(grid, device=xyz.device))).all(1)
    coors = cells.flip(1).to(torch.int32)
    coors[~inside] = -1
    return coors


@ext_op(how="torch")
def dynamic_voxelize_forward(points: Tensor, voxel_size: Tensor, coors_range: Tensor, coors: Tensor,
                             NDim: int = 3) -> None:  # noqa: N803 (mmcv's keyword)
    """Fill ``coors (N, NDim)`` with each point's voxel ``(z, y, x)``, ``-1`` for points outside the range."""
    coors.copy_(point_voxel_coords(points, voxel_size, coors_range, NDim))


@ext_op(how="torch")
def hard_voxelize_forward(points: Tensor, voxel_size: Tensor, coors_range: Tensor, voxels: Tensor, coors: Tensor,
                          num_points_per_voxel: Tensor, voxel_num: Tensor, max_points: int = 35,
                          max_voxels: int = 20000, NDim: int = 3,  # noqa: N803 (mmcv's keyword)
                          deterministic: bool = True) -> None:
    """Group points into at most ``max_voxels`` voxels of at most ``max_points`` points (mmcv's order).

    Args:
        points: ``(N, C)`` points (xyz first).
        voxel_size: ``(NDim,)``.
        coors_range: ``(2 * NDim,)``.
        voxels: output ``(max_voxels, max_points, C)``, zero-initialised: the points of each voxel.
        coors: output ``(max_voxels, NDim)`` int32: voxel coordinates ``(z, y, x)``.
        num_points_per_voxel: output ``(max_voxels,)`` int32.
        voxel_num: output 0-dim long: the number of voxels filled.
        max_points: points kept per voxel (``-1``: all, which needs ``voxels`` wide enough).
        max_voxels: voxels kept (``-1``: all).
        NDim: spatial axes.
        deterministic: accepted for mmcv's signature; the result is always the deterministic one.
    """
    del deterministic
    _, _, grid = _grid(voxel_size, coors_range, NDim)
    pc = point_voxel_coords(points, voxel_size, coors_range, NDim).to(torch.int64)
    valid = torch.nonzero(pc[:, 0] >= 0).flatten()  # point indices, ascending
    if valid.numel() == 0:
        voxel_num.fill_(0)
        return
    lin = torch.zeros(valid.numel(), dtype=torch.int64, device=points.device)
    for axis in range(NDim):  # reversed-order coordinates, row-major (loop over axes, not points)
        lin = lin * grid[NDim - 1 - axis] + pc[valid, axis]
    uniq, inverse = torch.unique(lin, return_inverse=True)
    first = torch.full((uniq.numel(),), valid.numel(), dtype=torch.int64, device=points.device)
    pos = torch.arange(valid.numel(), device=points.device)
    first.scatter_reduce_(0, inverse, pos, reduce="amin")
    by_first = first.argsort()  # unique voxels in order of their first point
    rank_of_uniq = torch.empty_like(first)
    rank_of_uniq[by_first] = torch.arange(uniq.numel(), device=points.device)
    vox = rank_of_uniq[inverse]  # voxel number of each valid point, by first appearance
    limit_v = voxels.shape[0] if max_voxels == -1 else min(max_voxels, voxels.shape[0])
    # slot of each point inside its voxel: its rank among the voxel's points (points are in input order)
    order = torch.sort(vox, stable=True).indices
    counts = torch.bincount(vox, minlength=uniq.numel())
    starts = counts.cumsum(0) - counts
    slot = torch.empty_like(vox)
    slot[order] = pos - starts[vox[order]]
    cap = voxels.shape[1] if max_points == -1 else min(max_points, voxels.shape[1])
    take = (vox < limit_v) & (slot < cap)
    voxels[vox[take], slot[take]] = points[valid[take]].to(voxels.dtype)
    n_vox = min(uniq.numel(), limit_v)
    first_pt = valid[first[by_first[:n_vox]]]
    coors[:n_vox] = pc[first_pt].to(coors.dtype)
    num_points_per_voxel[:n_vox] = counts[:n_vox].clamp(max=cap).to(num_points_per_voxel.dtype)
    voxel_num.fill_(n_vox)
