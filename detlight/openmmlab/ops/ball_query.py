"""``mmcv._ext.ball_query_forward`` / ``stack_ball_query_forward``: neighbours within a radius, in torch.

Replaces mmcv-full's CUDA kernels behind ``mmcv.ops.ball_query`` (PointNet++ set abstraction, ``QueryAndGroup``),
on CPU and CUDA tensors, with mmcv's semantics: for each centre, the first ``nsample`` points in input order with
``d^2 == 0`` or ``min_r^2 <= d^2 < max_r^2``; when fewer are found the rest of the row repeats the first one, and a
centre with none keeps its zero-initialised row (the stacked variant, with only ``d^2 < r^2``, writes -1 in the
first slot).

Large inputs bucket the points in a uniform grid of cells a little wider than the radius and test only the points of
the 27 cells around each centre (every point that can be in the ball), with the same floating-point operations as
the dense distances, so the result is the dense one bit for bit. Radii whose 27 cells hold more than 8% of the cloud
(and non-finite coordinates) scan the points in blocks of doubling size and stop for a centre once it holds
``nsample`` hits; small inputs compute every distance (per chunk of centres: memory, not a loop, bounds a call).
GPU tensors always take the dense path.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from detlight.openmmlab.ops import ext_op
from detlight.openmmlab.ops._points import ELEMENT_BUDGET, PointGrid, batch_of, rows_per_chunk, sq_dist, sq_dist_pairs

__all__ = ["ball_hits", "ball_hits_dense", "ball_hits_grid", "ball_hits_prefix", "ball_query_forward", "first_hits",
           "first_keys", "stack_ball_query_forward"]


def first_keys(key: Tensor, count: Tensor, nsample: int, none: int) -> Tensor:
    """The ``nsample`` smallest of ``key (..., K)`` ascending (``none`` marks a non-hit), ball-query padded.

    Slots past ``count`` (the hits of the row) repeat the row's first hit; a row without hits gets zeros.
    """
    k = min(nsample, key.shape[-1])
    if k == 0:
        return key.new_zeros((*key.shape[:-1], nsample))
    first = torch.topk(key, k, dim=-1, largest=False, sorted=True).values
    if k < nsample:
        first = torch.cat((first, first.new_full((*first.shape[:-1], nsample - k), none)), -1)
    head = torch.where(count > 0, first[..., 0], 0).unsqueeze(-1)
    slots = torch.arange(nsample, device=key.device)
    return torch.where(slots < count.unsqueeze(-1), first, head)


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
    return first_keys(key, count, nsample, n), count


def _in_ball(d2: Tensor, lo2: float, hi2: float) -> Tensor:
    return (d2 == 0) | ((d2 >= lo2) & (d2 < hi2))


def ball_hits_dense(centres: Tensor, xyz: Tensor, lo2: float, hi2: float, nsample: int) -> tuple[Tensor, Tensor]:
    """:func:`ball_hits` from every centre-point distance, per chunk of centres (the reference)."""
    b, m = centres.shape[:2]
    found = torch.zeros((b, m, nsample), dtype=torch.long, device=centres.device)
    count = torch.zeros((b, m), dtype=torch.long, device=centres.device)
    step = rows_per_chunk(b, xyz.shape[1], 3)
    for s in range(0, m, step):
        f, c = first_hits(_in_ball(sq_dist(centres[:, s:s + step], xyz), lo2, hi2), nsample)
        found[:, s:s + step], count[:, s:s + step] = f, c
    return found, count


def ball_hits_grid(centres: Tensor, xyz: Tensor, lo2: float, hi2: float, nsample: int,
                   max_fraction: float = 0.08) -> tuple[Tensor, Tensor] | None:
    """:func:`ball_hits` from the points of the 27 cells (side: the radius) around each centre only.

    The same distances (bit for bit, :func:`sq_dist_pairs`) of every point that can be in the ball, so the same
    result as :func:`ball_hits_dense`. None when the grid does not pay (more than ``max_fraction`` of all pairs are
    candidates) or cannot be built (non-finite coordinates); centres with over 8192 candidates go dense.
    """
    b, m = centres.shape[:2]
    n = xyz.shape[1]
    # cells a little wider than the radius: float rounding of d2 and of the cell coordinates never loses a point
    grid = PointGrid.build(xyz, math.sqrt(hi2) * 1.01) if hi2 > 0 else None
    if grid is None or not bool(torch.isfinite(centres).all()):
        return None
    q = centres.reshape(b * m, 3)
    batch = torch.arange(b, device=q.device).repeat_interleave(m)
    start, length = grid.runs(q, batch)
    per_row = length.sum(1)
    if int(per_row.sum()) > max_fraction * b * m * n:
        return None
    found = torch.zeros((b * m, nsample), dtype=torch.long, device=q.device)
    count = torch.zeros(b * m, dtype=torch.long, device=q.device)
    crowded = per_row > 8192
    length = length.masked_fill(crowded.unsqueeze(1), 0)
    pts = xyz.reshape(b * n, 3)
    row_cost = max(int(per_row.max()) if per_row.numel() else 1, 1)
    step = max(1, (ELEMENT_BUDGET // 4) // row_cost)
    for s in range(0, b * m, step):
        cand = grid.candidates(start[s:s + step], length[s:s + step])
        valid = cand >= 0
        d2 = sq_dist_pairs(q[s:s + step].unsqueeze(1), pts[cand.clamp(min=0)])
        hit = valid & _in_ball(d2, lo2, hi2)
        local = cand - batch[s:s + step].unsqueeze(1) * n
        c = hit.sum(-1)
        found[s:s + step] = first_keys(torch.where(hit, local, n), c, nsample, n)
        count[s:s + step] = c
    found, count = found.view(b, m, nsample), count.view(b, m)
    if bool(crowded.any()):
        rows = crowded.view(b, m)
        for bi in range(b):
            sel = rows[bi].nonzero().flatten()
            if sel.numel():
                f, c = ball_hits_dense(centres[bi:bi + 1, sel], xyz[bi:bi + 1], lo2, hi2, nsample)
                found[bi, sel], count[bi, sel] = f[0], c[0]
    return found, count


def ball_hits_prefix(centres: Tensor, xyz: Tensor, lo2: float, hi2: float, nsample: int,
                     first_block: int = 1024) -> tuple[Tensor, Tensor]:
    """:func:`ball_hits_dense`'s result, scanning the points in blocks of doubling size and dropping each centre once
    it holds ``nsample`` hits (only the first ``nsample`` in input order are kept).

    Wide balls fill up in the first block; a centre that never fills scans every point, as the dense path does.
    ``count`` is capped at ``nsample`` (all a caller uses: which slots hold hits).
    """
    b, m = centres.shape[:2]
    n = xyz.shape[1]
    have = torch.full((b, m, nsample), n, dtype=torch.long, device=centres.device)
    count = torch.zeros((b, m), dtype=torch.long, device=centres.device)
    start, width = 0, max(int(first_block), 1)
    while start < n:
        stop = min(n, start + width)
        cols = torch.arange(start, stop, device=centres.device)
        for bi in range(b):
            rows = (count[bi] < nsample).nonzero().flatten()
            step = rows_per_chunk(stop - start, 3)
            for r0 in range(0, rows.numel(), step):
                sel = rows[r0:r0 + step]
                hit = _in_ball(sq_dist(centres[bi, sel], xyz[bi, start:stop]), lo2, hi2)
                key = torch.where(hit, cols, n)
                k = min(nsample, stop - start)
                new = torch.topk(key, k, dim=-1, largest=False, sorted=True).values
                merged = torch.cat((have[bi, sel], new), -1)  # old hits precede every new one
                have[bi, sel] = torch.sort(merged, dim=-1).values[:, :nsample]
                count[bi, sel] += hit.sum(-1)
        if not bool((count < nsample).any()):
            break
        start, width = stop, width * 2
    head = torch.where(count > 0, have[..., 0], 0).unsqueeze(-1)
    slots = torch.arange(nsample, device=centres.device)
    return torch.where(slots < count.unsqueeze(-1), have, head), count.clamp_(max=nsample)


def ball_hits(centres: Tensor, xyz: Tensor, lo2: float, hi2: float, nsample: int) -> tuple[Tensor, Tensor]:
    """For ``centres (B, M, 3)``: the first ``nsample`` points of ``xyz (B, N, 3)`` (input order) with ``d^2 == 0``
    or ``lo2 <= d^2 < hi2``, padded as mmcv pads, and how many there are, capped at ``nsample``:
    ``(found (B, M, nsample), count (B, M))``.

    Small inputs and non-CPU tensors (a GPU runs the dense form fast, without the grid's host syncs) use the dense
    distances; large CPU ones the grid, or where the 27 cells hold much of the cloud (wide radii),
    :func:`ball_hits_prefix`. All three give the same result.
    """
    if centres.device.type == "cpu" and centres.shape[0] * centres.shape[1] * xyz.shape[1] >= 1 << 20:
        res = ball_hits_grid(centres, xyz, lo2, hi2, nsample)
        found, count = res if res is not None else ball_hits_prefix(centres, xyz, lo2, hi2, nsample)
    else:
        found, count = ball_hits_dense(centres, xyz, lo2, hi2, nsample)
    return found, count.clamp_(max=nsample)


@ext_op(how="torch")
def ball_query_forward(center_xyz: Tensor, xyz: Tensor, idx: Tensor, b: int, n: int, m: int, min_radius: float,
                       max_radius: float, nsample: int) -> None:
    """Fill ``idx (B, m, nsample)``: the first points of ``xyz (B, n, 3)`` in each ball of ``center_xyz (B, m, 3)``."""
    del b, n, m
    found, count = ball_hits(center_xyz, xyz, float(min_radius) ** 2, float(max_radius) ** 2, nsample)
    idx.copy_(torch.where((count > 0).unsqueeze(-1), found.to(idx.dtype), idx))


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
        if r2 > 0:  # d^2 < r^2 is "d^2 == 0 or 0 <= d^2 < r^2"
            found, count = ball_hits(center_xyz[None, c0:c0 + cn], xyz[None, p0:p0 + pn], 0.0, r2, nsample)
        else:  # nothing is closer than 0
            found = torch.zeros((1, cn, nsample), dtype=torch.long, device=idx.device)
            count = torch.zeros((1, cn), dtype=torch.long, device=idx.device)
        cur = idx[c0:c0 + cn]
        cur.copy_(torch.where((count[0] > 0).unsqueeze(-1), found[0].to(idx.dtype), cur))
        cur[:, 0].masked_fill_(count[0] == 0, -1)
