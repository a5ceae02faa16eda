"""PSANet's point-wise attention masks in ``mmcv._ext``: ``psamask_forward`` / ``_backward`` (mmcv ``ops/psa_mask.py``).

Replaces mmcv-full's PSAMask kernels (mmseg's PSANet head) with one vectorised scatter: the ``h_mask x w_mask``
channels predicted at each position ``(h, w)`` are placed, over the ``H * W`` positions around it that the mask
covers (mask centre ``half_*_mask`` on ``(h, w)``; positions off the map are dropped), into an ``(N, H*W, H, W)``
map. ``psa_type`` 0 (*collect*) writes ``out[n, target, h, w]``; 1 (*distribute*) writes ``out[n, h*W + w, ty, tx]``.
The backward pass gathers the same entries back (every other input-gradient entry is 0, as mmcv's). The index maps
are ``O(K * H * W)`` for ``K = h_mask * w_mask``; no loop over positions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detlight.openmmlab.ops import ext_op

__all__ = ["psamask_backward", "psamask_forward"]


def _index_maps(h_feature: int, w_feature: int, h_mask: int, w_mask: int, half_h_mask: int, half_w_mask: int,
                device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Flat mask channel ``k``, own position ``p`` and covered position ``t`` of every valid (mask cell, position)."""
    hidx = torch.arange(h_mask, device=device).view(h_mask, 1, 1, 1)
    widx = torch.arange(w_mask, device=device).view(1, w_mask, 1, 1)
    h = torch.arange(h_feature, device=device).view(1, 1, h_feature, 1)
    w = torch.arange(w_feature, device=device).view(1, 1, 1, w_feature)
    ty = hidx + h - half_h_mask
    tx = widx + w - half_w_mask
    valid = (ty >= 0) & (ty < h_feature) & (tx >= 0) & (tx < w_feature)
    shape = valid.shape
    k = (hidx * w_mask + widx).expand(shape)[valid]
    p = (h * w_feature + w).expand(shape)[valid]
    t = (ty * w_feature + tx).expand(shape)[valid]
    return k, p, t


def _check(psa_type: int, channels: int, h_mask: int, w_mask: int) -> None:
    if psa_type not in (0, 1):
        raise ValueError(f"psamask: psa_type must be 0 (collect) or 1 (distribute), got {psa_type!r}")
    if channels != h_mask * w_mask:
        raise ValueError(f"psamask: the input has {channels} channels; h_mask * w_mask = {h_mask * w_mask} expected")


@ext_op(how="torch")
def psamask_forward(input: Tensor, output: Tensor, psa_type: int, num_: int, h_feature: int, w_feature: int,
                    h_mask: int, w_mask: int, half_h_mask: int, half_w_mask: int) -> None:
    """Scatter the mask channels into ``output (N, H*W, H, W)`` (mmcv ``ext_module.psamask_forward``).

    Args:
        input: ``(N, h_mask * w_mask, H, W)`` predicted masks.
        output: ``(N, H * W, H, W)``, written at the covered entries (others keep their value, zero from mmcv).
        psa_type: 0 collect, 1 distribute.
        num_: batch size ``N``.
        h_feature: ``H``.
        w_feature: ``W``.
        h_mask: mask height.
        w_mask: mask width.
        half_h_mask: ``(h_mask - 1) // 2``, the mask row placed on the position itself.
        half_w_mask: ``(w_mask - 1) // 2``.
    """
    _check(int(psa_type), input.shape[1], int(h_mask), int(w_mask))
    hw = int(h_feature) * int(w_feature)
    k, p, t = _index_maps(int(h_feature), int(w_feature), int(h_mask), int(w_mask), int(half_h_mask),
                          int(half_w_mask), input.device)
    src = input.reshape(int(num_), -1, hw)[:, k, p].to(output.dtype)
    out = output.view(int(num_), hw, hw)
    if int(psa_type) == 0:
        out[:, t, p] = src
    else:
        out[:, p, t] = src


@ext_op(how="torch")
def psamask_backward(grad_output: Tensor, grad_input: Tensor, psa_type: int, num_: int, h_feature: int,
                     w_feature: int, h_mask: int, w_mask: int, half_h_mask: int, half_w_mask: int) -> None:
    """Gather the covered entries of ``grad_output`` back into ``grad_input`` (mmcv ``ext_module.psamask_backward``)."""
    _check(int(psa_type), grad_input.shape[1], int(h_mask), int(w_mask))
    hw = int(h_feature) * int(w_feature)
    k, p, t = _index_maps(int(h_feature), int(w_feature), int(h_mask), int(w_mask), int(half_h_mask),
                          int(half_w_mask), grad_input.device)
    g = grad_output.reshape(int(num_), hw, hw)
    picked = g[:, t, p] if int(psa_type) == 0 else g[:, p, t]
    grad_input.view(int(num_), -1, hw)[:, k, p] = picked.to(grad_input.dtype)
