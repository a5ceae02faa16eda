"""CPU time of detlight's rotated / 3D ``mmcv._ext`` ops at realistic sizes, and rotated NMS against a sequential loop.

Run:  python benchmarks/ops_3d.py [--scale 1.0] [--repeats 3] [--threads 1]

Two markdown tables:

1. every op family of ``detlight/openmmlab/ops`` (rotated / 3D part) at the sizes a model meets (KITTI-sized point
   clouds for voxelisation, PointNet++ set-abstraction sizes, PartA2 / PointRCNN RoI pooling), median of
   ``--repeats`` runs;
2. ``nms_rotated`` on 1k / 5k / 20k rotated boxes (a DOTA-like 1024 x 1024 scene: clusters of jittered detections
   around objects) against a *sequential greedy loop* run in the same invocation: Python iterates over the boxes in
   score order and, for each box still alive, computes its exact IoU with the later boxes (the same circle prefilter
   and the same rotated-IoU code, vectorised over the other boxes). Both return the same indices (checked).

3. ``ball_query`` (PointNet++ SSG radii 0.2 / 0.4 / 0.8 / 1.2) and ``three_nn`` (16384 unknown points against
   4096 / 1024 / 256 known) as served (a uniform grid of candidate cells; for wide balls a scan that stops once a
   centre is full) against the dense computation of every distance (the previous implementation, kept as the
   reference), same invocation, results checked bit for bit.

``--scale`` shrinks every size (the smoke test runs the script at ``--scale 0.02``). The machine line says which CPU
and how loaded it was; timings on a shared machine vary run to run.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from typing import Any

import _bench
import torch

from detlight.openmmlab.ops import ball_query as bq
from detlight.openmmlab.ops import box_iou_rotated as bir
from detlight.openmmlab.ops import furthest_point_sample as fps
from detlight.openmmlab.ops import gather_points as gp
from detlight.openmmlab.ops import group_points as grp
from detlight.openmmlab.ops import iou3d
from detlight.openmmlab.ops import knn as knn_mod
from detlight.openmmlab.ops import nms_rotated as nr
from detlight.openmmlab.ops import points_in_boxes as pib
from detlight.openmmlab.ops import roiaware_pool3d as rap
from detlight.openmmlab.ops import roipoint_pool3d as rpp
from detlight.openmmlab.ops import scatter_points as sp
from detlight.openmmlab.ops import three_interpolate as ti
from detlight.openmmlab.ops import three_nn as tn
from detlight.openmmlab.ops import voxelize as vox
from detlight.openmmlab.ops._rotated import pairwise_rotated_iou

NMS_SIZES = (1000, 5000, 20000)


def timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Seconds per call, ``repeats`` times after one warm-up call."""
    fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def rotated_scene(n: int, seed: int = 0, size: float = 1024.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` detections: clusters of 8 jittered boxes around ``n / 8`` objects in a ``size`` x ``size`` image."""
    g = torch.Generator().manual_seed(seed)
    objects = max(1, -(-n // 8))
    centre = torch.rand(objects, 2, generator=g) * size
    wh = torch.rand(objects, 2, generator=g) * 50 + 10
    ang = (torch.rand(objects, 1, generator=g) - 0.5) * math.pi
    base = torch.cat((centre, wh, ang), 1).repeat_interleave(8, 0)[:n]
    noise = torch.randn(n, 5, generator=g) * torch.tensor([3.0, 3.0, 3.0, 3.0, 0.1])
    boxes = base + noise
    boxes[:, 2:4] = boxes[:, 2:4].clamp(min=2)
    return boxes, torch.rand(n, generator=g)


def sequential_greedy(boxes_sorted: torch.Tensor, thr: float) -> torch.Tensor:
    """The baseline: a Python loop over the boxes in score order, IoU vectorised over the later live boxes."""
    n = boxes_sorted.shape[0]
    alive = torch.ones(n, dtype=torch.bool)
    radius = 0.5 * torch.sqrt(boxes_sorted[:, 2] ** 2 + boxes_sorted[:, 3] ** 2)
    for i in range(n):
        if not alive[i]:
            continue
        rest = torch.nonzero(alive[i + 1:]).flatten() + i + 1
        d2 = ((boxes_sorted[rest, :2] - boxes_sorted[i, :2]) ** 2).sum(1)
        rest = rest[d2 <= (radius[rest] + radius[i]) ** 2]
        if rest.numel():
            iou = pairwise_rotated_iou(boxes_sorted[i].expand(rest.numel(), 5), boxes_sorted[rest])
            alive[rest[iou >= thr]] = False
    return alive


def nms_rows(sizes: tuple[int, ...], repeats: int) -> list[list[str]]:
    rows = []
    for n in sizes:
        boxes, scores = rotated_scene(n)
        order = scores.argsort(descending=True)
        srt = boxes[order]
        keep = nr.nms_rotated(boxes, scores, order, srt, 0.1, False)
        ref = order[sequential_greedy(srt, 0.1)]
        same = torch.equal(keep, ref)
        t_vec = timed(lambda b=boxes, s=scores, o=order, r=srt: nr.nms_rotated(b, s, o, r, 0.1, False), repeats)
        t_seq = timed(lambda r=srt: sequential_greedy(r, 0.1), max(1, repeats // 2))
        rows.append([f"{n}", f"{len(keep)}", _bench.spread([t * 1e3 for t in t_vec], "{:.1f}"),
                     _bench.spread([t * 1e3 for t in t_seq], "{:.1f}"),
                     f"{_bench.median(t_seq) / _bench.median(t_vec):.1f}x", "yes" if same else "NO"])
    return rows


def _cases(scale: float) -> list[tuple[str, str, Callable[[], Any]]]:  # noqa: C901 (one case per op, flat)
    g = torch.Generator().manual_seed(1)

    def n(x: int) -> int:
        return max(4, int(x * scale))

    cases: list[tuple[str, str, Callable[[], Any]]] = []
    # rotated IoU
    b1, _ = rotated_scene(n(1000), 1)
    b2, _ = rotated_scene(n(1000), 2)
    ious = torch.zeros(b1.shape[0] * b2.shape[0])
    cases.append(("box_iou_rotated", f"{b1.shape[0]} x {b2.shape[0]} boxes (1024^2 scene)",
                  lambda: bir.box_iou_rotated(b1, b2, ious, 0, False)))
    # iou3d on LiDAR boxes
    m3 = n(500)
    boxes3d = torch.cat((torch.rand(m3, 2, generator=g) * torch.tensor([70.0, 80.0]) - torch.tensor([0.0, 40.0]),
                         torch.zeros(m3, 1), torch.rand(m3, 3, generator=g) * 3 + 1,
                         torch.rand(m3, 1, generator=g) * 6), 1)
    ov = torch.zeros(m3, m3)
    cases.append(("iou3d_boxes_overlap_bev_forward", f"{m3} x {m3} boxes", lambda: iou3d.iou3d_boxes_overlap_bev_forward(
        boxes3d, boxes3d, ov)))
    keep, num = torch.zeros(m3, dtype=torch.long), torch.zeros((), dtype=torch.long)
    cases.append(("iou3d_nms3d_forward", f"{m3} boxes", lambda: iou3d.iou3d_nms3d_forward(boxes3d, keep, num, 0.01)))
    cases.append(("iou3d_nms3d_normal_forward", f"{m3} boxes",
                  lambda: iou3d.iou3d_nms3d_normal_forward(boxes3d, keep, num, 0.01)))
    # voxelisation: a KITTI-sized cloud in PointPillars' range
    npts = n(120000)
    pts = torch.cat((torch.rand(npts, 1, generator=g) * 75, torch.rand(npts, 1, generator=g) * 84 - 42,
                     torch.rand(npts, 1, generator=g) * 4.4 - 3.2, torch.rand(npts, 1, generator=g)), 1)
    vs, rng = torch.tensor([0.16, 0.16, 4.0]), torch.tensor([0, -39.68, -3, 69.12, 39.68, 1])
    voxels, vc = torch.zeros(16000, 32, 4), torch.zeros(16000, 3, dtype=torch.int32)
    vnum, vn = torch.zeros(16000, dtype=torch.int32), torch.zeros((), dtype=torch.long)
    cases.append(("hard_voxelize_forward", f"{npts} pts, PointPillars KITTI (32 pts, 16000 voxels)",
                  lambda: vox.hard_voxelize_forward(pts, vs, rng, voxels, vc, vnum, vn, 32, 16000, 3, True)))
    coors = torch.zeros(npts, 3, dtype=torch.int32)
    cases.append(("dynamic_voxelize_forward", f"{npts} pts", lambda: vox.dynamic_voxelize_forward(
        pts, torch.tensor([0.05, 0.05, 0.1]), rng, coors, 3)))
    vox.dynamic_voxelize_forward(pts, torch.tensor([0.32, 0.32, 6.0]), rng, coors, 3)
    feats = torch.randn(npts, 16, generator=g)
    for kind in ("max", "mean"):
        res = sp.dynamic_point_to_voxel_forward(feats, coors, kind)
        gf = torch.zeros_like(feats)
        gout = torch.ones_like(res[0])
        cases.append((f"dynamic_point_to_voxel_forward ({kind})", f"{npts} pts x 16 ch",
                      lambda k=kind: sp.dynamic_point_to_voxel_forward(feats, coors, k)))
        cases.append((f"dynamic_point_to_voxel_backward ({kind})", f"{npts} pts x 16 ch",
                      lambda k=kind, r=res, gf=gf, go=gout: sp.dynamic_point_to_voxel_backward(
                          gf, go, feats, r[0], r[2], r[3], k)))
    # points in boxes
    nb = min(30, m3)
    boxes_pib = boxes3d[:nb].clone()
    boxes_pib[:, 2] = -2.0
    out_all = torch.zeros(1, npts, nb, dtype=torch.int32)
    cases.append(("points_in_boxes_all_forward", f"{npts} pts x {nb} boxes",
                  lambda: pib.points_in_boxes_all_forward(boxes_pib[None], pts[None, :, :3], out_all)))
    part = torch.full((1, npts), -1, dtype=torch.int32)
    cases.append(("points_in_boxes_part_forward", f"{npts} pts x {nb} boxes",
                  lambda: pib.points_in_boxes_part_forward(boxes_pib[None], pts[None, :, :3], part)))
    # PointNet++ set abstraction / feature propagation sizes
    B, N, M, S = 2, n(16384), n(2048), 32
    xyz = torch.rand(B, N, 3, generator=g) * 4
    centres = xyz[:, :M].contiguous()
    idx = torch.zeros(B, M, S, dtype=torch.int32)
    cases.append(("ball_query_forward", f"B={B}, {N} pts, {M} centres, r=0.2, {S} samples",
                  lambda: bq.ball_query_forward(centres, xyz, idx, B, N, M, 0.0, 0.2, S)))
    out_idx = torch.zeros(B, M, dtype=torch.int32)
    cases.append(("furthest_point_sampling_forward", f"B={B}, {N} -> {M} pts (sequential in samples)",
                  lambda: fps.furthest_point_sampling_forward(xyz, torch.full((B, N), 1e10), out_idx, B, N, M)))
    nd = n(1024)
    dmat = torch.cdist(xyz[:, :nd], xyz[:, :nd]) ** 2
    out_d = torch.zeros(B, nd // 4, dtype=torch.int32)
    cases.append(("furthest_point_sampling_with_dist_forward", f"B={B}, {nd} -> {nd // 4} pts",
                  lambda: fps.furthest_point_sampling_with_dist_forward(dmat, torch.full((B, nd), 1e10), out_d, B, nd,
                                                                         nd // 4)))
    C = 64
    feat = torch.randn(B, C, N, generator=g)
    gidx = torch.randint(0, N, (B, M), generator=g, dtype=torch.int32)
    gout = torch.zeros(B, C, M)
    cases.append(("gather_points_forward", f"B={B}, C={C}, {N} -> {M}",
                  lambda: gp.gather_points_forward(feat, gidx, gout, B, C, N, M)))
    gfeat = torch.zeros(B, C, N)
    cases.append(("gather_points_backward", f"B={B}, C={C}, {M} -> {N}",
                  lambda: gp.gather_points_backward(gout, gidx, gfeat.zero_(), B, C, N, M)))
    grouped = torch.zeros(B, C, M, S)
    cases.append(("group_points_forward", f"B={B}, C={C}, {M} x {S} of {N}",
                  lambda: grp.group_points_forward(feat, idx, grouped, B, C, N, M, S)))
    cases.append(("group_points_backward", f"B={B}, C={C}, {M} x {S} of {N}",
                  lambda: grp.group_points_backward(grouped, idx, gfeat.zero_(), B, C, N, M, S)))
    known = xyz[:, : n(4096)].contiguous()
    d2, i3 = torch.zeros(B, N, 3), torch.zeros(B, N, 3, dtype=torch.int32)
    cases.append(("three_nn_forward", f"B={B}, {N} unknown, {known.shape[1]} known",
                  lambda: tn.three_nn_forward(xyz, known, d2, i3, B, N, known.shape[1])))
    kf = torch.randn(B, C, known.shape[1], generator=g)
    i3.copy_(torch.randint(0, known.shape[1], (B, N, 3), generator=g))
    w3 = torch.rand(B, N, 3, generator=g)
    interp = torch.zeros(B, C, N)
    cases.append(("three_interpolate_forward", f"B={B}, C={C}, {known.shape[1]} -> {N}",
                  lambda: ti.three_interpolate_forward(kf, i3, w3, interp, B, C, known.shape[1], N)))
    gk = torch.zeros(B, C, known.shape[1])
    cases.append(("three_interpolate_backward", f"B={B}, C={C}, {N} -> {known.shape[1]}",
                  lambda: ti.three_interpolate_backward(interp, i3, w3, gk.zero_(), B, C, N, known.shape[1])))
    kn = n(1024)
    kidx, kd = torch.zeros(B, kn, 20, dtype=torch.int32), torch.zeros(B, kn, 20)
    cases.append(("knn_forward", f"B={B}, {kn} x {kn} pts, k=20 (DGCNN)",
                  lambda: knn_mod.knn_forward(xyz[:, :kn], xyz[:, :kn], kidx, kd, B, kn, kn, 20)))
    # RoI pooling: PointRCNN / PartA2 sizes
    nr_ = n(128)
    rois = torch.cat((torch.rand(nr_, 2, generator=g) * 4, torch.zeros(nr_, 1), torch.rand(nr_, 3, generator=g) + 0.5,
                      torch.rand(nr_, 1, generator=g) * 6), 1)
    pfeat = torch.randn(1, N, 16, generator=g)
    pooled = torch.zeros(1, nr_, 512, 19)
    flag = torch.zeros(1, nr_, dtype=torch.int32)
    cases.append(("roipoint_pool3d_forward", f"{N} pts, {nr_} boxes, 512 samples",
                  lambda: rpp.roipoint_pool3d_forward(xyz[:1], rois[None], pfeat, pooled, flag)))
    out_sz, cap, ch = 14, 128, 16
    for mode in (0, 1):
        aw_out = torch.zeros(nr_, out_sz, out_sz, out_sz, ch)
        arg = torch.zeros(nr_, out_sz, out_sz, out_sz, ch, dtype=torch.int32)
        pidx = torch.zeros(nr_, out_sz, out_sz, out_sz, cap, dtype=torch.int32)
        name = "max" if mode == 0 else "avg"
        cases.append((f"roiaware_pool3d_forward ({name})", f"{N} pts, {nr_} rois, 14^3, 128 pts/voxel",
                      lambda a=aw_out, r=arg, p=pidx, mo=mode: rap.roiaware_pool3d_forward(
                          rois, xyz[0], pfeat[0], r.zero_(), p.zero_(), a.zero_(), mo)))
        rap.roiaware_pool3d_forward(rois, xyz[0], pfeat[0], arg, pidx, aw_out, mode)
        gin = torch.zeros(N, ch)
        cases.append((f"roiaware_pool3d_backward ({name})", f"{N} pts, {nr_} rois",
                      lambda a=aw_out, r=arg, p=pidx, mo=mode, gi=gin: rap.roiaware_pool3d_backward(
                          p, r, a, gi.zero_(), mo)))
    return cases


def neighbour_rows(scale: float, repeats: int) -> list[list[str]]:
    """Served ball_query / three_nn (grid where it pays) against the dense reference, with an exact-equality check."""
    g = torch.Generator().manual_seed(3)
    b, n, m = 2, max(64, int(16384 * scale)), max(16, int(2048 * scale))
    xyz = torch.rand(b, n, 3, generator=g) * 4
    centres = xyz[:, :m].contiguous()
    rows = []
    for radius in (0.2, 0.4, 0.8, 1.2):
        r2 = radius * radius
        served = bq.ball_hits(centres, xyz, 0.0, r2, 32)
        dense = bq.ball_hits_dense(centres, xyz, 0.0, r2, 32)
        same = torch.equal(served[0], dense[0]) and torch.equal(served[1], dense[1].clamp(max=32))
        t_new = timed(lambda r=r2: bq.ball_hits(centres, xyz, 0.0, r, 32), repeats)
        t_old = timed(lambda r=r2: bq.ball_hits_dense(centres, xyz, 0.0, r, 32), max(1, repeats // 2))
        path = ("dense" if b * m * n < 1 << 20 else
                "grid" if bq.ball_hits_grid(centres, xyz, 0.0, r2, 32) is not None else "prefix scan")
        rows.append([f"ball_query r={radius}", f"B={b}, {n} pts, {m} centres, 32 samples", path,
                     _bench.spread([t * 1e3 for t in t_old], "{:.0f}"),
                     _bench.spread([t * 1e3 for t in t_new], "{:.0f}"),
                     f"{_bench.median(t_old) / _bench.median(t_new):.1f}x", "yes" if same else "NO"])
    for known_n in (4096, 1024, 256):
        known = xyz[:, : max(4, int(known_n * scale))].contiguous()
        d2, i3 = torch.zeros(b, n, 3), torch.zeros(b, n, 3, dtype=torch.int32)
        tn.three_nn_forward(xyz, known, d2, i3, b, n, known.shape[1])
        dense = tn.three_nn_dense(xyz, known)
        same = torch.equal(d2, dense[0]) and torch.equal(i3.long(), dense[1])
        t_new = timed(lambda k=known, d=d2, i=i3: tn.three_nn_forward(xyz, k, d, i, b, n, k.shape[1]), repeats)
        t_old = timed(lambda k=known: tn.three_nn_dense(xyz, k), max(1, repeats // 2))
        path = "grid" if known.shape[1] >= 1024 and b * n * known.shape[1] >= 1 << 20 else "dense"
        rows.append([f"three_nn {known.shape[1]} known", f"B={b}, {n} unknown", path,
                     _bench.spread([t * 1e3 for t in t_old], "{:.0f}"),
                     _bench.spread([t * 1e3 for t in t_new], "{:.0f}"),
                     f"{_bench.median(t_old) / _bench.median(t_new):.1f}x", "yes" if same else "NO"])
    return rows


def op_rows(scale: float, repeats: int) -> list[list[str]]:
    rows = []
    for name, size, fn in _cases(scale):
        secs = timed(fn, repeats)
        rows.append([name, size, _bench.spread([s * 1e3 for s in secs], "{:.1f}")])
    return rows


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every size (smoke runs: 0.02)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: steadier on a shared machine; 0: torch's default)")

    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = tuple(max(16, int(s * args.scale)) for s in NMS_SIZES)
    report = [f"machine: {_bench.machine_info()}; torch threads {torch.get_num_threads()}", "",
              _bench.markdown_table(["op", "size", "ms: median [min-max]"], op_rows(args.scale, args.repeats)), "",
              _bench.markdown_table(["boxes", "kept", "nms_rotated ms", "sequential greedy loop ms", "speed-up",
                                     "same keep"], nms_rows(sizes, args.repeats)), "",
              _bench.markdown_table(["op", "size", "served by", "dense ms (reference)", "served ms", "speed-up",
                                     "same bits"],
                                    neighbour_rows(args.scale, args.repeats))]
    text = "\n".join(report)
    print(text)
    return text


if __name__ == "__main__":
    main()
