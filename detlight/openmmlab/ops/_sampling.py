"""Bilinear sampling helpers shared by the 2D op families (not a family: no ``_ext`` names here)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["ROW_BUDGET", "chunks", "roi_corners"]

ROW_BUDGET = 1 << 22
"""Elements one vectorised chunk may materialise (bounds memory on large RoI / point sets)."""


def chunks(n: int, per_item: int, budget: int = ROW_BUDGET) -> list[slice]:
    """Split ``range(n)`` into slices of at most ``budget // per_item`` items (at least one)."""
    step = max(1, budget // max(per_item, 1))
    return [slice(s, min(s + step, n)) for s in range(0, n, step)]


def roi_corners(v: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """mmcv's RoIAlign bilinear corners along one axis: ``(low, high, w_low, w_high)``.

    Follows mmcv's ``bilinear_interpolate``: a coordinate outside ``[-1, size]`` gets zero weights (and index 0);
    inside, it is clamped at 0 from below and snapped to ``size - 1`` at the top edge.
    """
    outside = (v < -1.0) | (v > size)
    v = v.clamp(min=0)
    low = v.floor().to(torch.long)
    top = low >= size - 1
    low = torch.where(top, torch.full_like(low, size - 1), low)
    high = torch.where(top, low, low + 1)
    v = torch.where(top, low.to(v.dtype), v)
    w_high = v - low.to(v.dtype)
    w_low = 1.0 - w_high
    zero = torch.zeros_like(w_low)
    w_low, w_high = torch.where(outside, zero, w_low), torch.where(outside, zero, w_high)
    low, high = torch.where(outside, torch.zeros_like(low), low), torch.where(outside, torch.zeros_like(high), high)
    return low, high, w_low, w_high
