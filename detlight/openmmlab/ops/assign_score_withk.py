"""PAConv's score assembly in ``mmcv._ext``: ``assign_score_withk_forward`` / ``_backward`` (mmcv ``ops/assign_score_withk.py``).

Replaces mmcv-full's CUDA kernels (mmcv has no CPU ones; mmdet3d's PAConv / PAConvCUDA layers call them) with
vectorised torch: ``output[b, o, n, k] += sum_m (points[b, knn[b, n, k], m, o] - centers[b, knn[b, n, 0], m, o]) *
scores[b, n, k, m]`` (the first neighbour is the centre), and the matching gradients of points, centres and scores.
As in mmcv, a neighbour index outside ``[0, N0)`` marks an empty slot: it adds nothing and gets no gradient, and the
``aggregate`` argument is accepted but ignored (mmcv's kernels always sum). Sampled centres are processed in chunks
that bound the gathered ``(B, n, K, M, O)`` block.
Limits: a centre index (``knn[:, :, 0]``) outside ``[0, N0)`` where a neighbour is valid reads out of bounds in mmcv;
here it raises ``ValueError``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detlight.openmmlab.ops import ext_op
from detlight.openmmlab.ops._sampling import chunks

__all__ = ["assign_score_withk_backward", "assign_score_withk_forward"]


def _indices(knn_idx: Tensor, n0: int, name: str) -> tuple[Tensor, Tensor, Tensor]:
    """Clamped neighbour and centre indices ``(B, N1, K)`` and the valid-neighbour mask."""
    knn = knn_idx.to(torch.long)
    valid = (knn >= 0) & (knn < n0)
    center = knn[:, :, :1].expand_as(knn)
    if bool((valid & ((center < 0) | (center >= n0))).any()):
        raise ValueError(f"{name}: knn_idx[:, :, 0] (the centre of each neighbourhood) must lie in [0, N0={n0}) "
                         "wherever a neighbour is valid")
    return knn.clamp(0, max(n0 - 1, 0)), center.clamp(0, max(n0 - 1, 0)), valid


def _gather(table: Tensor, idx: Tensor) -> Tensor:
    """``table (B, N0, M, O)`` rows picked by ``idx (B, n, K)``: ``(B, n, K, M, O)``."""
    b = torch.arange(table.shape[0], device=table.device)[:, None, None]
    return table[b, idx]


@ext_op(how="torch")
def assign_score_withk_forward(points: Tensor, centers: Tensor, scores: Tensor, knn_idx: Tensor, output: Tensor,
                               B: int, N0: int, N1: int, M: int, K: int, O: int, aggregate: int = 0,  # noqa: N803, E741
                               ) -> None:
    """Add the score-weighted neighbour features to ``output`` (mmcv ``ext_module.assign_score_withk_forward``).

    Args:
        points: ``(B, N0, M, O)`` point features per weight matrix.
        centers: ``(B, N0, M, O)`` centre features per weight matrix.
        scores: ``(B, N1, K, M)`` weight-bank scores.
        knn_idx: ``(B, N1, K)`` neighbour indices into ``N0`` (the first is the centre).
        output: ``(B, O, N1, K)``, accumulated into.
        B: batch size.
        N0: points per sample.
        N1: sampled centres.
        M: weight matrices.
        K: neighbours.
        O: output channels.
        aggregate: 0 sum, 1 avg, 2 max; ignored (mmcv's kernel always sums).
    """
    knn, center, valid = _indices(knn_idx, int(N0), "assign_score_withk_forward")
    per = int(B) * int(K) * int(M) * max(int(O), 1) * 2
    for sl in chunks(int(N1), per):
        diff = _gather(points, knn[:, sl]) - _gather(centers, center[:, sl])  # (B, n, K, M, O)
        val = torch.einsum("bnkm,bnkmo->bonk", scores[:, sl] * valid[:, sl, :, None], diff)
        output[:, :, sl] += val.to(output.dtype)


@ext_op(how="torch")
def assign_score_withk_backward(grad_out: Tensor, points: Tensor, centers: Tensor, scores: Tensor, knn_idx: Tensor,
                                grad_points: Tensor, grad_centers: Tensor, grad_scores: Tensor, B: int, N0: int,
                                N1: int, M: int, K: int, O: int, aggregate: int = 0,  # noqa: N803, E741
                                ) -> None:
    """Accumulate the gradients of points, centres and scores (mmcv ``ext_module.assign_score_withk_backward``)."""
    knn, center, valid = _indices(knn_idx, int(N0), "assign_score_withk_backward")
    b_n, n0, m_n, o_n = int(B), int(N0), int(M), int(O)
    row_base = (torch.arange(b_n, device=points.device) * n0)[:, None, None]
    flat_points = grad_points.view(b_n * n0, m_n * o_n)
    flat_centers = grad_centers.view(b_n * n0, m_n * o_n)
    g_all = grad_out.permute(0, 2, 3, 1)  # (B, N1, K, O)
    for sl in chunks(int(N1), b_n * int(K) * m_n * max(o_n, 1) * 2):
        s = scores[:, sl] * valid[:, sl, :, None]  # (B, n, K, M)
        g = g_all[:, sl] * valid[:, sl, :, None]  # (B, n, K, O)
        contrib = (s[..., None] * g[:, :, :, None, :]).reshape(-1, m_n * o_n)  # (B*n*K, M*O)
        flat_points.index_add_(0, (row_base + knn[:, sl]).reshape(-1), contrib.to(flat_points.dtype))
        flat_centers.index_add_(0, (row_base + center[:, sl]).reshape(-1), -contrib.to(flat_centers.dtype))
        diff = _gather(points, knn[:, sl]) - _gather(centers, center[:, sl])  # (B, n, K, M, O)
        grad_scores[:, sl] += torch.einsum("bnkmo,bnko->bnkm", diff, g).to(grad_scores.dtype)
