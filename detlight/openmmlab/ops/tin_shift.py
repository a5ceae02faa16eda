"""Temporal interlace shift in ``mmcv._ext``: ``tin_shift_forward`` / ``tin_shift_backward`` (mmcv ``ops/tin_shift.py``).

Replaces mmcv-full's TINShift kernels (CUDA only in mmcv; mmaction2's TIN models use the op) with one vectorised
gather: ``input (N, T, C, HW)`` is split into ``G = shift.shape[1]`` channel groups and group ``g`` of sample ``n`` is
moved along time by the integer ``shift[n, g]``: ``out[n, t + s] = in[n, t]``, frames moved past either end are
dropped and vacated frames are 0.
Limits: the backward pass reproduces mmcv's kernel, which moves the gradient by the *same* ``+s`` as the forward pass
(``grad_in[t + s] = grad_out[t]``) rather than the adjoint ``-s``; mmcv's own tests fix those values, and models
trained with mmcv-full were trained with it. ``shift`` is rounded toward zero to integers as mmcv's ``int`` kernel
argument (mmcv's wrapper passes an int tensor).
"""

from __future__ import annotations

import torch
from torch import Tensor

from detlight.openmmlab.ops import ext_op

__all__ = ["tin_shift_backward", "tin_shift_forward"]


def _shift_time(src: Tensor, shift: Tensor, dst: Tensor, name: str) -> None:
    """``dst[n, t + s, c] = src[n, t, c]`` for ``s = shift[n, c // (C / G)]``; other entries of ``dst`` untouched."""
    if src.dim() != 4:
        raise ValueError(f"{name}: input must be (N, T, C, H*W), got {tuple(src.shape)}")
    n, t, c, hw = src.shape
    if shift.dim() != 2 or shift.shape[0] != n or shift.shape[1] == 0 or c % shift.shape[1] != 0:
        raise ValueError(f"{name}: shift must be (N={n}, G) with C={c} a multiple of G, got {tuple(shift.shape)}")
    group_channel = c // shift.shape[1]
    s = shift.to(torch.long).repeat_interleave(group_channel, dim=1)  # (N, C)
    dest_t = torch.arange(t, device=src.device)[None, :, None] + s[:, None, :]  # (N, T, C): where frame t goes
    keep = (dest_t >= 0) & (dest_t < t)
    nb = torch.arange(n, device=src.device)[:, None, None].expand(n, t, c)
    cb = torch.arange(c, device=src.device)[None, None, :].expand(n, t, c)
    tb = torch.arange(t, device=src.device)[None, :, None].expand(n, t, c)
    dst[nb[keep], dest_t[keep], cb[keep]] = src[nb[keep], tb[keep], cb[keep]].to(dst.dtype)


@ext_op(how="torch")
def tin_shift_forward(input: Tensor, shift: Tensor, output: Tensor) -> None:
    """Fill ``output`` with the time-shifted channel groups of ``input`` (mmcv ``ext_module.tin_shift_forward``).

    Args:
        input: ``(N, T, C, H*W)`` features.
        shift: ``(N, G)`` integer frame shifts per channel group (``C`` a multiple of ``G``).
        output: like ``input``, zero-filled by mmcv; written where a shifted frame lands.
    """
    _shift_time(input, shift, output, "tin_shift_forward")


@ext_op(how="torch")
def tin_shift_backward(grad_output: Tensor, shift: Tensor, grad_input: Tensor) -> None:
    """mmcv's TINShift input gradient: ``grad_output`` moved by the same shifts (mmcv ``tin_shift_backward``)."""
    _shift_time(grad_output, shift, grad_input, "tin_shift_backward")
