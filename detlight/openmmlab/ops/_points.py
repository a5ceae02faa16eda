"""Shared helpers for the point-cloud families: chunked pairwise squared distances, a uniform grid that lists the
candidate neighbours of query points (ball query, three_nn), and points-in-3D-box tests.

Not registered as ``mmcv._ext`` ops (the module name starts with ``_``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ELEMENT_BUDGET", "PointGrid", "batch_of", "local_xy_in_boxes", "rows_per_chunk", "sq_dist",
           "sq_dist_pairs"]

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


def sq_dist_pairs(q: Tensor, p: Tensor) -> Tensor:
    """``(..., K)`` squared distances between ``q (..., 1, 3)`` and ``p (..., K, 3)``, element for element the same
    operations as :func:`sq_dist` (so the same bits)."""
    out = None
    for k in range(q.shape[-1]):
        d = q[..., k] - p[..., k]
        out = d * d if out is None else out.add_(d * d)
    assert out is not None
    return out


@dataclass(frozen=True)
class PointGrid:
    """Points of every batch bucketed into cubic cells of side ``cell`` (float64 cell coordinates).

    A query's candidates are the points of the 3 x 3 x 3 cells around its own: 9 runs of the points sorted by cell
    key (the 3 cells along z are adjacent keys). Cell coordinates carry a margin of 2 empty cells on every side, so
    the runs of a query outside the points' box never reach another column or batch.
    """

    order: Tensor  # (B * N,) sorted position -> flat point index b * N + n
    keys: Tensor  # (B * N,) sorted cell keys
    origin: Tensor  # (3,) float64
    cell: float
    size: tuple[int, int, int]  # cells per axis, margins included
    n: int  # points per batch

    @staticmethod
    def build(points: Tensor, cell: float) -> PointGrid | None:
        """Bucket ``points (B, N, 3)``; None when a coordinate is not finite or the keys would not fit in int64."""
        b, n = points.shape[:2]
        flat = points.reshape(b * n, 3).double()
        if b * n == 0 or not cell > 0 or not bool(torch.isfinite(flat).all()):
            return None
        origin = flat.min(0).values
        extent = ((flat.max(0).values - origin) / cell).floor()
        if not bool(torch.isfinite(extent).all()):
            return None
        size = tuple(int(e) + 5 for e in extent.tolist())
        if b * size[0] * size[1] * size[2] >= 1 << 62:
            return None
        cells = ((flat - origin) / cell).floor().long() + 2
        batch = torch.arange(b, device=points.device).repeat_interleave(n)
        keys = ((batch * size[0] + cells[:, 0]) * size[1] + cells[:, 1]) * size[2] + cells[:, 2]
        keys, order = torch.sort(keys)
        return PointGrid(order, keys, origin, cell, (size[0], size[1], size[2]), n)

    def query_cells(self, queries: Tensor) -> Tensor:
        """``(R, 3)`` long cell coordinates (margins included) of flat ``queries (R, 3)``, clamped to the grid."""
        cells = ((queries.double() - self.origin) / self.cell).floor().nan_to_num(0.0)
        upper = torch.tensor(self.size, dtype=torch.float64, device=queries.device) - 4
        return torch.minimum(torch.maximum(cells, cells.new_full((3,), -1.0)), upper).long() + 2

    def runs(self, queries: Tensor, batch: Tensor) -> tuple[Tensor, Tensor]:
        """Start and length ``(R, 9)`` of the 9 runs of each of ``queries (R, 3)`` (batch ``(R,)``) in the points."""
        c = self.query_cells(queries)
        off = torch.tensor([-1, 0, 1], device=queries.device)
        cx = (c[:, 0:1] + off).repeat_interleave(3, 1)  # (R, 9)
        cy = (c[:, 1:2] + off).repeat(1, 3)
        col = ((batch.unsqueeze(1) * self.size[0] + cx) * self.size[1] + cy) * self.size[2]
        z = c[:, 2:3]
        start = torch.searchsorted(self.keys, col + z - 1)
        stop = torch.searchsorted(self.keys, col + z + 1, right=True)
        return start, stop - start

    def candidates(self, start: Tensor, length: Tensor) -> Tensor:
        """``(R, K)`` flat point indices of the runs, row by row (K: the longest row), padded with -1."""
        per_row = length.sum(1)
        rows = start.shape[0]
        width = int(per_row.max()) if rows else 0
        out = torch.full((rows, width), -1, dtype=torch.long, device=start.device)
        total = int(per_row.sum())
        if total == 0:
            return out
        flat_len = length.reshape(-1)
        run = torch.repeat_interleave(torch.arange(flat_len.numel(), device=start.device), flat_len,
                                      output_size=total)
        pos = torch.arange(total, device=start.device)
        run_first = flat_len.cumsum(0) - flat_len
        sorted_pos = start.reshape(-1)[run] + (pos - run_first[run])
        row = run // 9
        row_first = per_row.cumsum(0) - per_row
        out[row, pos - row_first[row]] = self.order[sorted_pos]
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
