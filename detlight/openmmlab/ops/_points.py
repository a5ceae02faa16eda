"""Shared helpers for the point-cloud families: chunked pairwise squared distances and points-in-3D-box tests.

Not registered as ``mmcv._ext`` ops (the module name starts with ``_``).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["ELEMENT_BUDGET", "batch_of", "local_xy_in_boxes", "rows_per_chunk", "sq_dist"]

# elements of the (rows x N x 3) work built at once (distances are (rows x N))
ELEMENT_BUDGET = 1 << 24


def rows_per_chunk(*other: int) -> int:
    """Rows per chunk so that ``rows * prod(other)`` stays near :data:`ELEMENT_BUDGET`."""
    size = 1
    for o in other:
        size *= max(int(o), 1)
    return max(1, ELEMENT_BUDGET // size)


def sq_dist(a: Tensor, b: Tensor) -> Tensor:
    """``(..., P, Q)`` squared distances ``sum((a_p - b_q)^2)``, from explicit differences (as mmcv's kernels).

    The differences (not the ``|a|^2 - 2ab + |b|^2`` expansion) keep a zero distance exactly zero, which ball query
    tests for; the three squares are added in mmcv's order, one coordinate at a time (no ``(..., P, Q, 3)``
    temporary).
    """
    out = None
    for k in range(a.shape[-1]):
        d = a[..., k].unsqueeze(-1) - b[..., k].unsqueeze(-2)
        out = d * d if out is None else out.add_(d * d)
    assert out is not None
    return out


def local_xy_in_boxes(pts: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Which points lie in which LiDAR boxes, and the points' box-local ``x, y``.

    Args:
        pts: ``(..., N, 3)`` points.
        boxes: ``(..., M, 7)`` boxes ``(x, y, z_bottom, x_size, y_size, z_size, rz)``.

    Returns:
        ``inside (..., N, M)`` bool (mmcv's test: ``|z - z_centre| <= z_size / 2`` and strictly inside in x, y),
        ``local_x`` and ``local_y`` ``(..., N, M)``.
    """
    p = pts.unsqueeze(-2)  # (..., N, 1, 3)
    b = boxes.unsqueeze(-3)  # (..., 1, M, 7)
    cz = b[..., 2] + b[..., 5] / 2
    in_z = (p[..., 2] - cz).abs() <= b[..., 5] / 2
    sx, sy = p[..., 0] - b[..., 0], p[..., 1] - b[..., 1]
    cos, sin = torch.cos(-b[..., 6]), torch.sin(-b[..., 6])
    lx = sx * cos - sy * sin
    ly = sx * sin + sy * cos
    hx, hy = b[..., 3] / 2, b[..., 4] / 2
    inside = in_z & (lx > -hx) & (lx < hx) & (ly > -hy) & (ly < hy)
    return inside, lx, ly


def batch_of(counts: Tensor, total: int) -> tuple[Tensor, Tensor]:
    """For stacked batches: each row's batch index and the first row of its batch.

    Args:
        counts: ``(B,)`` rows per batch.
        total: number of rows (``counts.sum()``).

    Returns:
        ``(batch (total,), start (B,))`` long tensors.
    """
    counts = counts.to(torch.int64)
    start = counts.cumsum(0) - counts
    batch = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts, output_size=total)
    return batch, start
