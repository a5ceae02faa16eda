"""NMS family of ``mmcv._ext``: ``nms``, ``softnms``, ``nms_match`` (mmcv ``ops/nms.py``).

Replaces mmcv-full's CPU/CUDA kernels ``nms_impl``, ``softnms_impl`` and ``nms_match_impl``:

- ``nms`` is torchvision's compiled kernel for both ``offset=0`` and mmcv's legacy ``offset=1`` (boxes as
  ``x2 - x1 + 1`` wide): with ``offset=1`` the kernel sees ``x2 + 1, y2 + 1``, which gives exactly mmcv's areas and
  intersections (``min(x2) + 1 - max(x1)``). Same sort, same strict ``IoU > threshold``.
- ``nms_match`` keeps the boxes of a greedy NMS with mmcv's ``IoU >= threshold`` (torchvision's kernel at the next
  float below the threshold), then assigns every suppressed box to the first kept box before it that overlaps it,
  all with tensor ops.
- ``softnms`` is sequential by nature (each pick rescales the remaining scores, and the next pick depends on them):
  one vectorised pass over the remaining boxes per kept box, O(N^2) like mmcv's CPU kernel, with mmcv's exact
  swap-with-last bookkeeping, so ``dets`` and ``inds`` come out in mmcv's order (``benchmarks/ops_2d.py`` times it).
  mmcv runs it on CPU only, in float32; so does this.
"""

from __future__ import annotations

import numpy as np
import torch
import torchvision  # noqa: F401  (loading it registers the torch.ops.torchvision kernels)
from torch import Tensor

from detlight.openmmlab.ops import ext_op

__all__ = ["nms", "nms_match", "softnms"]


@ext_op(how="torchvision")
def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, offset: int = 0) -> Tensor:
    """Indices of the boxes kept by greedy NMS, by descending score (mmcv ``ext_module.nms``).

    Args:
        boxes: ``(N, 4)`` boxes ``x1, y1, x2, y2``.
        scores: ``(N,)`` scores.
        iou_threshold: a box is dropped when its IoU with a kept box is above this.
        offset: 0, or 1 for mmcv's legacy ``x2 - x1 + 1`` box widths.

    Returns:
        ``(K,)`` int64 indices into ``boxes``.
    """
    if offset not in (0, 1):
        raise ValueError(f"nms: offset must be 0 or 1, got {offset!r}")
    if boxes.numel() == 0:
        return boxes.new_empty((0,), dtype=torch.long)
    if offset:
        boxes = boxes + boxes.new_tensor([0.0, 0.0, 1.0, 1.0])
    return torch.ops.torchvision.nms(boxes, scores, float(iou_threshold))


def _iou_float32(a: np.ndarray, area_a: np.ndarray, b: np.ndarray, area_b: np.ndarray,
                 offset: float | np.floating) -> np.ndarray:
    """IoU of box rows ``a`` (M, 4) against ``b`` (K, 4), float32 arithmetic in mmcv's order: ``(M, K)``."""
    xx1 = np.maximum(a[:, None, 0], b[None, :, 0])
    yy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    xx2 = np.minimum(a[:, None, 2], b[None, :, 2])
    yy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    zero = np.float32(0)
    inter = np.maximum(zero, xx2 - xx1 + offset) * np.maximum(zero, yy2 - yy1 + offset)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


@ext_op(how="torch")
def softnms(boxes: Tensor, scores: Tensor, dets: Tensor, iou_threshold: float, sigma: float, min_score: float,
            method: int, offset: int) -> Tensor:
    """Soft-NMS as mmcv's CPU kernel (``ext_module.softnms``): fills ``dets`` rows and returns the kept indices.

    Sequential by nature: each step picks the highest remaining score, rescales the others by their overlap with it
    (``method`` 0: zero at ``IoU >= iou_threshold``; 1: ``1 - IoU`` there; 2: ``exp(-IoU^2 / sigma)``) and drops
    those under ``min_score`` by swapping in the last box, exactly as mmcv does (so ties resolve the same way).

    Args:
        boxes: ``(N, 4)`` boxes.
        scores: ``(N,)`` scores.
        dets: ``(N, 5)`` output: row ``i`` is the i-th kept box and its rescaled score.
        iou_threshold: overlap threshold of methods 0 and 1.
        sigma: gaussian width of method 2.
        min_score: boxes whose rescaled score falls under this are dropped.
        method: 0 naive, 1 linear, 2 gaussian.
        offset: 0, or 1 for ``x2 - x1 + 1`` box widths.

    Returns:
        ``(K,)`` int64 indices of the kept boxes, in the order of the ``dets`` rows.
    """
    if method not in (0, 1, 2):
        raise ValueError(f"softnms: method must be 0 (naive), 1 (linear) or 2 (gaussian), got {method!r}")
    n = int(boxes.shape[0])
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.long)
    b = boxes.detach().cpu().to(torch.float32).numpy()
    x1, y1, x2, y2 = (np.ascontiguousarray(b[:, k]) for k in range(4))
    sc = scores.detach().cpu().to(torch.float32).numpy().copy()
    off = np.float32(offset)
    zero, one = np.float32(0), np.float32(1)
    areas = (x2 - x1 + off) * (y2 - y1 + off)
    inds = np.arange(n, dtype=np.int64)
    cols = (x1, y1, x2, y2, sc, areas, inds)
    out = np.empty((n, 5), dtype=np.float32)
    thr, sig, min_s = np.float32(iou_threshold), np.float32(sigma), np.float32(min_score)
    i = 0
    while i < n:
        m = i + int(np.argmax(sc[i:n]))  # first maximum, as the kernel's strict '<' scan
        if m != i:
            for arr in cols:
                arr[i], arr[m] = arr[m], arr[i]
        out[i] = (x1[i], y1[i], x2[i], y2[i], sc[i])
        if i + 1 < n:
            r = slice(i + 1, n)
            w = np.maximum(zero, np.minimum(x2[r], x2[i]) - np.maximum(x1[r], x1[i]) + off)
            h = np.maximum(zero, np.minimum(y2[r], y2[i]) - np.maximum(y1[r], y1[i]) + off)
            inter = w * h
            ovr = inter / (areas[i] + areas[r] - inter)
            if method == 0:
                sc[r] *= np.where(ovr >= thr, zero, one)
            elif method == 1:
                sc[r] *= np.where(ovr >= thr, one - ovr, one)
            else:
                sc[r] *= np.exp(-(ovr * ovr) / sig)
            n = _drop_low(cols, i + 1, n, sc[r] >= min_s)
        i += 1
    dets[:n].copy_(torch.from_numpy(out[:n]).to(dets.dtype))
    return torch.from_numpy(inds[:n].copy())


def _drop_low(cols: tuple[np.ndarray, ...], start: int, n: int, keep: np.ndarray) -> int:
    """mmcv's in-place drop of positions ``start..n`` where ``keep`` is False (each hole gets the last kept box).

    Scanning holes left to right while taking boxes from the end: the ``k`` kept boxes end up in
    ``start..start+k``; those already there stay, the holes there are filled, in ascending order, by the kept boxes
    beyond, taken from the end. Returns the new ``n``.
    """
    if keep.all():
        return n
    k = int(keep.sum())
    head = keep[:k]
    holes = np.flatnonzero(~head) + start
    movers = (np.flatnonzero(keep[k:]) + start + k)[::-1]
    for arr in cols:
        arr[holes] = arr[movers]
    return start + k


@ext_op(how="torchvision")
def nms_match(dets: Tensor, iou_threshold: float) -> list[list[int]]:
    """Groups of an NMS (mmcv ``ext_module.nms_match``): each kept box with the boxes it suppressed.

    Args:
        dets: ``(N, 5)`` boxes with scores.
        iou_threshold: a box joins the group of the first kept box (by score) with ``IoU >= iou_threshold``.

    Returns:
        One list of indices per kept box, by descending score; each list starts with the kept box and goes on with
        the boxes it suppressed, by descending score.
    """
    if dets.shape[0] == 0:
        return []
    dets = dets.detach().to(torch.float32)
    boxes, scores = dets[:, :4].contiguous(), dets[:, 4].contiguous()
    order = scores.sort(0, descending=True)[1]
    below = float(np.nextafter(np.float32(iou_threshold), np.float32(-np.inf)))
    keep = torch.ops.torchvision.nms(boxes, scores, below)  # IoU > next float below == IoU >= threshold (float32)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    keep = keep[rank[keep].argsort()]
    kept_b = boxes[keep].cpu().numpy()
    all_b = boxes.cpu().numpy()
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    ious = torch.from_numpy(_iou_float32(kept_b, area(kept_b), all_b, area(all_b), np.float32(0)))
    rank_c, keep_c = rank.cpu(), keep.cpu()
    before = rank_c[keep_c][:, None] < rank_c[None, :]
    hit = (ious >= float(np.float32(iou_threshold))) & before
    group = torch.where(hit.any(0), hit.to(torch.int8).argmax(0), torch.full_like(rank_c, -1))
    group[keep_c] = torch.arange(keep_c.numel())
    members = torch.argsort(group.to(torch.float64) * (rank_c.numel() + 1) + rank_c.to(torch.float64))
    members = members[group[members] >= 0]
    counts = torch.bincount(group[members], minlength=keep_c.numel()).tolist()
    flat = members.tolist()
    out, pos = [], 0
    for c in counts:
        out.append(flat[pos:pos + c])
        pos += c
    return out
