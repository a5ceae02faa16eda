"""``mmcv._ext.knn_forward``: the ``k`` nearest points of each centre, in torch.

Replaces mmcv-full's CUDA kernel behind ``mmcv.ops.knn`` (DGCNN, PAConv) on CPU and CUDA tensors: squared
distances from explicit differences, the ``k`` smallest in ascending order by ``topk`` (among exactly equal
distances the order may differ from mmcv's heap). With fewer than ``k`` points, the missing slots get index 0 and
distance 1e10, as mmcv's initial heap. Dense per chunk of centres.
"""

from __future__ import annotations

from torch import Tensor

from detlight.openmmlab.ops import ext_op
from detlight.openmmlab.ops._points import rows_per_chunk, sq_dist
from detlight.openmmlab.ops.three_nn import smallest_k

__all__ = ["knn_forward"]


@ext_op(how="torch")
def knn_forward(xyz: Tensor, new_xyz: Tensor, idx: Tensor, dist2: Tensor, b: int, n: int, m: int, nsample: int,
                ) -> None:
    """Fill ``idx (B, m, nsample)`` / ``dist2`` with the nearest of ``xyz (B, n, 3)`` to ``new_xyz (B, m, 3)``."""
    del b, n
    step = rows_per_chunk(xyz.shape[0], xyz.shape[1], 3)
    for s in range(0, m, step):
        vals, near = smallest_k(sq_dist(new_xyz[:, s:s + step], xyz), nsample, 1e10)
        dist2[:, s:s + step] = vals.to(dist2.dtype)
        idx[:, s:s + step] = near.to(idx.dtype)
