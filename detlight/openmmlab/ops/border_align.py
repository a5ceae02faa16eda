"""BorderDet's border pooling in ``mmcv._ext``: ``border_align_forward`` / ``border_align_backward`` (mmcv ``ops/border_align.py``).

Replaces mmcv-full's BorderAlign kernels (CUDA only in mmcv) with vectorised torch and mmcv's semantics: the input's
``4C`` channels are four groups (top, left, bottom, right); for every box ``(x1, y1, x2, y2)`` and border, the
``pool_size + 1`` points from one corner along that border (top: from ``(x1, y1)`` rightwards; left: from ``(x1, y1)``
downwards; bottom: from ``(x2, y2)`` leftwards; right: from ``(x2, y2)`` upwards) are sampled bilinearly from the
border's channel group (mmcv's border rules), and the maximum and its point index (the first on ties) are written.
The backward pass sends each output's gradient to the four pixels around its winning point. Boxes are processed in
chunks (bounded memory).
Limits: points are placed at ``start + i * stride`` where mmcv's forward kernel adds the stride ``i`` times; the
positions can differ in the last float bit, which can only matter for exact ties between sampling points.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detlight.openmmlab.ops import ext_op
from detlight.openmmlab.ops._sampling import chunks, roi_corners

__all__ = ["border_align_backward", "border_align_forward"]


def _check(input_shape: torch.Size, boxes: Tensor, pool_size: int, name: str) -> None:
    if boxes.dim() != 3 or boxes.shape[2] != 4:
        raise ValueError(f"{name}: boxes must be (N, K, 4) = (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    if input_shape[1] % 4 != 0:
        raise ValueError(f"{name}: input channels ({input_shape[1]}) must be 4 * C (top, left, bottom, right)")
    if pool_size < 1:
        raise ValueError(f"{name}: pool_size must be >= 1, got {pool_size}")


def _points(boxes: Tensor, pool_size: int) -> tuple[Tensor, Tensor]:
    """Sampling points ``y, x (n, k, 4, pool_size + 1)`` along the top, left, bottom and right borders."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    bw, bh = x2 - x1, y2 - y1
    zero = torch.zeros_like(bw)
    start_x = torch.stack((x1, x1, x2, x2), -1)
    start_y = torch.stack((y1, y1, y2, y2), -1)
    step_x = torch.stack((bw / pool_size, zero, -bw / pool_size, zero), -1)
    step_y = torch.stack((zero, bh / pool_size, zero, -bh / pool_size), -1)
    i = torch.arange(pool_size + 1, dtype=boxes.dtype, device=boxes.device)
    return start_y[..., None] + step_y[..., None] * i, start_x[..., None] + step_x[..., None] * i


def _corners(ys: Tensor, xs: Tensor, h: int, w: int) -> list[tuple[Tensor, Tensor]]:
    """The four bilinear corners ``(pixel index y * W + x, weight)`` of every point (zero weight outside)."""
    y_lo, y_hi, wy_lo, wy_hi = roi_corners(ys, h)
    x_lo, x_hi, wx_lo, wx_hi = roi_corners(xs, w)
    return [(yi * w + xi, wy * wx) for yi, wy in ((y_lo, wy_lo), (y_hi, wy_hi)) for xi, wx in ((x_lo, wx_lo), (x_hi, wx_hi))]


@ext_op(how="torch")
def border_align_forward(input: Tensor, boxes: Tensor, output: Tensor, argmax_idx: Tensor, pool_size: int) -> None:
    """Fill ``output`` with each border's maximum and ``argmax_idx`` with its point (mmcv ``border_align_forward``).

    Args:
        input: ``(N, 4C, H, W)`` features, channel groups top, left, bottom, right.
        boxes: ``(N, K, 4)`` boxes ``x1, y1, x2, y2`` in feature coordinates.
        output: ``(N, C, K, 4)``, filled.
        argmax_idx: int32 ``(N, C, K, 4)``, filled with the winning point ``0..pool_size``.
        pool_size: segments per border (``pool_size + 1`` points).
    """
    _check(input.shape, boxes, int(pool_size), "border_align_forward")
    n, c4, h, w = input.shape
    c, k_n, p = c4 // 4, boxes.shape[1], int(pool_size)
    feat = input.view(n, 4, c, h * w).permute(0, 3, 1, 2)  # (N, HW, 4, C)
    bi = torch.arange(n, device=input.device).view(n, 1, 1, 1)
    ei = torch.arange(4, device=input.device).view(1, 1, 4, 1)
    for sl in chunks(k_n, n * 4 * (p + 1) * max(c, 1) * 2):
        ys, xs = _points(boxes[:, sl], p)
        val = None
        for idx, wgt in _corners(ys, xs, h, w):
            term = wgt[..., None] * feat[bi, idx, ei]  # (n, k, 4, P+1, C)
            val = term if val is None else val + term
        assert val is not None
        best = val.max(3).values
        first = (val == best[:, :, :, None]).to(torch.uint8).argmax(3)  # the first maximum, as mmcv's scan
        output[:, :, sl] = best.permute(0, 3, 1, 2).to(output.dtype)
        argmax_idx[:, :, sl] = first.permute(0, 3, 1, 2).to(argmax_idx.dtype)


@ext_op(how="torch")
def border_align_backward(grad_output: Tensor, boxes: Tensor, argmax_idx: Tensor, grad_input: Tensor,
                          pool_size: int) -> None:
    """Add each output's gradient to the pixels around its winning point (mmcv ``ext_module.border_align_backward``)."""
    _check(grad_input.shape, boxes, int(pool_size), "border_align_backward")
    n, c4, h, w = grad_input.shape
    c, p = c4 // 4, int(pool_size)
    ys, xs = _points(boxes, p)  # (N, K, 4, P+1)
    arg = argmax_idx.to(torch.long).permute(0, 2, 3, 1)  # (N, K, 4, C)
    y = ys.gather(3, arg)
    x = xs.gather(3, arg)
    g = grad_output.permute(0, 2, 3, 1)  # (N, K, 4, C)
    plane = ((torch.arange(n, device=g.device).view(n, 1, 1, 1) * 4 + torch.arange(4, device=g.device).view(1, 1, 4, 1))
             * c + torch.arange(c, device=g.device).view(1, 1, 1, c)) * (h * w)
    flat = grad_input.view(-1)
    for idx, wgt in _corners(y, x, h, w):
        flat.index_add_(0, (plane + idx).reshape(-1), (g * wgt).reshape(-1).to(flat.dtype))
