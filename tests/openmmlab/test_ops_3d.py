"""detlight.openmmlab's rotated / 3D op families against naive references (no mmcv needed).

Each op is called exactly as mmcv's wrapper calls ``mmcv._ext.<name>`` (outputs filled in place) and compared with a
plain Python loop written from mmcv's documented semantics, on small inputs in float64; backward ops are checked with
``torch.autograd.gradcheck`` through a thin autograd wrapper around the forward/backward pair.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from detlight.openmmlab.ops import ball_query as bq
from detlight.openmmlab.ops import box_iou_rotated as bir
from detlight.openmmlab.ops import collect, iou3d
from detlight.openmmlab.ops import furthest_point_sample as fps
from detlight.openmmlab.ops import gather_points as gp
from detlight.openmmlab.ops import group_points as grp
from detlight.openmmlab.ops import knn as knn_mod
from detlight.openmmlab.ops import nms_rotated as nr
from detlight.openmmlab.ops import points_in_boxes as pib
from detlight.openmmlab.ops import roiaware_pool3d as rap
from detlight.openmmlab.ops import roipoint_pool3d as rpp
from detlight.openmmlab.ops import scatter_points as sp
from detlight.openmmlab.ops import three_interpolate as ti
from detlight.openmmlab.ops import three_nn as tn
from detlight.openmmlab.ops import voxelize as vox
from detlight.openmmlab.ops._rotated import greedy_nms_keep

D = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------ naive geometry
def corners(b: list[float]) -> list[tuple[float, float]]:
    """Rectangle corners: (±w/2, ±h/2) rotated counter-clockwise by the angle, then shifted to the centre."""
    cx, cy, w, h, a = b
    c, s = math.cos(a), math.sin(a)
    return [(cx + c * x - s * y, cy + s * x + c * y) for x, y in ((-w / 2, -h / 2), (w / 2, -h / 2),
                                                                  (w / 2, h / 2), (-w / 2, h / 2))]


def clip_area(p: list[tuple[float, float]], q: list[tuple[float, float]]) -> float:
    """Area of convex polygon ``p`` clipped by convex counter-clockwise polygon ``q`` (Sutherland-Hodgman)."""
    out = p
    for k in range(len(q)):
        a, b = q[k], q[(k + 1) % len(q)]
        side = [(b[0] - a[0]) * (v[1] - a[1]) - (b[1] - a[1]) * (v[0] - a[0]) for v in out]
        nxt = []
        for i in range(len(out)):
            j = (i + 1) % len(out)
            if side[i] >= 0:
                nxt.append(out[i])
            if side[i] * side[j] < 0:
                t = side[i] / (side[i] - side[j])
                nxt.append((out[i][0] + t * (out[j][0] - out[i][0]), out[i][1] + t * (out[j][1] - out[i][1])))
        out = nxt
        if not out:
            return 0.0
    return 0.5 * abs(sum(out[i][0] * out[(i + 1) % len(out)][1] - out[(i + 1) % len(out)][0] * out[i][1]
                         for i in range(len(out))))


def rot_iou(b1: list[float], b2: list[float], iof: bool = False) -> float:
    inter = clip_area(corners(b1), corners(b2))
    base = b1[2] * b1[3] if iof else b1[2] * b1[3] + b2[2] * b2[3] - inter
    return inter / base


def random_rboxes(n: int, seed: int, spread: float = 6.0) -> torch.Tensor:
    g = gen(seed)
    xy = torch.rand(n, 2, generator=g, dtype=D) * spread
    wh = torch.rand(n, 2, generator=g, dtype=D) * 2 + 0.5
    ang = (torch.rand(n, 1, generator=g, dtype=D) - 0.5) * 2 * math.pi
    return torch.cat((xy, wh, ang), 1)


def naive_greedy(n: int, iou: Callable[[int, int], float], thr: float, strict: bool) -> list[int]:
    keep: list[int] = []
    for i in range(n):
        if all(not (iou(k, i) > thr if strict else iou(k, i) >= thr) for k in keep):
            keep.append(i)
    return keep


# ------------------------------------------------------------------------------------------------- registry
def test_every_family_op_is_registered_under_mmcvs_name() -> None:
    names = {"nms_rotated", "box_iou_rotated", "iou3d_boxes_overlap_bev_forward", "iou3d_nms3d_forward",
             "iou3d_nms3d_normal_forward", "points_in_boxes_part_forward", "points_in_boxes_all_forward",
             "points_in_boxes_cpu_forward", "hard_voxelize_forward", "dynamic_voxelize_forward",
             "dynamic_point_to_voxel_forward", "dynamic_point_to_voxel_backward", "ball_query_forward",
             "stack_ball_query_forward", "furthest_point_sampling_forward",
             "furthest_point_sampling_with_dist_forward", "gather_points_forward", "gather_points_backward",
             "group_points_forward", "group_points_backward", "stack_group_points_forward",
             "stack_group_points_backward", "three_nn_forward", "three_interpolate_forward",
             "three_interpolate_backward", "knn_forward", "roipoint_pool3d_forward", "roiaware_pool3d_forward",
             "roiaware_pool3d_backward"}
    table = collect()
    assert names <= set(table)
    assert all(table[n].how == "torch" for n in names)


# --------------------------------------------------------------------------------------------- rotated IoU
@pytest.mark.parametrize("iof", [False, True])
def test_box_iou_rotated_matches_polygon_clipping(iof: bool) -> None:
    b1, b2 = random_rboxes(9, 1), random_rboxes(7, 2)
    b2[0] = b1[0]  # identical boxes
    b2[1] = b1[1].clone()
    b2[1, 4] += math.pi / 2  # a square-ish box turned by 90 degrees
    out = torch.zeros(9 * 7, dtype=D)
    bir.box_iou_rotated(b1, b2, out, mode_flag=int(iof), aligned=False)
    want = [[rot_iou(x, y, iof) for y in b2.tolist()] for x in b1.tolist()]
    assert torch.allclose(out.view(9, 7), torch.tensor(want, dtype=D), atol=1e-9)
    assert out.view(9, 7)[0, 0].item() == pytest.approx(1.0)
    aligned = torch.zeros(7, dtype=D)
    bir.box_iou_rotated(b1[:7], b2, aligned, mode_flag=int(iof), aligned=True)
    assert torch.allclose(aligned, torch.tensor([want[i][i] for i in range(7)], dtype=D), atol=1e-9)


def test_box_iou_rotated_far_from_origin_and_degenerate() -> None:
    dx, dy = 0.5 * math.cos(0.3), 0.5 * math.sin(0.3)  # shifted by 0.5 along the boxes' own x axis
    b = torch.tensor([[1e4, 1e4, 2.0, 1.0, 0.3], [1e4 + dx, 1e4 + dy, 2.0, 1.0, 0.3], [0.0, 0.0, 0.0, 1.0, 0.0]])
    out = torch.zeros(9)
    bir.box_iou_rotated(b, b, out, mode_flag=0, aligned=False)
    m = out.view(3, 3)
    assert m[0, 1].item() == pytest.approx(1.5 / 2.5, abs=1e-3)  # float32 inputs at 1e4 carry ~1e-3
    assert m[2].abs().sum() == 0 and m[:, 2].abs().sum() == 0  # zero-area boxes overlap nothing


def test_box_iou_rotated_rejects_bad_mode() -> None:
    with pytest.raises(ValueError, match="mode_flag"):
        bir.box_iou_rotated(torch.zeros(1, 5), torch.zeros(1, 5), torch.zeros(1), mode_flag=2)


# ------------------------------------------------------------------------------------------------ rotated NMS
@pytest.mark.parametrize("device_rule", ["cpu_ge", "cuda_gt"])
def test_nms_rotated_equals_sequential_greedy(device_rule: str) -> None:
    boxes = random_rboxes(60, 3, spread=5.0)
    scores = torch.rand(60, generator=gen(4), dtype=D)
    order = scores.argsort(descending=True)
    srt = boxes[order]
    keep = nr.nms_rotated(boxes, scores, order, srt, 0.3, False)
    strict = device_rule == "cuda_gt"
    if strict:  # the CUDA rule, called directly
        keep = order[nr.rotated_nms_keep(srt, 0.3, strict=True)]
    lst = srt.tolist()
    want = naive_greedy(60, lambda a, b: rot_iou(lst[a], lst[b]), 0.3, strict)
    assert keep.tolist() == order[want].tolist()
    assert 3 < len(want) < 60  # the case suppresses something and keeps something


def test_nms_rotated_threshold_equality_follows_mmcv_cpu_rule() -> None:
    boxes = torch.tensor([[0.0, 0, 2, 2, 0], [1.0, 0, 2, 2, 0]], dtype=D)  # IoU exactly 1/3
    scores = torch.tensor([0.9, 0.8], dtype=D)
    order = torch.tensor([0, 1])
    assert nr.nms_rotated(boxes, scores, order, boxes, 1 / 3, False).tolist() == [0]  # CPU: IoU >= thr
    assert nr.rotated_nms_keep(boxes, 1 / 3, strict=True).tolist() == [True, True]  # CUDA: IoU > thr


def test_nms_rotated_label_column_is_read_past_like_mmcv() -> None:
    boxes = torch.tensor([[0.0, 0, 2, 2, 0, 0], [0.1, 0, 2, 2, 0, 1]], dtype=D)
    order = torch.tensor([0, 1])
    assert nr.nms_rotated(boxes, torch.tensor([0.9, 0.8], dtype=D), order, boxes, 0.5, True).tolist() == [0]
    with pytest.raises(ValueError, match="nms_rotated"):
        nr.nms_rotated(boxes[:, :4], torch.ones(2), order, boxes[:, :4], 0.5, False)


def test_greedy_keep_resolves_chains_exactly() -> None:
    # 0 suppresses 1, 1 would suppress 2 (but is removed), 2 suppresses 3: greedy keeps 0 and 2
    src, dst = torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3])
    assert greedy_nms_keep(4, src, dst, torch.device("cpu")).tolist() == [True, False, True, False]
    # random suppression graphs against the sequential definition
    g = gen(5)
    for _ in range(5):
        m = torch.triu(torch.rand(40, 40, generator=g) < 0.1, 1)
        s, d = torch.nonzero(m, as_tuple=True)
        want = naive_greedy(40, lambda a, b, m=m: float(m[a, b]), 0.5, True)
        got = torch.nonzero(greedy_nms_keep(40, s, d, torch.device("cpu"))).flatten().tolist()
        assert got == want


# ----------------------------------------------------------------------------------------------------- iou3d
def test_iou3d_overlap_bev_brackets_exact_area() -> None:
    """mmcv's kernel counts corners up to 1e-2 outside the other box: exact <= served <= exact + margin band."""
    a, b = random_rboxes(6, 6, 3.0), random_rboxes(5, 7, 3.0)
    to3d = lambda r: torch.stack((r[:, 0], r[:, 1], torch.zeros(len(r), dtype=D), r[:, 2], r[:, 3],  # noqa: E731
                                  torch.ones(len(r), dtype=D), r[:, 4]), 1)
    out = torch.zeros(6, 5, dtype=D)
    iou3d.iou3d_boxes_overlap_bev_forward(to3d(a), to3d(b), out)
    exact = torch.tensor([[clip_area(corners(x), corners(y)) for y in b.tolist()] for x in a.tolist()], dtype=D)
    band = 0.01 * 2 * (a[:, 2:4].sum(1, keepdim=True) + b[:, 2:4].sum(1)) + 1e-9
    assert (out >= exact - 1e-9).all() and (out <= exact + band).all()
    assert (exact > 0).sum() >= 5


@pytest.mark.parametrize("normal", [False, True])
def test_iou3d_nms_equals_sequential_greedy_over_its_iou(normal: bool) -> None:
    g = gen(8)
    n = 50
    boxes = torch.cat((torch.rand(n, 2, generator=g, dtype=D) * 4, torch.zeros(n, 1, dtype=D),
                       torch.rand(n, 3, generator=g, dtype=D) + 0.5, torch.rand(n, 1, generator=g, dtype=D) * 3), 1)
    keep = torch.zeros(n, dtype=torch.long)
    num = torch.zeros((), dtype=torch.long)
    (iou3d.iou3d_nms3d_normal_forward if normal else iou3d.iou3d_nms3d_forward)(boxes, keep, num, 0.2)
    bev = boxes.clone()
    if normal:
        bev[:, 6] = 0
    ov = torch.zeros(n, n, dtype=D)
    iou3d.iou3d_boxes_overlap_bev_forward(bev, bev, ov)
    area = bev[:, 3] * bev[:, 4]
    iou = ov / (area[:, None] + area[None] - ov).clamp(min=1e-8)
    want = naive_greedy(n, lambda a, b: float(iou[a, b]), 0.2, True)
    assert keep[: int(num)].tolist() == want and 3 < len(want) < n


# -------------------------------------------------------------------------------------------------- voxelize
def naive_voxelize(points: np.ndarray, vs: list[float], rng: list[float], max_points: int, max_voxels: int,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    grid = [round((rng[3 + i] - rng[i]) / vs[i]) for i in range(3)]
    point_coors = np.full((len(points), 3), -1, dtype=np.int32)
    for i, p in enumerate(points):
        c = [math.floor((p[j] - rng[j]) / vs[j]) for j in range(3)]
        if all(0 <= c[j] < grid[j] for j in range(3)):
            point_coors[i] = c[::-1]
    voxels = np.zeros((max_voxels, max_points, points.shape[1]))
    coors = np.zeros((max_voxels, 3), dtype=np.int32)
    num = np.zeros(max_voxels, dtype=np.int32)
    index: dict[tuple[int, ...], int] = {}
    for i, c in enumerate(map(tuple, point_coors)):
        if c[0] == -1:
            continue
        if c not in index:
            if len(index) >= max_voxels:
                continue
            index[c] = len(index)
            coors[index[c]] = c
        v = index[c]
        if num[v] < max_points:
            voxels[v, num[v]] = points[i]
            num[v] += 1
    return point_coors, voxels[: len(index)], coors[: len(index)], num[: len(index)]


@pytest.mark.parametrize("max_points,max_voxels", [(3, 40), (100, 1000), (1, 5)])
def test_hard_and_dynamic_voxelize_match_mmcv_order(max_points: int, max_voxels: int) -> None:
    g = gen(9)
    pts = torch.cat((torch.rand(400, 3, generator=g, dtype=D) * torch.tensor([4.4, 4.4, 2.4], dtype=D) - 0.2,
                     torch.rand(400, 1, generator=g, dtype=D)), 1)
    vs, rng = [0.5, 0.5, 1.0], [0.0, 0.0, 0.0, 4.0, 4.0, 2.0]
    want_pc, want_v, want_c, want_n = naive_voxelize(pts.numpy(), vs, rng, max_points, max_voxels)
    coors = torch.zeros(400, 3, dtype=torch.int32)
    vox.dynamic_voxelize_forward(pts, torch.tensor(vs), torch.tensor(rng), coors, NDim=3)
    assert np.array_equal(coors.numpy(), want_pc) and (want_pc[:, 0] == -1).any()
    voxels = torch.zeros(max_voxels, max_points, 4, dtype=D)
    vc = torch.zeros(max_voxels, 3, dtype=torch.int32)
    num = torch.zeros(max_voxels, dtype=torch.int32)
    vn = torch.zeros((), dtype=torch.long)
    vox.hard_voxelize_forward(pts, torch.tensor(vs), torch.tensor(rng), voxels, vc, num, vn,
                              max_points=max_points, max_voxels=max_voxels, NDim=3, deterministic=False)
    k = int(vn)
    assert k == len(want_c)
    assert np.array_equal(voxels[:k].numpy(), want_v) and np.array_equal(vc[:k].numpy(), want_c)
    assert np.array_equal(num[:k].numpy(), want_n) and voxels[k:].abs().sum() == 0


def test_voxelize_rejects_bad_voxel_size() -> None:
    with pytest.raises(ValueError, match="voxel_size"):
        vox.dynamic_voxelize_forward(torch.zeros(2, 3), torch.tensor([0.5, 0.0, 1.0]), torch.zeros(6),
                                     torch.zeros(2, 3, dtype=torch.int32))


# ------------------------------------------------------------------------------------------- scatter points
class _Scatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, feats: torch.Tensor, coors: torch.Tensor, kind: str) -> torch.Tensor:  # type: ignore[override]
        out, _, pmap, count = sp.dynamic_point_to_voxel_forward(feats, coors, kind)
        ctx.save_for_backward(feats, out, pmap, count)
        ctx.kind = kind
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        feats, out, pmap, count = ctx.saved_tensors
        gf = torch.zeros_like(feats)
        sp.dynamic_point_to_voxel_backward(gf, grad.contiguous(), feats, out, pmap, count, ctx.kind)
        return gf, None, None


@pytest.mark.parametrize("kind", ["max", "mean", "sum"])
def test_dynamic_point_to_voxel_forward_and_gradcheck(kind: str) -> None:
    g = gen(10)
    feats = torch.randn(60, 3, generator=g, dtype=D)
    coors = torch.randint(-1, 3, (60, 2), generator=g, dtype=torch.int32)
    out, vc, pmap, count = sp.dynamic_point_to_voxel_forward(feats, coors, kind)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, c in enumerate(coors.tolist()):
        if min(c) >= 0:
            groups.setdefault(tuple(c), []).append(i)
    keys = sorted(groups)
    assert vc.tolist() == [list(k) for k in keys] and count.tolist() == [len(groups[k]) for k in keys]
    red = {"max": lambda x: x.max(0).values, "mean": lambda x: x.mean(0), "sum": lambda x: x.sum(0)}[kind]
    assert torch.allclose(out, torch.stack([red(feats[groups[k]]) for k in keys]))
    assert all((pmap[i] == -1) == (min(c) < 0) for i, c in enumerate(coors.tolist()))
    assert torch.autograd.gradcheck(lambda f: _Scatter.apply(f, coors, kind), (feats.requires_grad_(),))


def test_dynamic_point_to_voxel_max_grad_goes_to_first_tied_point() -> None:
    feats = torch.tensor([[1.0], [3.0], [3.0]], dtype=D)
    coors = torch.zeros(3, 3, dtype=torch.int32)
    out, _, pmap, count = sp.dynamic_point_to_voxel_forward(feats, coors, "max")
    gf = torch.zeros_like(feats)
    sp.dynamic_point_to_voxel_backward(gf, torch.ones(1, 1, dtype=D), feats, out, pmap, count, "max")
    assert gf.flatten().tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="reduce_type"):
        sp.dynamic_point_to_voxel_forward(feats, coors, "min")


# ------------------------------------------------------------------------------------------ points in boxes
def naive_in_box(p: list[float], b: list[float]) -> bool:
    cz = b[2] + b[5] / 2
    if abs(p[2] - cz) > b[5] / 2:
        return False
    c, s = math.cos(-b[6]), math.sin(-b[6])
    lx = (p[0] - b[0]) * c - (p[1] - b[1]) * s
    ly = (p[0] - b[0]) * s + (p[1] - b[1]) * c
    return -b[3] / 2 < lx < b[3] / 2 and -b[4] / 2 < ly < b[4] / 2


def random_scene(seed: int, n_pts: int, n_boxes: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(seed)
    pts = torch.rand(n_pts, 3, generator=g, dtype=D) * torch.tensor([6.0, 6.0, 3.0], dtype=D)
    boxes = torch.cat((torch.rand(n_boxes, 2, generator=g, dtype=D) * 6, torch.rand(n_boxes, 1, generator=g,
                                                                                      dtype=D),
                       torch.rand(n_boxes, 3, generator=g, dtype=D) * 2 + 0.5,
                       (torch.rand(n_boxes, 1, generator=g, dtype=D) - 0.5) * 6), 1)
    return pts, boxes


def test_points_in_boxes_all_part_cpu() -> None:
    pts, boxes = random_scene(11, 200, 6)
    want = torch.tensor([[naive_in_box(p, b) for b in boxes.tolist()] for p in pts.tolist()], dtype=torch.int32)
    assert want.sum() > 10
    out_all = torch.zeros(1, 200, 6, dtype=torch.int32)
    pib.points_in_boxes_all_forward(boxes[None], pts[None], out_all)
    assert torch.equal(out_all[0], want)
    out_cpu = torch.zeros(6, 200, dtype=torch.int32)
    pib.points_in_boxes_cpu_forward(boxes, pts, out_cpu)
    assert torch.equal(out_cpu.t(), want)
    part = torch.full((1, 200), -1, dtype=torch.int32)
    pib.points_in_boxes_part_forward(boxes[None], pts[None], part)
    first = [row.index(1) if 1 in row else -1 for row in want.tolist()]
    assert part[0].tolist() == first
    with pytest.raises(ValueError, match="points_in_boxes"):
        pib.points_in_boxes_all_forward(boxes, pts, out_all)


# ------------------------------------------------------------------------------------ ball query, fps, knn
def test_ball_query_first_hits_in_input_order() -> None:
    g = gen(12)
    xyz = torch.rand(2, 50, 3, generator=g, dtype=D)
    centres = torch.cat((xyz[:, :3], torch.rand(2, 5, 3, generator=g, dtype=D)), 1)
    idx = torch.zeros(2, 8, 6, dtype=torch.int32)
    bq.ball_query_forward(centres, xyz, idx, b=2, n=50, m=8, min_radius=0.1, max_radius=0.35, nsample=6)
    for b in range(2):
        for m in range(8):
            d2 = ((xyz[b] - centres[b, m]) ** 2).sum(1).tolist()
            hits = [k for k, d in enumerate(d2) if d == 0 or 0.01 <= d < 0.35 ** 2][:6]
            want = (hits + [hits[0]] * 6)[:6] if hits else [0] * 6
            assert idx[b, m].tolist() == want


def test_stack_ball_query_batches_and_empty_balls() -> None:
    g = gen(13)
    xyz = torch.rand(30, 3, generator=g, dtype=D)
    centres = torch.cat((xyz[[0, 5]], torch.full((1, 3), 9.0, dtype=D), xyz[[20]]))
    idx = torch.zeros(4, 4, dtype=torch.int32)
    bq.stack_ball_query_forward(centres, torch.tensor([3, 1], dtype=torch.int32), xyz,
                                torch.tensor([18, 12], dtype=torch.int32), idx, max_radius=0.4, nsample=4)
    assert idx[2, 0].item() == -1 and idx[2, 1:].tolist() == [0, 0, 0]
    for m, (start, n) in zip([0, 1, 3], [(0, 18), (0, 18), (18, 12)]):
        d2 = ((xyz[start:start + n] - centres[m]) ** 2).sum(1).tolist()
        hits = [k for k, d in enumerate(d2) if d < 0.16][:4]
        assert idx[m].tolist() == (hits + [hits[0]] * 4)[:4]


def _cloud_cases(g: torch.Generator, dtype: torch.dtype) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Clouds for grid-vs-dense equality: duplicates (zero distances), centres outside the cloud, a lattice with
    points exactly on the radius, far-from-origin coordinates, a flat (planar) cloud."""
    xyz = (torch.rand(2, 600, 3, generator=g) * 4).to(dtype)
    xyz[:, 100:150] = xyz[:, :50]
    outside = (torch.rand(2, 40, 3, generator=g) * 8 - 2).to(dtype)
    ax = torch.arange(0, 2.5, 0.25)
    lattice = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(1, -1, 3).to(dtype)
    far = (torch.rand(1, 600, 3, generator=g) * 60 + 1000).to(dtype)
    flat = torch.cat((torch.rand(1, 600, 2, generator=g) * 4, torch.zeros(1, 600, 1)), -1).to(dtype)
    return [("random", torch.cat((xyz[:, :150], outside), 1).contiguous(), xyz),
            ("lattice", lattice[:, ::7].contiguous(), lattice), ("far", far[:, :150].contiguous(), far),
            ("flat", flat[:, :150].contiguous(), flat)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_ball_query_grid_equals_dense(dtype: torch.dtype) -> None:
    g = gen(40)
    for name, centres, xyz in _cloud_cases(g, dtype):
        for lo, hi, ns in ((0.0, 0.25, 16), (0.25, 0.5, 32), (0.1, 1.0, 4)):
            dense = bq.ball_hits_dense(centres, xyz, lo * lo, hi * hi, ns)
            grid = bq.ball_hits_grid(centres, xyz, lo * lo, hi * hi, ns, max_fraction=2.0)
            assert grid is not None
            assert torch.equal(grid[0], dense[0]) and torch.equal(grid[1], dense[1]), (name, lo, hi)
            assert int(dense[1].sum()) > 0
            prefix = bq.ball_hits_prefix(centres, xyz, lo * lo, hi * hi, ns, first_block=16)  # several blocks
            assert torch.equal(prefix[0], dense[0]), (name, lo, hi)
            assert torch.equal(prefix[1], dense[1].clamp(max=ns))
    xyz = torch.rand(1, 64, 3, generator=g)
    xyz[0, 5, 1] = float("nan")  # the grid cannot be built: the caller takes the dense path
    assert bq.ball_hits_grid(xyz, xyz, 0.0, 0.04, 4) is None
    dense, prefix = bq.ball_hits_dense(xyz, xyz, 0.0, 0.09, 4), bq.ball_hits_prefix(xyz, xyz, 0.0, 0.09, 4, 8)
    assert torch.equal(prefix[0], dense[0]) and dense[1][0, 5] == 0  # the NaN point is in no ball, not even its own
    assert bq.ball_hits_grid(xyz[:, :4], torch.rand(1, 64, 3, generator=g), 0.0, 0.0, 4) is None


def test_ball_query_forward_large_input_takes_grid_and_keeps_empty_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    took: list[bool] = []
    real = bq.ball_hits_grid
    monkeypatch.setattr(bq, "ball_hits_grid", lambda *a, **k: took.append(True) or real(*a, **k))
    g = gen(41)
    xyz = torch.rand(2, 4096, 3, generator=g) * 4
    centres = torch.cat((xyz[:, :300], torch.full((2, 2, 3), 50.0)), 1).contiguous()  # two empty balls
    idx = torch.full((2, 302, 16), 7, dtype=torch.int32)
    bq.ball_query_forward(centres, xyz, idx, b=2, n=4096, m=302, min_radius=0.0, max_radius=0.2, nsample=16)
    found, count = bq.ball_hits_dense(centres, xyz, 0.0, 0.04, 16)
    assert torch.equal(idx[:, :300].long(), found[:, :300]) and (count[:, :300] > 0).all()
    assert (idx[:, 300:] == 7).all()  # untouched, as mmcv leaves them
    assert took == [True]
    scans: list[bool] = []
    real_prefix = bq.ball_hits_prefix
    monkeypatch.setattr(bq, "ball_hits_prefix", lambda *a, **k: scans.append(True) or real_prefix(*a, **k))
    bq.ball_query_forward(centres, xyz, idx, b=2, n=4096, m=302, min_radius=0.5, max_radius=1.5, nsample=16)
    found, count = bq.ball_hits_dense(centres, xyz, 0.25, 2.25, 16)
    assert scans == [True] and torch.equal(idx[:, :300].long(), found[:, :300]) and (idx[:, 300:] == 7).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_three_nn_grid_equals_dense(dtype: torch.dtype) -> None:
    for name, known, unknown in _cloud_cases(gen(42), dtype):
        dense = tn.three_nn_dense(unknown, known)
        grid = tn.three_nn_grid(unknown, known)
        assert grid is not None
        assert torch.equal(grid[0], dense[0]) and torch.equal(grid[1], dense[1]), name
    g = gen(43)
    clustered = torch.cat((torch.rand(1, 500, 3, generator=g) * 0.01, torch.rand(1, 500, 3, generator=g) * 5), 1)
    dense = tn.three_nn_dense(clustered, clustered[:, ::3].contiguous())
    grid = tn.three_nn_grid(clustered, clustered[:, ::3].contiguous(), max_candidates=64)  # crowded rows: dense
    assert grid is not None and torch.equal(grid[0], dense[0]) and torch.equal(grid[1], dense[1])
    assert tn.three_nn_grid(clustered, clustered[:, :2].contiguous()) is None  # fewer than 3 known: dense path


def test_three_nn_forward_large_input_matches_stable_sort(monkeypatch: pytest.MonkeyPatch) -> None:
    results: list[bool] = []
    real = tn.three_nn_grid

    def spy(*args: Any, **kwargs: Any) -> Any:
        res = real(*args, **kwargs)
        results.append(res is not None)
        return res

    monkeypatch.setattr(tn, "three_nn_grid", spy)
    g = gen(44)
    xyz = torch.rand(2, 4096, 3, generator=g) * 4
    known = xyz[:, :1200].contiguous()
    known[:, 10] = known[:, 3]  # duplicate: the lower index comes first
    dist2, idx = torch.zeros(2, 4096, 3), torch.zeros(2, 4096, 3, dtype=torch.int32)
    tn.three_nn_forward(xyz, known, dist2, idx, b=2, n=4096, m=1200)
    assert results == [True]
    d = ((xyz.unsqueeze(2) - known.unsqueeze(1)) ** 2).sum(-1)
    order = torch.sort(d, dim=-1, stable=True).indices[..., :3]
    assert torch.equal(idx.long(), order) and idx[0, 3, :2].tolist() == [3, 10]
    assert torch.allclose(dist2, d.gather(-1, order))


def naive_fps(dist: Callable[[int, int], float], n: int, m: int) -> list[int]:
    temp = [1e10] * n
    out, old = [0], 0
    for _ in range(1, m):
        temp = [min(temp[k], dist(old, k)) for k in range(n)]
        old = max(range(n), key=lambda k: (temp[k], -k))
        out.append(old)
    return out


def test_furthest_point_sampling_both_forms() -> None:
    g = gen(14)
    xyz = torch.rand(2, 40, 3, generator=g)
    out = torch.zeros(2, 10, dtype=torch.int32)
    fps.furthest_point_sampling_forward(xyz, torch.full((2, 40), 1e10), out, b=2, n=40, m=10)
    dmat = ((xyz.unsqueeze(1) - xyz.unsqueeze(2)) ** 2).sum(-1)
    out2 = torch.zeros(2, 10, dtype=torch.int32)
    fps.furthest_point_sampling_with_dist_forward(dmat, torch.full((2, 40), 1e10), out2, b=2, n=40, m=10)
    for b in range(2):
        want = naive_fps(lambda i, k, b=b: float(dmat[b, i, k]), 40, 10)
        assert out[b].tolist() == want and out2[b].tolist() == want


def test_three_nn_and_knn_sorted_with_index_ties() -> None:
    g = gen(15)
    known = torch.rand(2, 12, 3, generator=g, dtype=D)
    known[:, 7] = known[:, 2]  # an exact duplicate: ties resolve to the lower index first
    unknown = torch.cat((known[:, [2]], torch.rand(2, 9, 3, generator=g, dtype=D)), 1)
    dist2 = torch.zeros(2, 10, 3, dtype=D)
    idx = torch.zeros(2, 10, 3, dtype=torch.int32)
    tn.three_nn_forward(unknown, known, dist2, idx, b=2, n=10, m=12)
    d = ((unknown.unsqueeze(2) - known.unsqueeze(1)) ** 2).sum(-1)
    order = torch.sort(d, dim=-1, stable=True).indices
    assert torch.equal(idx.long(), order[..., :3]) and idx[0, 0].tolist() == [2, 7, idx[0, 0, 2].item()]
    assert torch.allclose(dist2, d.gather(-1, order[..., :3]))
    kidx = torch.zeros(2, 10, 5, dtype=torch.int32)
    kd = torch.zeros(2, 10, 5, dtype=D)
    knn_mod.knn_forward(known, unknown, kidx, kd, b=2, n=12, m=10, nsample=5)
    assert torch.allclose(kd, d.sort(-1).values[..., :5])
    few = torch.zeros(1, 1, 4, dtype=torch.int32)
    fd = torch.zeros(1, 1, 4, dtype=D)
    knn_mod.knn_forward(known[:1, :2], unknown[:1, :1], few, fd, b=1, n=2, m=1, nsample=4)
    assert few[0, 0, 2:].tolist() == [0, 0] and fd[0, 0, 2:].tolist() == [1e10, 1e10]


# ------------------------------------------------------------------------- gather / group / interpolate (+grad)
class _Pair(torch.autograd.Function):
    """Autograd around a served forward/backward pair: ``fwd(x) -> out``, ``bwd(grad_out) -> grad_x``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fwd: Callable[[torch.Tensor], torch.Tensor],  # type: ignore[override]
                bwd: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        ctx.bwd = bwd
        return fwd(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        return ctx.bwd(grad.contiguous()), None, None


def test_gather_points_forward_backward() -> None:
    g = gen(16)
    feats = torch.randn(2, 4, 9, generator=g, dtype=D)
    idx = torch.randint(0, 9, (2, 6), generator=g, dtype=torch.int32)

    def fwd(x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(2, 4, 6)
        gp.gather_points_forward(x, idx, out, b=2, c=4, n=9, npoints=6)
        return out

    def bwd(go: torch.Tensor) -> torch.Tensor:
        gx = go.new_zeros(2, 4, 9)
        gp.gather_points_backward(go, idx, gx, b=2, c=4, n=9, npoints=6)
        return gx

    assert torch.equal(fwd(feats), torch.stack([feats[b][:, idx[b].long()] for b in range(2)]))
    assert torch.autograd.gradcheck(lambda x: _Pair.apply(x, fwd, bwd), (feats.requires_grad_(),))


def test_group_points_forward_backward() -> None:
    g = gen(17)
    feats = torch.randn(2, 3, 8, generator=g, dtype=D)
    idx = torch.randint(0, 8, (2, 5, 4), generator=g, dtype=torch.int32)

    def fwd(x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(2, 3, 5, 4)
        grp.group_points_forward(x, idx, out, b=2, c=3, n=8, npoints=5, nsample=4)
        return out

    def bwd(go: torch.Tensor) -> torch.Tensor:
        gx = go.new_zeros(2, 3, 8)
        grp.group_points_backward(go, idx, gx, b=2, c=3, n=8, npoints=5, nsample=4)
        return gx

    assert torch.equal(fwd(feats), torch.stack([feats[b][:, idx[b].long()] for b in range(2)]))
    assert torch.autograd.gradcheck(lambda x: _Pair.apply(x, fwd, bwd), (feats.requires_grad_(),))


def test_stack_group_points_forward_backward() -> None:
    g = gen(18)
    feats = torch.randn(7, 3, generator=g, dtype=D)  # batches of 4 and 3 points
    idx = torch.tensor([[0, 3, 4], [1, 1, -1], [2, 0, 1], [2, 2, 2]], dtype=torch.int32)  # 2 + 2 rows
    fcnt, icnt = torch.tensor([4, 3], dtype=torch.int32), torch.tensor([2, 2], dtype=torch.int32)

    def fwd(x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(4, 3, 3)
        grp.stack_group_points_forward(x, fcnt, idx, icnt, out, b=2, m=4, c=3, nsample=3)
        return out

    def bwd(go: torch.Tensor) -> torch.Tensor:
        gx = go.new_zeros(7, 3)
        grp.stack_group_points_backward(go, idx, icnt, fcnt, gx, b=2, c=3, m=4, n=7, nsample=3)
        return gx

    out = fwd(feats)
    assert torch.equal(out[0, :, 1], feats[3]) and out[0, :, 2].abs().sum() == 0  # 4 is outside batch 0
    assert out[1, :, 2].abs().sum() == 0 and torch.equal(out[2, :, 0], feats[4 + 2])
    assert torch.autograd.gradcheck(lambda x: _Pair.apply(x, fwd, bwd), (feats.requires_grad_(),))


def test_three_interpolate_forward_backward() -> None:
    g = gen(19)
    feats = torch.randn(2, 4, 6, generator=g, dtype=D)
    idx = torch.randint(0, 6, (2, 5, 3), generator=g, dtype=torch.int32)
    w = torch.rand(2, 5, 3, generator=g, dtype=D)

    def fwd(x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(2, 4, 5)
        ti.three_interpolate_forward(x, idx, w, out, b=2, c=4, m=6, n=5)
        return out

    def bwd(go: torch.Tensor) -> torch.Tensor:
        gx = go.new_zeros(2, 4, 6)
        ti.three_interpolate_backward(go, idx, w, gx, b=2, c=4, n=5, m=6)
        return gx

    want = sum(torch.stack([feats[b][:, idx[b, :, k].long()] for b in range(2)]) * w[:, None, :, k] for k in range(3))
    assert torch.allclose(fwd(feats), want)
    assert torch.autograd.gradcheck(lambda x: _Pair.apply(x, fwd, bwd), (feats.requires_grad_(),))


# ----------------------------------------------------------------------------------------------- roi pools
def test_roipoint_pool3d_matches_naive() -> None:
    pts, boxes = random_scene(20, 120, 5)
    boxes[4, :3] = 50.0  # an empty box
    feats = torch.randn(120, 2, generator=gen(21), dtype=D)
    out = torch.zeros(1, 5, 6, 5, dtype=D)
    flag = torch.zeros(1, 5, dtype=torch.int32)
    rpp.roipoint_pool3d_forward(pts[None], boxes[None], feats[None], out, flag)
    for m, b in enumerate(boxes.tolist()):
        inside = [k for k, p in enumerate(pts.tolist()) if naive_in_box(p, b)][:6]
        assert flag[0, m].item() == int(not inside)
        if inside:
            sel = [inside[s % len(inside)] for s in range(6)]
            assert torch.equal(out[0, m], torch.cat((pts[sel], feats[sel]), 1))
        else:
            assert out[0, m].abs().sum() == 0
    assert flag.sum() == 1


def naive_roiaware(rois: torch.Tensor, pts: torch.Tensor, feats: torch.Tensor, grid: int, cap: int,
                   ) -> tuple[dict[tuple[int, ...], list[int]], torch.Tensor, torch.Tensor]:
    lists: dict[tuple[int, ...], list[int]] = {}
    for r, b in enumerate(rois.tolist()):
        for k, p in enumerate(pts.tolist()):
            if not naive_in_box(p, b):
                continue
            c, s = math.cos(-b[6]), math.sin(-b[6])
            lx = (p[0] - b[0]) * c - (p[1] - b[1]) * s
            ly = (p[0] - b[0]) * s + (p[1] - b[1]) * c
            cell = [min(max(int((lx + b[3] / 2) / (b[3] / grid)), 0), grid - 1),
                    min(max(int((ly + b[4] / 2) / (b[4] / grid)), 0), grid - 1),
                    min(max(int((p[2] - b[2]) / (b[5] / grid)), 0), grid - 1)]
            lst = lists.setdefault((r, *cell), [])
            if len(lst) < cap - 1:
                lst.append(k)
    mx = torch.zeros(len(rois), grid, grid, grid, feats.shape[1], dtype=D)
    avg = torch.zeros_like(mx)
    for key, lst in lists.items():
        mx[key] = feats[lst].max(0).values
        avg[key] = feats[lst].mean(0)
    return lists, mx, avg


class _RoIAware(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, feats: torch.Tensor, rois: torch.Tensor, pts: torch.Tensor,  # type: ignore[override]
                mode: int) -> torch.Tensor:
        out = feats.new_zeros(len(rois), 3, 3, 3, feats.shape[1])
        arg = torch.zeros(out.shape, dtype=torch.int32)
        idx = torch.zeros(len(rois), 3, 3, 3, 4, dtype=torch.int32)
        rap.roiaware_pool3d_forward(rois, pts, feats, arg, idx, out, pool_method=mode)
        ctx.save_for_backward(idx, arg)
        ctx.mode, ctx.shape = mode, feats.shape
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:  # type: ignore[override]
        idx, arg = ctx.saved_tensors
        gi = grad.new_zeros(ctx.shape)
        rap.roiaware_pool3d_backward(idx, arg, grad.contiguous(), gi, pool_method=ctx.mode)
        return gi, None, None, None


@pytest.mark.parametrize("mode", [0, 1])
def test_roiaware_pool3d_matches_naive_and_gradcheck(mode: int) -> None:
    pts, rois = random_scene(22, 150, 3)
    rois[:, 3:6] += 1.5
    feats = torch.randn(150, 2, generator=gen(23), dtype=D)
    lists, want_max, want_avg = naive_roiaware(rois, pts, feats, 3, 4)
    assert any(len(v) == 3 for v in lists.values())  # the per-cell cap is reached somewhere
    out = _RoIAware.apply(feats, rois, pts, mode)
    assert torch.allclose(out, want_max if mode == 0 else want_avg)
    assert torch.autograd.gradcheck(lambda f: _RoIAware.apply(f, rois, pts, mode), (feats.requires_grad_(),))
    idx = torch.zeros(3, 3, 3, 3, 4, dtype=torch.int32)
    rap.roiaware_pool3d_forward(rois, pts, feats.detach(), torch.zeros(3, 3, 3, 3, 2, dtype=torch.int32), idx,
                                torch.zeros(3, 3, 3, 3, 2, dtype=D), pool_method=mode)
    for key, lst in lists.items():
        assert idx[key][0].item() == len(lst) and idx[key][1:1 + len(lst)].tolist() == lst
    with pytest.raises(ValueError, match="pool_method"):
        rap.roiaware_pool3d_forward(rois, pts, feats, torch.zeros(1), idx, torch.zeros(1), pool_method=2)


# ----------------------------------------------------------------------------------------------- benchmark
def test_ops_3d_benchmark_runs_tiny(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/ops_3d.py keeps working (tiny sizes; nothing about speed is asserted)."""
    import importlib
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    try:
        text = importlib.import_module("ops_3d").main(["--scale", "0.005", "--repeats", "1", "--threads", "0"])
    finally:
        for name in ("ops_3d", "_bench"):
            sys.modules.pop(name, None)
    nms_table, neighbour_table = text.split("| boxes |")[1].split("| dense ms (reference) |")
    assert nms_table.count("| yes |") == 3 and "| NO |" not in nms_table  # vectorised == sequential greedy
    assert neighbour_table.count("| yes |") == 7 and "| NO |" not in neighbour_table  # served == dense, bitwise
    assert text.count("\n| ") >= 30 and capsys.readouterr().out


def test_three_nn_forward_reads_wider_rows_as_the_kernel_does() -> None:
    """mmcv's kernel steps 3 floats per point through each buffer: SASSD's (1, N, 4) batch-x-y-z rows are read as the
    first N * 3 floats, as (1, N, 3) rows."""
    g = gen(45)
    unknown, known = torch.rand(1, 50, 4, generator=g), torch.rand(1, 40, 4, generator=g)
    dist2, idx = torch.zeros(1, 50, 3), torch.zeros(1, 50, 3, dtype=torch.int32)
    tn.three_nn_forward(unknown, known, dist2, idx, b=1, n=50, m=40)
    as_read_u = unknown.reshape(-1)[:150].view(1, 50, 3)
    as_read_k = known.reshape(-1)[:120].view(1, 40, 3)
    d = ((as_read_u.unsqueeze(2) - as_read_k.unsqueeze(1)) ** 2).sum(-1)
    order = torch.sort(d, dim=-1, stable=True).indices[..., :3]
    assert torch.equal(idx.long(), order) and torch.allclose(dist2, d.gather(-1, order))
