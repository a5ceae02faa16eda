"""Device-agnostic versions of the mmcv.ops wrappers that assume CUDA before they reach ``mmcv._ext``.

Replaces: a few lines of mmcv 1.x's Python wrappers. Their kernels take tensors of any device when detlight serves
``mmcv._ext``, but the wrappers allocate outputs with ``torch.cuda.FloatTensor`` / ``IntTensor``, ask
``torch.cuda.current_device()`` or assert ``is_cuda`` first, so on a machine without a GPU they fail before the op
runs ("Found no NVIDIA driver"). Patched, per module of ``mmcv/ops`` (mmcv 1.7.0):

- ``furthest_point_sample``: ``FurthestPointSampling.forward`` (outputs from ``torch.cuda.IntTensor`` /
  ``FloatTensor``);
- ``group_points``: ``GroupingOperation.forward`` for ``(B, C, N)`` features (``torch.cuda.FloatTensor`` output; the
  stacked form still runs mmcv's own branch, which is device-agnostic) and ``GroupingOperation.backward`` (both
  branches allocate the gradient with ``torch.cuda.FloatTensor``);
- ``three_interpolate``: ``ThreeInterpolate.forward`` and ``backward`` (``torch.cuda.FloatTensor``);
- ``knn``: ``KNN.forward`` (``torch.cuda.current_device()``);
- ``points_in_boxes``: ``points_in_boxes_part`` and ``points_in_boxes_all`` (``torch.cuda.current_device()``);
- ``points_in_polygons``: ``points_in_polygons`` (``.cuda()`` on the output; with the op not served, a CPU call now
  raises detlight's ``OpNotProvidedError`` naming it instead of a driver error);
- ``carafe``: ``CARAFENaiveFunction.backward`` (``assert grad_output.is_cuda``).

Each replacement allocates on its input's device and calls the same ``ext_module`` function, with the same
arguments, as the original; everything else is kept: float32 outputs / gradients where mmcv allocates a
``FloatTensor`` (whatever the input dtype), int32 indices, the same shape and contiguity assertions, and on CUDA
tensors mmcv's ``torch.cuda.set_device`` to the input's device (knn, points_in_boxes). The one difference on CUDA:
mmcv's ``torch.cuda.*Tensor`` lands on the *current* device, the replacement on the input's (the same device in
every call the kernels handle). Checked and left alone: ``furthest_point_sample_with_dist`` (allocates with
``new_zeros``), ``fused_bias_leakyrelu`` and ``multi_scale_deform_attn`` (fall back to plain torch on CPU
themselves), ``sync_bn`` (CUDA by design), ``focal_loss`` (``torch.cuda.LongTensor`` in annotations only).

How: :func:`install_cpu_wrappers` (called by :func:`detlight.openmmlab.install_ops` only when detlight serves
``mmcv._ext``) puts an import finder first in ``sys.meta_path`` that answers for the modules above only: Python's
own loader runs the module, then :func:`apply_cpu_wrappers` swaps the attributes in place (autograd ``Function``
methods on the class, so every ``X.apply`` alias sees them; module functions before ``mmcv.ops`` imports their
names). A module whose ``ext_module`` is not detlight's (a real mmcv-full) is never touched. Limits: mmcv 1.x
layouts only (a missing class or function is skipped); mmdet3d's own ``.cuda()`` calls (``SparseEncoderSASSD``'s
auxiliary loss) are not covered.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["apply_cpu_wrappers", "install_cpu_wrappers", "patched_wrappers", "uninstall_cpu_wrappers"]

Ext = Callable[[], Any]  # returns the module's ext_module at call time
Maker = Callable[[Ext, Callable[..., Any]], Callable[..., Any]]  # (ext, original) -> replacement

MARK = "__detlight_cpu_wrapper__"


def _follow_cuda_device(t: Tensor) -> None:
    """mmcv's side effect on CUDA tensors: make the tensor's device current (no-op elsewhere)."""
    if t.is_cuda:
        import torch

        if torch.cuda.current_device() != t.get_device():
            torch.cuda.set_device(t.get_device())


# --------------------------------------------------------------------------------------- furthest_point_sample
def _fps_forward(ext: Ext, original: Callable[..., Any]) -> Callable[..., Any]:
    del original

    def forward(ctx: Any, points_xyz: Tensor, num_points: int) -> Tensor:
        import torch

        assert points_xyz.is_contiguous(), "furthest_point_sample: points_xyz (B, N, 3) must be contiguous"
        b, n = points_xyz.shape[:2]
        idx = torch.empty((b, num_points), dtype=torch.int32, device=points_xyz.device)
        temp = torch.full((b, n), 1e10, dtype=torch.float32, device=points_xyz.device)
        ext().furthest_point_sampling_forward(points_xyz, temp, idx, b=b, n=n, m=num_points)
        ctx.mark_non_differentiable(idx)
        return idx

    return forward


# ------------------------------------------------------------------------------------------------ group_points
def _grouping_forward(ext: Ext, original: Callable[..., Any]) -> Callable[..., Any]:
    def forward(ctx: Any, features: Tensor, indices: Tensor, features_batch_cnt: Tensor | None = None,
                indices_batch_cnt: Tensor | None = None) -> Tensor:
        if features_batch_cnt is not None and indices_batch_cnt is not None:
            return original(ctx, features, indices, features_batch_cnt, indices_batch_cnt)  # device-agnostic
        import torch

        features, indices = features.contiguous(), indices.contiguous()
        b, npoints, nsample = indices.shape
        _, c, n = features.shape
        out = torch.empty((b, c, npoints, nsample), dtype=torch.float32, device=features.device)
        ext().group_points_forward(features, indices, out, b=b, c=c, n=n, npoints=npoints, nsample=nsample)
        ctx.for_backwards = (indices, n)  # mmcv's layout: a 2-tuple marks the (B, C, N) form
        return out

    return forward


def _grouping_backward(ext: Ext, original: Callable[..., Any]) -> Callable[..., Any]:
    del original

    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        import torch

        grad = grad_out.detach().contiguous()
        if len(ctx.for_backwards) == 2:
            idx, n = ctx.for_backwards
            b, c, npoints, nsample = grad_out.shape
            grad_features = torch.zeros((b, c, n), dtype=torch.float32, device=grad_out.device)
            ext().group_points_backward(grad, idx, grad_features, b=b, c=c, n=n, npoints=npoints, nsample=nsample)
            return grad_features, None
        b, n, idx, features_batch_cnt, idx_batch_cnt = ctx.for_backwards
        m, c, nsample = grad_out.shape
        grad_features = torch.zeros((n, c), dtype=torch.float32, device=grad_out.device)
        ext().stack_group_points_backward(grad, idx, idx_batch_cnt, features_batch_cnt, grad_features, b=b, c=c, m=m,
                                          n=n, nsample=nsample)
        return grad_features, None, None, None

    return backward


# ------------------------------------------------------------------------------------------- three_interpolate
def _interpolate_forward(ext: Ext, original: Callable[..., Any]) -> Callable[..., Any]:
    del original

    def forward(ctx: Any, features: Tensor, indices: Tensor, weight: Tensor) -> Tensor:
        import torch

        for name, t in (("features", features), ("indices", indices), ("weight", weight)):
            assert t.is_contiguous(), f"three_interpolate: {name} must be contiguous"
        b, c, m = features.shape
        n = indices.shape[1]
        ctx.three_interpolate_for_backward = (indices, weight, m)
        out = torch.empty((b, c, n), dtype=torch.float32, device=features.device)
        ext().three_interpolate_forward(features, indices, weight, out, b=b, c=c, m=m, n=n)
        return out

    return forward


def _interpolate_backward(ext: Ext, original: Callable[..., Any]) -> Callable[..., Any]:
    del original

    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        import torch

        idx, weight, m = ctx.three_interpolate_for_backward
        b, c, n = grad_out.shape
        grad_features = torch.zeros((b, c, m), dtype=torch.float32, device=grad_out.device)
        ext().three_interpolate_backward(grad_out.detach().contiguous(), idx, weight, grad_features, b=b, c=c, n=n,
                                         m=m)
        return grad_features, None, None

    return backward


# --------------------------------------------------------------------------------------------------------- knn
def _knn_forward(ext: Ext, original: Callable[..., Any]) -> Callable[..., Any]:
    del original

    def forward(ctx: Any, k: int, xyz: Tensor, center_xyz: Tensor | None = None, transposed: bool = False) -> Tensor:
        import torch

        assert 0 < k < 100, f"knn: k should be in range(0, 100), got {k}"
        centres = xyz if center_xyz is None else center_xyz
        if transposed:
            xyz, centres = xyz.transpose(2, 1).contiguous(), centres.transpose(2, 1).contiguous()
        assert xyz.is_contiguous() and centres.is_contiguous(), "knn: xyz and center_xyz must be contiguous"
        assert xyz.device == centres.device, \
            f"knn: center_xyz ({centres.device}) and xyz ({xyz.device}) should be put on the same device"
        _follow_cuda_device(centres)
        b, npoint, _ = centres.shape
        idx = torch.zeros((b, npoint, k), dtype=torch.int32, device=centres.device)
        dist2 = torch.zeros((b, npoint, k), dtype=torch.float32, device=centres.device)
        ext().knn_forward(xyz, centres, idx, dist2, b=b, n=xyz.shape[1], m=npoint, nsample=k)
        idx = idx.transpose(2, 1).contiguous()
        ctx.mark_non_differentiable(idx)
        return idx

    return forward


# --------------------------------------------------------------------------------------------- points_in_boxes
def _check_points_boxes(op: str, points: Tensor, boxes: Tensor) -> None:
    assert points.shape[0] == boxes.shape[0], \
        f"{op}: points and boxes should have the same batch size, got {points.shape[0]} and {boxes.shape[0]}"
    assert boxes.shape[2] == 7, f"{op}: boxes (B, T, 7) expected, got last dimension {boxes.shape[2]}"
    assert points.shape[2] == 3, f"{op}: points (B, M, 3) expected, got last dimension {points.shape[2]}"
    assert points.device == boxes.device, \
        f"{op}: points ({points.device}) and boxes ({boxes.device}) should be put on the same device"
    _follow_cuda_device(points)


def _points_in_boxes_part(ext: Ext, original: Callable[..., Any]) -> Callable[..., Any]:
    del original

    def points_in_boxes_part(points: Tensor, boxes: Tensor) -> Tensor:
        """For each point of ``points (B, M, 3)``, the index of one box of ``boxes (B, T, 7)`` holding it, else -1."""
        import torch

        _check_points_boxes("points_in_boxes_part", points, boxes)
        out = torch.full(points.shape[:2], -1, dtype=torch.int32, device=points.device)
        ext().points_in_boxes_part_forward(boxes.contiguous(), points.contiguous(), out)
        return out

    return points_in_boxes_part


def _points_in_boxes_all(ext: Ext, original: Callable[..., Any]) -> Callable[..., Any]:
    del original

    def points_in_boxes_all(points: Tensor, boxes: Tensor) -> Tensor:
        """``(B, M, T)`` int32: 1 where point ``m`` lies in box ``t``, else 0."""
        import torch

        _check_points_boxes("points_in_boxes_all", points, boxes)
        out = torch.zeros((*points.shape[:2], boxes.shape[1]), dtype=torch.int32, device=points.device)
        ext().points_in_boxes_all_forward(boxes.contiguous(), points.contiguous(), out)
        return out

    return points_in_boxes_all


# ------------------------------------------------------------------------------------------ points_in_polygons
def _points_in_polygons(ext: Ext, original: Callable[..., Any]) -> Callable[..., Any]:
    del original

    def points_in_polygons(points: Tensor, polygons: Tensor) -> Tensor:
        """``(P, M)`` float32: 1.0 where point ``p`` (x, y) lies in quadrilateral ``m`` (x1, y1, ..., x4, y4)."""
        import torch

        assert points.shape[1] == 2, f"points_in_polygons: points (P, 2) expected, got {tuple(points.shape)}"
        assert polygons.shape[1] == 8, f"points_in_polygons: polygons (M, 8) expected, got {tuple(polygons.shape)}"
        out = torch.zeros((points.shape[0], polygons.shape[0]), dtype=torch.float32, device=points.device)
        ext().points_in_polygons_forward(points.contiguous(), polygons.contiguous(), out)
        return out

    return points_in_polygons


# ------------------------------------------------------------------------------------------------------ carafe
def _carafe_naive_backward(ext: Ext, original: Callable[..., Any]) -> Callable[..., Any]:
    del original

    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        import torch

        features, masks = ctx.saved_tensors
        grad_input, grad_masks = torch.zeros_like(features), torch.zeros_like(masks)
        ext().carafe_naive_backward(grad_output.contiguous(), features, masks, grad_input, grad_masks,
                                    kernel_size=ctx.kernel_size, group_size=ctx.group_size,
                                    scale_factor=ctx.scale_factor)
        return grad_input, grad_masks, None, None, None

    return backward


# (owner class or None for a module function, attribute, replacement maker) per mmcv.ops submodule
WRAPPERS: dict[str, tuple[tuple[str | None, str, Maker], ...]] = {
    "mmcv.ops.furthest_point_sample": (("FurthestPointSampling", "forward", _fps_forward),),
    "mmcv.ops.group_points": (("GroupingOperation", "forward", _grouping_forward),
                              ("GroupingOperation", "backward", _grouping_backward)),
    "mmcv.ops.three_interpolate": (("ThreeInterpolate", "forward", _interpolate_forward),
                                   ("ThreeInterpolate", "backward", _interpolate_backward)),
    "mmcv.ops.knn": (("KNN", "forward", _knn_forward),),
    "mmcv.ops.points_in_boxes": ((None, "points_in_boxes_part", _points_in_boxes_part),
                                 (None, "points_in_boxes_all", _points_in_boxes_all)),
    "mmcv.ops.points_in_polygons": ((None, "points_in_polygons", _points_in_polygons),),
    "mmcv.ops.carafe": (("CARAFENaiveFunction", "backward", _carafe_naive_backward),),
}

_PATCHED: dict[str, list[str]] = {}


def _serves(module: types.ModuleType) -> bool:
    return bool(getattr(getattr(module, "ext_module", None), "__detlight_ops__", False))


def apply_cpu_wrappers(module: types.ModuleType) -> list[str]:
    """Swap in the device-agnostic wrappers of one ``mmcv.ops`` submodule; idempotent.

    Nothing happens unless the module is listed in :data:`WRAPPERS` and its ``ext_module`` is detlight's
    ``mmcv._ext``. A listed class or function missing from the module (another mmcv version) is skipped.

    Returns:
        The attributes replaced by this call (``"KNN.forward"``, ``"points_in_boxes_part"``, ...).
    """
    entries = WRAPPERS.get(module.__name__, ())
    if not entries or not _serves(module):
        return []

    def ext() -> Any:
        return module.ext_module  # type: ignore[attr-defined]

    done: list[str] = []
    for owner_name, attr, make in entries:
        owner: Any = module if owner_name is None else getattr(module, owner_name, None)
        original = getattr(owner, attr, None) if owner is not None else None
        if original is None or getattr(original, MARK, False):
            continue
        replacement = make(ext, original)
        setattr(replacement, MARK, True)
        replacement.__detlight_original__ = original  # type: ignore[attr-defined]
        qualname = attr if owner_name is None else f"{owner_name}.{attr}"
        replacement.__qualname__ = qualname
        replacement.__module__ = module.__name__
        if owner_name is None:
            setattr(module, attr, replacement)
            parent = sys.modules.get(module.__name__.rpartition(".")[0])
            if parent is not None and getattr(parent, attr, None) is original:
                setattr(parent, attr, replacement)  # ``mmcv.ops`` imported the name before this call
        else:
            setattr(owner, attr, staticmethod(replacement))
        done.append(qualname)
    record = _PATCHED.setdefault(module.__name__, [])
    record.extend(q for q in done if q not in record)
    return done


def patched_wrappers() -> dict[str, tuple[str, ...]]:
    """``{module: (replaced attributes, ...)}`` for every wrapper replaced in this process."""
    return {name: tuple(attrs) for name, attrs in _PATCHED.items() if attrs}


class _PatchingLoader(importlib.abc.Loader):
    """Runs the module with Python's own loader, then :func:`apply_cpu_wrappers`; hands the loader back after."""

    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        module.__loader__ = self.inner
        if module.__spec__ is not None:
            module.__spec__.loader = self.inner
        self.inner.exec_module(module)
        apply_cpu_wrappers(module)

    def __getattr__(self, name: str) -> Any:  # get_source & co. for tracebacks while the module runs
        return getattr(self.inner, name)


class _WrapperFinder(importlib.abc.MetaPathFinder):
    """Answers for the :data:`WRAPPERS` modules only: their real spec, with a loader that patches after running."""

    detlight_cpu_wrappers = True

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None,
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in WRAPPERS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _PatchingLoader(spec.loader)
        return spec


_FINDER = _WrapperFinder()


def install_cpu_wrappers() -> None:
    """Patch the listed wrappers when their modules are imported (and any already imported); idempotent.

    :func:`detlight.openmmlab.install_ops` calls this once it serves ``mmcv._ext``; it does not import torch or mmcv.
    """
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    for name in WRAPPERS:
        loaded = sys.modules.get(name)
        if loaded is not None:
            apply_cpu_wrappers(loaded)


def uninstall_cpu_wrappers() -> None:
    """Remove the import finder (modules already patched keep their replacements, which need detlight's ``_ext``)."""
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
