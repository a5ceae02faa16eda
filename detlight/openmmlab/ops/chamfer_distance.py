"""2D Chamfer distance family of ``mmcv._ext``: ``chamfer_distance_forward`` / ``_backward`` (mmcv ``ops/chamfer_distance.py``).

Replaces mmcv-full's CUDA kernels (mmcv has no CPU ones; Oriented RepPoints uses the op) with vectorised torch: for
every point of one set, the squared distance to its nearest point of the other set and that point's index (the first
one on ties, as mmcv's scan), both directions; the backward pass sends ``2 * grad * (p - q)`` to each point and its
nearest neighbour. Squared distances are computed from coordinate differences (not the ``|a|^2 + |b|^2 - 2ab``
expansion, which loses precision); the ``(B, n, M)`` distance block is formed for chunks of points (bounded memory).
Limits: 2D points only (``(B, N, 2)``), as mmcv.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detlight.openmmlab.ops import ext_op
from detlight.openmmlab.ops._sampling import chunks

__all__ = ["chamfer_distance_backward", "chamfer_distance_forward"]


def _check(xyz1: Tensor, xyz2: Tensor) -> None:
    for name, t in (("xyz1", xyz1), ("xyz2", xyz2)):
        if t.dim() != 3 or t.shape[2] != 2:
            raise ValueError(f"chamfer_distance: {name} must be (B, N, 2) 2D point sets, got {tuple(t.shape)}")
    if xyz1.shape[0] != xyz2.shape[0]:
        raise ValueError(f"chamfer_distance: batch sizes differ: xyz1 {xyz1.shape[0]} vs xyz2 {xyz2.shape[0]}")


def _nearest(src: Tensor, dst: Tensor, dist: Tensor, idx: Tensor) -> None:
    """Fill ``dist (B, N)`` / ``idx (B, N)`` with each ``src`` point's nearest ``dst`` point (squared distance)."""
    b, n, _ = src.shape
    m = dst.shape[1]
    if m == 0:
        return
    for sl in chunks(n, b * m * 3):
        diff = src[:, sl, None, :] - dst[:, None, :, :]  # (B, n, M, 2)
        d = (diff * diff).sum(-1)
        best = d.min(-1).values
        # the first index among exact ties (mmcv keeps the first minimum of its scan)
        first = (d == best[..., None]).to(torch.uint8).argmax(-1)
        dist[:, sl] = best.to(dist.dtype)
        idx[:, sl] = first.to(idx.dtype)


@ext_op(how="torch")
def chamfer_distance_forward(xyz1: Tensor, xyz2: Tensor, dist1: Tensor, dist2: Tensor, idx1: Tensor, idx2: Tensor,
                             ) -> None:
    """Fill nearest-neighbour squared distances and indices both ways (mmcv ``ext_module.chamfer_distance_forward``).

    Args:
        xyz1: ``(B, N, 2)`` points.
        xyz2: ``(B, M, 2)`` points.
        dist1: ``(B, N)``, filled with each ``xyz1`` point's squared distance to its nearest ``xyz2`` point.
        dist2: ``(B, M)``, the same from ``xyz2`` to ``xyz1``.
        idx1: ``(B, N)`` int32, filled with the nearest ``xyz2`` index.
        idx2: ``(B, M)`` int32, the nearest ``xyz1`` index.
    """
    _check(xyz1, xyz2)
    _nearest(xyz1, xyz2, dist1, idx1)
    _nearest(xyz2, xyz1, dist2, idx2)


def _pull(src: Tensor, dst: Tensor, idx: Tensor, grad: Tensor, grad_src: Tensor, grad_dst: Tensor) -> None:
    b, n, _ = src.shape
    m = dst.shape[1]
    if n == 0 or m == 0:
        return
    near = idx.to(torch.long)
    target = dst.gather(1, near[..., None].expand(b, n, 2))
    g = 2 * grad[..., None] * (src - target)  # (B, N, 2)
    grad_src += g.to(grad_src.dtype)
    rows = (near + (torch.arange(b, device=src.device) * m)[:, None]).reshape(-1)
    grad_dst.view(b * m, 2).index_add_(0, rows, -g.reshape(-1, 2).to(grad_dst.dtype))


@ext_op(how="torch")
def chamfer_distance_backward(xyz1: Tensor, xyz2: Tensor, idx1: Tensor, idx2: Tensor, grad_dist1: Tensor,
                              grad_dist2: Tensor, grad_xyz1: Tensor, grad_xyz2: Tensor) -> None:
    """Accumulate both point sets' gradients from both distances (mmcv ``ext_module.chamfer_distance_backward``)."""
    _check(xyz1, xyz2)
    _pull(xyz1, xyz2, idx1, grad_dist1, grad_xyz1, grad_xyz2)
    _pull(xyz2, xyz1, idx2, grad_dist2, grad_xyz2, grad_xyz1)
