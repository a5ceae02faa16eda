"""RoIPool family of ``mmcv._ext``: ``roi_pool_forward`` / ``roi_pool_backward`` (mmcv ``ops/roi_pool.py``).

Replaces mmcv-full's RoIPool CUDA kernel (mmcv has no CPU one) in vectorised torch, with **mmcv's** bin geometry, not
torchvision's: mmcv keeps float RoI corners and extends the far corner by one pixel (``(x2 + 1) * scale``), then
bins are ``floor`` / ``ceil`` of float edges; torchvision rounds the corners to integers first. The two differ on
most non-integer RoIs, and weights trained with mmcv expect mmcv's bins. Each bin's maximum is gathered over a window
as large as the largest bin (chunks of RoIs bound the memory); ``argmax`` holds the flat ``h * W + w`` of the winner
(-1 for an empty bin), as mmcv's backward pass expects. A RoI of non-positive size is skipped as in mmcv (its output
and argmax keep what the caller put there).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from detlight.openmmlab.ops import ext_op
from detlight.openmmlab.ops._sampling import chunks

__all__ = ["roi_pool_backward", "roi_pool_forward"]


def _bin_edges(lo: Tensor, size: Tensor, bins: int, limit: int) -> tuple[Tensor, Tensor]:
    """Integer ``[start, end)`` of each bin along one axis: ``(R, bins)`` each, clipped to ``[0, limit]``."""
    p = torch.arange(bins, dtype=lo.dtype, device=lo.device)
    bin_size = size[:, None] / bins
    start = torch.floor(p[None, :] * bin_size + lo[:, None]).to(torch.long).clamp(0, limit)
    end = torch.ceil((p[None, :] + 1) * bin_size + lo[:, None]).to(torch.long).clamp(0, limit)
    return start, end


@ext_op(how="torch")
def roi_pool_forward(input: Tensor, rois: Tensor, output: Tensor, argmax: Tensor, pooled_height: int = 7,
                     pooled_width: int = 7, spatial_scale: float = 1.0) -> None:
    """Fill ``output`` with the max of each RoI bin and ``argmax`` with its flat position (mmcv ``roi_pool_forward``).

    Args:
        input: ``(N, C, H, W)`` features.
        rois: ``(R, 5)`` ``batch_index, x1, y1, x2, y2`` (inclusive far corner, mmcv's convention).
        output: ``(R, C, pooled_height, pooled_width)``, filled.
        argmax: int32, same shape, filled with ``h * W + w`` of each bin's maximum (-1: empty bin).
        pooled_height: bins along y.
        pooled_width: bins along x.
        spatial_scale: image-to-feature scale.
    """
    n, c, h, w = input.shape
    ph, pw = int(pooled_height), int(pooled_width)
    scale = float(spatial_scale)
    x1, y1 = rois[:, 1] * scale, rois[:, 2] * scale
    rw, rh = (rois[:, 3] + 1) * scale - x1, (rois[:, 4] + 1) * scale - y1
    good = torch.nonzero((rw > 0) & (rh > 0)).flatten()
    if good.numel() == 0:
        return
    ys, ye = _bin_edges(y1[good], rh[good], ph, h)
    xs, xe = _bin_edges(x1[good], rw[good], pw, w)
    k_h = max(int((ye - ys).max()), 1)
    k_w = max(int((xe - xs).max()), 1)
    feat = input.permute(0, 2, 3, 1).reshape(n * h * w, c)
    batch = rois[good, 0].to(torch.long)
    dy = torch.arange(k_h, device=input.device)
    dx = torch.arange(k_w, device=input.device)
    for sl in chunks(good.numel(), ph * pw * k_h * k_w * c):
        row = ys[sl][:, :, None] + dy  # (r, ph, Kh)
        col = xs[sl][:, :, None] + dx  # (r, pw, Kw)
        ok = (row < ye[sl][:, :, None])[:, :, :, None, None] & (col < xe[sl][:, :, None])[:, None, None, :, :]
        flat = row.clamp(max=h - 1)[:, :, :, None, None] * w + col.clamp(max=w - 1)[:, None, None, :, :]
        vals = feat[(batch[sl] * h * w)[:, None, None, None, None] + flat]  # (r, ph, Kh, pw, Kw, C)
        vals.masked_fill_(~ok[..., None], -math.inf)
        # row-major first maximum, as mmcv's scan: the first column of each row, then the first row
        row_best, col_arg = vals.max(4)  # (r, ph, Kh, pw, C)
        best, row_arg = row_best.max(2)  # (r, ph, pw, C)
        col_arg = col_arg.gather(2, row_arg[:, :, None]).squeeze(2)
        pos = (row.clamp(max=h - 1)[:, :, :, None, None].expand(-1, -1, -1, pw, c).gather(2, row_arg[:, :, None])
               .squeeze(2) * w
               + col.clamp(max=w - 1)[:, None, :, :, None].expand(-1, ph, -1, -1, c).gather(3, col_arg[:, :, :, None])
               .squeeze(3))
        best, pos = best.permute(0, 3, 1, 2), pos.permute(0, 3, 1, 2)  # (r, C, ph, pw)
        empty = torch.isneginf(best)
        idx = good[sl]
        output[idx] = torch.where(empty, torch.zeros_like(best), best).to(output.dtype)
        argmax[idx] = torch.where(empty, torch.full_like(pos, -1), pos).to(argmax.dtype)


@ext_op(how="torch")
def roi_pool_backward(grad_output: Tensor, rois: Tensor, argmax: Tensor, grad_input: Tensor, pooled_height: int = 7,
                      pooled_width: int = 7, spatial_scale: float = 1.0) -> None:
    """Add each bin's gradient to the input pixel ``argmax`` names (mmcv ``ext_module.roi_pool_backward``)."""
    n, c, h, w = grad_input.shape
    r = rois.shape[0]
    plane = (rois[:, 0].to(torch.long)[:, None] * c + torch.arange(c, device=rois.device)) * (h * w)
    plane = plane[:, :, None].expand(r, c, int(pooled_height) * int(pooled_width)).reshape(-1)
    arg = argmax.reshape(-1).to(torch.long)
    hit = arg != -1
    grad_input.view(-1).index_add_(0, plane[hit] + arg[hit], grad_output.reshape(-1)[hit].to(grad_input.dtype))
