"""``mmcv._ext.three_nn_forward``: the three nearest known points of each unknown point, in torch.

Replaces mmcv-full's CUDA kernel behind ``mmcv.ops.three_nn`` (PointNet++ feature propagation) on CPU and CUDA
tensors: squared distances from explicit differences, then the three smallest in ascending order, equal distances
in ascending index order as mmcv's scan gives them (``topk``, and a stable sort for the rare rows with ties). With
fewer than three known points the missing slots get index 0 and an infinite distance (mmcv: 1e40).

Small inputs compute every distance (per chunk of unknown points). Large ones bucket the known points in a uniform
grid (about 2 per cell) and look only at the 27 cells around each unknown point, keeping a row only when its third
distance provably beats every point outside those cells; the other rows are computed densely, so the result is the
dense one, bit for bit. GPU tensors always take the dense path (fast there, and without the grid's host syncs).
"""

from __future__ import annotations

import torch
from torch import Tensor

from detlight.openmmlab.ops import ext_op
from detlight.openmmlab.ops._points import ELEMENT_BUDGET, PointGrid, rows_per_chunk, sq_dist, sq_dist_pairs

__all__ = ["smallest_k", "smallest_k_stable", "three_nn_dense", "three_nn_forward", "three_nn_grid"]


def smallest_k(d2: Tensor, k: int, missing: float) -> tuple[Tensor, Tensor]:
    """The ``k`` smallest of ``d2 (..., N)`` ascending, padded with ``(missing, 0)`` when ``N < k``."""
    kk = min(k, d2.shape[-1])
    vals, idx = torch.topk(d2, kk, dim=-1, largest=False, sorted=True)
    if kk < k:
        pad = (*d2.shape[:-1], k - kk)
        vals = torch.cat((vals, vals.new_full(pad, missing)), -1)
        idx = torch.cat((idx, idx.new_zeros(pad)), -1)
    return vals, idx


def smallest_k_stable(d2: Tensor, k: int, missing: float) -> tuple[Tensor, Tensor]:
    """:func:`smallest_k` with equal distances in ascending index order (mmcv's scan order).

    ``topk`` gives the values; only rows where a tie may have reordered indices (equal values among the ``k``, or
    more than ``k`` entries at the ``k``-th value) are redone with a stable sort.
    """
    vals, idx = smallest_k(d2, k, missing)
    kk = min(k, d2.shape[-1])
    if kk == 0:
        return vals, idx
    tied = (d2 <= vals[..., kk - 1:kk]).sum(-1) > kk
    if kk > 1:
        tied |= (vals[..., 1:kk] == vals[..., : kk - 1]).any(-1)
    if bool(tied.any()):
        rows = d2[tied]
        s_vals, s_idx = torch.sort(rows, dim=-1, stable=True)
        vals[tied, :kk] = s_vals[..., :kk]
        idx[tied, :kk] = s_idx[..., :kk]
    return vals, idx


def three_nn_dense(unknown: Tensor, known: Tensor) -> tuple[Tensor, Tensor]:
    """``(dist2 (B, n, 3), idx (B, n, 3) long)`` from every unknown-known distance, per chunk (the reference)."""
    b, n = unknown.shape[:2]
    vals = unknown.new_empty((b, n, 3), dtype=torch.promote_types(unknown.dtype, known.dtype))
    idx = torch.empty((b, n, 3), dtype=torch.long, device=unknown.device)
    step = rows_per_chunk(known.shape[0], known.shape[1], 3)
    for s in range(0, n, step):
        vals[:, s:s + step], idx[:, s:s + step] = smallest_k_stable(sq_dist(unknown[:, s:s + step], known), 3,
                                                                     float("inf"))
    return vals, idx


def _cell_for(known: Tensor) -> float:
    """A cell side that puts about 2 known points in a cell, over the axes the known points spread along."""
    flat = known.reshape(-1, 3).double()
    extent = flat.max(0).values - flat.min(0).values
    widest = float(extent.max())
    spread = extent[extent > widest * 1e-2]
    return (float(spread.prod()) * 2.0 / max(known.shape[1], 1)) ** (1.0 / spread.numel()) if widest > 0 else 0.0


def three_nn_grid(unknown: Tensor, known: Tensor, max_candidates: int = 512) -> tuple[Tensor, Tensor] | None:
    """:func:`three_nn_dense`'s result from the known points of the 27 grid cells around each unknown point.

    A row is kept when its third distance is below the squared distance from the point to the faces of its 27-cell
    block (less 2% for float rounding): every known point outside is then strictly farther, so the three nearest,
    their distances (same operations, same bits) and the order among equal distances (ascending index) are those of
    the dense computation. Other rows (fewer than 3 or over ``max_candidates`` candidates, or a far third
    neighbour) are computed densely. None when the grid cannot be built.
    """
    b, n = unknown.shape[:2]
    m = known.shape[1]
    if m < 3 or not bool(torch.isfinite(unknown).all()):
        return None
    grid = PointGrid.build(known, _cell_for(known)) if bool(torch.isfinite(known).all()) else None
    if grid is None:
        return None
    q = unknown.reshape(b * n, 3)
    batch = torch.arange(b, device=q.device).repeat_interleave(n)
    start, length = grid.runs(q, batch)
    per_row = length.sum(1)
    usable = (per_row >= 3) & (per_row <= max_candidates)
    length = length.masked_fill(~usable.unsqueeze(1), 0)
    # distance from each point to the faces of its 27-cell block (float64)
    raw = grid.query_cells(q).double() - 2
    lower = grid.origin + (raw - 1) * grid.cell
    upper = grid.origin + (raw + 2) * grid.cell
    q64 = q.double()
    face = torch.minimum(q64 - lower, upper - q64).min(1).values.clamp(min=0)
    bound = face * face * 0.98
    pts = known.reshape(b * m, 3)
    vals = unknown.new_empty((b * n, 3), dtype=torch.promote_types(unknown.dtype, known.dtype))
    idx = torch.empty((b * n, 3), dtype=torch.long, device=q.device)
    step = max(1, (ELEMENT_BUDGET // 4) // max(int(per_row[usable].max()) if bool(usable.any()) else 1, 1))
    for s in range(0, b * n, step):
        cand = grid.candidates(start[s:s + step], length[s:s + step])
        if cand.shape[1] < 3:
            continue
        local = torch.where(cand >= 0, cand - batch[s:s + step].unsqueeze(1) * m, m)
        local, perm = torch.sort(local, dim=1)  # ascending index: ties resolve as in the dense scan
        cand = cand.gather(1, perm)
        d2 = sq_dist_pairs(q[s:s + step].unsqueeze(1), pts[cand.clamp(min=0)])
        d2 = d2.masked_fill(cand < 0, float("inf"))
        v, pos = smallest_k_stable(d2, 3, float("inf"))
        vals[s:s + step], idx[s:s + step] = v, local.gather(1, pos)
    ok = usable & (vals[:, 2].double() < bound)
    vals, idx, ok = vals.view(b, n, 3), idx.view(b, n, 3), ok.view(b, n)
    for bi in range(b):
        redo = (~ok[bi]).nonzero().flatten()
        if redo.numel():
            v, i = three_nn_dense(unknown[bi:bi + 1, redo], known[bi:bi + 1])
            vals[bi, redo], idx[bi, redo] = v[0], i[0]
    return vals, idx


@ext_op(how="torch")
def three_nn_forward(unknown: Tensor, known: Tensor, dist2: Tensor, idx: Tensor, b: int, n: int, m: int) -> None:
    """Fill ``dist2 (B, n, 3)`` and ``idx (B, n, 3)`` for ``unknown (B, n, 3)`` against ``known (B, m, 3)``.

    Large inputs go through :func:`three_nn_grid`, small ones (or ones it cannot grid) through
    :func:`three_nn_dense`; both give the same bits. Like mmcv's kernel, which steps through each contiguous buffer
    3 floats per point, an input whose last dimension is not 3 is read as its first ``b * n * 3`` (``b * m * 3``)
    floats: mmdet3d's ``SparseEncoderSASSD`` passes ``(1, N, 4)`` batch-x-y-z rows and gets exactly that.
    """
    if unknown.shape[-1] != 3:
        unknown = unknown.reshape(-1)[: b * n * 3].view(b, n, 3)
    if known.shape[-1] != 3:
        known = known.reshape(-1)[: b * m * 3].view(b, m, 3)
    res = None
    big = unknown.shape[0] * unknown.shape[1] * known.shape[1] >= 1 << 20
    if unknown.device.type == "cpu" and known.shape[1] >= 1024 and big:
        res = three_nn_grid(unknown, known)  # a row costs ~100 candidates: the grid pays from ~1000 known points
    vals, near = res if res is not None else three_nn_dense(unknown, known)
    dist2.copy_(vals.to(dist2.dtype))
    idx.copy_(near.to(idx.dtype))
