"""``mmcv._ext.three_nn_forward``: the three nearest known points of each unknown point, in torch.

Replaces mmcv-full's CUDA kernel behind ``mmcv.ops.three_nn`` (PointNet++ feature propagation) on CPU and CUDA
tensors: squared distances from explicit differences, then the three smallest in ascending order, equal distances
in ascending index order as mmcv's scan gives them (``topk``, and a stable sort for the rare rows with ties). With fewer than three known points the missing slots get index 0 and an infinite distance (mmcv: 1e40).
Dense per chunk of unknown points.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detlight.openmmlab.ops import ext_op
from detlight.openmmlab.ops._points import rows_per_chunk, sq_dist

__all__ = ["smallest_k", "smallest_k_stable", "three_nn_forward"]


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


@ext_op(how="torch")
def three_nn_forward(unknown: Tensor, known: Tensor, dist2: Tensor, idx: Tensor, b: int, n: int, m: int) -> None:
    """Fill ``dist2 (B, n, 3)`` and ``idx (B, n, 3)`` for ``unknown (B, n, 3)`` against ``known (B, m, 3)``."""
    del b, m
    step = rows_per_chunk(known.shape[0], known.shape[1], 3)
    for s in range(0, n, step):
        vals, near = smallest_k_stable(sq_dist(unknown[:, s:s + step], known), 3, float("inf"))
        dist2[:, s:s + step] = vals.to(dist2.dtype)
        idx[:, s:s + step] = near.to(idx.dtype)
