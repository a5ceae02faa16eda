"""``mmcv._ext.three_nn_forward``: the three nearest known points of each unknown point, in torch.

Replaces mmcv-full's CUDA kernel behind ``mmcv.ops.three_nn`` (PointNet++ feature propagation) on CPU and CUDA
tensors: squared distances from explicit differences, the three smallest by ``topk`` in ascending order (among
exactly equal distances the order may differ from mmcv's scan). With fewer than three known points the missing
slots get index 0 and an infinite distance (mmcv: 1e40). Dense per chunk of unknown points.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detlight.openmmlab.ops import ext_op
from detlight.openmmlab.ops._points import rows_per_chunk, sq_dist

__all__ = ["smallest_k", "three_nn_forward"]


def smallest_k(d2: Tensor, k: int, missing: float) -> tuple[Tensor, Tensor]:
    """The ``k`` smallest of ``d2 (..., N)`` ascending, padded with ``(missing, 0)`` when ``N < k``."""
    kk = min(k, d2.shape[-1])
    vals, idx = torch.topk(d2, kk, dim=-1, largest=False, sorted=True)
    if kk < k:
        pad = (*d2.shape[:-1], k - kk)
        vals = torch.cat((vals, vals.new_full(pad, missing)), -1)
        idx = torch.cat((idx, idx.new_zeros(pad)), -1)
    return vals, idx


@ext_op(how="torch")
def three_nn_forward(unknown: Tensor, known: Tensor, dist2: Tensor, idx: Tensor, b: int, n: int, m: int) -> None:
    """Fill ``dist2 (B, n, 3)`` and ``idx (B, n, 3)`` for ``unknown (B, n, 3)`` against ``known (B, m, 3)``."""
    del b, m
    step = rows_per_chunk(known.shape[0], known.shape[1], 3)
    for s in range(0, n, step):
        vals, near = smallest_k(sq_dist(unknown[:, s:s + step], known), 3, float("inf"))
        dist2[:, s:s + step] = vals.to(dist2.dtype)
        idx[:, s:s + step] = near.to(idx.dtype)
