"""``mmcv._ext.three_interpolate_{forward,backward}``: weighted sum of three neighbours' features, in torch.

Replaces mmcv-full's CUDA kernels behind ``mmcv.ops.three_interpolate`` on CPU and CUDA tensors: the forward is
three gathers and a weighted sum, the backward a ``scatter_add`` of the weighted gradient.
"""

from __future__ import annotations

from torch import Tensor

from detlight.openmmlab.ops import ext_op

__all__ = ["three_interpolate_backward", "three_interpolate_forward"]


@ext_op(how="torch")
def three_interpolate_forward(points: Tensor, idx: Tensor, weight: Tensor, out: Tensor, b: int, c: int, m: int,
                              n: int) -> None:
    """``out[b, c, i] = sum_k weight[b, i, k] * points[b, c, idx[b, i, k]]``; ``points (B, C, m)``, ``idx (B, n, 3)``."""
    del m
    index = idx.long().reshape(b, 1, n * 3).expand(-1, c, -1)
    picked = points.gather(2, index).view(b, c, n, 3)
    out.copy_((picked * weight.unsqueeze(1).to(picked.dtype)).sum(-1))


@ext_op(how="torch")
def three_interpolate_backward(grad_out: Tensor, idx: Tensor, weight: Tensor, grad_points: Tensor, b: int, c: int,
                               n: int, m: int) -> None:
    """``grad_points[b, c, idx[b, i, k]] += weight[b, i, k] * grad_out[b, c, i]``."""
    del m
    index = idx.long().reshape(b, 1, n * 3).expand(-1, c, -1)
    contrib = grad_out.unsqueeze(-1) * weight.unsqueeze(1).to(grad_out.dtype)  # (B, C, n, 3)
    grad_points.scatter_add_(2, index, contrib.reshape(b, c, n * 3).to(grad_points.dtype))
