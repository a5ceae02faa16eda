"""Rotated RoIAlign family of ``mmcv._ext``: ``roi_align_rotated_forward`` / ``_backward`` (mmcv ``ops/roi_align_rotated.py``).

Replaces mmcv-full's RoIAlignRotated kernels (used by rotated-box detectors built on mmcv, e.g. mmrotate) with
vectorised torch and mmcv's semantics: a RoI is ``(batch, cx, cy, w, h, angle)``; its ``ph x pw`` bins are laid out in
the RoI's own frame, centred on ``(cx, cy) * scale`` (minus half a pixel when ``aligned``), sizes ``w, h`` times
``scale`` (clamped to at least 1 when not ``aligned``), each bin averaging a ``sampling_ratio`` (or
``ceil(size / bins)``) grid of points rotated by ``angle`` (counter-clockwise in image axes; ``clockwise=True``
negates it) and sampled bilinearly with mmcv's border rules. The backward pass spreads each bin's gradient over its
points' corners (mmcv gives no RoI gradient either). Points are materialised for chunks of RoIs (bounded memory).
Limits: a RoI whose aligned width or height is negative has no samples and pools to 0, as in mmcv.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detlight.openmmlab.ops import ext_op
from detlight.openmmlab.ops._bin_sampling import corner_terms, pool_points, scatter_points
from detlight.openmmlab.ops._sampling import chunks

__all__ = ["roi_align_rotated_backward", "roi_align_rotated_forward"]


class _RotatedGrid:
    """Per-RoI geometry: centre, size, angle, grid sizes and sample counts."""

    def __init__(self, rois: Tensor, ph: int, pw: int, spatial_scale: float, sampling_ratio: int, aligned: bool,
                 clockwise: bool) -> None:
        if rois.dim() != 2 or rois.shape[1] != 6:
            raise ValueError(f"roi_align_rotated: rois must be (R, 6) = (batch, cx, cy, w, h, angle), got "
                             f"{tuple(rois.shape)}")
        shift = 0.5 if aligned else 0.0
        self.center = rois[:, 1:3] * spatial_scale - shift  # (R, 2): x, y
        size = rois[:, 3:5] * spatial_scale
        if not aligned:
            size = size.clamp(min=1.0)
        self.size = size
        self.theta = -rois[:, 5] if clockwise else rois[:, 5]
        bins = torch.tensor([pw, ph], dtype=rois.dtype, device=rois.device)
        self.bin_size = size / bins
        if sampling_ratio > 0:
            grid = torch.full_like(size, sampling_ratio, dtype=torch.long)
        else:
            grid = torch.ceil(size / bins).to(torch.long)
        self.grid = grid.clamp(min=0)
        self.count = (self.grid[:, 0] * self.grid[:, 1]).clamp(min=1).to(rois.dtype)
        self.g_w, self.g_h = (int(v) for v in self.grid.max(0).values.tolist()) if rois.shape[0] else (0, 0)
        self.batch = rois[:, 0].to(torch.long)

    def points(self, sl: slice, ph: int, pw: int) -> tuple[Tensor, Tensor, Tensor]:
        """Image coordinates ``y, x (r, ph, pw, Gh, Gw)`` of the sampling points of RoIs ``sl`` and their validity."""
        dtype, device = self.size.dtype, self.size.device
        size, bsz, grid = self.size[sl], self.bin_size[sl], self.grid[sl]
        local = []
        for axis, bins_n, g in ((1, ph, self.g_h), (0, pw, self.g_w)):
            idx = torch.arange(g, device=device, dtype=dtype)
            p = torch.arange(bins_n, dtype=dtype, device=device)
            grid_n = grid[:, axis, None, None].clamp(min=1).to(dtype)
            b = bsz[:, axis, None, None]
            local.append(-size[:, axis, None, None] / 2 + p[None, :, None] * b
                         + (idx + 0.5)[None, None, :] * b / grid_n)  # (r, bins, G)
        yy = local[0][:, :, None, :, None]
        xx = local[1][:, None, :, None, :]
        cos = torch.cos(self.theta[sl]).view(-1, 1, 1, 1, 1)
        sin = torch.sin(self.theta[sl]).view(-1, 1, 1, 1, 1)
        ys = yy * cos - xx * sin + self.center[sl, 1].view(-1, 1, 1, 1, 1)
        xs = yy * sin + xx * cos + self.center[sl, 0].view(-1, 1, 1, 1, 1)
        iy = torch.arange(self.g_h, device=device)
        ix = torch.arange(self.g_w, device=device)
        valid = (iy[None, :, None] < grid[:, 1, None, None]) & (ix[None, None, :] < grid[:, 0, None, None])
        return ys, xs, valid[:, None, None].expand_as(ys)


@ext_op(how="torch")
def roi_align_rotated_forward(input: Tensor, rois: Tensor, output: Tensor, pooled_height: int = 7,
                              pooled_width: int = 7, spatial_scale: float = 1.0, sampling_ratio: int = 0,
                              aligned: bool = True, clockwise: bool = False) -> None:
    """Fill ``output`` with rotated RoIAlign of ``input`` (mmcv ``ext_module.roi_align_rotated_forward``).

    Args:
        input: ``(N, C, H, W)`` features.
        rois: ``(R, 6)`` ``batch_index, cx, cy, w, h, angle`` (radians) in image coordinates.
        output: ``(R, C, pooled_height, pooled_width)``, filled.
        pooled_height: output bins along the RoI's height.
        pooled_width: output bins along its width.
        spatial_scale: image-to-feature scale.
        sampling_ratio: samples per bin and axis; ``<= 0``: ``ceil(roi size / bins)`` per RoI.
        aligned: shift the centre by half a pixel (else clamp the size to at least 1, the legacy behaviour).
        clockwise: the angle turns clockwise (negated).
    """
    n, c, h, w = input.shape
    ph, pw = int(pooled_height), int(pooled_width)
    geo = _RotatedGrid(rois, ph, pw, float(spatial_scale), int(sampling_ratio), bool(aligned), bool(clockwise))
    if rois.shape[0] == 0:
        return
    if geo.g_h == 0 or geo.g_w == 0:
        output.zero_()
        return
    feat = input.permute(0, 2, 3, 1).reshape(n * h * w, c)
    for sl in chunks(rois.shape[0], ph * pw * geo.g_h * geo.g_w * max(c, 1) * 2):
        ys, xs, valid = geo.points(sl, ph, pw)
        acc = pool_points(feat, corner_terms(geo.batch[sl], ys, xs, valid, h, w))
        output[sl] = (acc / geo.count[sl, None, None, None]).permute(0, 3, 1, 2).to(output.dtype)


@ext_op(how="torch")
def roi_align_rotated_backward(top_grad: Tensor, rois: Tensor, bottom_grad: Tensor, pooled_height: int = 7,
                               pooled_width: int = 7, spatial_scale: float = 1.0, sampling_ratio: int = 0,
                               aligned: bool = True, clockwise: bool = False) -> None:
    """Accumulate the input gradient into ``bottom_grad`` (mmcv ``ext_module.roi_align_rotated_backward``)."""
    n, c, h, w = bottom_grad.shape
    ph, pw = int(pooled_height), int(pooled_width)
    geo = _RotatedGrid(rois, ph, pw, float(spatial_scale), int(sampling_ratio), bool(aligned), bool(clockwise))
    if rois.shape[0] == 0 or geo.g_h == 0 or geo.g_w == 0:
        return
    grad_feat = bottom_grad.new_zeros(n * h * w, c)
    for sl in chunks(rois.shape[0], ph * pw * geo.g_h * geo.g_w * max(c, 1) * 2):
        ys, xs, valid = geo.points(sl, ph, pw)
        g = top_grad[sl].permute(0, 2, 3, 1) / geo.count[sl, None, None, None]
        scatter_points(grad_feat, corner_terms(geo.batch[sl], ys, xs, valid, h, w), g)
    bottom_grad += grad_feat.view(n, h, w, c).permute(0, 3, 1, 2)
