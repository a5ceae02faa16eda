"""``mmcv._ext.gather_points_{forward,backward}``: gather point features by index, in torch.

Replaces mmcv-full's CUDA kernels behind ``mmcv.ops.gather_points`` on CPU and CUDA tensors: the forward is a
``gather`` along the point axis, the backward a ``scatter_add`` (indices that repeat accumulate).
"""

from __future__ import annotations

from torch import Tensor

from detlight.openmmlab.ops import ext_op

__all__ = ["gather_points_backward", "gather_points_forward"]


@ext_op(how="torch")
def gather_points_forward(points: Tensor, idx: Tensor, out: Tensor, b: int, c: int, n: int, npoints: int) -> None:
    """``out[b, c, j] = points[b, c, idx[b, j]]`` for ``points (B, C, N)``, ``idx (B, npoints)``."""
    del b, n, npoints
    index = idx.long().unsqueeze(1).expand(-1, c, -1)
    out.copy_(points.gather(2, index))


@ext_op(how="torch")
def gather_points_backward(grad_out: Tensor, idx: Tensor, grad_points: Tensor, b: int, c: int, n: int,
                           npoints: int) -> None:
    """``grad_points[b, c, idx[b, j]] += grad_out[b, c, j]``."""
    del b, n, npoints
    index = idx.long().unsqueeze(1).expand(-1, c, -1)
    grad_points.scatter_add_(2, index, grad_out.to(grad_points.dtype))
