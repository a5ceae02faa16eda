"""``mmcv._ext.ball_query_forward`` / ``stack_ball_query_forward``: neighbours within a radius, in torch.

Replaces mmcv-full's CUDA kernels behind ``mmcv.ops.ball_query`` (PointNet++ set abstraction, ``QueryAndGroup``),
on CPU and CUDA tensors, with mmcv's semantics: for each centre, the first ``nsample`` points in input order with
``d^2 == 0`` or ``min_r^2 <= d^2 < max_r^2``; when fewer are found the rest of the row repeats the first one, and a
centre with none keeps its zero-initialised row (the stacked variant, with only ``d^2 < r^2``, writes -1 in the
first slot). Distances are dense per chunk of centres (``centres x points``), so memory, not a loop, bounds a call.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detlight.openmmlab.ops import ext_op
from detlight.openmmlab.ops._points import batch_of, rows_per_chunk, sq_dist

__all__ = ["ball_query_forward", "first_hits", "stack_ball_query_forward"]


def first_hits(mask: Tensor, nsample: int) -> tuple[Tensor, Tensor]:
    """Indices of the first ``nsample`` True entries along the last axis, and how many there are.

    Args:
        mask: ``(..., N)`` bool.
        nsample: how many to return.

    Returns:
        ``(idx (..., nsample) long, count (...,) long)``: the missing slots repeat the first hit (0 without hits).
    """
    n = mask.shape[-1]
    count = mask.sum(-1)
    if n == 0:
        return mask.new_zeros((*mask.shape[:-1], nsample), dtype=torch.long), count
    key = torch.where(mask, torch.arange(n, device=mask.device), n)
    k = min(nsample, n)
    first = torch.topk(key, k, dim=-1, largest=False, sorted=True).values
    if k < nsample:
        first = torch.cat((first, first.new_full((*first.shape[:-1], nsample - k), n)), -1)
    head = torch.where(count > 0, first[..., 0], 0).unsqueeze(-1)
    slots = torch.arange(nsample, device=mask.device)
    idx = torch.where(slots < count.unsqueeze(-1), first, head)
    return idx, count


@ext_op(how="torch")
def ball_query_forward(center_xyz: Tensor, xyz: Tensor, idx: Tensor, b: int, n: int, m: int, min_radius: float,
                       max_radius: float, nsample: int) -> None:
    """Fill ``idx (B, m, nsample)`` with the first points of ``xyz (B, n, 3)`` in each ball of ``center_xyz (B, m, 3)``."""
    del b, n
    lo2, hi2 = float(min_radius) ** 2, float(max_radius) ** 2
    step = rows_per_chunk(xyz.shape[0], xyz.shape[1], 3)
    for s in range(0, m, step):
        d2 = sq_dist(center_xyz[:, s:s + step], xyz)
        hit = (d2 == 0) | ((d2 >= lo2) & (d2 < hi2))
        found, count = first_hits(hit, nsample)
        cur = idx[:, s:s + step]
        cur.copy_(torch.where((count > 0).unsqueeze(-1), found.to(idx.dtype), cur))


@ext_op(how="torch")
def stack_ball_query_forward(center_xyz: Tensor, center_xyz_batch_cnt: Tensor, xyz: Tensor, xyz_batch_cnt: Tensor,
                             idx: Tensor, max_radius: float, nsample: int) -> None:
    """Stacked batches: centres ``(M1 + M2 ..., 3)`` query points ``(N1 + N2 ..., 3)`` of their own batch.

    ``idx (M, nsample)`` gets batch-local point indices; a centre without neighbours gets -1 in its first slot.
    Loops over the batches (a handful), not over points.
    """
    r2 = float(max_radius) ** 2
    _, c_start = batch_of(center_xyz_batch_cnt, center_xyz.shape[0])
    _, p_start = batch_of(xyz_batch_cnt, xyz.shape[0])
    for bi in range(center_xyz_batch_cnt.numel()):
        c0, cn = int(c_start[bi]), int(center_xyz_batch_cnt[bi])
        p0, pn = int(p_start[bi]), int(xyz_batch_cnt[bi])
        pts = xyz[p0:p0 + pn]
        step = rows_per_chunk(pn, 3)
        for s in range(c0, c0 + cn, step):
            e = min(s + step, c0 + cn)
            found, count = first_hits(sq_dist(center_xyz[s:e], pts) < r2, nsample)
            cur = idx[s:e]
            cur.copy_(torch.where((count > 0).unsqueeze(-1), found.to(idx.dtype), cur))
            cur[:, 0].masked_fill_(count == 0, -1)
