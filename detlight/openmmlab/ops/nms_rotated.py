"""``mmcv._ext.nms_rotated``: greedy NMS of rotated boxes ``(cx, cy, w, h, angle)``, exact and vectorised.

Replaces mmcv-full's ``nms_rotated`` (CPU and CUDA) behind ``mmcv.ops.nms_rotated`` and ``batched_nms`` with
``type='nms_rotated'``. The result is exactly greedy NMS: boxes in descending score order, each one kept unless a
kept higher-scoring box overlaps it too much. It is computed without the sequential loop:

1. candidate pairs are those whose circumscribed circles overlap (a sort-and-sweep over x, never an ``N x N``
   matrix);
2. pairs whose IoU cannot reach the threshold are dropped with a cheap bound (the intersection is at most the
   overlap of the boxes' axis-aligned hulls and at most the smaller area); the exact rotated IoU of the rest gives
   the suppression edges;
3. :func:`detlight.openmmlab.ops._rotated.greedy_nms_keep` resolves the greedy order over the edges in a few
   vectorised rounds (as many as the longest suppression chain).

Ranks are processed in blocks of 1024: a block's boxes are first tested against the boxes already kept (and
dropped when suppressed), and only the survivors' pairs among themselves are computed, so boxes suppressed early
cost nothing further (the loop runs over the ``N / 1024`` blocks, never over boxes).

Threshold: like mmcv-full, a CPU tensor is suppressed at ``IoU >= iou_threshold`` (mmcv's CPU kernel) and a CUDA
tensor at ``IoU > iou_threshold`` (its CUDA kernel). Labels (``nms_rotated(..., labels=...)``, ``multi_label``): mmcv
1.7's kernels, CPU and CUDA, read the boxes with the label column but never compare labels, so suppression crosses
labels (mmcv's own ``test_ml_nms_rotated`` expects exactly that); the same is done here. Per-class NMS is
``batched_nms(..., class_agnostic=False)``, which offsets the boxes per label before calling this op.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detlight.openmmlab.ops import ext_op
from detlight.openmmlab.ops._rotated import candidate_pairs, cross_pairs, greedy_nms_keep, pairwise_rotated_iou

__all__ = ["BLOCK", "iou_upper_bound", "nms_rotated", "rotated_nms_keep"]

BLOCK = 1024  # ranks per block of the exact greedy resolution


def iou_upper_bound(b1: Tensor, b2: Tensor, margin: float = 0.0) -> Tensor:
    """An upper bound of the IoU of ``(cx, cy, w, h, angle)`` box pairs, from their axis-aligned hulls and areas."""
    def half_extents(b: Tensor) -> tuple[Tensor, Tensor]:
        c, s = torch.cos(b[:, 4]).abs(), torch.sin(b[:, 4]).abs()
        return (c * b[:, 2] + s * b[:, 3]) / 2 + margin, (s * b[:, 2] + c * b[:, 3]) / 2 + margin

    hx1, hy1 = half_extents(b1)
    hx2, hy2 = half_extents(b2)
    ix = (torch.minimum(b1[:, 0] + hx1, b2[:, 0] + hx2) - torch.maximum(b1[:, 0] - hx1, b2[:, 0] - hx2)).clamp(min=0)
    iy = (torch.minimum(b1[:, 1] + hy1, b2[:, 1] + hy2) - torch.maximum(b1[:, 1] - hy1, b2[:, 1] - hy2)).clamp(min=0)
    a1, a2 = b1[:, 2] * b1[:, 3], b2[:, 2] * b2[:, 3]
    g1 = (b1[:, 2] + 2 * margin) * (b1[:, 3] + 2 * margin)
    g2 = (b2[:, 2] + 2 * margin) * (b2[:, 3] + 2 * margin)
    inter = torch.minimum(ix * iy, torch.minimum(g1, g2))
    union = a1 + a2 - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.full_like(union, float("inf")))


def _edges(boxes: Tensor, i: Tensor, j: Tensor, thr: float, labels: Tensor | None, strict: bool, eps: float,
           margin: float) -> tuple[Tensor, Tensor]:
    """The pairs ``(i, j)`` whose IoU passes the threshold (bound-filtered, then exact)."""
    if labels is not None:
        same = labels[i] == labels[j]
        i, j = i[same], j[same]
    # the margin widens the hulls (mmcv's iou3d corner margin only adds area near the boundary)
    maybe = iou_upper_bound(boxes[i], boxes[j], margin) * (1 + 1e-4) + 1e-6 >= thr
    i, j = i[maybe], j[maybe]
    iou = pairwise_rotated_iou(boxes[i], boxes[j], 0, eps=eps, margin=margin)
    hit = iou > thr if strict else iou >= thr
    return i[hit], j[hit]


def rotated_nms_keep(boxes_sorted: Tensor, iou_threshold: float, labels: Tensor | None = None,
                     strict: bool = True, eps: float = 0.0, margin: float = 0.0, block: int = BLOCK) -> Tensor:
    """Greedy NMS over boxes already in descending score order, exactly, in blocks of ranks.

    Blocks of ``block`` consecutive ranks are taken in order (a loop over ``N / block`` blocks, not over boxes):
    first every box of the block overlapping a box already kept is dropped (IoU with the kept set, vectorised), then
    the survivors' own suppression edges are resolved by :func:`greedy_nms_keep`. A box suppressed early never has
    its pairs with later boxes computed, which is what makes dense scenes cheap.

    Args:
        boxes_sorted: ``(N, 5)`` ``(cx, cy, w, h, angle)`` boxes, best first.
        iou_threshold: overlap threshold.
        labels: ``(N,)`` labels; boxes of different labels never suppress each other.
        strict: suppress at ``IoU > thr`` (else ``>=``).
        eps: lower bound of the union in the IoU.
        margin: corner-inside tolerance of the intersection (see ``_rotated.rect_intersection_area``).
        block: ranks per block.

    Returns:
        ``(N,)`` bool: which ranks are kept.
    """
    n = boxes_sorted.shape[0]
    dev = boxes_sorted.device
    keep = torch.zeros(n, dtype=torch.bool, device=dev)
    kept = torch.zeros(0, dtype=torch.long, device=dev)
    args = (float(iou_threshold), labels, strict, eps, margin)
    with torch.no_grad():
        for start in range(0, n, block):
            ranks = torch.arange(start, min(start + block, n), device=dev)
            if kept.numel():
                alive = torch.ones(ranks.numel(), dtype=torch.bool, device=dev)
                for ki, bi in cross_pairs(boxes_sorted[kept], boxes_sorted[ranks], margin=margin):
                    _, hit = _edges(boxes_sorted, kept[ki], ranks[bi], *args)
                    alive[hit - start] = False
                ranks = ranks[alive]
            srcs, dsts = [], []
            for i, j in candidate_pairs(boxes_sorted[ranks], margin=margin):
                s, d = _edges(boxes_sorted, ranks[i], ranks[j], *args)
                srcs.append(s)
                dsts.append(d)
            local = torch.zeros(n, dtype=torch.long, device=dev)  # rank -> position among the survivors
            local[ranks] = torch.arange(ranks.numel(), device=dev)
            src = local[torch.cat(srcs)] if srcs else ranks.new_zeros(0)
            dst = local[torch.cat(dsts)] if dsts else ranks.new_zeros(0)
            src, dst = torch.minimum(src, dst), torch.maximum(src, dst)
            new = ranks[greedy_nms_keep(ranks.numel(), src, dst, dev)]
            keep[new] = True
            kept = torch.cat((kept, new))
    return keep


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
        multi_label: whether ``dets`` carries a label column (read past, as mmcv does; see the module docstring).

    Returns:
        ``(K,)`` long indices into ``dets``.
    """
    if dets.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=dets.device)
    width = 6 if multi_label else 5
    if dets_sorted.dim() != 2 or dets_sorted.shape[1] < width:
        raise ValueError(f"nms_rotated: dets must be (N, {width}) (cx, cy, w, h, angle{', label' if multi_label else ''})"
                         f", got {tuple(dets_sorted.shape)}")
    keep = rotated_nms_keep(dets_sorted[:, :5], float(iou_threshold), strict=dets.is_cuda)
    return order[keep]
