"""Bin-averaged bilinear sampling shared by ``deform_roi_pool`` and ``roi_align_rotated`` (not a family).

Both families sample every output bin of every RoI on a small grid of points, bilinearly (mmcv's border rules, see
:func:`~detlight.openmmlab.ops._sampling.roi_corners`), and average. Points come as ``ys, xs (r, ph, pw, Gh, Gw)``
with a validity mask (grids smaller than the chunk's largest are padded); features as channels-last rows
``(N * H * W, C)``.
"""

from __future__ import annotations

from torch import Tensor

from detlight.openmmlab.ops._sampling import roi_corners

__all__ = ["corner_terms", "pool_points", "scatter_points"]


def corner_terms(batch: Tensor, ys: Tensor, xs: Tensor, valid: Tensor, h: int, w: int,
                 ) -> list[tuple[Tensor, Tensor]]:
    """The four bilinear corners of every point: ``[(flat row index, weight)]`` in order 00, 01, 10, 11 (y, x)."""
    y_lo, y_hi, wy_lo, wy_hi = roi_corners(ys, h)
    x_lo, x_hi, wx_lo, wx_hi = roi_corners(xs, w)
    base = batch.view(-1, *([1] * (ys.dim() - 1))) * h
    mask = valid.to(ys.dtype)
    return [((base + yi) * w + xi, wy * wx * mask)
            for yi, wy in ((y_lo, wy_lo), (y_hi, wy_hi)) for xi, wx in ((x_lo, wx_lo), (x_hi, wx_hi))]


def pool_points(feat: Tensor, terms: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Sum of the sampled features over each bin's grid: ``(r, ph, pw, C)`` (divide by the count yourself)."""
    acc = None
    for idx, wgt in terms:
        term = (wgt[..., None] * feat[idx]).sum((3, 4))
        acc = term if acc is None else acc + term
    assert acc is not None
    return acc


def scatter_points(grad_feat: Tensor, terms: list[tuple[Tensor, Tensor]], grad_bin: Tensor) -> None:
    """Spread ``grad_bin (r, ph, pw, C)`` (already divided by the count) over every point's four corners."""
    c = grad_feat.shape[1]
    g = grad_bin[:, :, :, None, None, :]
    for idx, wgt in terms:
        grad_feat.index_add_(0, idx.reshape(-1), (wgt[..., None] * g).reshape(-1, c).to(grad_feat.dtype))
