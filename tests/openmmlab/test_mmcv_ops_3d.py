"""mmcv's rotated / 3D ops served by detlight.openmmlab, called through mmcv.ops' own wrappers, on CPU.

The expected values are those of mmcv v1.7.2's op tests (``tests/test_ops/test_*.py``; numbers in
``_mmcv_values_3d.py`` and ``data/mmcv_3d_op_cases.npz``). Upstream runs most of them on CUDA only; here every case
runs on CPU tensors against the same numbers. The mmcv wrappers that allocate with ``torch.cuda.FloatTensor`` /
``IntTensor`` or ask ``torch.cuda.current_device()`` run through detlight's device-agnostic replacements
(:mod:`detlight.openmmlab.cpu_wrappers`); the ``no_cuda`` fixture makes any CUDA constructor or device query fail
the test, and the ``*_cpu_wrapper`` tests compare each replaced wrapper with the direct ``mmcv._ext`` call.

The end-to-end tests build mmdet3d's PointPillars (KITTI config, smaller point-cloud range) and VoteNet (SUN RGB-D
config, fewer sampled points) and run a training step with backward and ``simple_test`` on CPU, through the served
ops only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import _mmcv_values_3d as V
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.openmmlab

DATA = Path(__file__).parent / "data" / "mmcv_3d_op_cases.npz"


@pytest.fixture(scope="module")
def ops() -> Any:
    """``mmcv.ops`` with detlight serving ``mmcv._ext``."""
    pytest.importorskip("mmcv")
    import detlight.openmmlab

    detlight.openmmlab.install_ops()
    import mmcv.ops

    ext = __import__("mmcv._ext", fromlist=["_"])
    assert getattr(ext, "__detlight_ops__", False), "mmcv._ext is not detlight's provider"
    return mmcv.ops


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail on any CUDA constructor, device query or ``.cuda()``: the wrappers must run on CPU by themselves."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a CUDA constructor / device query was called on the CPU path")

    for name in ("FloatTensor", "IntTensor", "current_device", "set_device"):
        monkeypatch.setattr(torch.cuda, name, refuse)
    monkeypatch.setattr(torch.Tensor, "cuda", refuse)


def t(x: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.tensor(x, dtype=dtype)


# ----------------------------------------------------------------------------------------------- nms_rotated
@pytest.mark.parametrize("with_labels", [False, True], ids=["nms_rotated", "ml_nms_rotated"])
def test_nms_rotated(ops: Any, with_labels: bool) -> None:
    boxes = t(V.NMS_BOXES)
    labels = t(V.NMS_LABELS) if with_labels else None
    dets, keep = ops.nms_rotated(boxes[:, :5], boxes[:, -1], 0.5, labels)
    assert np.allclose(dets[:, :5].numpy(), V.NMS_EXPECT_DETS)
    assert keep.tolist() == V.NMS_EXPECT_KEEP
    flipped = boxes.clone()
    flipped[:, -2] *= -1  # counter-clockwise angles
    dets, keep = ops.nms_rotated(flipped[:, :5], flipped[:, -1], 0.5, labels, clockwise=False)
    dets[:, -2] *= -1
    assert np.allclose(dets[:, :5].numpy(), V.NMS_EXPECT_DETS)
    assert keep.tolist() == V.NMS_EXPECT_KEEP


@pytest.mark.parametrize("agnostic", [True, False])
def test_batched_nms_rotated(ops: Any, agnostic: bool) -> None:
    boxes = t(V.NMS_BOXES)
    dets, keep = ops.batched_nms(boxes[:, :5], boxes[:, -1], t(V.NMS_LABELS), dict(type="nms_rotated",
                                 iou_threshold=0.5), class_agnostic=agnostic)
    want_dets = V.NMS_EXPECT_DETS if agnostic else V.BATCHED_EXPECT_DETS
    want_keep = V.NMS_EXPECT_KEEP if agnostic else V.BATCHED_EXPECT_KEEP
    assert np.allclose(dets[:, :5].numpy(), want_dets)
    assert keep.tolist() == want_keep


# ------------------------------------------------------------------------------------------- box_iou_rotated
@pytest.mark.parametrize("mode", ["iou", "iof"])
@pytest.mark.parametrize("run", ["cpu_test", "cuda_test_on_cpu"])
def test_box_iou_rotated(ops: Any, mode: str, run: str) -> None:
    del run  # upstream's CPU and CUDA tests check the same numbers
    b1, b2 = t(V.ROT_BOXES1), t(V.ROT_BOXES2)
    full = V.ROT_EXPECT_IOU if mode == "iou" else V.ROT_EXPECT_IOF
    aligned = V.ROT_EXPECT_IOU_ALIGNED if mode == "iou" else V.ROT_EXPECT_IOF_ALIGNED
    assert np.allclose(ops.box_iou_rotated(b1, b2, mode=mode).numpy(), full, atol=1e-4)
    assert np.allclose(ops.box_iou_rotated(b1, b2, mode=mode, aligned=True).numpy(), aligned, atol=1e-4)
    b1[:, -1] *= -1
    b2[:, -1] *= -1
    assert np.allclose(ops.box_iou_rotated(b1, b2, mode=mode, clockwise=False).numpy(), full, atol=1e-4)
    assert np.allclose(ops.box_iou_rotated(b1, b2, mode=mode, aligned=True, clockwise=False).numpy(), aligned,
                       atol=1e-4)


# ------------------------------------------------------------------------------------------------------ iou3d
def _bev_boxes2() -> torch.Tensor:
    return t([[1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 0.0], [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, math.pi / 2],
              [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, math.pi / 4]])


def test_boxes_overlap_bev(ops: Any) -> None:
    octagon = (8 + 8 * 2 ** 0.5) / (3 + 2 * 2 ** 0.5)
    want = np.array([[4.0, 4.0, octagon], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    b1, b2 = t(V.BEV_BOXES1), _bev_boxes2()
    assert np.allclose(ops.boxes_overlap_bev(b1, b2).numpy(), want, atol=1e-4)
    many = b2.repeat_interleave(555, 0)
    assert np.allclose(ops.boxes_overlap_bev(b1, many).numpy(), want.repeat(555, 1), atol=1e-4)


def test_boxes_iou3d(ops: Any) -> None:
    want = [[1.0, 1.0, 1.0 / 2 ** 0.5], [1.0 / 15, 1.0 / 15, 1.0 / 15], [0.0, 0.0, 0.0]]
    assert np.allclose(ops.boxes_iou3d(t(V.BEV_BOXES1), _bev_boxes2()).numpy(), want, atol=1e-4)


@pytest.mark.parametrize("normal,many_kept", [(False, 176), (True, 148)], ids=["nms3d", "nms3d_normal"])
def test_nms3d(ops: Any, normal: bool, many_kept: int) -> None:
    fn = ops.nms3d_normal if normal else ops.nms3d
    inds = fn(t(V.NMS3D_BOXES), t(V.NMS3D_SCORES), iou_threshold=0.3)
    assert inds.tolist() == V.NMS3D_EXPECT
    rng = np.random.RandomState(42)  # upstream: np.random.seed(42); np.random.rand(...)
    boxes = torch.from_numpy(rng.rand(555, 7).astype(np.float32))
    scores = torch.from_numpy(rng.rand(555).astype(np.float32))
    assert len(fn(boxes, scores, iou_threshold=0.3)) == many_kept


# ------------------------------------------------------------------------------------------------ voxelize
@pytest.fixture(scope="module")
def voxel_case() -> dict[str, np.ndarray]:
    with np.load(DATA) as z:
        return {k: z[k] for k in z.files}


def test_voxelization(ops: Any, voxel_case: dict[str, np.ndarray]) -> None:
    pts = torch.from_numpy(voxel_case["voxel_points"])
    slots = voxel_case["voxel_slot_point"]
    want_vox = np.zeros((slots.shape[0], 1000, 4), dtype=np.float32)
    want_vox[:, : slots.shape[1]] = np.where((slots >= 0)[..., None], voxel_case["voxel_points"][slots.clip(0)], 0)
    hard = ops.Voxelization([0.5, 0.5, 0.5], [0, -40, -3, 70.4, 40, 1], 1000)
    voxels, coors, num = hard(pts)
    assert np.array_equal(voxels.numpy(), want_vox)
    assert np.array_equal(coors.numpy(), voxel_case["voxel_coors"])
    assert np.array_equal(num.numpy(), voxel_case["voxel_num_points"])
    dyn = ops.Voxelization([0.5, 0.5, 0.5], [0, -40, -3, 70.4, 40, 1], -1)
    point_coors = dyn(pts).numpy()
    for i, c in enumerate(voxel_case["voxel_coors"]):
        inside = (point_coors == c).all(1)
        n = int(inside.sum())
        assert n == voxel_case["voxel_num_points"][i] > 0
        assert np.array_equal(pts.numpy()[inside], want_vox[i, :n])


def test_voxelization_nondeterministic_flag(ops: Any, voxel_case: dict[str, np.ndarray]) -> None:
    """Upstream's CUDA-only properties of ``deterministic=False`` (here the same deterministic kernel)."""
    pts = torch.from_numpy(voxel_case["voxel_points"])
    dyn = ops.Voxelization([0.5, 0.5, 0.5], [0, -40, -3, 70.4, 40, 1], -1)
    hard = ops.Voxelization([0.5, 0.5, 0.5], [0, -40, -3, 70.4, 40, 1], 10, 50, deterministic=False)
    voxels, coors, num = hard(pts)
    coors_all = dyn(pts).tolist()
    coor_set = {tuple(c) for c in coors.tolist()}
    assert len(coor_set) == len(coors) and coor_set <= {tuple(c) for c in coors_all}
    by_voxel: dict[tuple[int, ...], set[tuple[float, ...]]] = {}
    for c, p in zip(coors_all, pts.tolist()):
        by_voxel.setdefault(tuple(c), set()).add(tuple(p))
    for c, ps, n in zip(coors.tolist(), voxels.tolist(), num.tolist()):
        got = {tuple(p) for p in ps[:n]}
        assert len(got) == n
        if n < 10:
            assert got == by_voxel[tuple(c)]
            assert all(max(p) == min(p) == 0 for p in ps[n:])
        else:
            assert got <= by_voxel[tuple(c)]
    sub = pts[:50]
    valid = dyn(sub).ge(0).all(-1)
    sub = sub[valid]
    _, coors, _ = hard(sub)
    assert len({tuple(c) for c in coors.tolist()}) == len(coors) == len({tuple(c) for c in dyn(sub).tolist()})


# ------------------------------------------------------------------------------------------- scatter_points
def _voxel_reference(feats: torch.Tensor, coors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Sorted valid voxel rows and each one's mean / max, with numpy (lexsort + reduceat)."""
    c, f = coors.numpy(), feats.numpy().astype(np.float64)
    ok = c.min(1) >= 0
    c, f = c[ok], f[ok]
    order = np.lexsort(c.T[::-1])
    c, f = c[order], f[order]
    starts = np.flatnonzero(np.r_[True, (np.diff(c, axis=0) != 0).any(1)])
    counts = np.diff(np.r_[starts, len(c)])
    mean = np.add.reduceat(f, starts, axis=0) / counts[:, None]
    mx = np.maximum.reduceat(f, starts, axis=0)
    return torch.from_numpy(c[starts]), torch.from_numpy(mean).float(), torch.from_numpy(mx).float()


def test_dynamic_scatter(ops: Any) -> None:
    """Upstream's cases (200k points there, 5k here; gradcheck on 50 points instead of 100; same value ranges)."""
    gen = torch.Generator().manual_seed(0)
    dsmean = ops.DynamicScatter([0.32, 0.32, 6], [-74.88, -74.88, -2, 74.88, 74.88, 4], True)
    dsmax = ops.DynamicScatter([0.32, 0.32, 6], [-74.88, -74.88, -2, 74.88, 74.88, 4], False)
    empty = torch.empty((0, 3)).requires_grad_()
    empty_coors = torch.empty((0, 3), dtype=torch.int32)
    for ds in (dsmean, dsmax):
        out, out_coors = ds(empty, empty_coors)
        out.sum().backward()
        assert out.shape == empty.shape and out_coors.shape == empty_coors.shape
    feats = (torch.rand((5000, 3), generator=gen) * 100 - 50).requires_grad_()
    invalid = torch.full((5000, 3), -1, dtype=torch.int32)
    for ds in (dsmean, dsmax):
        out, _ = ds(feats, invalid)
        out.sum().backward()
        assert (feats.grad == 0).all()
    for low in (-1, 0):
        feats = torch.rand((5000, 3), generator=gen) * 100 - 50
        coors = torch.randint(low, 20, (5000, 3), generator=gen, dtype=torch.int32)
        keys, ref_mean, ref_max = _voxel_reference(feats, coors)
        for ds, ref in ((dsmean, ref_mean), (dsmax, ref_max)):
            out, out_coors = ds(feats, coors)
            seq = (out_coors[:, 0] * 400 + out_coors[:, 1] * 20 + out_coors[:, 2]).argsort()
            assert (out_coors[seq] == keys).all()
            assert torch.allclose(out[seq], ref, atol=1e-2, rtol=1e-5)
    feats = (torch.rand((50, 4), generator=gen) * 100 - 50).requires_grad_()
    coors = torch.randint(-1, 3, (50, 3), generator=gen, dtype=torch.int32)
    assert torch.autograd.gradcheck(dsmean, (feats, coors), eps=1e-2, atol=1e-2, rtol=1e-5)
    assert torch.autograd.gradcheck(dsmax, (feats, coors), eps=1e-2, atol=1e-2, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ ball_query
def test_ball_query(ops: Any) -> None:
    xyz, centres = t(V.BQ_XYZ), t(V.BQ_NEW_XYZ)
    assert ops.ball_query(0, 0.2, 5, xyz, centres).tolist() == V.BQ_EXPECT
    assert ops.ball_query(0.2, 0.4, 5, xyz, centres).tolist() == V.BQ_EXPECT_DILATED


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_stack_ball_query(ops: Any, dtype: torch.dtype) -> None:
    xyz, centres = t(V.BQ_XYZ, dtype).reshape(-1, 3), t(V.BQ_NEW_XYZ, dtype).reshape(-1, 3)
    idx = ops.ball_query(0, 0.2, 5, xyz, centres, t([10, 10], torch.int32), t([5, 5], torch.int32))
    assert idx.tolist() == [row for batch in V.BQ_EXPECT for row in batch]


# ------------------------------------------------------------------------------------- furthest point sample
@pytest.mark.usefixtures("no_cuda")
def test_furthest_point_sample(ops: Any) -> None:
    assert ops.furthest_point_sample(t(V.FPS_XYZ), 3).tolist() == V.FPS_EXPECT


@pytest.mark.usefixtures("no_cuda")
def test_furthest_point_sample_with_dist(ops: Any, voxel_case: dict[str, np.ndarray]) -> None:
    xyz = t(V.FPS_XYZ)
    square = ((xyz.unsqueeze(1) - xyz.unsqueeze(2)) ** 2).sum(-1)
    assert ops.furthest_point_sample_with_dist(square, 3).tolist() == V.FPS_EXPECT
    dist = torch.from_numpy(voxel_case["fps_dist"])
    assert ops.furthest_point_sample_with_dist(dist, 16).tolist() == voxel_case["fps_idx"].tolist()


# --------------------------------------------------------------------------------------- gather / group points
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gather_points(ops: Any, dtype: torch.dtype) -> None:
    out = ops.gather_points(t(V.GATHER_FEATURES, dtype), t(V.GATHER_IDX, torch.int32))
    assert torch.allclose(out, t(V.GATHER_EXPECT, dtype))


@pytest.mark.usefixtures("no_cuda")
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_grouping_points(ops: Any, dtype: torch.dtype) -> None:
    out = ops.grouping_operation(t(V.GROUP_FEATURES, dtype), t(V.GROUP_IDX, torch.int32))
    assert out.dtype == torch.float32  # mmcv's wrapper allocates float32 whatever the input dtype
    assert torch.allclose(out.to(dtype), t(V.GROUP_EXPECT, dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_stack_grouping_points(ops: Any, dtype: torch.dtype) -> None:
    out = ops.grouping_operation(t(V.STACK_GROUP_FEATURES, dtype), t(V.STACK_GROUP_IDX, torch.int32),
                                 t([3, 3], torch.int32), t([6, 6], torch.int32))
    assert torch.allclose(out, t(V.STACK_GROUP_EXPECT, dtype))


# --------------------------------------------------------------------------------- three_nn / interpolate / knn
@pytest.mark.parametrize("case", ["float", "half_case"])
def test_three_nn(ops: Any, case: str) -> None:
    del case  # upstream's half case also runs in float32
    dist, idx = ops.three_nn(t(V.NN_UNKNOWN), t(V.NN_KNOWN))
    assert torch.allclose(dist, t(V.NN_EXPECT_DIST), atol=1e-4)
    assert idx.tolist() == V.NN_EXPECT_IDX


@pytest.mark.usefixtures("no_cuda")
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_three_interpolate(ops: Any, dtype: torch.dtype) -> None:
    out = ops.three_interpolate(t(V.INTERP_FEATURES, dtype), t(V.INTERP_IDX, torch.int32),
                                t(V.INTERP_WEIGHT, dtype))
    assert torch.allclose(out.to(dtype), t(V.INTERP_EXPECT, dtype), 1e-3, 1e-4)


@pytest.mark.usefixtures("no_cuda")
def test_knn(ops: Any) -> None:
    xyz, centres = t(V.KNN_XYZ), t(V.KNN_NEW_XYZ)

    def expected(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d = ((a.unsqueeze(2) - b.unsqueeze(1)) ** 2).sum(-1)
        return d.topk(k=5, dim=2, largest=False)[1].transpose(2, 1)

    assert torch.equal(ops.knn(5, xyz, centres).long(), expected(centres, xyz))
    assert torch.equal(ops.knn(5, xyz.transpose(1, 2).contiguous(), centres.transpose(1, 2).contiguous(), True).long(),
                       expected(centres, xyz))
    assert torch.equal(ops.knn(5, xyz, xyz).long(), expected(xyz, xyz))


# ----------------------------------------------------------------------------------- roi pools, points_in_boxes
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_roipoint_pool3d(ops: Any, dtype: torch.dtype) -> None:
    pts = t(V.PTS15, dtype).unsqueeze(0)
    feat, empty = ops.RoIPointPool3d(num_sampled_points=4)(pts, pts.clone(), t(V.PIB_BOXES, dtype))
    assert torch.allclose(feat, t(V.ROIPOINT_EXPECT, dtype))
    assert empty.tolist() == [[0, 0]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_roiaware_pool3d(ops: Any, dtype: torch.dtype) -> None:
    rois = t([[1.0, 2.0, 3.0, 5.0, 4.0, 6.0, -0.3 - math.pi / 2],
              [-10.0, 23.0, 16.0, 20.0, 10.0, 20.0, -0.5 - math.pi / 2]], dtype)
    pts = t(V.PTS15, dtype)
    for mode, total in (("max", 51.100), ("avg", 49.750)):
        pool = ops.RoIAwarePool3d(out_size=4, max_pts_per_voxel=128, mode=mode)
        out = pool(rois=rois, pts=pts, pts_feature=pts.clone())
        assert out.shape == (2, 4, 4, 4, 3)
        assert torch.allclose(out.sum(), torch.tensor(total, dtype=dtype), 1e-3)


@pytest.mark.usefixtures("no_cuda")
def test_points_in_boxes_part(ops: Any) -> None:
    idx = ops.points_in_boxes_part(points=t(V.PIB_PART_PTS), boxes=t(V.PIB_PART_BOXES))
    assert idx.shape == (2, 8) and idx.tolist() == V.PIB_PART_EXPECT
    idx = ops.points_in_boxes_part(points=t(V.PIB_ROT_PTS), boxes=t(V.PIB_ROT_BOXES))
    assert idx.tolist() == V.PIB_ROT_PART_EXPECT


def test_points_in_boxes_cpu(ops: Any) -> None:
    idx = ops.points_in_boxes_cpu(points=t(V.PTS15).unsqueeze(0), boxes=t(V.PIB_BOXES))
    assert idx.shape == (1, 15, 2) and idx.tolist() == V.PIB_ALL_EXPECT
    idx = ops.points_in_boxes_cpu(points=t(V.PIB_ROT_PTS), boxes=t(V.PIB_ROT_BOXES))
    assert idx.tolist() == V.PIB_ROT_ALL_EXPECT


@pytest.mark.usefixtures("no_cuda")
def test_points_in_boxes_all(ops: Any) -> None:
    idx = ops.points_in_boxes_all(points=t(V.PTS15).unsqueeze(0), boxes=t(V.PIB_BOXES))
    assert idx.shape == (1, 15, 2) and idx.tolist() == V.PIB_ALL_EXPECT


# ------------------------------------------------------------------------- CPU wrappers vs the direct _ext call
@pytest.fixture(scope="module")
def ext(ops: Any) -> Any:
    return __import__("mmcv._ext", fromlist=["_"])


def _cloud(seed: int, b: int = 2, n: int = 64) -> torch.Tensor:
    return torch.rand(b, n, 3, generator=torch.Generator().manual_seed(seed))


def test_every_listed_wrapper_is_replaced(ops: Any) -> None:
    import sys

    from detlight.openmmlab.cpu_wrappers import WRAPPERS, patched_wrappers

    for mod, entries in WRAPPERS.items():  # mmcv 1.7.0 has every listed class / function: none is skipped
        module = sys.modules[mod]
        for owner, attr, _ in entries:
            replaced = getattr(module if owner is None else getattr(module, owner), attr)
            assert getattr(replaced, "__detlight_cpu_wrapper__", False), f"{mod}: {owner}.{attr}"
            assert (attr if owner is None else f"{owner}.{attr}") in patched_wrappers()[mod]
    knn_mod, pib_mod = sys.modules["mmcv.ops.knn"], sys.modules["mmcv.ops.points_in_boxes"]  # names shadowed

    assert getattr(knn_mod.KNN.forward, "__detlight_cpu_wrapper__", False)
    assert ops.points_in_boxes_part is pib_mod.points_in_boxes_part
    assert getattr(ops.points_in_boxes_part, "__detlight_cpu_wrapper__", False)
    assert type(knn_mod.__loader__).__name__ == "SourceFileLoader"  # Python's loader handed back after patching


@pytest.mark.usefixtures("no_cuda")
def test_furthest_point_sample_cpu_wrapper(ops: Any, ext: Any) -> None:
    xyz = _cloud(0)
    want = torch.zeros(2, 10, dtype=torch.int32)
    ext.furthest_point_sampling_forward(xyz, torch.full((2, 64), 1e10), want, b=2, n=64, m=10)
    got = ops.furthest_point_sample(xyz, 10)
    assert got.dtype == torch.int32 and got.device == xyz.device and torch.equal(got, want)
    assert len(set(got[0].tolist())) == 10 and got[:, 0].tolist() == [0, 0]
    with pytest.raises(AssertionError, match="contiguous"):
        ops.furthest_point_sample(xyz.transpose(1, 2).contiguous().transpose(1, 2), 4)


@pytest.mark.usefixtures("no_cuda")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_grouping_operation_cpu_wrapper(ops: Any, ext: Any, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(2, 5, 40, generator=gen, dtype=dtype).requires_grad_()
    idx = torch.randint(0, 40, (2, 6, 4), generator=gen, dtype=torch.int32)
    want = torch.zeros(2, 5, 6, 4)
    ext.group_points_forward(feats.detach(), idx, want, b=2, c=5, n=40, npoints=6, nsample=4)
    got = ops.grouping_operation(feats, idx)
    assert got.dtype == torch.float32 and torch.equal(got, want)
    assert torch.equal(want, feats.detach().float().gather(2, idx.long().view(2, 1, 24).expand(-1, 5, -1))
                       .view(2, 5, 6, 4))
    grad_out = torch.randn(2, 5, 6, 4, generator=gen)
    got.backward(grad_out)
    want_grad = torch.zeros(2, 5, 40)
    ext.group_points_backward(grad_out, idx, want_grad, b=2, c=5, n=40, npoints=6, nsample=4)
    assert feats.grad is not None and feats.grad.dtype == dtype
    assert torch.equal(feats.grad, want_grad.to(dtype))
    assert want_grad.abs().sum() > 0
    # stacked form: mmcv's own forward, the replaced backward
    sfeats = torch.randn(7, 3, generator=gen, dtype=dtype).requires_grad_()
    sidx = torch.tensor([[0, 1, 2], [3, 3, 0], [1, 0, 0]], dtype=torch.int32)
    fcnt, icnt = torch.tensor([4, 3], dtype=torch.int32), torch.tensor([2, 1], dtype=torch.int32)
    sout = ops.grouping_operation(sfeats, sidx, fcnt, icnt)
    sgrad_out = torch.randn(3, 3, 3, generator=gen, dtype=dtype)
    sout.backward(sgrad_out)
    want_sgrad = torch.zeros(7, 3)
    ext.stack_group_points_backward(sgrad_out, sidx, icnt, fcnt, want_sgrad, b=2, c=3, m=3, n=7, nsample=3)
    assert sfeats.grad is not None and torch.equal(sfeats.grad, want_sgrad.to(dtype))


@pytest.mark.usefixtures("no_cuda")
def test_three_interpolate_cpu_wrapper(ops: Any, ext: Any) -> None:
    gen = torch.Generator().manual_seed(2)
    feats = torch.randn(2, 4, 12, generator=gen).requires_grad_()
    idx = torch.randint(0, 12, (2, 9, 3), generator=gen, dtype=torch.int32)
    weight = torch.rand(2, 9, 3, generator=gen)
    want = torch.zeros(2, 4, 9)
    ext.three_interpolate_forward(feats.detach(), idx, weight, want, b=2, c=4, m=12, n=9)
    got = ops.three_interpolate(feats, idx, weight)
    assert got.dtype == torch.float32 and torch.equal(got, want)
    picked = feats.detach().gather(2, idx.long().view(2, 1, 27).expand(-1, 4, -1)).view(2, 4, 9, 3)
    assert torch.allclose(got, (picked * weight.unsqueeze(1)).sum(-1))
    grad_out = torch.randn(2, 4, 9, generator=gen)
    got.backward(grad_out)
    want_grad = torch.zeros(2, 4, 12)
    ext.three_interpolate_backward(grad_out, idx, weight, want_grad, b=2, c=4, n=9, m=12)
    assert feats.grad is not None and torch.equal(feats.grad, want_grad)


@pytest.mark.usefixtures("no_cuda")
def test_knn_cpu_wrapper(ops: Any, ext: Any) -> None:
    xyz, centres = _cloud(3), _cloud(4, n=10)
    idx, dist2 = torch.zeros(2, 10, 5, dtype=torch.int32), torch.zeros(2, 10, 5)
    ext.knn_forward(xyz, centres, idx, dist2, b=2, n=64, m=10, nsample=5)
    got = ops.knn(5, xyz, centres)
    assert got.dtype == torch.int32 and got.shape == (2, 5, 10) and torch.equal(got, idx.transpose(1, 2))
    assert torch.equal(ops.knn(5, xyz.transpose(1, 2).contiguous(), centres.transpose(1, 2).contiguous(), True), got)
    with pytest.raises(AssertionError, match="range"):
        ops.knn(100, xyz, centres)


@pytest.mark.usefixtures("no_cuda")
def test_points_in_boxes_cpu_wrappers(ops: Any, ext: Any) -> None:
    pts = _cloud(5, n=200) * 4 - 2
    boxes = torch.tensor([[[0.0, 0.0, -1.0, 2.0, 1.0, 2.0, 0.3], [0.5, 0.5, -1.5, 1.0, 3.0, 2.5, -0.7]]] * 2)
    part = torch.full((2, 200), -1, dtype=torch.int32)
    ext.points_in_boxes_part_forward(boxes, pts, part)
    every = torch.zeros(2, 200, 2, dtype=torch.int32)
    ext.points_in_boxes_all_forward(boxes, pts, every)
    got_part, got_all = ops.points_in_boxes_part(pts, boxes), ops.points_in_boxes_all(pts, boxes)
    assert got_part.dtype == got_all.dtype == torch.int32
    assert torch.equal(got_part, part) and torch.equal(got_all, every)
    assert 0 < int((got_part >= 0).sum()) < 400 and int(got_all.sum()) >= int((got_part >= 0).sum())
    assert torch.equal(got_all, ops.points_in_boxes_cpu(pts, boxes))
    with pytest.raises(AssertionError, match="batch size"):
        ops.points_in_boxes_all(pts[:1], boxes)


@pytest.mark.usefixtures("no_cuda")
def test_points_in_polygons_cpu_wrapper(ops: Any) -> None:
    from detlight.openmmlab import OpNotProvidedError, provided_ops

    pts = t([[0.5, 0.5], [3.0, 3.0]])
    square = t([[0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0]])
    if "points_in_polygons_forward" not in provided_ops():
        with pytest.raises(OpNotProvidedError, match="points_in_polygons_forward"):  # not a "no NVIDIA driver"
            ops.points_in_polygons(pts, square)
        return
    out = ops.points_in_polygons(pts, square)
    assert out.dtype == torch.float32 and out.tolist() == [[1.0], [0.0]]


@pytest.mark.usefixtures("no_cuda")
def test_carafe_naive_backward_cpu_wrapper(ops: Any, ext: Any) -> None:
    from detlight.openmmlab import provided_ops

    if "carafe_naive_backward" not in provided_ops():
        pytest.skip("carafe_naive_* is not served by this detlight build")
    gen = torch.Generator().manual_seed(6)
    feat = torch.randn(1, 4, 3, 3, generator=gen).requires_grad_()
    mask = torch.rand(1, 9 * 2, 6, 6, generator=gen).requires_grad_()
    out = ops.carafe_naive(feat, mask, 3, 2, 2)
    grad_out = torch.randn(out.shape, generator=gen)
    out.backward(grad_out)
    gf, gm = torch.zeros_like(feat), torch.zeros_like(mask)
    ext.carafe_naive_backward(grad_out, feat.detach(), mask.detach(), gf, gm, kernel_size=3, group_size=2,
                              scale_factor=2)
    assert feat.grad is not None and mask.grad is not None
    assert torch.equal(feat.grad, gf) and torch.equal(mask.grad, gm)


# ------------------------------------------------------------------------------------ PointPillars end to end
def test_pointpillars_train_step_and_simple_test(ops: Any) -> None:
    """mmdet3d's KITTI PointPillars (its own config, on a 10.24 m x 10.24 m range) trains one step and tests on CPU."""
    del ops
    import mmcv
    import mmdet3d
    from mmdet3d.core.bbox import LiDARInstance3DBoxes
    from mmdet3d.models import build_model

    cfg_dir = Path(mmdet3d.__file__).parent / ".mim" / "configs"
    cfg = mmcv.Config.fromfile(str(cfg_dir / "pointpillars" / "hv_pointpillars_secfpn_6x8_160e_kitti-3d-3class.py"))
    model_cfg = cfg.model
    pc_range = [0, -5.12, -3, 10.24, 5.12, 1]
    model_cfg.voxel_layer.point_cloud_range = pc_range
    model_cfg.voxel_layer.max_voxels = (2000, 2000)
    model_cfg.voxel_encoder.point_cloud_range = pc_range
    model_cfg.middle_encoder.output_shape = [64, 64]
    for r in model_cfg.bbox_head.anchor_generator.ranges:
        r[0], r[1], r[3], r[4] = pc_range[0], pc_range[1], pc_range[3], pc_range[4]
    model = build_model(model_cfg)
    gen = torch.Generator().manual_seed(0)
    n = 3000
    pts = torch.cat((torch.rand(n, 1, generator=gen) * 10.24, torch.rand(n, 1, generator=gen) * 10.24 - 5.12,
                     torch.rand(n, 1, generator=gen) * 3 - 2.5, torch.rand(n, 1, generator=gen)), 1)
    gt = LiDARInstance3DBoxes(torch.tensor([[6.0, 1.0, -1.6, 3.9, 1.6, 1.56, 0.3],
                                            [3.0, -2.0, -1.5, 0.8, 0.6, 1.73, 1.2]]))
    img_metas = [dict(box_type_3d=LiDARInstance3DBoxes, sample_idx=0)]
    model.train()
    losses = model.forward_train(points=[pts], img_metas=img_metas, gt_bboxes_3d=[gt],
                                 gt_labels_3d=[torch.tensor([2, 0])])
    loss = sum(v if isinstance(v, torch.Tensor) else sum(v) for v in losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    model.eval()
    with torch.no_grad():
        results = model.simple_test([pts], img_metas)
    assert len(results) == 1 and {"boxes_3d", "scores_3d", "labels_3d"} <= set(results[0])
    assert len(results[0]["boxes_3d"]) == len(results[0]["scores_3d"]) <= model_cfg.test_cfg.max_num


# ----------------------------------------------------------------------------------------- VoteNet end to end
@pytest.mark.usefixtures("no_cuda")
def test_votenet_train_step_and_simple_test_on_cpu(ops: Any, ext: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """mmdet3d's SUN RGB-D VoteNet (its config; 256/128/64/32 sampled points instead of 2048/...) on CPU.

    PointNet2SASSG (furthest point sampling, ball query, grouping), feature propagation (three_nn,
    three_interpolate) and the vote head's targets (points_in_boxes_all) run through mmcv.ops' wrappers, forward and
    backward, with no CUDA call.
    """
    import mmcv
    import mmdet3d
    from mmdet3d.core.bbox import DepthInstance3DBoxes
    from mmdet3d.models import build_model

    called: set[str] = set()
    for name in ("furthest_point_sampling_forward", "ball_query_forward", "group_points_forward",
                 "group_points_backward", "gather_points_forward", "three_nn_forward", "three_interpolate_forward",
                 "three_interpolate_backward", "points_in_boxes_all_forward"):
        def spy(*args: Any, _name: str = name, _fn: Any = getattr(ext, name), **kwargs: Any) -> Any:
            called.add(_name)
            return _fn(*args, **kwargs)

        monkeypatch.setattr(ext, name, spy)
    cfg_dir = Path(mmdet3d.__file__).parent / ".mim" / "configs"
    cfg = mmcv.Config.fromfile(str(cfg_dir / "votenet" / "votenet_16x8_sunrgbd-3d-10class.py"))
    model_cfg = cfg.model
    model_cfg.backbone.num_points = (256, 128, 64, 32)
    model_cfg.bbox_head.vote_aggregation_cfg.num_point = 32
    torch.manual_seed(0)
    model = build_model(model_cfg)
    gen = torch.Generator().manual_seed(0)

    def cloud(n: int) -> torch.Tensor:
        xyz = torch.rand(n, 3, generator=gen) * t([4.0, 4.0, 2.0]) - t([2.0, 2.0, 0.0])
        return torch.cat((xyz, torch.rand(n, 1, generator=gen)), 1)

    pts = [cloud(1024), cloud(1024)]
    gt = [DepthInstance3DBoxes(t([[0.5, 0.5, 0.0, 1.0, 1.0, 1.0, 0.3], [-1.0, -0.5, 0.0, 0.8, 1.5, 1.2, 1.0]])),
          DepthInstance3DBoxes(t([[0.0, 1.0, 0.0, 1.5, 1.0, 1.0, -0.5]]))]
    img_metas = [dict(box_type_3d=DepthInstance3DBoxes)] * 2
    model.train()
    losses = model.forward_train(points=pts, img_metas=img_metas, gt_bboxes_3d=gt,
                                 gt_labels_3d=[torch.tensor([0, 3]), torch.tensor([5])])
    assert {"vote_loss", "objectness_loss", "center_loss", "size_res_loss"} <= set(losses)
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    sa1 = model.backbone.SA_modules[0].mlps[0].layer0.conv.weight
    assert sa1.grad is not None and sa1.grad.abs().sum() > 0  # gradients flow back through grouping
    model.eval()
    with torch.no_grad():
        results = model.simple_test(pts, img_metas)
    assert len(results) == 2 and {"boxes_3d", "scores_3d", "labels_3d"} <= set(results[0])
    assert called == {"furthest_point_sampling_forward", "ball_query_forward", "group_points_forward",
                      "group_points_backward", "gather_points_forward", "three_nn_forward",
                      "three_interpolate_forward", "three_interpolate_backward", "points_in_boxes_all_forward"}
