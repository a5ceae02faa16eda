"""``mmcv._ext.dynamic_point_to_voxel_{forward,backward}``: reduce point features per voxel (max / mean / sum).

Replaces mmcv-full's (CUDA-only) kernels behind ``mmcv.ops.DynamicScatter`` / ``dynamic_scatter`` (dynamic
voxelisation: DV-SECOND, DV-PointPillars, ...), on CPU and CUDA tensors, with mmcv's semantics: rows of ``coors``
with any negative entry are dropped; voxels are the unique coordinate rows in sorted order; ``point2voxel_map`` is
-1 for dropped points; ``max`` back-propagates, per voxel and channel, to the lowest-index point that attains the
maximum; ``mean`` divides the gradient by the voxel's point count.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detlight.openmmlab.ops import ext_op

__all__ = ["dynamic_point_to_voxel_backward", "dynamic_point_to_voxel_forward"]

_REDUCE = ("max", "mean", "sum")


def _reduce_name(reduce_type: str | int) -> str:
    if isinstance(reduce_type, str) and reduce_type in _REDUCE:
        return reduce_type
    raise ValueError(f"dynamic_point_to_voxel: reduce_type must be one of {_REDUCE}, got {reduce_type!r}")


@ext_op(how="torch")
def dynamic_point_to_voxel_forward(feats: Tensor, coors: Tensor, reduce_type: str = "max") -> list[Tensor]:
    """Reduce ``feats (N, C)`` over points sharing a voxel coordinate row of ``coors (N, D)``.

    Returns:
        ``[voxel_feats (M, C), voxel_coors (M, D), point2voxel_map (N,) int32, voxel_points_count (M,) int32]``.
    """
    kind = _reduce_name(reduce_type)
    if feats.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.int32, device=coors.device)
        return [feats.clone().detach(), coors.clone().detach(), empty, empty.clone()]
    bad = (coors < 0).any(-1)
    c64 = coors.to(torch.int64).masked_fill(bad.unsqueeze(-1), 0)
    extent = c64.amax(0) + 1
    key = torch.zeros_like(c64[:, 0])
    for axis in range(c64.shape[1]):  # row-major key: its order is the rows' lexicographic order
        key = key * extent[axis] + c64[:, axis]
    key = key.masked_fill(bad, -1)
    uniq, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
    first = torch.full_like(uniq, key.numel()).scatter_reduce(0, inverse, torch.arange(key.numel(),
                                                              device=key.device), reduce="amin")
    out_coors = coors[first]
    if bool(uniq[0] < 0):
        out_coors, counts, inverse = out_coors[1:], counts[1:], inverse - 1
    point2voxel = inverse.to(torch.int32)
    valid = inverse >= 0
    tgt = inverse[valid]
    src = feats[valid]
    m, c = out_coors.shape[0], feats.shape[1]
    index = tgt.unsqueeze(1).expand(-1, c)
    if kind == "max":
        out = feats.new_full((m, c), float("-inf")).scatter_reduce(0, index, src, reduce="amax")
    else:
        out = feats.new_zeros((m, c)).index_add(0, tgt, src)
        if kind == "mean":
            out = out / counts.unsqueeze(1).to(out.dtype)
    return [out, out_coors, point2voxel, counts.to(torch.int32)]


@ext_op(how="torch")
def dynamic_point_to_voxel_backward(grad_feats: Tensor, grad_reduced_feats: Tensor, feats: Tensor,
                                    reduced_feats: Tensor, coors_map: Tensor, reduce_count: Tensor,
                                    reduce_type: str = "max") -> None:
    """Fill ``grad_feats (N, C)`` from the voxel gradients ``grad_reduced_feats (M, C)``."""
    kind = _reduce_name(reduce_type)
    grad_feats.zero_()
    n, m = feats.shape[0], reduced_feats.shape[0]
    if n == 0 or m == 0:
        return
    cmap = coors_map.to(torch.int64)
    valid = cmap >= 0
    pts = torch.nonzero(valid).flatten()
    vox = cmap[pts]
    if kind in ("sum", "mean"):
        g = grad_reduced_feats[vox]
        if kind == "mean":
            g = g / reduce_count.to(g.dtype)[vox].unsqueeze(1)
        grad_feats[pts] = g.to(grad_feats.dtype)
        return
    c = feats.shape[1]
    hit = feats[pts] == reduced_feats[vox]
    cand = torch.where(hit, pts.unsqueeze(1), n)
    src = torch.full((m, c), n, dtype=torch.int64, device=feats.device)
    src = src.scatter_reduce(0, vox.unsqueeze(1).expand(-1, c), cand, reduce="amin")
    ok = src < n
    vi, ci = torch.nonzero(ok, as_tuple=True)
    grad_feats[src[vi, ci], ci] = grad_reduced_feats[vi, ci].to(grad_feats.dtype)
