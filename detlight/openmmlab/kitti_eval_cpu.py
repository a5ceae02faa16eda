"""mmdet3d's KITTI evaluation without a CUDA GPU: a CPU stand-in for its one numba.cuda function.

Replaces: ``mmdet3d.core.evaluation.kitti_utils.rotate_iou.rotate_iou_gpu_eval`` (mmdet3d 1.0), the rotated
bird's-eye-view overlap that ``kitti_eval`` computes for its ``bev`` and ``3d`` metrics with a numba.cuda kernel, so
``KittiDataset.evaluate`` fails on a machine without a CUDA GPU. :func:`rotate_iou_cpu_eval` returns the same
matrix (IoU, intersection over the first / second box's area, or the intersection area, per ``criterion``) from the
exact polygon intersection of detlight's ``box_iou_rotated`` op (:mod:`detlight.openmmlab.ops._rotated`), in
float64, vectorised over the pairs whose circumscribed circles overlap. It equals numba's kernel (run in numba's
CUDA simulator) to 1e-6 on random boxes, except on degenerate pairs with coincident edges: two identical boxes get
IoU 1 here and 1/3 from the kernel (its intersection polygon repeats the shared vertices).

:func:`install_kitti_eval_cpu` registers a stand-in ``rotate_iou`` module holding that one function, and only when
``numba.cuda.is_available()`` is false (numba's CUDA simulator, ``NUMBA_ENABLE_CUDASIM=1``, counts as available and
is left alone). mmdet3d's own module cannot be imported there at all: it compiles its kernel at import time.
``eval.py`` imports the function inside ``bev_box_overlap`` / ``d3_box_overlap`` on every call, so the stand-in is
found there. The rest of ``kitti_eval`` (its numba CPU-jitted statistics) runs unchanged.
"""

from __future__ import annotations

import importlib
import logging
import sys
import types

import numpy as np
import torch

from detlight.openmmlab.ops._rotated import cross_pairs, pairwise_rotated_overlap

__all__ = ["install_kitti_eval_cpu", "rotate_iou_cpu_eval"]

log = logging.getLogger(__name__)
_MODULE = "mmdet3d.core.evaluation.kitti_utils.rotate_iou"
_ATTR = "rotate_iou_gpu_eval"


def rotate_iou_cpu_eval(boxes: np.ndarray, query_boxes: np.ndarray, criterion: int = -1, device_id: int = 0,
                        ) -> np.ndarray:
    """mmdet3d's ``rotate_iou_gpu_eval`` on the CPU.

    Args:
        boxes: ``(N, 5)`` boxes ``(cx, cy, dx, dy, angle)``, the angle clockwise (mmdet3d's camera-frame BEV).
        query_boxes: ``(K, 5)`` boxes.
        criterion: -1 IoU, 0 intersection / area of ``query_boxes[j]``, 1 intersection / area of ``boxes[i]``,
            anything else the intersection area. (The kernel's docstring says the reverse for 0 and 1, but it
            passes the query box first to ``devRotateIoUEval``; this follows what the kernel computes.)
        device_id: ignored (kept for the signature).

    Returns:
        ``float32[N, K]``.
    """
    b1 = torch.from_numpy(np.asarray(boxes, dtype=np.float32).astype(np.float64)).reshape(-1, 5)
    b2 = torch.from_numpy(np.asarray(query_boxes, dtype=np.float32).astype(np.float64)).reshape(-1, 5)
    out = np.zeros((b1.shape[0], b2.shape[0]), dtype=np.float32)
    if out.size == 0:
        return out
    # the kernel rotates its corners clockwise by +angle: the same rectangle as a counter-clockwise -angle
    b1[:, 4], b2[:, 4] = -b1[:, 4], -b2[:, 4]
    area1, area2 = b1[:, 2] * b1[:, 3], b2[:, 2] * b2[:, 3]
    inter = torch.zeros(out.shape, dtype=torch.float64)
    for i, j in cross_pairs(b1, b2):
        inter[i, j] = pairwise_rotated_overlap(b1[i], b2[j])
    if criterion == -1:
        val = inter / (area1[:, None] + area2[None] - inter)
    elif criterion == 0:
        val = inter / area2[None].expand_as(inter)
    elif criterion == 1:
        val = inter / area1[:, None].expand_as(inter)
    else:
        val = inter
    out[:] = val.numpy()
    return out


def install_kitti_eval_cpu() -> bool:
    """Serve ``rotate_iou_gpu_eval`` from :func:`rotate_iou_cpu_eval` when numba has no CUDA device.

    mmdet3d's ``rotate_iou`` module compiles its kernel when imported (an explicit ``cuda.jit`` signature), which
    fails without a CUDA driver; so rather than patching it, a stand-in module holding only
    ``rotate_iou_gpu_eval`` is registered under its name in ``sys.modules`` (and on its package) before anything
    imports it. Idempotent; a no-op when mmdet3d is not installed, a CUDA device is available, or the real module
    is already imported.

    Returns:
        True when the CPU function is in place after the call.
    """
    current = sys.modules.get(_MODULE)
    if current is not None:
        return getattr(current, _ATTR, None) is rotate_iou_cpu_eval
    try:
        package = importlib.import_module(_MODULE.rsplit(".", 1)[0])
        from numba import cuda
    except ImportError:
        return False
    if cuda.is_available():
        return False
    stand_in = types.ModuleType(_MODULE, __doc__)
    setattr(stand_in, _ATTR, rotate_iou_cpu_eval)
    stand_in.__file__ = __file__
    sys.modules[_MODULE] = stand_in
    setattr(package, _MODULE.rsplit(".", 1)[1], stand_in)
    log.info("mmdet3d KITTI evaluation: no CUDA device, %s.%s served on the CPU by detlight", _MODULE, _ATTR)
    return True
