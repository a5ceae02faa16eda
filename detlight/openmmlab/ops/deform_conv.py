"""Deformable convolution family of ``mmcv._ext`` (mmcv ``ops/deform_conv.py`` and ``ops/modulated_deform_conv.py``).

Replaces mmcv-full's DCN v1 / v2 kernels with torchvision's compiled ``deform_conv2d`` and ``_deform_conv2d_backward``
(CPU and CUDA): same offset layout (``(y, x)`` pairs per kernel point and deformable group), same bilinear sampling
with zeros outside ``(-1, H) x (-1, W)``, same weight / input / mask gradients. One difference is corrected: for a
sampling point exactly on ``y = -1`` (or ``x = -1``), torchvision's offset gradient takes the one-sided slope from the
row (column) inside the image; mmcv's kernels give 0 for every point outside the open box ``(-1, H) x (-1, W)``. Zero-
initialised offsets put the padding taps of a padded 3x3 DCN exactly there at the start of training, so the offset
gradient is zeroed at those points, as mmcv does. ``im2col_step`` only splits mmcv's batch into chunks; here the
batch is one call. Gradients are accumulated into the caller's buffers (weight gradients scaled by ``scale``), as
mmcv does.
"""

from __future__ import annotations

import weakref

import torch
import torchvision  # noqa: F401  (loading it registers the torch.ops.torchvision kernels)
from torch import Tensor

from detlight.openmmlab.ops import ext_op

__all__ = ["deform_conv_backward_input", "deform_conv_backward_parameters", "deform_conv_forward",
           "modulated_deform_conv_backward", "modulated_deform_conv_forward"]


#: where a NaN offset puts its sampling point: far outside every image, so the point reads 0 and gets no gradient
_NAN_OFFSET = -16384.0  # exact in float16 too


def _safe_offset(offset: Tensor) -> Tensor:
    """``offset`` with NaN moved to :data:`_NAN_OFFSET`.

    mmcv's kernels test ``h > -1 && h < H`` before reading, which is false for NaN, so a NaN sampling point reads 0;
    torchvision's kernels test the opposite (``h <= -1 || h >= H`` returns 0), which NaN passes, then index the input
    with ``floor(NaN)``: a segmentation fault on CPU (a diverged ResNeXt-DCN run crashed so). No host sync.
    """
    return torch.where(offset.isnan(), offset.new_tensor(_NAN_OFFSET), offset)


def _outside_open_box(offset: Tensor, input_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
                      pad: tuple[int, int], dilation: tuple[int, int], groups: int) -> Tensor:
    """Sampling points outside ``(-1, H) x (-1, W)``: ``(N, G, kh * kw, 1, Ho, Wo)``, broadcastable to the offsets."""
    n, _, ho, wo = offset.shape
    kh, kw = kernel
    off = offset.reshape(n, groups, kh * kw, 2, ho, wo)
    dt, dev = offset.dtype, offset.device
    base_y = (torch.arange(ho, dtype=dt, device=dev) * stride[0] - pad[0])[None, :, None] \
        + (torch.arange(kh, dtype=dt, device=dev) * dilation[0]).repeat_interleave(kw)[:, None, None]
    base_x = (torch.arange(wo, dtype=dt, device=dev) * stride[1] - pad[1])[None, None, :] \
        + (torch.arange(kw, dtype=dt, device=dev) * dilation[1]).repeat(kh)[:, None, None]
    y = base_y + off[:, :, :, 0]  # (N, G, K, Ho, Wo)
    x = base_x + off[:, :, :, 1]
    h, w = input_hw
    return ((y <= -1) | (y >= h) | (x <= -1) | (x >= w))[:, :, :, None]


def _mmcv_offset_grad(grad_offset: Tensor, offset: Tensor, input: Tensor, kernel: tuple[int, int],
                      stride: tuple[int, int], pad: tuple[int, int], dilation: tuple[int, int], groups: int) -> Tensor:
    out = _outside_open_box(offset, (input.shape[2], input.shape[3]), kernel, stride, pad, dilation, groups)
    g = grad_offset.reshape(out.shape[0], groups, kernel[0] * kernel[1], 2, *offset.shape[2:])
    return g.masked_fill(out, 0.0).reshape(grad_offset.shape)


@ext_op(how="torchvision")
def deform_conv_forward(input: Tensor, weight: Tensor, offset: Tensor, output: Tensor, columns: Tensor, ones: Tensor,
                        kW: int, kH: int, dW: int, dH: int, padW: int, padH: int, dilationW: int, dilationH: int,
                        group: int, deformable_group: int, im2col_step: int) -> None:
    """Fill ``output`` with a DCN v1 convolution (mmcv ``ext_module.deform_conv_forward``; no bias)."""
    no_bias = weight.new_zeros(weight.shape[0])
    no_mask = offset.new_zeros((input.shape[0], 0))
    out = torch.ops.torchvision.deform_conv2d(input, weight, _safe_offset(offset), no_mask, no_bias, dH, dW, padH, padW, dilationH,
                                              dilationW, group, deformable_group, False)
    output.copy_(out)


_PENDING: list[tuple[tuple[weakref.ref[Tensor], ...], tuple[object, ...], Tensor]] = []
"""The weight gradient computed by the last ``deform_conv_backward_input`` call, for the ``_parameters`` call after it.

mmcv's DCN v1 backward makes two ext calls with the same tensors (input / offset gradients, then the weight
gradient); torchvision computes all three in one pass, so the second call reuses the first one's result instead of
running the backward again. One entry (weight-sized): weak references to the very input / offset / gradient tensors,
their version counters and the conv parameters; a ``_parameters`` call that does not match it runs the backward
itself.
"""


def _stash(tensors: tuple[Tensor, ...], params: tuple[object, ...], grad_w: Tensor) -> None:
    _PENDING.clear()
    _PENDING.append((tuple(weakref.ref(t) for t in tensors), (*params, *(t._version for t in tensors)), grad_w))


def _take(tensors: tuple[Tensor, ...], params: tuple[object, ...]) -> Tensor | None:
    if not _PENDING:
        return None
    refs, key, grad_w = _PENDING.pop()
    same = all(r() is t for r, t in zip(refs, tensors, strict=True))
    return grad_w if same and key == (*params, *(t._version for t in tensors)) else None


def _v1_backward(input: Tensor, offset: Tensor, grad_output: Tensor, weight: Tensor, params: tuple[int, ...],
                 ) -> tuple[Tensor, Tensor, Tensor]:
    kW, kH, dW, dH, padW, padH, dilationW, dilationH, group, deformable_group = params
    offset = _safe_offset(offset)
    grad_in, grad_w, grad_off, _, _ = torch.ops.torchvision._deform_conv2d_backward(
        grad_output, input, weight, offset, offset.new_zeros((input.shape[0], 0)), weight.new_zeros(weight.shape[0]),
        dH, dW, padH, padW, dilationH, dilationW, group, deformable_group, False)
    grad_off = _mmcv_offset_grad(grad_off, offset, input, (kH, kW), (dH, dW), (padH, padW), (dilationH, dilationW),
                                 deformable_group)
    return grad_in, grad_w, grad_off


@ext_op(how="torchvision")
def deform_conv_backward_input(input: Tensor, offset: Tensor, gradOutput: Tensor, gradInput: Tensor,
                               gradOffset: Tensor, weight: Tensor, columns: Tensor, kW: int, kH: int, dW: int,
                               dH: int, padW: int, padH: int, dilationW: int, dilationH: int, group: int,
                               deformable_group: int, im2col_step: int) -> None:
    """Accumulate the DCN v1 input and offset gradients (mmcv ``ext_module.deform_conv_backward_input``)."""
    params = (kW, kH, dW, dH, padW, padH, dilationW, dilationH, group, deformable_group)
    grad_in, grad_w, grad_off = _v1_backward(input, offset, gradOutput, weight, params)
    _stash((input, offset, gradOutput), (*params, *weight.shape), grad_w)
    gradInput.add_(grad_in)
    gradOffset.add_(grad_off)


@ext_op(how="torchvision")
def deform_conv_backward_parameters(input: Tensor, offset: Tensor, gradOutput: Tensor, gradWeight: Tensor,
                                    columns: Tensor, ones: Tensor, kW: int, kH: int, dW: int, dH: int, padW: int,
                                    padH: int, dilationW: int, dilationH: int, group: int, deformable_group: int,
                                    scale: float, im2col_step: int) -> None:
    """Accumulate ``scale`` times the DCN v1 weight gradient (mmcv ``ext_module.deform_conv_backward_parameters``)."""
    params = (kW, kH, dW, dH, padW, padH, dilationW, dilationH, group, deformable_group)
    grad_w = _take((input, offset, gradOutput), (*params, *gradWeight.shape))
    if grad_w is None:  # the weight gradient does not depend on the weight's values, only on its shape
        _, grad_w, _ = _v1_backward(input, offset, gradOutput, torch.zeros_like(gradWeight), params)
    gradWeight.add_(grad_w, alpha=scale)


@ext_op(how="torchvision")
def modulated_deform_conv_forward(input: Tensor, weight: Tensor, bias: Tensor, ones: Tensor, offset: Tensor,
                                  mask: Tensor, output: Tensor, columns: Tensor, kernel_h: int, kernel_w: int,
                                  stride_h: int, stride_w: int, pad_h: int, pad_w: int, dilation_h: int,
                                  dilation_w: int, group: int, deformable_group: int, with_bias: bool) -> None:
    """Fill ``output`` with a DCN v2 convolution (mmcv ``ext_module.modulated_deform_conv_forward``)."""
    b = bias if with_bias else weight.new_zeros(weight.shape[0])
    output.copy_(torch.ops.torchvision.deform_conv2d(input, weight, _safe_offset(offset), mask, b, stride_h, stride_w, pad_h, pad_w,
                                                     dilation_h, dilation_w, group, deformable_group, True))


@ext_op(how="torchvision")
def modulated_deform_conv_backward(input: Tensor, weight: Tensor, bias: Tensor, ones: Tensor, offset: Tensor,
                                   mask: Tensor, columns: Tensor, grad_input: Tensor, grad_weight: Tensor,
                                   grad_bias: Tensor, grad_offset: Tensor, grad_mask: Tensor, grad_output: Tensor,
                                   kernel_h: int, kernel_w: int, stride_h: int, stride_w: int, pad_h: int, pad_w: int,
                                   dilation_h: int, dilation_w: int, group: int, deformable_group: int,
                                   with_bias: bool) -> None:
    """Accumulate every DCN v2 gradient into the given buffers (mmcv ``ext_module.modulated_deform_conv_backward``)."""
    b = bias if with_bias else weight.new_zeros(weight.shape[0])
    offset = _safe_offset(offset)
    g_in, g_w, g_off, g_mask, g_b = torch.ops.torchvision._deform_conv2d_backward(
        grad_output, input, weight, offset, mask, b, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, group,
        deformable_group, True)
    grad_input.add_(g_in)
    grad_weight.add_(g_w)
    grad_offset.add_(_mmcv_offset_grad(g_off, offset, input, (kernel_h, kernel_w), (stride_h, stride_w),
                                       (pad_h, pad_w), (dilation_h, dilation_w), deformable_group))
    grad_mask.add_(g_mask)
    if with_bias:
        grad_bias.add_(g_b)
