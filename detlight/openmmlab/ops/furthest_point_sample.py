"""``mmcv._ext.furthest_point_sampling_forward`` / ``_with_dist_forward``: furthest point sampling in torch.

Replaces mmcv-full's CUDA kernels behind ``mmcv.ops.furthest_point_sample`` and
``furthest_point_sample_with_dist`` (PointNet++ / VoteNet / 3DSSD samplers), on CPU and CUDA tensors. The first
sample is point 0; each next sample is the point whose distance to the samples so far is largest (the lowest index
among ties; mmcv's CUDA reduction breaks exact ties in thread order).

Limits: the algorithm is sequential in the samples: sample ``j`` depends on sample ``j - 1``. The outer loop over
the ``m`` samples is a Python loop; each step is vectorised over the batch and the ``N`` points (one distance
update and one argmax), so a call costs ``m`` small kernels (see ``benchmarks/ops_3d.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from detlight.openmmlab.ops import ext_op

__all__ = ["furthest_point_sampling_forward", "furthest_point_sampling_with_dist_forward"]


def _sample(step_dist: Callable[[Tensor, Tensor], Tensor], temp: Tensor, idx_tensor: Tensor, b: int, m: int) -> None:
    if m <= 0:
        return
    rows = torch.arange(b, device=temp.device)
    old = torch.zeros(b, dtype=torch.long, device=temp.device)
    picked = torch.zeros((b, m), dtype=torch.long, device=temp.device)
    for j in range(1, m):  # sequential by definition (see the module docstring)
        temp.copy_(torch.minimum(temp, step_dist(rows, old)))
        old = temp.argmax(1)
        picked[:, j] = old
    idx_tensor.copy_(picked.to(idx_tensor.dtype))


@ext_op(how="torch")
def furthest_point_sampling_forward(points_xyz: Tensor, temp: Tensor, idx_tensor: Tensor, b: int, n: int, m: int,
                                    ) -> None:
    """Fill ``idx_tensor (B, m)`` with furthest-point samples of ``points_xyz (B, n, 3)``; ``temp (B, n)`` is scratch
    (initialised by the caller to a large value)."""
    del n
    pts = points_xyz[..., :3].to(temp.dtype)

    def dist(rows: Tensor, old: Tensor) -> Tensor:
        diff = pts - pts[rows, old].unsqueeze(1)
        return (diff * diff).sum(-1)

    _sample(dist, temp, idx_tensor, b, m)


@ext_op(how="torch")
def furthest_point_sampling_with_dist_forward(points_dist: Tensor, temp: Tensor, idx_tensor: Tensor, b: int, n: int,
                                              m: int) -> None:
    """Furthest point sampling from a distance matrix ``points_dist (B, n, n)`` (row ``i``: distances from ``i``)."""
    del n
    dmat = points_dist.to(temp.dtype)

    def dist(rows: Tensor, old: Tensor) -> Tensor:
        return dmat[rows, old]

    _sample(dist, temp, idx_tensor, b, m)
