"""Focal-loss family of ``mmcv._ext``: sigmoid and softmax focal loss, forward and backward (mmcv ``ops/focal_loss.py``).

Replaces mmcv-full's CUDA kernels (mmcv has no CPU ones, so mmdet's ``FocalLoss`` falls back to its slower pure-torch
path on CPU; with these it runs the same code everywhere). Element-wise torch with the kernels' formulas: ``log`` of
probabilities clamped at ``FLT_MIN``; the class weight is indexed by the target; half / bfloat16 inputs are computed
in float32 and written back in their own type. Limit: mmcv's sigmoid kernel reads
``weight[num_classes]`` (past the end) for background rows; here background rows are not weighted.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detlight.openmmlab.ops import ext_op

__all__ = ["sigmoid_focal_loss_backward", "sigmoid_focal_loss_forward", "softmax_focal_loss_backward",
           "softmax_focal_loss_forward"]

_FLT_MIN = 1.1754943508222875e-38


def _row_weight(weight: Tensor, target: Tensor, dtype: torch.dtype) -> Tensor | None:
    """``weight[target]`` per row (1 where the target is outside the classes), or None when there is no weight."""
    if weight.numel() == 0:
        return None
    inside = (target >= 0) & (target < weight.numel())
    picked = weight[target.clamp(0, weight.numel() - 1)].to(dtype)
    return torch.where(inside, picked, torch.ones_like(picked))


def _wide(x: Tensor) -> Tensor:
    """Half / bfloat16 inputs are computed in float32 (``FLT_MIN`` and the logs do not fit in 16 bits)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _sigmoid_parts(input: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    input = _wide(input)
    p = torch.sigmoid(input)
    classes = torch.arange(input.shape[1], device=input.device)
    positive = (target[:, None] == classes[None, :]).to(input.dtype)
    return p, positive, 1.0 - positive


@ext_op(how="torch")
def sigmoid_focal_loss_forward(input: Tensor, target: Tensor, weight: Tensor, output: Tensor, gamma: float = 2.0,
                               alpha: float = 0.25) -> None:
    """Fill ``output`` ``(N, C)`` with the per-element sigmoid focal loss (mmcv ``sigmoid_focal_loss_forward``).

    Args:
        input: ``(N, C)`` logits.
        target: ``(N,)`` int64 class per row; ``C`` (or any value outside ``0..C-1``) is background.
        weight: ``(C,)`` class weights, or an empty tensor.
        output: ``(N, C)``, filled.
        gamma: focusing exponent.
        alpha: weight of the positive term.
    """
    p, pos, neg = _sigmoid_parts(input, target)
    log_p = torch.log(p.clamp(min=_FLT_MIN))
    log_1p = torch.log((1.0 - p).clamp(min=_FLT_MIN))
    loss = -pos * alpha * (1.0 - p).pow(gamma) * log_p - neg * (1.0 - alpha) * p.pow(gamma) * log_1p
    w = _row_weight(weight, target, loss.dtype)
    output.copy_(loss if w is None else loss * w[:, None])


@ext_op(how="torch")
def sigmoid_focal_loss_backward(input: Tensor, target: Tensor, weight: Tensor, grad_input: Tensor,
                                gamma: float = 2.0, alpha: float = 0.25) -> None:
    """Fill ``grad_input`` with d(loss)/d(input) per element (mmcv ``sigmoid_focal_loss_backward``)."""
    p, pos, neg = _sigmoid_parts(input, target)
    term_p = (1.0 - p).pow(gamma) * (1.0 - p - gamma * p * torch.log(p.clamp(min=_FLT_MIN)))
    term_n = p.pow(gamma) * (gamma * (1.0 - p) * torch.log((1.0 - p).clamp(min=_FLT_MIN)) - p)
    grad = -pos * alpha * term_p - neg * (1.0 - alpha) * term_n
    w = _row_weight(weight, target, grad.dtype)
    grad_input.copy_(grad if w is None else grad * w[:, None])


def _target_prob(softmax: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    valid = target >= 0
    pred = _wide(softmax).gather(1, target.clamp(min=0)[:, None])[:, 0]
    return pred, valid


@ext_op(how="torch")
def softmax_focal_loss_forward(softmax: Tensor, target: Tensor, weight: Tensor, output: Tensor, gamma: float = 2.0,
                               alpha: float = 0.25) -> None:
    """Fill ``output`` ``(N,)`` with the softmax focal loss of each row (mmcv ``softmax_focal_loss_forward``).

    Args:
        softmax: ``(N, C)`` probabilities (mmcv's wrapper computes them).
        target: ``(N,)`` int64 class per row; negative rows give 0.
        weight: ``(C,)`` class weights, or an empty tensor.
        output: ``(N,)``, filled.
        gamma: focusing exponent.
        alpha: scale of the loss.
    """
    pred, valid = _target_prob(softmax, target)
    loss = -alpha * (1.0 - pred).pow(gamma) * torch.log(pred.clamp(min=_FLT_MIN))
    w = _row_weight(weight, target, loss.dtype)
    if w is not None:
        loss = loss * w
    output.copy_(torch.where(valid, loss, torch.zeros_like(loss)))


@ext_op(how="torch")
def softmax_focal_loss_backward(softmax: Tensor, target: Tensor, weight: Tensor, buff: Tensor, grad_input: Tensor,
                                gamma: float = 2.0, alpha: float = 0.25) -> None:
    """Fill ``buff`` (per-row factor) and ``grad_input`` ``(N, C)`` (mmcv ``softmax_focal_loss_backward``)."""
    pred, valid = _target_prob(softmax, target)
    factor = alpha * (-(1.0 - pred).pow(gamma)
                      + gamma * (1.0 - pred).pow(gamma - 1) * pred * torch.log(pred.clamp(min=_FLT_MIN)))
    w = _row_weight(weight, target, factor.dtype)
    if w is not None:
        factor = factor * w
    factor = torch.where(valid, factor, torch.zeros_like(factor))
    buff.copy_(factor)
    classes = torch.arange(softmax.shape[1], device=softmax.device)
    onehot = (target[:, None] == classes[None, :]).to(factor.dtype)
    grad_input.copy_(factor[:, None] * (onehot - _wide(softmax)) * valid[:, None].to(factor.dtype))
