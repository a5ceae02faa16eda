"""Multi-scale deformable attention of ``mmcv._ext``: ``ms_deform_attn_forward`` / ``ms_deform_attn_backward``.

Replaces mmcv-full's CUDA kernels (mmcv ``ops/multi_scale_deform_attn.py``; Deformable DETR, BEVFormer-style heads).
Each level's value map is sampled with ``grid_sample`` (bilinear, zeros padding, ``align_corners=False``: the
kernel's ``loc * size - 0.5`` pixel convention and zero corners), the samples weighted by the attention weights and
summed; one call per feature level (a handful), none per query or point. The backward pass is the autograd of that
expression, accumulated into mmcv's gradient buffers. Limit: for a sampling location exactly on the ``-1`` pixel
border the location gradient is ``grid_sample``'s one-sided slope where mmcv's kernel gives 0 (such a location lies
outside the ``[0, 1]`` normalised range that the heads produce).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from detlight.openmmlab.ops import ext_op

__all__ = ["ms_deform_attn_backward", "ms_deform_attn_forward"]


def _attend(value: Tensor, shapes: list[list[int]], starts: list[int], loc: Tensor, attn: Tensor) -> Tensor:
    bs, _, heads, dims = value.shape
    _, nq, _, levels, points, _ = loc.shape
    grids = 2.0 * loc - 1.0
    sampled = []
    for lvl, ((h, w), start) in enumerate(zip(shapes, starts, strict=True)):
        v = value[:, start:start + h * w].flatten(2).transpose(1, 2).reshape(bs * heads, dims, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # (bs*heads, nq, points, 2)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    stack = torch.stack(sampled, dim=-2).flatten(-2)  # (bs*heads, dims, nq, levels*points)
    weights = attn.transpose(1, 2).reshape(bs * heads, 1, nq, levels * points)
    out = (stack * weights).sum(-1).view(bs, heads * dims, nq)
    return out.transpose(1, 2).contiguous()


def _meta(spatial_shapes: Tensor, level_start_index: Tensor) -> tuple[list[list[int]], list[int]]:
    return [list(map(int, s)) for s in spatial_shapes.tolist()], [int(i) for i in level_start_index.tolist()]


@ext_op(how="torch")
def ms_deform_attn_forward(value: Tensor, value_spatial_shapes: Tensor, value_level_start_index: Tensor,
                           sampling_locations: Tensor, attention_weights: Tensor, im2col_step: int = 64) -> Tensor:
    """Multi-scale deformable attention (mmcv ``ext_module.ms_deform_attn_forward``).

    Args:
        value: ``(bs, num_keys, heads, dims)``, the levels' maps flattened and concatenated.
        value_spatial_shapes: ``(levels, 2)`` ``(h, w)`` per level.
        value_level_start_index: ``(levels,)`` first key of each level.
        sampling_locations: ``(bs, queries, heads, levels, points, 2)`` normalised ``(x, y)`` in ``[0, 1]``.
        attention_weights: ``(bs, queries, heads, levels, points)``.
        im2col_step: batch chunk of mmcv's kernel (no effect here).

    Returns:
        ``(bs, queries, heads * dims)``.
    """
    shapes, starts = _meta(value_spatial_shapes, value_level_start_index)
    return _attend(value, shapes, starts, sampling_locations, attention_weights)


@ext_op(how="torch")
def ms_deform_attn_backward(value: Tensor, value_spatial_shapes: Tensor, value_level_start_index: Tensor,
                            sampling_locations: Tensor, attention_weights: Tensor, grad_output: Tensor,
                            grad_value: Tensor, grad_sampling_loc: Tensor, grad_attn_weight: Tensor,
                            im2col_step: int = 64) -> None:
    """Accumulate the value, location and weight gradients (mmcv ``ext_module.ms_deform_attn_backward``)."""
    shapes, starts = _meta(value_spatial_shapes, value_level_start_index)
    with torch.enable_grad():
        v = value.detach().requires_grad_(True)
        loc = sampling_locations.detach().requires_grad_(True)
        attn = attention_weights.detach().requires_grad_(True)
        out = _attend(v, shapes, starts, loc, attn)
        gv, gl, ga = torch.autograd.grad(out, (v, loc, attn), grad_output)
    grad_value.add_(gv)
    grad_sampling_loc.add_(gl)
    grad_attn_weight.add_(ga)
