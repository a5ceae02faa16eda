"""``mmcv._ext.nms_rotated``: greedy NMS of rotated boxes ``(cx, cy, w, h, angle)``, exact and vectorised.

Replaces mmcv-full's ``nms_rotated`` (CPU and CUDA) behind ``mmcv.ops.nms_rotated`` and ``batched_nms`` with
``type='nms_rotated'``. The result is exactly greedy NMS: boxes in descending score order, each one kept unless a
kept higher-scoring box overlaps it too much. It is computed without the sequential loop:

1. candidate pairs are those whose circumscribed circles overlap (a sort-and-sweep over x, never an ``N x N``
   matrix), restricted to equal labels when mmcv passes labels (``multi_label``);
2. their exact rotated IoU gives the suppression edges;
3. :func:`detlight.openmmlab.ops._rotated.greedy_nms_keep` resolves the greedy order over the edges in a few
   vectorised rounds (as many as the longest suppression chain).

Threshold: like mmcv-full, a CPU tensor is suppressed at ``IoU >= iou_threshold`` (mmcv's CPU kernel) and a CUDA
tensor at ``IoU > iou_threshold`` (its CUDA kernel). Labels: mmcv-full's CPU kernel ignores them (suppressing across
classes); here they are honoured on both devices, as mmcv's CUDA kernel does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detlight.openmmlab.ops import ext_op
from detlight.openmmlab.ops._rotated import candidate_pairs, greedy_nms_keep, pairwise_rotated_iou

__all__ = ["nms_rotated", "rotated_nms_keep"]


def rotated_nms_keep(boxes_sorted: Tensor, iou_threshold: float, labels: Tensor | None = None,
                     strict: bool = True, eps: float = 0.0) -> Tensor:
    """Greedy NMS over boxes already in descending score order.

    Args:
        boxes_sorted: ``(N, 5)`` ``(cx, cy, w, h, angle)`` boxes, best first.
        iou_threshold: overlap threshold.
        labels: ``(N,)`` labels; boxes of different labels never suppress each other.
        strict: suppress at ``IoU > thr`` (else ``>=``).
        eps: lower bound of the union in the IoU.

    Returns:
        ``(N,)`` bool: which ranks are kept.
    """
    n = boxes_sorted.shape[0]
    srcs, dsts = [], []
    with torch.no_grad():
        for i, j in candidate_pairs(boxes_sorted):
            if labels is not None:
                same = labels[i] == labels[j]
                i, j = i[same], j[same]
            iou = pairwise_rotated_iou(boxes_sorted[i], boxes_sorted[j], 0, eps=eps)
            hit = iou > iou_threshold if strict else iou >= iou_threshold
            srcs.append(i[hit])
            dsts.append(j[hit])
        empty = torch.zeros(0, dtype=torch.long, device=boxes_sorted.device)
        src = torch.cat(srcs) if srcs else empty
        dst = torch.cat(dsts) if dsts else empty
        return greedy_nms_keep(n, src, dst, boxes_sorted.device)


@ext_op(how="torch")
def nms_rotated(dets: Tensor, scores: Tensor, order: Tensor, dets_sorted: Tensor, iou_threshold: float,
                multi_label: bool | int = False) -> Tensor:
    """Indices of the rotated boxes kept by greedy NMS, in descending score order.

    Args:
        dets: ``(N, 5)`` boxes, or ``(N, 6)`` with the label last when ``multi_label``.
        scores: ``(N,)`` scores.
        order: ``(N,)`` the indices sorting ``scores`` in descending order.
        dets_sorted: ``dets[order]``.
        iou_threshold: overlap threshold.
        multi_label: whether ``dets`` carries a label column (boxes of different labels never suppress each other).

    Returns:
        ``(K,)`` long indices into ``dets``.
    """
    if dets.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=dets.device)
    width = 6 if multi_label else 5
    if dets_sorted.dim() != 2 or dets_sorted.shape[1] < width:
        raise ValueError(f"nms_rotated: dets must be (N, {width}) (cx, cy, w, h, angle{', label' if multi_label else ''})"
                         f", got {tuple(dets_sorted.shape)}")
    labels = dets_sorted[:, 5] if multi_label else None
    keep = rotated_nms_keep(dets_sorted[:, :5], float(iou_threshold), labels, strict=dets.is_cuda)
    return order[keep]
