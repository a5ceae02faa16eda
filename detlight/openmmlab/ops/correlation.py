"""Optical-flow cost volume in ``mmcv._ext``: ``correlation_forward`` / ``correlation_backward`` (mmcv ``ops/correlation.py``).

Replaces mmcv-full's Correlation kernels (CUDA only in mmcv; mmflow's PWC-Net / FlowNet decoders use the op) with
torch: for every displacement ``(dy, dx) = dilation_patch * (p - (patch - 1) / 2)`` of the ``patch x patch`` window,
``sum_c input1[y, x] * input2[y + dy, x + dx]`` (zero outside either map) is summed over the ``kH x kW`` kernel window
``(-pad + h * stride + i * dilation, ...)`` with a grouped all-ones convolution, giving ``(N, patch, patch, oH, oW)``;
no normalisation by channels, as mmcv. Displacements are processed one at a time (each a vectorised product over the
whole batch and map). mmcv's backward kernels compute the exact adjoint, so the backward pass here is autograd through
the same torch expression.
Limits: memory and time grow with ``patch ** 2`` full-map products, as in mmcv's kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from detlight.openmmlab.ops import ext_op

__all__ = ["correlation_backward", "correlation_forward"]


def _shifted(x: Tensor, dy: int, dx: int) -> Tensor:
    """``x[..., y + dy, x + dx]`` on the same grid, zero where that lies off the map."""
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    ys, ye = max(0, -dy), min(h, h - dy)
    xs, xe = max(0, -dx), min(w, w - dx)
    if ys < ye and xs < xe:
        out[..., ys:ye, xs:xe] = x[..., ys + dy:ye + dy, xs + dx:xe + dx]
    return out


def _correlate(input1: Tensor, input2: Tensor, kh: int, kw: int, patch_h: int, patch_w: int, pad_h: int, pad_w: int,
               dil_h: int, dil_w: int, dp_h: int, dp_w: int, stride_h: int, stride_w: int) -> Tensor:
    n = input1.shape[0]
    rad_h, rad_w = dp_h * (patch_h - 1) // 2, dp_w * (patch_w - 1) // 2
    prods = [(input1 * _shifted(input2, ph * dp_h - rad_h, pw * dp_w - rad_w)).sum(1)
             for ph in range(patch_h) for pw in range(patch_w)]
    prod = torch.stack(prods, 1)  # (N, P*P, H, W)
    ones = prod.new_ones(patch_h * patch_w, 1, kh, kw)
    out = F.conv2d(prod, ones, stride=(stride_h, stride_w), padding=(pad_h, pad_w), dilation=(dil_h, dil_w),
                   groups=patch_h * patch_w)
    return out.view(n, patch_h, patch_w, *out.shape[-2:])


def _args(kH: int, kW: int, patchH: int, patchW: int, padH: int, padW: int, dilationH: int,  # noqa: N803
          dilationW: int, dilation_patchH: int, dilation_patchW: int, dH: int, dW: int) -> tuple[int, ...]:  # noqa: N803
    vals = tuple(int(v) for v in (kH, kW, patchH, patchW, padH, padW, dilationH, dilationW, dilation_patchH,
                                  dilation_patchW, dH, dW))
    if min(vals[0:4] + vals[6:]) < 1 or min(vals[4:6]) < 0:
        raise ValueError(f"correlation: kernel, patch, dilation and stride must be >= 1 and padding >= 0, got "
                         f"kH, kW, patchH, patchW, padH, padW, dilationH, dilationW, dilation_patchH, dilation_patchW, "
                         f"dH, dW = {vals}")
    return vals


@ext_op(how="torch")
def correlation_forward(input1: Tensor, input2: Tensor, output: Tensor, kH: int, kW: int, patchH: int,  # noqa: N803
                        patchW: int, padH: int, padW: int, dilationH: int, dilationW: int,  # noqa: N803
                        dilation_patchH: int, dilation_patchW: int, dH: int, dW: int) -> None:  # noqa: N803
    """Fill ``output (N, patchH, patchW, oH, oW)`` with the correlation volume (mmcv ``correlation_forward``).

    Args:
        input1: ``(N, C, H, W)`` first feature map.
        input2: ``(N, C, H, W)`` second feature map.
        output: ``(N, patchH, patchW, oH, oW)``, filled.
        kH: kernel height (window summed per output position).
        kW: kernel width.
        patchH: displacements along y (``2 * max_displacement + 1``).
        patchW: displacements along x.
        padH: zero padding along y.
        padW: zero padding along x.
        dilationH: kernel dilation along y.
        dilationW: kernel dilation along x.
        dilation_patchH: spacing of the displacements along y.
        dilation_patchW: spacing along x.
        dH: stride along y.
        dW: stride along x.
    """
    vals = _args(kH, kW, patchH, patchW, padH, padW, dilationH, dilationW, dilation_patchH, dilation_patchW, dH, dW)
    output.copy_(_correlate(input1, input2, *vals))


@ext_op(how="torch")
def correlation_backward(grad_output: Tensor, input1: Tensor, input2: Tensor, grad_input1: Tensor,
                         grad_input2: Tensor, kH: int, kW: int, patchH: int, patchW: int, padH: int,  # noqa: N803
                         padW: int, dilationH: int, dilationW: int, dilation_patchH: int,  # noqa: N803
                         dilation_patchW: int, dH: int, dW: int) -> None:  # noqa: N803
    """Add the gradients of both inputs (mmcv ``ext_module.correlation_backward``; the exact adjoint)."""
    vals = _args(kH, kW, patchH, patchW, padH, padW, dilationH, dilationW, dilation_patchH, dilation_patchW, dH, dW)
    with torch.enable_grad():
        a = input1.detach().requires_grad_(True)
        b = input2.detach().requires_grad_(True)
        out = _correlate(a, b, *vals)
        ga, gb = torch.autograd.grad(out, (a, b), grad_output.to(out.dtype))
    grad_input1 += ga.to(grad_input1.dtype)
    grad_input2 += gb.to(grad_input2.dtype)
