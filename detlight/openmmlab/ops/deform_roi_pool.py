"""Deformable RoI pooling family of ``mmcv._ext``: ``deform_roi_pool_forward`` / ``_backward`` (mmcv ``ops/deform_roi_pool.py``).

Replaces mmcv-full's DeformRoIPool kernels (CUDA only in mmcv; mmdet's ``*_dpool_*`` / ``*_mdpool_*`` configs use
``DeformRoIPoolPack`` / ``ModulatedDeformRoIPoolPack``) with vectorised torch and mmcv's exact semantics: an aligned
RoIAlign (corners ``x * scale - 0.5``, no size clamp) averaging a ``ceil(size / bins)`` (or ``sampling_ratio``) grid
of bilinear samples per bin, where each bin's grid is shifted by the learned offset ``gamma * roi_size * offset``
(``offset`` is ``(R, 2, ph, pw)``: x shift then y shift; empty: no shift). Bilinear sampling follows mmcv's border
rules (zero outside ``[-1, size]``, clamped inside). The backward pass returns the input gradient and, as mmcv, the
offset gradient of the bilinear interpolation (summed over channels). Sampling points are materialised for chunks of
RoIs (bounded memory); the largest per-RoI grid sets the chunk's shape and smaller grids are masked.
Limits: a RoI whose width or height is negative has an empty grid and pools to 0, as in mmcv's kernel.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detlight.openmmlab.ops import ext_op
from detlight.openmmlab.ops._bin_sampling import corner_terms, pool_points, scatter_points
from detlight.openmmlab.ops._sampling import chunks, roi_corners

__all__ = ["deform_roi_pool_backward", "deform_roi_pool_forward"]


class _Geometry:
    """Per-RoI geometry shared by forward and backward: start corner, size, grid sizes and the sample count."""

    def __init__(self, rois: Tensor, ph: int, pw: int, spatial_scale: float, sampling_ratio: int) -> None:
        start = rois[:, 1:3] * spatial_scale - 0.5
        self.size = rois[:, 3:5] * spatial_scale - 0.5 - start  # (R, 2): width, height
        self.start = start
        bins = torch.tensor([pw, ph], dtype=rois.dtype, device=rois.device)
        self.bin_size = self.size / bins
        if sampling_ratio > 0:
            grid = torch.full_like(self.size, sampling_ratio, dtype=torch.long)
        else:
            grid = torch.ceil(self.size / bins).to(torch.long)
        self.grid = grid.clamp(min=0)  # (R, 2): grid along x, along y
        self.count = (self.grid[:, 0] * self.grid[:, 1]).clamp(min=1).to(rois.dtype)
        self.g_w, self.g_h = (int(v) for v in self.grid.max(0).values.tolist()) if rois.shape[0] else (0, 0)
        self.batch = rois[:, 0].to(torch.long)

    def points(self, sl: slice, offset: Tensor, ph: int, pw: int, gamma: float) -> tuple[Tensor, Tensor, Tensor]:
        """Sample coordinates ``y, x (r, ph, pw, Gh, Gw)`` and their validity for the RoIs in ``sl``."""
        dtype, device = self.start.dtype, self.start.device
        start, size, bsz, grid = self.start[sl], self.size[sl], self.bin_size[sl], self.grid[sl]
        coords = []
        for axis, bins_n, g in ((1, ph, self.g_h), (0, pw, self.g_w)):
            idx = torch.arange(g, device=device)
            p = torch.arange(bins_n, dtype=dtype, device=device)
            grid_n = grid[:, axis, None, None].clamp(min=1).to(dtype)
            coords.append(start[:, axis, None, None] + p[None, :, None] * bsz[:, axis, None, None]
                          + (idx.to(dtype) + 0.5)[None, None, :] * bsz[:, axis, None, None] / grid_n)  # (r, bins, G)
        ys = coords[0][:, :, None, :, None]
        xs = coords[1][:, None, :, None, :]
        if offset.numel():
            off = offset[sl].reshape(-1, 2, ph, pw)
            xs = xs + (gamma * size[:, 0, None, None] * off[:, 0])[..., None, None]
            ys = ys + (gamma * size[:, 1, None, None] * off[:, 1])[..., None, None]
        ys, xs = torch.broadcast_tensors(ys, xs)
        iy = torch.arange(self.g_h, device=device)
        ix = torch.arange(self.g_w, device=device)
        valid = (iy[None, :, None] < grid[:, 1, None, None]) & (ix[None, None, :] < grid[:, 0, None, None])
        return ys, xs, valid[:, None, None]  # valid: (r, 1, 1, Gh, Gw)


@ext_op(how="torch")
def deform_roi_pool_forward(input: Tensor, rois: Tensor, offset: Tensor, output: Tensor, pooled_height: int = 7,
                            pooled_width: int = 7, spatial_scale: float = 1.0, sampling_ratio: int = 0,
                            gamma: float = 0.1) -> None:
    """Fill ``output`` with deformable RoI pooling of ``input`` (mmcv ``ext_module.deform_roi_pool_forward``).

    Args:
        input: ``(N, C, H, W)`` features.
        rois: ``(R, 5)`` ``batch_index, x1, y1, x2, y2`` in image coordinates.
        offset: ``(R, 2, pooled_height, pooled_width)`` normalised bin shifts (x, then y), or empty for none.
        output: ``(R, C, pooled_height, pooled_width)``, filled.
        pooled_height: output bins along y.
        pooled_width: output bins along x.
        spatial_scale: image-to-feature scale.
        sampling_ratio: samples per bin and axis; ``<= 0``: ``ceil(roi size / bins)`` per RoI.
        gamma: offset scale: a bin moves by ``gamma * roi_size * offset``.
    """
    n, c, h, w = input.shape
    ph, pw = int(pooled_height), int(pooled_width)
    geo = _Geometry(rois, ph, pw, float(spatial_scale), int(sampling_ratio))
    if rois.shape[0] == 0:
        return
    if geo.g_h == 0 or geo.g_w == 0:
        output.zero_()
        return
    feat = input.permute(0, 2, 3, 1).reshape(n * h * w, c)
    for sl in chunks(rois.shape[0], ph * pw * geo.g_h * geo.g_w * max(c, 1) * 2):
        ys, xs, valid = geo.points(sl, offset, ph, pw, float(gamma))
        acc = pool_points(feat, corner_terms(geo.batch[sl], ys, xs, valid, h, w))
        output[sl] = (acc / geo.count[sl, None, None, None]).permute(0, 3, 1, 2).to(output.dtype)


@ext_op(how="torch")
def deform_roi_pool_backward(grad_output: Tensor, input: Tensor, rois: Tensor, offset: Tensor, grad_input: Tensor,
                             grad_offset: Tensor, pooled_height: int = 7, pooled_width: int = 7,
                             spatial_scale: float = 1.0, sampling_ratio: int = 0, gamma: float = 0.1) -> None:
    """Accumulate the input and offset gradients (mmcv ``ext_module.deform_roi_pool_backward``).

    Each bin's gradient (divided by its sample count) is spread over the four pixels around every sampling point with
    the bilinear weights; the offset gradient is ``gamma * roi_size`` times the bilinear interpolation's derivative
    along x (channel 0) and y (channel 1), summed over channels. ``grad_offset`` is left alone when ``offset`` is
    empty.
    """
    n, c, h, w = input.shape
    ph, pw = int(pooled_height), int(pooled_width)
    geo = _Geometry(rois, ph, pw, float(spatial_scale), int(sampling_ratio))
    if rois.shape[0] == 0 or geo.g_h == 0 or geo.g_w == 0:
        return
    with_offset = offset.numel() > 0
    feat = input.permute(0, 2, 3, 1).reshape(n * h * w, c)
    grad_feat = torch.zeros_like(feat)
    scale = float(gamma)
    for sl in chunks(rois.shape[0], ph * pw * geo.g_h * geo.g_w * max(c, 1) * 3):
        ys, xs, valid = geo.points(sl, offset, ph, pw, scale)
        terms = corner_terms(geo.batch[sl], ys, xs, valid, h, w)
        g = grad_output[sl].permute(0, 2, 3, 1) / geo.count[sl, None, None, None]
        scatter_points(grad_feat, terms, g)
        if with_offset:
            y_lo, y_hi, _, _ = roi_corners(ys, h)
            x_lo, x_hi, _, _ = roi_corners(xs, w)
            # <corner value, bin gradient> for corners 00, 01, 10, 11 (y, x): (r, ph, pw, Gh, Gw) each
            dots = [(feat[idx] * g[:, :, :, None, None, :]).sum(-1) for idx, _ in terms]
            corners = {(0, 0): dots[0], (0, 1): dots[1], (1, 0): dots[2], (1, 1): dots[3]}
            # mmcv's kernel: the bilinear derivative with the *unclamped* sample coordinate against the (clamped)
            # corner indices, zero outside [-1, size] (no corner is touched there)
            inside = ((ys >= -1.0) & (ys <= h) & (xs >= -1.0) & (xs <= w) & valid).to(feat.dtype)
            a_y, b_y = ys - y_lo.to(ys.dtype), y_hi.to(ys.dtype) - ys
            a_x, b_x = xs - x_lo.to(xs.dtype), x_hi.to(xs.dtype) - xs
            d_x = (a_y * (corners[1, 1] - corners[1, 0]) + b_y * (corners[0, 1] - corners[0, 0])) * inside
            d_y = (a_x * (corners[1, 1] - corners[0, 1]) + b_x * (corners[1, 0] - corners[0, 0])) * inside
            size = geo.size[sl]
            go = grad_offset[sl].view(-1, 2, ph, pw)
            go[:, 0] += (scale * size[:, 0, None, None] * d_x.sum((3, 4))).to(go.dtype)
            go[:, 1] += (scale * size[:, 1, None, None] * d_y.sum((3, 4))).to(go.dtype)
    grad_input += grad_feat.view(n, h, w, c).permute(0, 3, 1, 2).to(grad_input.dtype)
