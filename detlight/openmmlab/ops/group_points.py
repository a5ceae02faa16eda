"""``mmcv._ext.group_points_*`` / ``stack_group_points_*``: group point features by neighbour indices, in torch.

Replaces mmcv-full's CUDA kernels behind ``mmcv.ops.grouping_operation`` (``QueryAndGroup``) on CPU and CUDA
tensors: the forward is a ``gather``, the backward a ``scatter_add``. In the stacked layout, indices are local to
their batch; an index outside its batch (e.g. ball query's -1 for an empty ball) reads and writes nothing.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detlight.openmmlab.ops import ext_op
from detlight.openmmlab.ops._points import batch_of

__all__ = ["group_points_backward", "group_points_forward", "stack_group_points_backward",
           "stack_group_points_forward"]


@ext_op(how="torch")
def group_points_forward(points: Tensor, idx: Tensor, out: Tensor, b: int, c: int, n: int, npoints: int,
                         nsample: int) -> None:
    """``out[b, c, p, s] = points[b, c, idx[b, p, s]]`` for ``points (B, C, N)``, ``idx (B, npoints, nsample)``."""
    del n
    index = idx.long().reshape(b, 1, npoints * nsample).expand(-1, c, -1)
    out.copy_(points.gather(2, index).view(b, c, npoints, nsample))


@ext_op(how="torch")
def group_points_backward(grad_out: Tensor, idx: Tensor, grad_points: Tensor, b: int, c: int, n: int, npoints: int,
                          nsample: int) -> None:
    """``grad_points[b, c, idx[b, p, s]] += grad_out[b, c, p, s]``."""
    del n
    index = idx.long().reshape(b, 1, npoints * nsample).expand(-1, c, -1)
    grad_points.scatter_add_(2, index, grad_out.reshape(b, c, npoints * nsample).to(grad_points.dtype))


def _stack_index(features_batch_cnt: Tensor, idx: Tensor, idx_batch_cnt: Tensor) -> tuple[Tensor, Tensor]:
    rows, _ = batch_of(idx_batch_cnt, idx.shape[0])
    _, f_start = batch_of(features_batch_cnt, int(features_batch_cnt.sum()))
    local = idx.long()
    ok = (local >= 0) & (local < features_batch_cnt.long()[rows].unsqueeze(1))
    glob = torch.where(ok, local + f_start[rows].unsqueeze(1), 0)
    return glob, ok


@ext_op(how="torch")
def stack_group_points_forward(features: Tensor, features_batch_cnt: Tensor, idx: Tensor, idx_batch_cnt: Tensor,
                               out: Tensor, b: int, m: int, c: int, nsample: int) -> None:
    """``out (M, C, nsample)``: features ``(N1 + N2 ..., C)`` at the batch-local indices ``idx (M, nsample)``."""
    del b, m, c, nsample
    glob, ok = _stack_index(features_batch_cnt, idx, idx_batch_cnt)
    grouped = features[glob].transpose(1, 2)  # (M, C, nsample)
    out.copy_(torch.where(ok.unsqueeze(1), grouped.to(out.dtype), out))


@ext_op(how="torch")
def stack_group_points_backward(grad_out: Tensor, idx: Tensor, idx_batch_cnt: Tensor, features_batch_cnt: Tensor,
                                grad_features: Tensor, b: int, c: int, m: int, n: int, nsample: int) -> None:
    """``grad_features (N, C)`` accumulates ``grad_out (M, C, nsample)`` at the grouped rows."""
    del b, c, m, n, nsample
    glob, ok = _stack_index(features_batch_cnt, idx, idx_batch_cnt)
    vals = grad_out.transpose(1, 2)[ok]  # (K, C)
    grad_features.index_add_(0, glob[ok], vals.to(grad_features.dtype))
