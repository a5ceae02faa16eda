"""Masked convolution family of ``mmcv._ext``: ``masked_im2col_forward`` / ``masked_col2im_forward``.

Replaces mmcv-full's CUDA kernels behind ``mmcv.ops.MaskedConv2d`` (mmcv ``ops/masked_conv.py``, used by mmdet's
GARPN / guided anchoring heads): gather the ``kh x kw`` patches around the masked output positions (zeros outside the
image) and scatter the per-position results back, each with one indexing op. mmcv's wrapper only handles batch 1 and
has no backward; the same holds here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detlight.openmmlab.ops import ext_op

__all__ = ["masked_col2im_forward", "masked_im2col_forward"]


@ext_op(how="torch")
def masked_im2col_forward(features: Tensor, mask_h_idx: Tensor, mask_w_idx: Tensor, data_col: Tensor,
                          kernel_h: int = 3, kernel_w: int = 3, pad_h: int = 1, pad_w: int = 1) -> None:
    """Fill ``data_col`` ``(C * kh * kw, M)`` with the patches of ``features`` at the M masked positions.

    Row ``c * kh * kw + i * kw + j`` holds ``features[0, c, h - pad_h + i, w - pad_w + j]`` (0 outside the image), as
    mmcv's ``MaskedIm2colForward``.
    """
    _, c, h, w = features.shape
    dev = features.device
    rows = mask_h_idx.to(torch.long)[None, :] - pad_h + torch.arange(kernel_h, device=dev)[:, None]  # (kh, M)
    cols = mask_w_idx.to(torch.long)[None, :] - pad_w + torch.arange(kernel_w, device=dev)[:, None]  # (kw, M)
    inside = ((rows >= 0) & (rows < h))[:, None, :] & ((cols >= 0) & (cols < w))[None, :, :]  # (kh, kw, M)
    vals = features[0][:, rows.clamp(0, h - 1)[:, None, :], cols.clamp(0, w - 1)[None, :, :]]  # (C, kh, kw, M)
    vals = vals * inside.to(vals.dtype)
    data_col.copy_(vals.reshape(c * kernel_h * kernel_w, -1))


@ext_op(how="torch")
def masked_col2im_forward(col: Tensor, mask_h_idx: Tensor, mask_w_idx: Tensor, im: Tensor, height: int, width: int,
                          channels: int) -> None:
    """Write ``col`` ``(channels, M)`` into ``im[0, :, h_m, w_m]`` (mmcv ``MaskedCol2imForward``); the rest is kept."""
    im[0, :channels, mask_h_idx.to(torch.long), mask_w_idx.to(torch.long)] = col[:channels].to(im.dtype)
