"""``bbox_overlaps`` of ``mmcv._ext`` (mmcv ``ops/bbox.py``): IoU / IoF of two box sets in vectorised torch.

Replaces mmcv-full's CUDA kernel ``bbox_overlaps_cuda_kernel`` (mmcv's wrapper computes CPU tensors in Python and calls
the kernel for the others). Follows the kernel: widths ``x2 - x1 + offset``, intersections clamped at 0, and the
denominator clamped from below at ``offset`` (so, as in the kernel, two zero-area boxes give NaN with ``offset=0``).
One ``(rows, cols)`` broadcast; no loop.
"""

from __future__ import annotations

from torch import Tensor

from detlight.openmmlab.ops import ext_op

__all__ = ["bbox_overlaps"]


@ext_op(how="torch")
def bbox_overlaps(bboxes1: Tensor, bboxes2: Tensor, ious: Tensor, mode: int = 0, aligned: bool = False,
                  offset: int = 0) -> None:
    """Fill ``ious`` with the overlaps of ``bboxes1`` and ``bboxes2`` (mmcv ``ext_module.bbox_overlaps``).

    Args:
        bboxes1: ``(M, 4)`` boxes ``x1, y1, x2, y2``.
        bboxes2: ``(N, 4)`` boxes (``N == M`` when aligned).
        ious: output, ``(M,)`` when aligned, else ``(M, N)``.
        mode: 0 IoU (intersection over union), 1 IoF (intersection over the area of ``bboxes1``).
        aligned: overlap of row i with row i only.
        offset: 0, or 1 for ``x2 - x1 + 1`` box widths.
    """
    if mode not in (0, 1):
        raise ValueError(f"bbox_overlaps: mode must be 0 (iou) or 1 (iof), got {mode!r}")
    if offset not in (0, 1):
        raise ValueError(f"bbox_overlaps: offset must be 0 or 1, got {offset!r}")
    a = bboxes1 if aligned else bboxes1[:, None, :]
    b = bboxes2 if aligned else bboxes2[None, :, :]
    area_a = (a[..., 2] - a[..., 0] + offset) * (a[..., 3] - a[..., 1] + offset)
    area_b = (b[..., 2] - b[..., 0] + offset) * (b[..., 3] - b[..., 1] + offset)
    wh = (a[..., 2:].minimum(b[..., 2:]) - a[..., :2].maximum(b[..., :2]) + offset).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    base = (area_a + area_b - inter) if mode == 0 else area_a.expand_as(inter)
    ious.copy_((inter / base.clamp(min=float(offset))).reshape(ious.shape))
