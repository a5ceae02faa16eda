"""CARAFE family of ``mmcv._ext``: ``carafe_forward`` / ``carafe_backward`` and the ``carafe_naive_*`` pair.

Replaces mmcv-full's CUDA kernels (mmcv ``ops/carafe.py``, used by mmdet's CARAFE FPN upsampler). Content-aware
reassembly: output pixel ``(y, x)`` of channel ``c`` is the sum over a ``k x k`` window of the input around
``(y // s, x // s)`` (zeros outside), weighted by the ``k * k`` mask channels of ``c``'s group at ``(y, x)``. Computed
per sub-pixel phase (``s * s`` of them, a constant) with ``unfold`` and one ``einsum``; the backward passes are the
autograd of that expression. mmcv's fast kernel keeps NHWC copies in its ``r*`` buffers; here ``rfeatures`` holds a
copy of the features (what the backward reads) and the other ``r*`` buffers are left alone. ``CARAFENaive``'s
Python backward asserts CUDA tensors in mmcv itself, so its backward only runs on CUDA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from detlight.openmmlab.ops import ext_op

__all__ = ["carafe_backward", "carafe_forward", "carafe_naive_backward", "carafe_naive_forward"]


def _carafe(features: Tensor, masks: Tensor, kernel_size: int, group_size: int, scale_factor: int) -> Tensor:
    n, c, h, w = features.shape
    k, g, s = kernel_size, group_size, scale_factor
    unf = F.unfold(features, k, padding=(k - 1) // 2).view(n, g, c // g, k * k, h, w)
    m = masks.view(n, g, k * k, h * s, w * s)
    out = features.new_empty((n, g, c // g, h * s, w * s))
    for a in range(s):
        for b in range(s):
            out[..., a::s, b::s] = torch.einsum("ngckhw,ngkhw->ngchw", unf, m[..., a::s, b::s])
    return out.view(n, c, h * s, w * s)


def _carafe_grads(grad_output: Tensor, features: Tensor, masks: Tensor, kernel_size: int, group_size: int,
                  scale_factor: int) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        f = features.detach().requires_grad_(True)
        m = masks.detach().requires_grad_(True)
        out = _carafe(f, m, kernel_size, group_size, scale_factor)
        gf, gm = torch.autograd.grad(out, (f, m), grad_output)
    return gf, gm


@ext_op(how="torch")
def carafe_naive_forward(features: Tensor, masks: Tensor, output: Tensor, kernel_size: int, group_size: int,
                         scale_factor: int) -> None:
    """Fill ``output`` ``(N, C, H*s, W*s)`` with CARAFE of ``features`` by ``masks`` ``(N, k*k*G, H*s, W*s)``."""
    output.copy_(_carafe(features, masks, kernel_size, group_size, scale_factor))


@ext_op(how="torch")
def carafe_naive_backward(top_grad: Tensor, features: Tensor, masks: Tensor, bottom_grad: Tensor, mask_grad: Tensor,
                          kernel_size: int, group_size: int, scale_factor: int) -> None:
    """Accumulate the CARAFE feature and mask gradients into ``bottom_grad`` and ``mask_grad``."""
    gf, gm = _carafe_grads(top_grad, features, masks, kernel_size, group_size, scale_factor)
    bottom_grad.add_(gf)
    mask_grad.add_(gm)


@ext_op(how="torch")
def carafe_forward(features: Tensor, masks: Tensor, rfeatures: Tensor, routput: Tensor, rmasks: Tensor,
                   output: Tensor, kernel_size: int, group_size: int, scale_factor: int) -> None:
    """CARAFE forward (mmcv ``ext_module.carafe_forward``): fills ``output`` and keeps the features in ``rfeatures``."""
    rfeatures.copy_(features)
    output.copy_(_carafe(features, masks, kernel_size, group_size, scale_factor))


@ext_op(how="torch")
def carafe_backward(top_grad: Tensor, rfeatures: Tensor, masks: Tensor, rtop_grad: Tensor, rbottom_grad_hs: Tensor,
                    rbottom_grad: Tensor, rmask_grad: Tensor, bottom_grad: Tensor, mask_grad: Tensor,
                    kernel_size: int, group_size: int, scale_factor: int) -> None:
    """CARAFE backward (mmcv ``ext_module.carafe_backward``): accumulates into ``bottom_grad`` and ``mask_grad``."""
    gf, gm = _carafe_grads(top_grad, rfeatures, masks, kernel_size, group_size, scale_factor)
    bottom_grad.add_(gf)
    mask_grad.add_(gm)
