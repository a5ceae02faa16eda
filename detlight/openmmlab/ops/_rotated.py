"""Shared geometry for the rotated and 3D box families: rotated-rectangle intersection and exact greedy NMS.

Nothing here is registered as an ``mmcv._ext`` op (the module name starts with ``_``); ``box_iou_rotated``,
``nms_rotated`` and ``iou3d`` build on it.

- :func:`rect_corners`: the four corners of ``(cx, cy, w, h, angle)`` rectangles, the corner ``(±w/2, ±h/2)``
  rotated by ``angle`` (counter-clockwise in x-right / y-up axes), which is the convention of mmcv's
  ``box_iou_rotated`` (with its default ``clockwise=True`` in image axes) and of its ``iou3d`` BEV boxes.
- :func:`rect_intersection_area`: the exact area of the intersection polygon of two rectangles, vectorised over
  pairs: the polygon's vertices are the corners of each rectangle inside the other and the 16 edge crossings; they
  are ordered by angle around their centroid and the fan area is summed.
- :func:`candidate_pairs`: the pairs whose circumscribed circles overlap (the only pairs that can intersect), found by
  a sort-and-sweep over x without forming the dense ``N x N`` matrix.
- :func:`greedy_nms_keep`: greedy NMS, exactly, from the list of suppression edges.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["candidate_pairs", "cross_pairs", "greedy_nms_keep", "pairwise_rotated_iou", "pairwise_rotated_overlap",
           "rect_corners", "rect_intersection_area"]

# pairs per intersection chunk: bounds peak memory (about 1.5 kB per pair in float32) and stays cache-sized
PAIR_CHUNK = 1 << 12
# a point on an edge counts as inside: the tolerance is relative (edge-parameter units)
_TOL = 1e-6


def rect_corners(cx: Tensor, cy: Tensor, w: Tensor, h: Tensor, angle: Tensor) -> Tensor:
    """Corners ``(..., 4, 2)`` of rectangles, in cyclic order.

    Args:
        cx: centre x, any shape ``S``.
        cy: centre y, shape ``S``.
        w: size along the rectangle's own x axis, shape ``S``.
        h: size along its own y axis, shape ``S``.
        angle: rotation in radians (counter-clockwise with y up), shape ``S``.

    Returns:
        ``(*S, 4, 2)`` corners.
    """
    cos, sin = torch.cos(angle), torch.sin(angle)
    sx = torch.tensor([-0.5, -0.5, 0.5, 0.5], dtype=cx.dtype, device=cx.device)
    sy = torch.tensor([0.5, -0.5, -0.5, 0.5], dtype=cx.dtype, device=cx.device)
    lx = w.unsqueeze(-1) * sx
    ly = h.unsqueeze(-1) * sy
    x = cx.unsqueeze(-1) + cos.unsqueeze(-1) * lx - sin.unsqueeze(-1) * ly
    y = cy.unsqueeze(-1) + sin.unsqueeze(-1) * lx + cos.unsqueeze(-1) * ly
    return torch.stack((x, y), dim=-1)


def _cross(a: Tensor, b: Tensor) -> Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _inside(pts: Tensor, rect: Tensor, margin: float = 0.0) -> Tensor:
    """Which of ``pts (P, K, 2)`` lie in the rectangles ``rect (P, 4, 2)`` grown by ``margin`` (boundary included)."""
    origin = rect[:, 0:1]
    ab = rect[:, 1:2] - origin
    ad = rect[:, 3:4] - origin
    ap = pts - origin
    pab = (ap * ab).sum(-1)
    pad = (ap * ad).sum(-1)
    nab = (ab * ab).sum(-1)
    nad = (ad * ad).sum(-1)
    tab = _TOL * nab + margin * nab.sqrt()
    tad = _TOL * nad + margin * nad.sqrt()
    return (pab >= -tab) & (pab <= nab + tab) & (pad >= -tad) & (pad <= nad + tad)


def rect_intersection_area(a: Tensor, b: Tensor, margin: float = 0.0) -> Tensor:
    """Exact intersection area of rectangle pairs given by their corners.

    Args:
        a: ``(P, 4, 2)`` corners in cyclic order (from :func:`rect_corners`).
        b: ``(P, 4, 2)`` corners of the other rectangle of each pair.
        margin: a corner of one rectangle within this distance outside the other still counts as inside it (mmcv's
            ``iou3d`` kernels use 1e-2, which slightly enlarges overlaps; 0 gives the exact area).

    Returns:
        ``(P,)`` areas, 0 for pairs whose intersection has fewer than 3 vertices.
    """
    p = a.shape[0]
    if p == 0:
        return a.new_zeros(0)
    ea = torch.roll(a, -1, dims=1) - a  # (P, 4, 2) edge vectors
    eb = torch.roll(b, -1, dims=1) - b
    # edge i of a against edge j of b: a_i + t1 ea_i = b_j + t2 eb_j
    ea4, a4 = ea.unsqueeze(2), a.unsqueeze(2)  # (P, 4, 1, 2)
    eb4, b4 = eb.unsqueeze(1), b.unsqueeze(1)  # (P, 1, 4, 2)
    d = b4 - a4
    den = _cross(ea4, eb4)
    ok = den.abs() > 1e-14
    safe = torch.where(ok, den, torch.ones_like(den))
    t1 = _cross(d, eb4) / safe
    t2 = _cross(d, ea4) / safe
    ok = ok & (t1 >= -_TOL) & (t1 <= 1 + _TOL) & (t2 >= -_TOL) & (t2 <= 1 + _TOL)
    cross_pts = (a4 + t1.unsqueeze(-1) * ea4).reshape(p, 16, 2)
    pts = torch.cat((a, b, cross_pts), dim=1)  # (P, 24, 2)
    valid = torch.cat((_inside(a, b, margin), _inside(b, a, margin), ok.reshape(p, 16)), dim=1)
    count = valid.sum(1)
    w = valid.to(a.dtype).unsqueeze(-1)
    centre = (pts * w).sum(1) / count.clamp(min=1).to(a.dtype).unsqueeze(-1)
    rel = pts - centre.unsqueeze(1)
    ang = torch.atan2(rel[..., 1], rel[..., 0])
    ang = torch.where(valid, ang, torch.full_like(ang, 10.0))  # invalid points sort last
    order = ang.argsort(dim=1)
    rel = rel.gather(1, order.unsqueeze(-1).expand(-1, -1, 2))
    valid_sorted = valid.gather(1, order)
    rel = torch.where(valid_sorted.unsqueeze(-1), rel, rel[:, :1])  # pad with the first vertex: zero-area terms
    area = 0.5 * _cross(rel, torch.roll(rel, -1, dims=1)).sum(1).abs()
    return torch.where(count >= 3, area, torch.zeros_like(area))


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def pairwise_rotated_overlap(b1: Tensor, b2: Tensor, margin: float = 0.0) -> Tensor:
    """Intersection areas of aligned pairs of ``(cx, cy, w, h, angle)`` boxes.

    Both boxes of a pair are shifted by the midpoint of their centres before the corners are formed (precision far
    from the origin), as mmcv's kernels do.

    Args:
        b1: ``(P, 5)`` boxes.
        b2: ``(P, 5)`` boxes.
        margin: see :func:`rect_intersection_area`.

    Returns:
        ``(P,)`` areas in the dtype of ``b1``.
    """
    out = b1.new_zeros(b1.shape[0])
    for sl in _chunks(b1.shape[0], PAIR_CHUNK):
        x1, x2 = b1[sl], b2[sl]
        mid = (x1[:, :2] + x2[:, :2]) / 2
        c1 = rect_corners(x1[:, 0] - mid[:, 0], x1[:, 1] - mid[:, 1], x1[:, 2], x1[:, 3], x1[:, 4])
        c2 = rect_corners(x2[:, 0] - mid[:, 0], x2[:, 1] - mid[:, 1], x2[:, 2], x2[:, 3], x2[:, 4])
        out[sl] = rect_intersection_area(c1, c2, margin)
    return out


def pairwise_rotated_iou(b1: Tensor, b2: Tensor, mode_flag: int = 0, eps: float = 0.0,
                         min_area: float = 1e-14, margin: float = 0.0) -> Tensor:
    """IoU (``mode_flag=0``) or IoF (``1``) of aligned pairs of ``(cx, cy, w, h, angle)`` boxes.

    Args:
        b1: ``(P, 5)`` boxes.
        b2: ``(P, 5)`` boxes.
        mode_flag: 0 for intersection over union, 1 for intersection over the area of ``b1``.
        eps: lower bound of the union (mmcv's iou3d uses 1e-8; box_iou_rotated none).
        min_area: pairs where a box is smaller than this get 0 (mmcv's box_iou_rotated: 1e-14).
        margin: see :func:`rect_intersection_area`.

    Returns:
        ``(P,)`` values in the dtype of ``b1``.
    """
    inter = pairwise_rotated_overlap(b1, b2, margin)
    area1 = b1[:, 2] * b1[:, 3]
    area2 = b2[:, 2] * b2[:, 3]
    base = area1 + area2 - inter if mode_flag == 0 else area1
    if eps > 0:
        base = base.clamp(min=eps)
    val = inter / torch.where(base == 0, torch.ones_like(base), base)
    return torch.where((area1 < min_area) | (area2 < min_area), torch.zeros_like(val), val)


def cross_pairs(b1: Tensor, b2: Tensor, budget: int = 1 << 22, margin: float = 0.0,
                ) -> Iterator[tuple[Tensor, Tensor]]:
    """Pairs ``(i, j)`` of ``b1 x b2`` (``(cx, cy, w, h, ...)`` boxes) whose circumscribed circles overlap.

    Rows are taken in chunks of about ``budget`` pairs; only those pairs can have a non-zero intersection (the radii
    grow by ``margin``, see :func:`rect_intersection_area`).

    Yields:
        ``(i, j)`` long tensors.
    """
    n, m = b1.shape[0], b2.shape[0]
    if n == 0 or m == 0:
        return
    r1 = 0.5 * torch.sqrt(b1[:, 2] ** 2 + b1[:, 3] ** 2) + margin
    r2 = 0.5 * torch.sqrt(b2[:, 2] ** 2 + b2[:, 3] ** 2) + margin
    rows = max(1, budget // m)
    for sl in _chunks(n, rows):
        d2 = (b1[sl, 0, None] - b2[None, :, 0]) ** 2 + (b1[sl, 1, None] - b2[None, :, 1]) ** 2
        i, j = torch.nonzero(d2 <= (r1[sl, None] + r2[None]) ** 2, as_tuple=True)
        yield i + sl.start, j


def candidate_pairs(boxes: Tensor, budget: int = 1 << 22, margin: float = 0.0) -> Iterator[tuple[Tensor, Tensor]]:
    """Index pairs ``(i, j)``, ``i < j``, of ``(cx, cy, w, h, ...)`` boxes whose circumscribed circles overlap.

    A sweep over x: boxes sorted by the left end of their circle's x-extent; each box pairs with the boxes whose left
    end falls inside its own extent, then the circle test filters. The pairs come in chunks of about ``budget``
    candidates (a loop over chunks, not over boxes), so the dense ``N x N`` matrix is never formed.

    Args:
        boxes: ``(N, >=4)``: centre x, centre y, width, height first.
        budget: candidate pairs examined per chunk.
        margin: added to every radius (see :func:`rect_intersection_area`).

    Yields:
        ``(i, j)`` long tensors with ``i < j``.
    """
    n = boxes.shape[0]
    if n < 2:
        return
    radius = 0.5 * torch.sqrt(boxes[:, 2] ** 2 + boxes[:, 3] ** 2) + margin
    lo = boxes[:, 0] - radius
    hi = boxes[:, 0] + radius
    lo_sorted, perm = lo.sort()
    end = torch.searchsorted(lo_sorted, hi[perm], right=True)
    start = torch.arange(1, n + 1, device=boxes.device)
    counts = (end - start).clamp(min=0)
    cum = counts.cumsum(0)
    total = int(cum[-1])
    if total == 0:
        return
    first = 0
    while first < n:
        base = int(cum[first - 1]) if first > 0 else 0
        last = int(torch.searchsorted(cum, torch.tensor(base + budget, device=cum.device), right=True))
        last = min(max(last, first + 1), n)
        cnt = counts[first:last]
        m = int(cnt.sum())
        if m:
            rows = torch.repeat_interleave(torch.arange(first, last, device=boxes.device), cnt)
            offs = torch.arange(m, device=boxes.device) - torch.repeat_interleave(cum[first:last] - cnt - base, cnt)
            cols = start[rows] + offs
            i, j = perm[rows], perm[cols]
            d2 = (boxes[i, 0] - boxes[j, 0]) ** 2 + (boxes[i, 1] - boxes[j, 1]) ** 2
            near = d2 <= (radius[i] + radius[j]) ** 2
            i, j = i[near], j[near]
            yield torch.minimum(i, j), torch.maximum(i, j)
        first = last


def greedy_nms_keep(n: int, src: Tensor, dst: Tensor, device: torch.device) -> Tensor:
    """Exact greedy NMS from suppression edges, without a loop over boxes.

    Boxes are ranks ``0..n-1`` in descending score; an edge ``src < dst`` means box ``src`` suppresses ``dst`` if
    ``src`` is kept. Greedy NMS keeps a box iff none of its kept predecessors suppresses it. Each round decides, all at
    once, every undecided box that has a kept suppressor (removed) and every undecided box whose suppressors are all
    removed (kept); the lowest undecided rank is always decided, and in practice the number of rounds is the length
    of the longest suppression chain (a handful), each round O(edges).

    Args:
        n: number of boxes.
        src: ``(E,)`` suppressor ranks.
        dst: ``(E,)`` suppressed ranks, ``src < dst``.
        device: device of the result.

    Returns:
        ``(n,)`` bool: which ranks are kept.
    """
    state = torch.zeros(n, dtype=torch.int8, device=device)  # 0 undecided, 1 kept, 2 removed
    while src.numel():
        s_state = state[src]
        hit = torch.zeros(n, dtype=torch.bool, device=device)
        hit[dst[s_state == 1]] = True
        blocked = torch.zeros(n, dtype=torch.bool, device=device)
        blocked[dst[s_state == 0]] = True
        undecided = state == 0
        state[undecided & hit] = 2
        state[undecided & ~hit & ~blocked] = 1
        live = (state[dst] == 0) & (state[src] != 2)
        src, dst = src[live], dst[live]
    return state != 2
