"""RoIAlign family of ``mmcv._ext``: ``roi_align_forward`` / ``roi_align_backward`` (mmcv ``ops/roi_align.py``).

Replaces mmcv-full's RoIAlign kernels. ``pool_mode=1`` (average, what every mmdet RoI extractor uses) is torchvision's
compiled ``roi_align`` / ``_roi_align_backward``: the same algorithm as mmcv's (``aligned`` half-pixel shift, the
``max(size, 1)`` clamp when not aligned, adaptive ``ceil(size / bins)`` sampling grid, mmcv's border rules).
``pool_mode=0`` (max over the sampling points, which torchvision lacks) is vectorised torch over chunks of RoIs; it
fills mmcv's ``argmax_y`` / ``argmax_x`` buffers with the winning sampling point, which the backward pass reads.
Limits: max mode follows mmcv's CPU kernel where the CPU and CUDA kernels differ (a bin with no sampling point, or whose
points all lie at or under -10000, gives -10000 and no gradient; CUDA would give -FLT_MAX).
"""

from __future__ import annotations

import math

import torch
import torchvision  # noqa: F401  (loading it registers the torch.ops.torchvision kernels)
from torch import Tensor

from detlight.openmmlab.ops import ext_op
from detlight.openmmlab.ops._sampling import chunks, roi_corners

__all__ = ["roi_align_backward", "roi_align_forward"]

_MAX_INIT = -10000.0


def _sample_grid(rois: Tensor, ph: int, pw: int, spatial_scale: float, sampling_ratio: int, aligned: bool,
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sampling coordinates of every bin: ``ys (R, ph, Gh)``, ``xs (R, pw, Gw)`` and validity ``(R, Gh)``, ``(R, Gw)``.

    ``Gh`` / ``Gw`` are the largest per-RoI grid; points past a RoI's own grid are marked invalid.
    """
    shift = 0.5 if aligned else 0.0
    start = rois[:, 1:3] * spatial_scale - shift
    end = rois[:, 3:5] * spatial_scale - shift
    size = end - start
    if aligned:
        if bool((size < 0).any()):
            raise ValueError("roi_align: RoIs must have non-negative width and height when aligned=True")
    else:
        size = size.clamp(min=1.0)
    bins = torch.tensor([pw, ph], dtype=rois.dtype, device=rois.device)
    bin_size = size / bins
    if sampling_ratio > 0:
        grid = torch.full_like(size, sampling_ratio, dtype=torch.long)
    else:
        grid = torch.ceil(size / bins).to(torch.long)
    g_w, g_h = (int(v) for v in grid.max(0).values.tolist()) if rois.shape[0] else (0, 0)
    coords, valid = [], []
    for axis, bins_n, g in ((1, ph, g_h), (0, pw, g_w)):
        idx = torch.arange(g, device=rois.device)
        p = torch.arange(bins_n, dtype=rois.dtype, device=rois.device)
        bsz = bin_size[:, axis, None, None]
        grid_n = grid[:, axis, None, None].to(rois.dtype)
        coords.append(start[:, axis, None, None] + p[None, :, None] * bsz
                      + (idx.to(rois.dtype) + 0.5)[None, None, :] * bsz / grid_n)
        valid.append(idx[None, :] < grid[:, axis, None])
    return coords[0], coords[1], valid[0], valid[1]


def _corner(feat: Tensor, base: Tensor, w: int, yi: Tensor, xi: Tensor, wy: Tensor, wx: Tensor) -> Tensor:
    """One bilinear corner's weighted features for every (RoI, bin, sample): ``(r, ph, Gh, pw, Gw, C)``."""
    idx = base + yi[:, :, :, None, None] * w + xi[:, None, None, :, :]
    weight = wy[:, :, :, None, None] * wx[:, None, None, :, :]
    return weight[..., None] * feat[idx]


def _max_pool(input: Tensor, rois: Tensor, output: Tensor, argmax_y: Tensor, argmax_x: Tensor, ph: int, pw: int,
              spatial_scale: float, sampling_ratio: int, aligned: bool) -> None:
    n, c, h, w = input.shape
    ys, xs, vy, vx = _sample_grid(rois, ph, pw, spatial_scale, sampling_ratio, aligned)
    g_h, g_w = ys.shape[-1], xs.shape[-1]
    num = rois.shape[0]
    if g_h == 0 or g_w == 0:
        output.fill_(_MAX_INIT)
        argmax_y.fill_(-1.0)
        argmax_x.fill_(-1.0)
        return
    feat = input.permute(0, 2, 3, 1).reshape(n * h * w, c)
    batch = rois[:, 0].to(torch.long)
    for sl in chunks(num, ph * pw * g_h * g_w * c * 4):
        y_lo, y_hi, wy_lo, wy_hi = roi_corners(ys[sl], h)  # (r, ph, Gh)
        x_lo, x_hi, wx_lo, wx_hi = roi_corners(xs[sl], w)  # (r, pw, Gw)
        base = (batch[sl] * (h * w))[:, None, None, None, None]
        val = (_corner(feat, base, w, y_lo, x_lo, wy_lo, wx_lo) + _corner(feat, base, w, y_lo, x_hi, wy_lo, wx_hi)
               + _corner(feat, base, w, y_hi, x_lo, wy_hi, wx_lo) + _corner(feat, base, w, y_hi, x_hi, wy_hi, wx_hi))
        ok = vy[sl][:, None, :, None, None, None] & vx[sl][:, None, None, None, :, None]
        val.masked_fill_(~ok, -math.inf)
        # row-major first maximum, as mmcv's scan: the first x of each sampling row, then the first row
        row_best, ix = val.max(4)  # (r, ph, Gh, pw, C)
        best, iy = row_best.max(2)  # (r, ph, pw, C)
        ix = ix.gather(2, iy[:, :, None]).squeeze(2)
        r = best.shape[0]
        y_sel = ys[sl][:, :, :, None, None].expand(r, ph, g_h, pw, c).gather(2, iy[:, :, None]).squeeze(2)
        x_sel = xs[sl][:, None, :, :, None].expand(r, ph, pw, g_w, c).gather(3, ix[:, :, :, None]).squeeze(3)
        best, y_sel, x_sel = (t.permute(0, 3, 1, 2) for t in (best, y_sel, x_sel))  # (r, C, ph, pw)
        none = best <= _MAX_INIT
        output[sl] = torch.where(none, torch.full_like(best, _MAX_INIT), best)
        argmax_y[sl] = torch.where(none, torch.full_like(y_sel, -1.0), y_sel)
        argmax_x[sl] = torch.where(none, torch.full_like(x_sel, -1.0), x_sel)


@ext_op(how="torchvision")
def roi_align_forward(input: Tensor, rois: Tensor, output: Tensor, argmax_y: Tensor, argmax_x: Tensor,
                      aligned_height: int = 7, aligned_width: int = 7, spatial_scale: float = 1.0,
                      sampling_ratio: int = 0, pool_mode: int = 1, aligned: bool = True) -> None:
    """Fill ``output`` with RoIAlign of ``input`` (mmcv ``ext_module.roi_align_forward``).

    Args:
        input: ``(N, C, H, W)`` features.
        rois: ``(R, 5)`` ``batch_index, x1, y1, x2, y2`` in image coordinates.
        output: ``(R, C, aligned_height, aligned_width)``, filled.
        argmax_y: max mode: filled with the y of each bin's winning sampling point (-1: none); else unused.
        argmax_x: the same for x.
        aligned_height: output bins along y.
        aligned_width: output bins along x.
        spatial_scale: image-to-feature scale.
        sampling_ratio: sampling points per bin and axis; ``<= 0``: ``ceil(roi size / bins)`` per RoI.
        pool_mode: 0 max, 1 average.
        aligned: shift by half a pixel (Detectron2's aligned RoIAlign).
    """
    if pool_mode == 1:
        output.copy_(torch.ops.torchvision.roi_align(input, rois, float(spatial_scale), int(aligned_height),
                                                     int(aligned_width), int(sampling_ratio), bool(aligned)))
    elif pool_mode == 0:
        _max_pool(input, rois, output, argmax_y, argmax_x, int(aligned_height), int(aligned_width),
                  float(spatial_scale), int(sampling_ratio), bool(aligned))
    else:
        raise ValueError(f"roi_align_forward: pool_mode must be 0 (max) or 1 (avg), got {pool_mode!r}")


@ext_op(how="torchvision")
def roi_align_backward(grad_output: Tensor, rois: Tensor, argmax_y: Tensor, argmax_x: Tensor, grad_input: Tensor,
                       aligned_height: int = 7, aligned_width: int = 7, spatial_scale: float = 1.0,
                       sampling_ratio: int = 0, pool_mode: int = 1, aligned: bool = True) -> None:
    """Accumulate the RoIAlign input gradient into ``grad_input`` (mmcv ``ext_module.roi_align_backward``).

    Average mode spreads each bin's gradient over its sampling points (torchvision's kernel); max mode sends it to the
    four pixels around the point recorded in ``argmax_y`` / ``argmax_x`` by the forward pass.
    """
    n, c, h, w = grad_input.shape
    if pool_mode == 1:
        grad_input.add_(torch.ops.torchvision._roi_align_backward(
            grad_output, rois, float(spatial_scale), int(aligned_height), int(aligned_width), n, c, h, w,
            int(sampling_ratio), bool(aligned)))
        return
    if pool_mode != 0:
        raise ValueError(f"roi_align_backward: pool_mode must be 0 (max) or 1 (avg), got {pool_mode!r}")
    y, x = argmax_y.reshape(-1), argmax_x.reshape(-1)
    grad = grad_output.reshape(-1)
    r = rois.shape[0]
    plane = (rois[:, 0].to(torch.long)[:, None] * c + torch.arange(c, device=rois.device)[None, :]) * (h * w)
    plane = plane[:, :, None].expand(r, c, aligned_height * aligned_width).reshape(-1)
    keep = (y != -1.0) & (y >= -1.0) & (y <= h) & (x >= -1.0) & (x <= w)
    y, x, grad, plane = y[keep], x[keep], grad[keep], plane[keep]
    y_lo, y_hi, wy_lo, wy_hi = roi_corners(y, h)
    x_lo, x_hi, wx_lo, wx_hi = roi_corners(x, w)
    flat = grad_input.view(-1)
    for yi, wy in ((y_lo, wy_lo), (y_hi, wy_hi)):
        for xi, wx in ((x_lo, wx_lo), (x_hi, wx_hi)):
            flat.index_add_(0, plane + yi * w + xi, grad * (wy * wx))
